package portal

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"mplane/api/auth"
	"mplane/api/jobs"
	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
)

// How a job survives the nodes that handle it (docs/reliability.md):
//
//   - The job row holds the call (Op) and its request (Body), so any node
//     can send the work again.
//   - The owner of the resource runs the work once: before it starts, it
//     claims the job's run (RunNode, a conditional update); the same job
//     sent again finds the claim and waits for that run's outcome instead
//     of running twice. The owner records the outcome itself, with
//     retries, so it is not lost with the node that carried the call.
//   - The driving node (the one that took the call from api.portal) sends
//     the call again while it fails without having started (no owner, bus
//     down, owner left, database unavailable), so losing a node costs a
//     client latency, not a failure.
//   - Every node looks for orphans (Store.Orphans) every few seconds: jobs
//     whose work never started although their message is long gone, and
//     jobs whose run belongs to a node that is no longer a member; it sends
//     them again. The new owner takes an orphaned run over once the flows
//     the dead node left on the resource are rolled back, and runs it again
//     (the operations are safe to repeat: a create keeps its UUID).

// orphanIdle is how long a job's work may stay unstarted before another
// node sends it again, and how long after one node did before the next may.
const orphanIdle = 15 * time.Second

// runs tracks the jobs this node is running, so the same job sent again
// waits for the run in progress.
type runs struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (r *runs) start(job string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	r.m[job] = ch
	return ch
}

func (r *runs) end(job string, ch chan struct{}) {
	r.mu.Lock()
	delete(r.m, job)
	r.mu.Unlock()
	close(ch)
}

func (r *runs) running(job string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[job]
}

// errFinished answers a job sent again after its outcome was recorded: the
// driver has nothing to record.
var errFinished = errors.New("api job already finished")

// runOnce is the node's job hook (managementnode.Node.SetJobHook): it runs
// on the resource's owner around a message carrying a job's ID.
func (p *Portal) runOnce(ctx context.Context, env *cloudbus.Envelope, next func(context.Context) (json.RawMessage, error)) (json.RawMessage, error) {
	if !p.jobMsgs[env.Name] {
		return next(ctx) // a message of the work itself
	}
	job, err := p.jobs.Get(ctx, env.APIID)
	if errcode.Has(err, errcode.ResourceNotFound) {
		return next(ctx) // not an API job's ID
	}
	if err != nil {
		return nil, err
	}
	op, ok := p.ops[job.Op]
	if !ok {
		return next(ctx) // a job from before jobs recorded their call
	}
	if _, mine, _ := op.Outcome(env.Name, json.RawMessage(job.Body), nil); !mine {
		return next(ctx) // a call the work makes with its job's ID
	}
	for {
		if job.Finished() {
			return nil, errFinished
		}
		switch {
		case job.RunNode == p.node.UUID():
			// Sent again while this node runs it (or after it ran and the
			// outcome could not be recorded): wait for that run.
			if ch := p.runs.running(job.UUID); ch != nil {
				select {
				case <-ch:
				case <-ctx.Done():
					return nil, errcode.From(ctx.Err())
				}
			} else {
				p.record(job.UUID, nil, errcode.New(errcode.OutcomeUnknown,
					"the run of this job on node %s ended without recording its outcome", p.node.UUID()))
			}
			if job, err = p.jobs.Get(ctx, job.UUID); err != nil {
				return nil, err
			}
			continue
		case job.RunNode != "":
			// Started by another node: by the time the resource is this
			// node's, that node has released it (Guard's handover) or is
			// gone. Let the flows it left be rolled back first.
			if err := p.settle(ctx, job); err != nil {
				return nil, err
			}
			if done, err := p.rolledBack(ctx, job); err != nil || done {
				if err == nil {
					err = errFinished
				}
				return nil, err
			}
		}
		won, err := p.jobs.ClaimRun(ctx, job.UUID, job.RunNode, p.node.UUID())
		if err != nil {
			return nil, err
		}
		if won {
			if job.RunNode == releasedRun {
				ctx = route.WithRerun(ctx)
			} else if job.RunNode != "" {
				p.log.Warn("running an API job again: the node that started it is gone", "job_uuid", job.UUID,
					"api", job.APIName, "resource_uuid", job.ResourceUUID, "previous_node", job.RunNode)
				ctx = route.WithRerun(ctx) // its work may have completed
			}
			return p.run(ctx, op, job, env, next)
		}
		if job, err = p.jobs.Get(ctx, job.UUID); err != nil {
			return nil, err
		}
	}
}

// run runs the claimed job and records its outcome.
func (p *Portal) run(ctx context.Context, op route.Op, job jobs.Job, env *cloudbus.Envelope, next func(context.Context) (json.RawMessage, error)) (json.RawMessage, error) {
	ch := p.runs.start(job.UUID)
	defer p.runs.end(job.UUID, ch)
	reply, err := next(flow.WithJob(ctx, job.UUID))
	if err != nil {
		if p.release(ctx, job, err) {
			// The driver sends it again (a notStarted code), to the
			// resource's owner of the moment, which runs it anew.
			return nil, errcode.Wrap(errcode.NodeUnavailable, err, "api job %s: its work was rolled back after a transient fault; it runs again", job.UUID)
		}
		p.record(job.UUID, nil, errcode.From(err))
		return nil, err
	}
	result, _, serr := op.Outcome(env.Name, json.RawMessage(job.Body), reply)
	if serr != nil {
		p.record(job.UUID, nil, errcode.From(serr))
	} else {
		p.record(job.UUID, result, nil)
	}
	return reply, err
}

