package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"mplane/api/jobs"
	"mplane/api/quota"
	"mplane/api/route"
	"mplane/api/tenancy"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/internal/netguard"
	"mplane/managementnode"
	"mplane/thread"
)

// SharedQueue is the queue every node consumes for API calls.
const SharedQueue = "api.portal"

// Options configure the portal.
type Options struct {
	DB        *gorm.DB
	Bus       *cloudbus.Bus
	Node      *managementnode.Node
	Scheduler *thread.Scheduler
	Jobs      *jobs.Store
	Logger    *slog.Logger
	// Resources are what the services declare; the portal mounts them.
	Resources []route.Resource
	// JobTimeout bounds one API call from submission to result. Default
	// 30m; SetJobTimeout changes it at run time.
	JobTimeout time.Duration
	// JobRetention is how long finished jobs are kept. Default 7 days.
	JobRetention time.Duration
	// Purge, if set, runs beside the job purge (the expired sessions).
	Purge func(ctx context.Context) (int64, error)
	// Quota, if set, limits what normal accounts create (see api/quota).
	Quota *quota.Service
	// AccountSubmitRate bounds how many calls per second each normal
	// account may submit on this node (bursts of twice as many); 0 is no
	// bound. Admin accounts are not bound.
	AccountSubmitRate float64
	// WebhookPolicy is which addresses an X-Web-Hook may reach: checked
	// on the URL's host when the call is accepted (an address literal) and
	// on the address dialled at delivery.
	WebhookPolicy netguard.Policy
}

