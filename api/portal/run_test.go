package portal

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/api/jobs"
	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
	"mplane/uid"
)

// counters is a resource service whose create counts its runs and can be
// held at a gate, to see how often the owner runs a job.
type counters struct {
	runs atomic.Int32
	gate chan struct{} // nil: open
	// flaky, if set, runs first in every run; an error fails the run.
	flaky func(ctx context.Context, run int32) error
}

type counterReq struct {
	UUID string `json:"uuid"`
}

func (r counterReq) ResourceUUID() string { return r.UUID }

type counterVO struct {
	UUID string `json:"uuid"`
	Run  int32  `json:"run"`
}

var msgCreateCounter = managementnode.NewOwnedMsg[counterReq, counterVO](ownerService, "portaltest.CreateCounter")

func (c *counters) serve(mux *cloudbus.Mux) {
	managementnode.Handle(mux, msgCreateCounter, func(ctx context.Context, req counterReq) (counterVO, error) {
		n := c.runs.Add(1)
		if c.flaky != nil {
			if err := c.flaky(ctx, n); err != nil {
				return counterVO{}, err
			}
		}
		if c.gate != nil {
			select {
			case <-c.gate:
			case <-ctx.Done():
				return counterVO{}, ctx.Err()
			}
		}
		return counterVO{UUID: req.UUID, Run: n}, nil
	})
}

var createCounter = route.Create(msgCreateCounter, func(_ context.Context, in route.In[struct{}]) (counterReq, error) {
	return counterReq{UUID: in.UUID}, nil
})

func startCounters(t *testing.T, gated bool) (*harness, *counters) {
	t.Helper()
	c := &counters{}
	if gated {
		c.gate = make(chan struct{})
	}
	h := startHarness(t, harnessOptions{resources: []route.Resource{{Path: "counters", Create: &createCounter}}, serve: c.serve})
	if err := flow.Migrate(context.Background(), h.db); err != nil { // a server always has the table
		t.Fatal(err)
	}
	return h, c
}

// jobRow writes a job as the edge writes it (its call and request), with
// the run node and age given, as if its message had been lost or its
// runner had died.
func (h *harness) jobRow(runNode string, age time.Duration) jobs.Job {
	h.t.Helper()
	id, name := uid.New(), uid.New()
	j := jobs.Job{UUID: jobs.ScopedUUID("admin-account", name), ClientUUID: name, APIName: msgCreateCounter.Name(), ResourceUUID: id,
		State: jobs.Processing, AccountUUID: "admin-account",
		Op: createCounter.Key(), Body: `{"uuid":"` + id + `"}`, RunNode: runNode}
	if err := h.db.Create(&j).Error; err != nil {
		h.t.Fatal(err)
	}
	if age > 0 {
		if err := h.db.Model(&jobs.Job{}).Where("uuid = ?", j.UUID).Update("created_at", time.Now().UTC().Add(-age)).Error; err != nil {
			h.t.Fatal(err)
		}
	}
	return j
}

func (h *harness) job(uuid string) jobs.Job {
	h.t.Helper()
	j, err := h.jobs.Get(context.Background(), uuid)
	if err != nil {
		h.t.Fatal(err)
	}
	return j
}

// A job sent again while its owner runs it (a redelivery, a node sending an
// orphan again, a client retry) is run once: the later sends wait for the
// first run's outcome.
func TestJobSentAgainRunsOnce(t *testing.T) {
	h, c := startCounters(t, true)
	loc := h.accepted(h.do(http.MethodPost, "/v1/counters", `{"params": {}}`))
	jobUUID := loc[strings.LastIndex(loc, "/")+1:]
	eventually(t, "the first run started", func() bool { return c.runs.Load() == 1 })
	j := h.job(jobUUID)
	if j.RunNode != h.node.UUID() {
		t.Fatalf("run node %q, want this node %s", j.RunNode, h.node.UUID())
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = h.portal.drive(context.Background(), submission{JobUUID: j.UUID, Op: j.Op, Body: json.RawMessage(j.Body)})
		}()
	}
	time.Sleep(100 * time.Millisecond) // the extra sends reach the owner and wait
	close(c.gate)
	wg.Wait()
	a := h.finished(loc)
	var rep struct{ Inventory counterVO }
	a.decode(t, &rep)
	if a.status != http.StatusOK || rep.Inventory.Run != 1 || c.runs.Load() != 1 {
		t.Fatalf("job %d %s after %d runs, want one run's result", a.status, a.body, c.runs.Load())
	}
	// Sent once more after it finished: nothing runs, nothing changes.
	if _, err := h.portal.drive(context.Background(), submission{JobUUID: j.UUID, Op: j.Op, Body: json.RawMessage(j.Body)}); err != nil {
		t.Fatal(err)
	}
	if got := h.job(jobUUID); c.runs.Load() != 1 || got.Result != h.job(jobUUID).Result || got.State != jobs.Succeeded {
		t.Fatalf("a finished job sent again ran (%d runs) or changed: %+v", c.runs.Load(), got)
	}
}

