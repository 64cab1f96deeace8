package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"mplane/api/client"
)

// maxErrorsKept is how many failures a phase keeps for the report.
const maxErrorsKept = 5

// Stall sweep: when no job result came for stallAfter, the outstanding
// jobs are polled once (checked every stallCheck).
const (
	stallCheck = 5 * time.Second
	stallAfter = 15 * time.Second
)

// agentPath is the agent command each operation leads to.
var agentPath = map[string]string{OpCreate: "/vm/start", OpStop: "/vm/stop", OpStart: "/vm/start", OpDestroy: "/vm/destroy"}

// vmState is what the run knows of one VM.
type vmState struct {
	uuid string
	ok   bool // every operation on it so far succeeded
}

// opRecord is one job of a phase.
type opRecord struct {
	vm       int // index in runner.vms
	vmUUID   string
	jobUUID  string
	start    time.Time // the API call was sent
	accepted time.Time // its answer came
	done     time.Time // the job's result came
	err      error

	ch  <-chan result // webhook mode
	job *client.Job
	end bool // done or err is final
}

func (r *opRecord) finish(at time.Time, inventory json.RawMessage, err error, op string) {
	r.end, r.done, r.err = true, at, err
	if err != nil || op != OpCreate {
		return
	}
	var inv struct {
		UUID string `json:"uuid"`
	}
	if e := json.Unmarshal(inventory, &inv); e != nil || inv.UUID == "" {
		r.err = fmt.Errorf("create job %s succeeded without a VM uuid in its result: %.200s", r.jobUUID, inventory)
		return
	}
	r.vmUUID = inv.UUID
}

// runner is one run of Run.
type runner struct {
	o       Options
	admin   *http.Client // /admin and /debug reads
	clients []*client.Client
	// setup talks to the first API URL without webhooks: its jobs are
	// waited for by polling and their results must not reach the receiver.
	setup *client.Client
	hooks *tracker
	cloud cloud
	// stopBackup stops the bench image's backup storage agent, which runs
	// in this process for the whole run.
	stopBackup func()
	vms        []vmState
	rep        *Report

	hookSrv  *http.Server
	hookDone chan error

	mu sync.Mutex // guards rep.Problems and rep.Profiles while phases run
}

// Run logs in, prepares the bench cloud, runs every phase of o.Ops and
// returns what it measured. An error means the run could not be made
// (bad options, login, setup); failed jobs are in the report (see
// Report.Failures).
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	r := &runner{o: o, admin: &http.Client{Timeout: 30 * time.Second}, hooks: newTracker()}
	r.rep = &Report{Label: o.Label, Started: time.Now(), Machine: readMachine(), Config: Config{
		APIURLs: o.APIURLs, NodeURLs: o.NodeURLs, AgentURLs: o.AgentURLs, VMs: o.VMs, Concurrency: o.Concurrency,
		SubmitAll: o.SubmitAll, Ops: o.Ops, Wait: o.Wait,
	}}
	defer r.close()
	if err := r.connect(ctx); err != nil {
		return nil, err
	}
	// The nodes' /admin endpoints on their API listeners need an admin
	// session: the bench account's (sessions are the cluster's, valid on
	// every node).
	r.admin.Transport = withSession{session: r.clients[0].Session()}
	var err error
	if r.cloud, r.stopBackup, err = prepareCloud(ctx, r.setup, o.Setup, o.AgentURLs, o.LocalStorageURL); err != nil {
		return nil, err
	}
	r.vms = make([]vmState, o.VMs)
	before := snapshot(ctx, r.admin, o.NodeURLs)
	for _, op := range o.Ops {
		if ctx.Err() != nil {
			r.problem(fmt.Sprintf("%s not run: %v", op, ctx.Err()))
			break
		}
		before = r.phase(ctx, op, before)
	}
	r.end(ctx, before)
	r.rep.Finished = time.Now()
	r.rep.Goals = EvaluateGoals(r.rep)
	return r.rep, nil
}

