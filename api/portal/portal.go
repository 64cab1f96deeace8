package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"mplane/api/jobs"
	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/errcode"
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
	cancel     context.CancelFunc
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
	p := &Portal{opts: opts, log: opts.Logger.With("component", "portal"), db: opts.DB, bus: opts.Bus, node: opts.Node,
		jobs: opts.Jobs, ops: map[string]route.Op{}}
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
		}
	}
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

// Start consumes the shared api.portal queue and sweeps stale jobs.
func (p *Portal) Start(ctx context.Context) error {
	mux := cloudbus.NewMux()
	cloudbus.Handle(mux, msgSubmit, p.drive)
	if err := p.bus.ServeShared(SharedQueue, mux); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	return p.opts.Scheduler.Every(sctx, time.Minute, 0.2, "api-job-sweeper", p.sweep)
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

// Stop ends the job sweeper. Idempotent.
func (p *Portal) Stop(context.Context) error {
	if p.cancel != nil {
		p.cancel()
	}
	return nil
}

// drive calls the owner through the typed call and records the outcome in
// the job.
func (p *Portal) drive(ctx context.Context, sub submission) (cloudbus.Empty, error) {
	var result any
	op, ok := p.ops[sub.Op]
	var err error = errcode.New(errcode.UnknownMessage, "no API call %s on this node (mixed versions?)", sub.Op)
	if ok {
		result, err = op.Drive(ctx, p.node, sub.Body)
	}
	// Record with a context of its own: the call may have used up ctx.
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var job jobs.Job
	if err != nil {
		job, err = p.jobs.Fail(rctx, sub.JobUUID, errcode.From(err))
	} else {
		job, err = p.jobs.Succeed(rctx, sub.JobUUID, result)
	}
	switch {
	case errcode.Has(err, errcode.InvalidState):
		return cloudbus.Empty{}, nil // finished already: a redelivered call
	case err != nil:
		p.log.Error("record job outcome", "job_uuid", sub.JobUUID, "err", err)
		return cloudbus.Empty{}, nil
	}
	if job.WebhookURL != "" {
		wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.webhook.Deliver(wctx, job); err != nil {
			p.log.Warn("webhook delivery failed", "job_uuid", job.UUID, "err", err)
		}
	}
	return cloudbus.Empty{}, nil
}