// A client's retry (same X-Job-UUID) of a job whose message was lost sends
// the work; a retry of a finished job does not.
func TestRetryOfALostJobSendsIt(t *testing.T) {
	h, c := startCounters(t, false)
	j := h.jobRow("", 0) // accepted, then its message was lost
	retry := func() answer {
		return h.do(http.MethodPost, "/v1/counters", `{"params": {}}`, jobs.HeaderJobUUID, j.ClientUUID)
	}
	a := h.finished(h.accepted(retry()))
	if a.status != http.StatusOK || c.runs.Load() != 1 {
		t.Fatalf("retried job %d %s after %d runs, want it run once", a.status, a.body, c.runs.Load())
	}
	if a := h.finished(h.accepted(retry())); a.status != http.StatusOK || c.runs.Load() != 1 {
		t.Fatalf("a retry of the finished job: %d %s, %d runs, want the same answer and no run", a.status, a.body, c.runs.Load())
	}
}

// A request sent again after its job failed with a retryable error (nothing
// of it remains) runs again; after a failure that is not retryable, or
// whose outcome is unknown, it answers the old failure and runs nothing.
func TestRetryAfterARetryableFailureRunsAgain(t *testing.T) {
	h, c := startCounters(t, false)
	failed := func(e *errcode.Error) jobs.Job {
		j := h.jobRow("", 0)
		got, err := h.jobs.Fail(context.Background(), j.UUID, e)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	retry := func(j jobs.Job) answer {
		return h.do(http.MethodPost, "/v1/counters", `{"params": {}}`, jobs.HeaderJobUUID, j.ClientUUID)
	}
	unavailable := failed(errcode.New(errcode.DBUnavailable, "database unavailable"))
	if a := h.finished(h.accepted(retry(unavailable))); a.status != http.StatusOK || c.runs.Load() != 1 {
		t.Fatalf("retry after a retryable failure: %d %s after %d runs, want it run once and succeed", a.status, a.body, c.runs.Load())
	}
	if got := h.job(unavailable.UUID); got.State != jobs.Succeeded {
		t.Errorf("job after its re-run: %+v, want succeeded", got)
	}
	if a := h.finished(h.accepted(retry(unavailable))); a.status != http.StatusOK || c.runs.Load() != 1 {
		t.Errorf("a retry of the re-run job: %d %s, %d runs, want the same answer and no run", a.status, a.body, c.runs.Load())
	}
	unknown := errcode.New(errcode.OutcomeUnknown, "the node died mid-run")
	invalid := errcode.New(errcode.InvalidArgument, "bad request")
	for _, e := range []*errcode.Error{unknown, invalid} {
		j := failed(e)
		a := h.finished(h.accepted(retry(j)))
		if a.status != http.StatusServiceUnavailable || !strings.Contains(string(a.body), string(e.Code)) || c.runs.Load() != 1 {
			t.Errorf("retry after a %s failure: %d %s after %d runs, want the old failure and no run", e.Code, a.status, a.body, c.runs.Load())
		}
	}
}

// A job whose work (a flow) failed because a node was unavailable and was
// rolled back cleanly runs again, up to three times, instead of failing: the
// client sees latency. Work that failed for another reason fails at once.
func TestRolledBackWorkAfterATransientFaultRunsAgain(t *testing.T) {
	h, c := startCounters(t, false)
	var failRuns atomic.Int32
	chain, err := flow.New("portaltest-flaky", []flow.Step[struct{}]{{Name: "step",
		Run: func(ctx context.Context, _ *struct{}) error {
			return errcode.New(errcode.NodeUnavailable, "the host's owner left the cluster")
		},
		Rollback: func(context.Context, *struct{}) error { return nil },
	}}, flow.Options{Recorder: flow.NewGormRecorder(h.db), Node: h.node.UUID()})
	if err != nil {
		t.Fatal(err)
	}
	c.flaky = func(ctx context.Context, n int32) error {
		if n > failRuns.Load() {
			return nil
		}
		if n == 99 {
			return errcode.New(errcode.InvalidArgument, "not transient")
		}
		return chain.Run(ctx, nil, flow.RunOptions{})
	}
	create := func() answer {
		return h.do(http.MethodPost, "/v1/counters", `{"params": {}}`)
	}

	failRuns.Store(2) // the first two runs fail and roll back
	if a := h.finished(h.accepted(create())); a.status != http.StatusOK || c.runs.Load() != 3 {
		t.Fatalf("after two rolled-back runs: %d %s, %d runs; want success on the third", a.status, a.body, c.runs.Load())
	}

	c.runs.Store(0)
	failRuns.Store(10) // every run fails: three runs, then the failure
	a := h.finished(h.accepted(create()))
	if a.status != http.StatusServiceUnavailable || !strings.Contains(string(a.body), string(errcode.NodeUnavailable)) || c.runs.Load() != maxRuns {
		t.Fatalf("always failing: %d %s after %d runs, want the failure after %d runs", a.status, a.body, c.runs.Load(), maxRuns)
	}

	c.runs.Store(98)
	failRuns.Store(1000) // run 99 fails with a caller's error: no second run
	a = h.finished(h.accepted(create()))
	if a.status != http.StatusServiceUnavailable || !strings.Contains(string(a.body), string(errcode.InvalidArgument)) || c.runs.Load() != 99 {
		t.Fatalf("a caller's error: %d %s after %d runs, want it failed after one run", a.status, a.body, c.runs.Load()-98)
	}
}

// Every node sends orphans again: a job whose work never started long
// after it was accepted, and a job whose runner is no longer a member (run
// again by the resource's owner). A fresh unstarted job is left to its
// message.
func TestOrphanedJobsAreSentAgain(t *testing.T) {
	h, c := startCounters(t, false)
	ctx := context.Background()
	lost := h.jobRow("", 20*time.Second)
	fresh := h.jobRow("", 0)
	deadRun := h.jobRow("a-node-that-died", time.Second)
	if err := h.portal.redriveLoop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, j := range []jobs.Job{lost, deadRun} {
		eventually(t, "orphan "+j.UUID+" finished", func() bool { return h.job(j.UUID).Finished() })
		if got := h.job(j.UUID); got.State != jobs.Succeeded || got.RunNode != h.node.UUID() {
			t.Errorf("orphan %+v, want succeeded, run by this node", got)
		}
	}
	if got := h.job(fresh.UUID); got.State != jobs.Processing || got.RedrivenAt != nil {
		t.Errorf("a fresh unstarted job was sent again: %+v", got)
	}
	if n := c.runs.Load(); n != 2 {
		t.Errorf("%d runs, want 2 (the two orphans)", n)
	}
	// A second pass right after finds nothing to do.
	if err := h.portal.redriveLoop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := c.runs.Load(); n != 2 {
		t.Errorf("%d runs after a second pass, want 2", n)
	}
}

// A job taken over from a dead runner waits until the flows that runner
// left on the resource are rolled back, then runs.
func TestTakenOverJobWaitsForTheDeadRunnersFlows(t *testing.T) {
	h, c := startCounters(t, false)
	ctx := context.Background()
	j := h.jobRow("a-node-that-died", time.Second)
	rec := flow.RecordVO{ID: uid.New(), Chain: "portaltest-create", Owner: "a-node-that-died", State: string(flow.Running),
		Resource: j.ResourceUUID, Step: "half-way", Data: "{}", CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := h.db.Create(&rec).Error; err != nil {
		t.Fatal(err)
	}
	if err := h.portal.redriveLoop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := c.runs.Load(); n != 0 {
		t.Fatalf("the job ran (%d) while the dead runner's flow was unfinished", n)
	}
	// The takeover rolls it back.
	if err := h.db.Model(&flow.RecordVO{}).Where("id = ?", rec.ID).Update("state", string(flow.RolledBack)).Error; err != nil {
		t.Fatal(err)
	}
	eventually(t, "job finished", func() bool { return h.job(j.UUID).Finished() })
	if got := h.job(j.UUID); got.State != jobs.Succeeded || c.runs.Load() != 1 {
		t.Fatalf("job %+v after %d runs, want succeeded after one", got, c.runs.Load())
	}
}

// A job whose dead runner's flow for it was rolled back fails, retryable,
// saying so: nothing of it remains, and it is not run again behind the
// client's back.
func TestTakenOverJobWhoseFlowWasRolledBackRunsAgain(t *testing.T) {
	h, c := startCounters(t, false)
	ctx := context.Background()
	j := h.jobRow("a-node-that-died", time.Second)
	// The takeover (this node) has claimed the flow and is rolling it back.
	rec := flow.RecordVO{ID: uid.New(), Chain: "portaltest-create", Owner: h.node.UUID(), State: string(flow.RollingBack),
		Resource: j.ResourceUUID, Job: j.UUID, Step: "half-way", Data: "{}", CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := h.db.Create(&rec).Error; err != nil {
		t.Fatal(err)
	}
	if err := h.portal.redriveLoop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := h.job(j.UUID); got.Finished() || c.runs.Load() != 0 {
		t.Fatalf("job %s after %d runs while its flow was still rolling back", got.State, c.runs.Load())
	}
	if err := h.db.Model(&flow.RecordVO{}).Where("id = ?", rec.ID).Update("state", string(flow.RolledBack)).Error; err != nil {
		t.Fatal(err)
	}
	eventually(t, "job finished", func() bool { return h.job(j.UUID).Finished() })
	if got := h.job(j.UUID); got.State != jobs.Succeeded || c.runs.Load() != 1 {
		t.Fatalf("job %s (%+v) after %d runs, want it run again once its work was rolled back, and succeeded", got.State, got.Err(), c.runs.Load())
	}
}

// A job whose work has been rolled back maxRuns times already fails when
// its runner dies once more, retryable, saying its work was rolled back.
func TestTakenOverJobRolledBackTooOftenFails(t *testing.T) {
	h, c := startCounters(t, false)
	ctx := context.Background()
	j := h.jobRow("a-node-that-died", time.Second)
	for i := 0; i < maxRuns; i++ {
		rec := flow.RecordVO{ID: uid.New(), Chain: "portaltest-create", Owner: h.node.UUID(), State: string(flow.RolledBack),
			Resource: j.ResourceUUID, Job: j.UUID, Step: "half-way", Data: "{}", CreatedAt: time.Now(), UpdatedAt: time.Now()}
		if err := h.db.Create(&rec).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := h.portal.redriveLoop(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "job finished", func() bool { return h.job(j.UUID).Finished() })
	e := h.job(j.UUID).Err()
	if e == nil || e.Code != errcode.NodeUnavailable || !e.Retryable || !strings.Contains(e.Details, "rolled back") || c.runs.Load() != 0 {
		t.Fatalf("job error %+v after %d runs, want a retryable NodeUnavailable saying its work was rolled back, and no run", e, c.runs.Load())
	}
}

// The sweeper tells a job that never started (retryable Timeout) from one
// whose work started and may have run (OutcomeUnknown).
func TestSweeperTellsUnstartedFromUnknown(t *testing.T) {
	h, _ := startCounters(t, false)
	unstarted := h.jobRow("", 2*time.Hour)
	started := h.jobRow("a-node-that-died", 2*time.Hour)
	if n, err := h.jobs.FailStale(context.Background(), time.Hour); err != nil || n != 2 {
		t.Fatalf("FailStale: %d, %v; want 2 jobs", n, err)
	}
	if e := h.job(unstarted.UUID).Err(); e == nil || e.Code != errcode.Timeout || !e.Retryable {
		t.Errorf("unstarted stale job: %+v, want a retryable Timeout", e)
	}
	if e := h.job(started.UUID).Err(); e == nil || e.Code != errcode.OutcomeUnknown || e.Retryable {
		t.Errorf("started stale job: %+v, want OutcomeUnknown, not retryable", e)
	}
}

// A node that is stopping takes no new work and fails no job: a call it
// takes from api.portal goes back on the queue, and its job stays
// processing for another node.
func TestLeavingNodeHandsCallsOn(t *testing.T) {
	h, c := startCounters(t, false)
	j := h.jobRow("", 0)
	h.portal.cancel() // Stop has begun
	if _, err := h.portal.drive(context.Background(), submission{JobUUID: j.UUID, Op: j.Op, Body: json.RawMessage(j.Body)}); err != nil {
		t.Fatal(err)
	}
	if got := h.job(j.UUID); got.State != jobs.Processing || got.RunNode != "" || c.runs.Load() != 0 {
		t.Fatalf("a leaving node drove or failed the job: %+v, %d runs", got, c.runs.Load())
	}
}