// connect starts the webhook receiver and logs in at every API URL.
func (r *runner) connect(ctx context.Context) error {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = r.o.Concurrency + 16
	var rt http.RoundTripper = tr
	if r.o.Wait == WaitWebhook {
		ln, err := net.Listen("tcp", r.o.WebhookListen)
		if err != nil {
			return fmt.Errorf("webhook receiver: listen on %s: %w (set --webhook-listen to a free address the nodes can reach)", r.o.WebhookListen, err)
		}
		addr := ln.Addr().(*net.TCPAddr)
		host := addr.IP.String()
		if addr.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
		mux := http.NewServeMux()
		mux.Handle("/hook", r.hooks)
		r.hookSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		r.hookDone = make(chan error, 1)
		go func() { r.hookDone <- r.hookSrv.Serve(ln) }()
		rt = webhookHeader{base: tr, url: "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port)) + "/hook"}
	}
	hc := &http.Client{Transport: rt, Timeout: time.Minute}
	// --wait poll: short polls for a few jobs in flight; longer ones when
	// every job of a phase waits at once.
	pollMin, pollMax := 10*time.Millisecond, 200*time.Millisecond
	if r.o.SubmitAll {
		pollMin, pollMax = 50*time.Millisecond, 2*time.Second
	}
	for _, u := range r.o.APIURLs {
		c, err := client.New(u, client.WithHTTPClient(hc), client.WithPollInterval(pollMin, pollMax))
		if err != nil {
			return err
		}
		if _, err := c.Login(ctx, r.o.Account, r.o.Password); err != nil {
			return fmt.Errorf("log in at %s as %s: %w", u, r.o.Account, err)
		}
		r.clients = append(r.clients, c)
	}
	var err error
	r.setup, err = client.New(r.o.APIURLs[0], client.WithHTTPClient(&http.Client{Transport: tr, Timeout: time.Minute}),
		client.WithSession(r.clients[0].Session()), client.WithPollInterval(10*time.Millisecond, 200*time.Millisecond))
	return err
}

func (r *runner) close() {
	if r.stopBackup != nil {
		r.stopBackup()
		r.stopBackup = nil
	}
	if r.hookSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = r.hookSrv.Shutdown(sctx)
		cancel()
		<-r.hookDone
		r.hookSrv = nil
	}
	for _, c := range r.clients {
		c.Close()
	}
	if r.setup != nil {
		r.setup.Close()
	}
}

// targets are the VMs an operation applies to: all for create, those
// whose every operation succeeded for stop and start, every created one
// for destroy (to clean up).
func (r *runner) targets(op string) []opRecord {
	var recs []opRecord
	for i, v := range r.vms {
		switch {
		case op == OpCreate,
			op == OpDestroy && v.uuid != "",
			v.ok && v.uuid != "":
			recs = append(recs, opRecord{vm: i, vmUUID: v.uuid})
		}
	}
	return recs
}

// phase runs op on its targets and returns the node snapshot it ended with.
func (r *runner) phase(ctx context.Context, op string, before []nodeSnap) []nodeSnap {
	recs := r.targets(op)
	prog := startProgress(r.o.Progress, r.o.ProgressTTY, op, len(recs), r.o.SubmitAll)
	var profWG sync.WaitGroup
	if op == OpCreate && r.o.ProfileSeconds > 0 {
		for _, node := range r.o.NodeURLs {
			file := profileFile(r.o.ProfileDir, r.o.Label, node, op)
			profWG.Add(1)
			go func() {
				defer profWG.Done()
				if err := profile(ctx, node, r.clients[0].Session(), r.o.ProfileSeconds, file); err != nil {
					r.problem(fmt.Sprintf("CPU profile of %s: %v", node, err))
					return
				}
				r.mu.Lock()
				r.rep.Profiles = append(r.rep.Profiles, file)
				r.mu.Unlock()
			}()
		}
	}

	start := time.Now()
	sweepCtx, stopSweep := context.WithCancel(ctx)
	var sweepWG sync.WaitGroup
	if r.o.Wait == WaitWebhook {
		sweepWG.Add(1)
		go func() {
			defer sweepWG.Done()
			r.sweepStalls(sweepCtx, start)
		}()
	}
	if r.o.SubmitAll {
		r.submitAll(ctx, op, recs, prog)
	} else {
		r.closedLoop(ctx, op, recs, prog)
	}
	stopSweep()
	sweepWG.Wait()
	after := snapshot(ctx, r.admin, r.o.NodeURLs)
	prog.end()
	profWG.Wait()

	ph := jobFigures(op, recs, start)
	if len(r.o.AgentURLs) > 0 {
		al, problems := agentLatency(ctx, r.admin, r.o.AgentURLs, agentPath[op], recs)
		ph.Agent = al
		for _, p := range problems {
			r.problem(p)
		}
	}
	ph.Nodes, ph.CPUSeconds = nodeDeltas(r.o.NodeURLs, before, after)
	ph.CPUSeconds = round3(ph.CPUSeconds)
	if len(recs) > 0 {
		ph.CPUMsPerVM = round3(1000 * ph.CPUSeconds / float64(len(recs)))
	}
	r.rep.Phases = append(r.rep.Phases, ph)

	for _, rec := range recs {
		v := &r.vms[rec.vm]
		switch {
		case op == OpCreate:
			v.uuid, v.ok = rec.vmUUID, rec.err == nil
		case op == OpDestroy && rec.err == nil:
			v.uuid, v.ok = "", false
		default:
			v.ok = v.ok && rec.err == nil
		}
	}
	return after
}

// closedLoop keeps Concurrency jobs in flight: each worker calls, waits
// for the result, and takes the next VM.
func (r *runner) closedLoop(ctx context.Context, op string, recs []opRecord, prog *progress) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(r.o.Concurrency, len(recs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(recs) {
					return
				}
				r.call(ctx, op, &recs[i])
				r.wait(ctx, op, &recs[i])
				prog.finished(recs[i].err)
			}
		}()
	}
	wg.Wait()
}