// maxRuns bounds how often a job whose work was rolled back after a
// transient fault is run (release).
const maxRuns = 3

// release gives up the run of a job whose work failed because a node, the
// bus or the database was unavailable, when every flow of the job was
// rolled back cleanly: nothing of the work remains, as if it had never
// started, so the job is made not started again (RunNode empty) instead of
// failing, and the driver sends it again. A job runs at most maxRuns
// times; work that is not a flow (nothing recorded) is not released.
func (p *Portal) release(ctx context.Context, job jobs.Job, err error) bool {
	if !managementnode.Transient(err) || p.leaving() {
		return false
	}
	recs, rerr := p.recorder.ForJob(ctx, job.UUID)
	if rerr != nil || len(recs) == 0 || len(recs) >= maxRuns {
		return false
	}
	for _, r := range recs {
		if flow.State(r.State) != flow.RolledBack {
			return false
		}
	}
	ok, cerr := p.jobs.ClaimRun(ctx, job.UUID, p.node.UUID(), releasedRun)
	if cerr != nil || !ok {
		return false
	}
	p.log.Warn("API job's work rolled back after a transient fault: sending it again", "job_uuid", job.UUID, "api", job.APIName,
		"resource_uuid", job.ResourceUUID, "runs", len(recs), "err", err)
	return true
}

// releasedRun is the RunNode of a job whose run was released (release): its
// next run is a re-run (route.WithRerun), which finds work the released run
// may have done after all (a stop that reached the host).
const releasedRun = "released"

// record stores a job's outcome, trying again while the database is
// unavailable (for up to two minutes), then delivers its webhook in the
// background.
func (p *Portal) record(jobUUID string, result any, failure *errcode.Error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pause := 100 * time.Millisecond
	for {
		var job jobs.Job
		var err error
		if failure != nil {
			job, err = p.jobs.Fail(ctx, jobUUID, failure)
		} else {
			job, err = p.jobs.Succeed(ctx, jobUUID, result)
		}
		switch {
		case err == nil:
			if failure != nil {
				p.log.Info("API job failed", "job_uuid", jobUUID, "api", job.APIName, "resource_uuid", job.ResourceUUID, "code", failure.Code, "err", failure)
			}
			p.finished(job)
			return
		case errcode.Has(err, errcode.InvalidState), errcode.Has(err, errcode.ResourceNotFound):
			return // recorded already, or gone
		}
		p.log.Warn("record API job outcome: trying again", "job_uuid", jobUUID, "err", err)
		select {
		case <-ctx.Done():
			p.log.Error("record API job outcome: gave up", "job_uuid", jobUUID, "err", err)
			return
		case <-p.node.Fenced():
			// Its writes are refused for good; the job's resource has a
			// new owner, which resolves the job (it runs again, or its
			// work is found done).
			p.log.Warn("record API job outcome: this node is fenced; the job is left to the resource's new owner", "job_uuid", jobUUID)
			return
		case <-time.After(pause):
		}
		pause = min(pause*2, 5*time.Second)
	}
}

// finished follows a job's end: its webhook, and the release of the
// quota of what it made or deleted that no longer exists, in the
// background.
func (p *Portal) finished(job jobs.Job) {
	p.deliver(job)
	if p.opts.Quota == nil || job.AccountUUID == auth.AdminUUID {
		return // admin has no quota
	}
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		p.settleQuota(job)
	}()
}

// deliver posts a finished job to its webhook, in the background.
func (p *Portal) deliver(job jobs.Job) {
	if job.WebhookURL == "" {
		return
	}
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.webhook.Deliver(ctx, job); err != nil {
			p.log.Warn("webhook delivery failed", "job_uuid", job.UUID, "err", err)
		}
	}()
}