// Portal serves the REST API and the api.portal queue.
type Portal struct {
	opts    Options
	log     *slog.Logger
	db      *gorm.DB
	bus     *cloudbus.Bus
	node    *managementnode.Node
	jobs    *jobs.Store
	webhook jobs.Webhook
	// ops is the registry of typed calls, keyed by Op.Key (their message's
	// name): the driving node finds the call it was handed here.
	ops map[string]route.Op
	// jobTimeout is JobTimeout (nanoseconds), changed at run time by
	// SetJobTimeout.
	jobTimeout atomic.Int64
	// jobMsgs are the names of the messages ops send owners: the job hook
	// looks only at those.
	jobMsgs  map[string]bool
	runs     runs
	recorder *flow.GormRecorder
	// limit bounds each normal account's submissions.
	limit *submitLimiter
	// guard is the ownership filter on db; tables the table of each
	// resource path.
	guard  *tenancy.Guard
	tables map[string]string
	// ctx ends at Stop; bg counts the goroutines that drive jobs again and
	// deliver webhooks.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// New builds the portal. Two resources on one path, or two calls with one
// message, are a programming error reported here.
func New(opts Options) (*Portal, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Jobs == nil || opts.Scheduler == nil {
		return nil, errors.New("portal: Options.DB, Bus, Node, Scheduler and Jobs are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.JobTimeout <= 0 {
		opts.JobTimeout = 30 * time.Minute
	}
	if opts.JobRetention <= 0 {
		opts.JobRetention = 7 * 24 * time.Hour
	}
	p := &Portal{opts: opts, log: opts.Logger.With("component", "portal"), db: opts.DB, bus: opts.Bus, node: opts.Node,
		jobs: opts.Jobs, ops: map[string]route.Op{}, jobMsgs: map[string]bool{}, recorder: flow.NewGormRecorder(opts.DB)}
	p.webhook.Policy = opts.WebhookPolicy
	p.limit = newSubmitLimiter(opts.AccountSubmitRate)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.jobTimeout.Store(int64(opts.JobTimeout))
	paths := map[string]bool{}
	for _, res := range opts.Resources {
		if res.Path == "" || paths[res.Path] {
			return nil, fmt.Errorf("portal: resource path %q empty or declared twice", res.Path)
		}
		paths[res.Path] = true
		actions := map[string]bool{}
		for _, op := range res.Ops() {
			if _, dup := p.ops[op.Key()]; dup {
				return nil, fmt.Errorf("portal: call %s declared twice", op.Key())
			}
			if a := op.ActionName(); a != "" {
				if actions[a] {
					return nil, fmt.Errorf("portal: action %s declared twice on %s", a, res.Path)
				}
				actions[a] = true
			}
			p.ops[op.Key()] = op
			for _, m := range op.Messages() {
				p.jobMsgs[m] = true
			}
		}
	}
	tables, byPath, err := tablesOf(opts.DB, opts.Resources)
	if err != nil {
		return nil, err
	}
	if p.guard, err = tenancy.Install(opts.DB, tables); err != nil {
		return nil, err
	}
	p.tables = byPath
	opts.Node.SetJobHook(p.runOnce)
	return p, nil
}

// submission carries one API call from the node that accepted it to the
// portal node that drives it: the job, the call (its registry key) and the
// message's request.
type submission struct {
	JobUUID string          `json:"jobUuid"`
	Op      string          `json:"op"`
	Body    json.RawMessage `json:"body"`
}

var msgSubmit = cloudbus.NewMsg[submission, cloudbus.Empty]("api.Submit")

// Start consumes the shared api.portal queue, sends orphaned jobs again
// and sweeps stale jobs.
func (p *Portal) Start(ctx context.Context) error {
	mux := cloudbus.NewMux()
	cloudbus.Handle(mux, msgSubmit, p.drive)
	if err := p.bus.ServeShared(SharedQueue, mux); err != nil {
		return err
	}
	if err := p.opts.Scheduler.Every(p.ctx, 5*time.Second, 0.2, "api-job-redriver", p.redriveLoop); err != nil {
		return err
	}
	if err := p.opts.Scheduler.Every(p.ctx, 10*time.Minute, 0.2, "owner-sweeper", p.sweepOwners); err != nil {
		return err
	}
	if err := p.opts.Scheduler.Every(p.ctx, 10*time.Minute, 0.2, "api-job-purger", p.purge); err != nil {
		return err
	}
	if p.opts.Quota != nil {
		// A create whose job failed before its rollback ended (a timeout,
		// a dead node) leaves its claims until its row is gone: look again
		// at the recently failed jobs.
		if err := p.opts.Scheduler.Every(p.ctx, 15*time.Second, 0.2, "quota-settler", func(ctx context.Context) error {
			n, err := p.opts.Quota.SettleFailed(ctx, time.Hour)
			if n > 0 {
				p.log.Info("quota of failed creates released", "claims", n)
			}
			return err
		}); err != nil {
			return err
		}
	}
	return p.opts.Scheduler.Every(p.ctx, time.Minute, 0.2, "api-job-sweeper", p.sweep)
}

// purge deletes the jobs finished longer than the retention ago, a batch
// at a time, and runs Options.Purge.
func (p *Portal) purge(ctx context.Context) error {
	var total int64
	for {
		n, err := p.jobs.PurgeFinished(ctx, p.opts.JobRetention, 1000)
		total += n
		if err != nil {
			return err
		}
		if n < 1000 || ctx.Err() != nil {
			break
		}
	}
	if total > 0 {
		p.log.Info("purged finished API jobs", "jobs", total, "retention", p.opts.JobRetention)
	}
	if p.opts.Purge != nil {
		n, err := p.opts.Purge(ctx)
		if n > 0 {
			p.log.Info("purged expired sessions", "sessions", n)
		}
		return err
	}
	return nil
}

// sweep fails the jobs still processing a minute after the job timeout
// (as it is now): the node driving them has most likely gone away.
func (p *Portal) sweep(ctx context.Context) error {
	n, err := p.jobs.FailStale(ctx, p.JobTimeout()+time.Minute)
	if n > 0 {
		p.log.Warn("failed API jobs left processing by a node that went away", "jobs", n)
	}
	return err
}

// SetJobTimeout changes the job timeout (Options.JobTimeout) at run time;
// safe from any goroutine. Calls submitted from now on are bounded by d,
// and the stale-job sweeper fails from its next round the jobs processing
// for longer than d (plus its minute of slack); a call already submitted
// keeps the deadline it was given.
func (p *Portal) SetJobTimeout(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("API job timeout must be > 0 (got %s)", d)
	}
	if old := time.Duration(p.jobTimeout.Swap(int64(d))); old != d {
		p.log.Info("job timeout changed", "timeout", d, "previous", old)
	}
	return nil
}

// JobTimeout is the job timeout now.
func (p *Portal) JobTimeout() time.Duration { return time.Duration(p.jobTimeout.Load()) }

// Stop ends the job sweeper and the jobs this node was sending again, and
// waits for webhook deliveries in progress. Idempotent.
func (p *Portal) Stop(context.Context) error {
	if p.cancel == nil {
		return nil // never built by New
	}
	p.cancel()
	p.bg.Wait()
	return nil
}

// leaving reports whether this node is stopping or fenced: it drives no
// new call.
func (p *Portal) leaving() bool {
	select {
	case <-p.node.Fenced():
		return true // it can do nothing more: others take its jobs over
	default:
	}
	return p.ctx.Err() != nil || p.node.State() == managementnode.StateLeaving
}

// handOn puts a call this node took from api.portal while leaving back on
// the queue for another node, after a short pause (a node that is the only
// consumer left must not spin); if that fails, the job waits for another
// node's orphan search.
func (p *Portal) handOn(sub submission) {
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = cloudbus.WithMeta(ctx, cloudbus.Meta{APIID: sub.JobUUID})
	if err := cloudbus.Send(ctx, p.bus, p.bus.SharedTarget(SharedQueue), msgSubmit, sub, cloudbus.WithTimeout(p.JobTimeout())); err != nil {
		p.log.Info("hand an API call back to api.portal while leaving: left to another node's orphan search", "job_uuid", sub.JobUUID, "err", err)
	}
}

// drive calls the owner through the typed call, again while the call fails
// before the work started (notStarted) and the job's deadline allows; the
// owner records the outcome (runOnce). A failure before the work started is
// recorded here, marked retryable.
func (p *Portal) drive(ctx context.Context, sub submission) (cloudbus.Empty, error) {
	if p.leaving() {
		p.handOn(sub)
		return cloudbus.Empty{}, nil
	}
	op, ok := p.ops[sub.Op]
	var err error = errcode.New(errcode.UnknownMessage, "no API call %s on this node (mixed versions?)", sub.Op)
	ctx = cloudbus.WithMeta(ctx, cloudbus.Meta{APIID: sub.JobUUID}) // the owner's job hook reads it
	pause := 200 * time.Millisecond
	for ok {
		if _, err = op.Drive(ctx, p.node, sub.Body); err == nil || errors.Is(err, errFinished) || !notStarted(err) {
			break
		}
		p.log.Debug("API call not started: sending it again", "job_uuid", sub.JobUUID, "err", err)
		select {
		case <-ctx.Done():
			err = errcode.Wrap(errcode.Timeout, err, "the call did not reach a node that could run it before the job's deadline")
			ok = false
		case <-time.After(pause):
		}
		pause = min(pause*2, 2*time.Second)
	}
	if err == nil || errors.Is(err, errFinished) {
		return cloudbus.Empty{}, nil
	}
	if p.leaving() && (notStarted(err) || errcode.Has(err, errcode.Canceled)) {
		// Not a failure of the call: this node is going away. The job
		// stays processing; another node sends it again (Orphans).
		p.log.Info("leaving an unstarted API job to another node: this node is stopping", "job_uuid", sub.JobUUID, "err", err)
		return cloudbus.Empty{}, nil
	}
	// Record with a context of its own: the call may have used up ctx.
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job, ferr := p.jobs.FailUnstarted(rctx, sub.JobUUID, errcode.From(err))
	switch {
	case errcode.Has(ferr, errcode.InvalidState):
		// Started (its runner records the outcome) or finished already.
	case ferr != nil:
		p.log.Error("record job outcome", "job_uuid", sub.JobUUID, "err", ferr)
	default:
		p.log.Info("API job failed before its work started", "job_uuid", sub.JobUUID, "api", job.APIName, "err", err)
		p.finished(job)
	}
	return cloudbus.Empty{}, nil
}