// submitAll sends every call (Concurrency at a time) without waiting for
// the jobs; each job is waited for by a goroutine of its own.
func (r *runner) submitAll(ctx context.Context, op string, recs []opRecord, prog *progress) {
	var next atomic.Int64
	var callers, waiters sync.WaitGroup
	for range min(r.o.Concurrency, len(recs)) {
		callers.Add(1)
		go func() {
			defer callers.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(recs) {
					return
				}
				rec := &recs[i]
				r.call(ctx, op, rec)
				prog.submitted.Add(1)
				waiters.Add(1)
				go func() {
					defer waiters.Done()
					r.wait(ctx, op, rec)
					prog.finished(rec.err)
				}()
			}
		}()
	}
	callers.Wait()
	waiters.Wait()
}

// call starts rec's job.
func (r *runner) call(ctx context.Context, op string, rec *opRecord) {
	c := r.clients[rec.vm%len(r.clients)]
	rec.jobUUID = client.NewJobUUID()
	if r.o.Wait == WaitWebhook {
		rec.ch = r.hooks.register(rec.jobUUID)
	}
	id := client.JobUUID(rec.jobUUID)
	rec.start = time.Now()
	var j *client.Job
	var err error
	switch op {
	case OpCreate:
		j, err = c.Create(ctx, "vm-instances", map[string]any{"name": fmt.Sprintf("bench-%d", rec.vm),
			"instanceOfferingUuid": r.cloud.offering, "imageUuid": r.cloud.image, "l3NetworkUuids": []string{r.cloud.l3}}, id)
	case OpStop:
		j, err = c.Action(ctx, "vm-instances", rec.vmUUID, "stopVmInstance", nil, id)
	case OpStart:
		j, err = c.Action(ctx, "vm-instances", rec.vmUUID, "startVmInstance", nil, id)
	case OpDestroy:
		j, err = c.Delete(ctx, "vm-instances", rec.vmUUID, "", id)
	default:
		err = fmt.Errorf("unknown operation %q", op)
	}
	rec.accepted = time.Now()
	if err != nil {
		r.hooks.forget(rec.jobUUID)
		rec.finish(rec.accepted, nil, err, op)
		return
	}
	rec.job = j
	if j.Done() { // a synchronous answer: the result came with it
		r.hooks.forget(rec.jobUUID)
		_, _, inv, jerr := j.Poll(ctx)
		rec.finish(rec.accepted, inv, jerr, op)
		return
	}
	if r.o.Wait == WaitWebhook {
		r.hooks.attach(rec.jobUUID, j)
	}
}

// wait waits for rec's job to end (or ctx).
func (r *runner) wait(ctx context.Context, op string, rec *opRecord) {
	if rec.end {
		return
	}
	if r.o.Wait == WaitWebhook {
		select {
		case res := <-rec.ch:
			rec.finish(res.at, res.inventory, res.err, op)
		case <-ctx.Done():
			r.hooks.forget(rec.jobUUID)
			rec.finish(time.Now(), nil, fmt.Errorf("job %s: no result before the run's deadline: %w", rec.jobUUID, context.Cause(ctx)), op)
		}
		return
	}
	inv, err := rec.job.Wait(ctx, nil)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = fmt.Errorf("job %s: no result before the run's deadline: %w", rec.jobUUID, err)
	}
	rec.finish(time.Now(), inv, err, op)
}

// sweepStalls polls the outstanding jobs when no result came for a while.
func (r *runner) sweepStalls(ctx context.Context, since time.Time) {
	t := time.NewTicker(stallCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		last := time.Unix(0, r.hooks.last.Load())
		if last.Before(since) {
			last = since
		}
		if time.Since(last) < stallAfter {
			continue
		}
		if n := r.hooks.sweep(ctx, r.o.Concurrency); n > 0 {
			r.problem(fmt.Sprintf("%d job results came by polling, not by webhook", n))
		}
		since = time.Now() // the next sweep at the earliest stallAfter later
	}
}

// end reads every node and agent once more.
func (r *runner) end(ctx context.Context, last []nodeSnap) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	final := snapshot(ctx, r.admin, r.o.NodeURLs)
	for i, url := range r.o.NodeURLs {
		ne := NodeEnd{URL: url}
		s := final[i]
		if s.err != nil {
			s = last[i] // the phase's last reading, if that one worked
		}
		if s.err != nil {
			ne.Err = s.err.Error()
		} else {
			ne.MaxRSSBytes, ne.RSSBytes, ne.HeapBytes, ne.Goroutines = s.proc.MaxRSSBytes, s.proc.RSSBytes, s.proc.HeapBytes, s.proc.Goroutines
			ne.CPUSeconds = round3(s.proc.CPUSeconds)
		}
		r.rep.Nodes = append(r.rep.Nodes, ne)
	}
	r.rep.Agents = agentEnds(ctx, r.admin, r.o.AgentURLs)
	if n := r.hooks.unknown.Load(); n > 0 {
		r.problem(fmt.Sprintf("%d webhooks for jobs nobody waited for (duplicate deliveries)", n))
	}
}

// problem records a measurement that could not be made; safe from any
// goroutine of the run.
func (r *runner) problem(p string) {
	r.mu.Lock()
	r.rep.Problems = append(r.rep.Problems, p)
	r.mu.Unlock()
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