// settle waits (up to 30 s, within ctx) until no flow of the job is
// unfinished and no flow left on the job's resource by a node that is no
// longer a member is: the takeover of the resource's service claims and
// rolls them back after the ring changed.
func (p *Portal) settle(ctx context.Context, job jobs.Job) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	unfinished := []string{string(flow.Running), string(flow.RollingBack)}
	for {
		var n int64
		q := p.db.WithContext(ctx).Model(&flow.RecordVO{}).Where("state IN ?", unfinished)
		if job.ResourceUUID != "" {
			q = q.Where(p.db.Where("job = ?", job.UUID).
				Or(p.db.Where("resource = ? AND owner NOT IN (?)", job.ResourceUUID, p.db.Model(&managementnode.NodeVO{}).Select("uuid"))))
		} else {
			q = q.Where("job = ?", job.UUID)
		}
		err := q.Count(&n).Error
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errcode.New(errcode.Busy, "resource %s: the flows a departed node left on it are not rolled back yet; try again", job.ResourceUUID)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// rolledBack finishes a job taken over from a dead runner whose work was a
// flow that has been rolled back, when it has run maxRuns times already or
// a rollback failed: the job fails (retryable when nothing of it remains).
// done is false when the work completed (a create run again answers what
// exists), left no flow, or was rolled back cleanly with runs left: it is
// run again.
func (p *Portal) rolledBack(ctx context.Context, job jobs.Job) (done bool, err error) {
	recs, err := p.recorder.ForJob(ctx, job.UUID)
	if err != nil {
		return false, err
	}
	var undone *flow.RecordVO
	clean := true
	for i := range recs {
		switch flow.State(recs[i].State) {
		case flow.Done:
			return false, nil
		case flow.RolledBack:
			undone = &recs[i]
		case flow.Failed:
			undone, clean = &recs[i], false
		}
	}
	if undone == nil {
		return false, nil
	}
	if clean && len(recs) < maxRuns && !p.leaving() {
		// Nothing of the work remains: run it again, as if it had never
		// started (the client sees latency, not the dead node).
		if job.RunNode != releasedRun {
			p.log.Warn("API job's runner died and its work was rolled back: running it again", "job_uuid", job.UUID,
				"api", job.APIName, "resource_uuid", job.ResourceUUID, "previous_node", job.RunNode, "flow", undone.Chain)
		}
		return false, nil
	}
	e := errcode.New(errcode.NodeUnavailable, "management node %s stopped while it ran this job (step %s of %s); its work was rolled back and nothing of it remains: send the request again",
		job.RunNode, undone.Step, undone.Chain)
	if job.RunNode == releasedRun {
		e = errcode.New(errcode.NodeUnavailable, "this job's work was rolled back %d times after transient faults (last at step %s of %s); nothing of it remains: send the request again",
			len(recs), undone.Step, undone.Chain)
	}
	e.Retryable = true
	if flow.State(undone.State) == flow.Failed {
		e = errcode.New(errcode.Internal, "management node %s stopped while it ran this job; rolling back its work (%s) failed, some of it may remain: %s",
			job.RunNode, undone.Chain, undone.Error)
	}
	p.log.Warn("API job failed: the node that ran it died and its work was rolled back", "job_uuid", job.UUID,
		"api", job.APIName, "resource_uuid", job.ResourceUUID, "previous_node", job.RunNode, "flow", undone.Chain)
	p.record(job.UUID, nil, e)
	return true, nil
}

// notStarted reports an error after which the work surely did not start on
// the owner, or started under a job claim that makes a repeat harmless: the
// driver sends the call again.
func notStarted(err error) bool {
	switch errcode.CodeOf(err) {
	case errcode.NodeUnavailable, errcode.BusUnavailable, errcode.ShuttingDown, errcode.DBUnavailable:
		return true
	}
	return false
}

// redriveLoop sends orphaned jobs again: every few seconds this node looks
// for them (Store.Orphans), claims each (Store.ClaimRedrive) and drives it.
func (p *Portal) redriveLoop(ctx context.Context) error {
	live, err := p.liveNodes(ctx)
	if err != nil {
		return err
	}
	orphans, err := p.jobs.Orphans(ctx, live, orphanIdle, p.JobTimeout(), 64)
	if err != nil {
		return err
	}
	for _, j := range orphans {
		p.redrive(ctx, j)
	}
	return nil
}

// redrive claims job j and drives it in the background; false when another
// node has just done so.
func (p *Portal) redrive(ctx context.Context, j jobs.Job) bool {
	won, err := p.jobs.ClaimRedrive(ctx, j)
	if err != nil || !won {
		return false
	}
	deadline := j.CreatedAt.Add(p.JobTimeout())
	if time.Until(deadline) <= 0 {
		if job, err := p.jobs.FailUnstarted(ctx, j.UUID, errcode.New(errcode.Timeout,
			"the job's deadline (job timeout %s) passed before its work could be sent", p.JobTimeout())); err == nil {
			p.finished(job)
		}
		return false
	}
	p.log.Warn("sending an API job again", "job_uuid", j.UUID, "api", j.APIName, "resource_uuid", j.ResourceUUID,
		"run_node", j.RunNode, "age", time.Since(j.CreatedAt).Round(time.Millisecond))
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		dctx, cancel := context.WithDeadline(p.ctx, deadline)
		defer cancel()
		dctx = cloudbus.WithMeta(dctx, cloudbus.Meta{APIID: j.UUID})
		_, _ = p.drive(dctx, submission{JobUUID: j.UUID, Op: j.Op, Body: json.RawMessage(j.Body)})
	}()
	return true
}

func (p *Portal) liveNodes(ctx context.Context) ([]string, error) {
	var live []string
	if err := p.db.WithContext(ctx).Model(&managementnode.NodeVO{}).Pluck("uuid", &live).Error; err != nil {
		return nil, err
	}
	return live, nil
}
