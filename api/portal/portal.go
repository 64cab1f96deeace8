package portal

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"gorm.io/gorm"

	"mplane/api/jobs"
	"mplane/api/rest"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/services/vm"
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
	IPAM      vm.IPAM
	Logger    *slog.Logger
	// JobTimeout bounds one API call from submission to result. Default
	// 30m.
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
}

// New builds the portal.
func New(opts Options) (*Portal, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Jobs == nil || opts.IPAM == nil || opts.Scheduler == nil {
		return nil, errors.New("portal: Options.DB, Bus, Node, Scheduler, Jobs and IPAM are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.JobTimeout <= 0 {
		opts.JobTimeout = 30 * time.Minute
	}
	return &Portal{opts: opts, log: opts.Logger.With("component", "portal"), db: opts.DB, bus: opts.Bus, node: opts.Node, jobs: opts.Jobs}, nil
}

// submitReq carries one API call from the node that accepted it to the
// portal node that drives it.
type submitReq struct {
	JobUUID      string          `json:"jobUuid"`
	Service      string          `json:"service"`
	Name         string          `json:"name"`
	ResourceUUID string          `json:"resourceUuid"`
	Body         json.RawMessage `json:"body"`
	// Wrap: "inventory" wraps the result as {"inventory": ...}; "reply"
	// stores the reply as it is (it has that shape already); "" stores {}
	// (deletes).
	Wrap string `json:"wrap,omitempty"`
}

var msgSubmit = cloudbus.NewMsg[submitReq, cloudbus.Empty]("api.Submit")

// Start consumes the shared api.portal queue and sweeps stale jobs.
func (p *Portal) Start(ctx context.Context) error {
	mux := cloudbus.NewMux()
	cloudbus.Handle(mux, msgSubmit, p.drive)
	if err := p.bus.ServeShared(SharedQueue, mux); err != nil {
		return err
	}
	return p.opts.Scheduler.Every(ctx, time.Minute, 0.2, "api-job-sweeper", func(ctx context.Context) error {
		n, err := p.jobs.FailStale(ctx, p.opts.JobTimeout+time.Minute)
		if n > 0 {
			p.log.Warn("failed API jobs left processing by a node that went away", "jobs", n)
		}
		return err
	})
}

// drive calls the owning service and records the outcome in the job.
func (p *Portal) drive(ctx context.Context, req submitReq) (cloudbus.Empty, error) {
	target, err := p.node.TargetFor(req.Service, req.ResourceUUID)
	var rep json.RawMessage
	if err == nil {
		msg := cloudbus.NewMsg[json.RawMessage, json.RawMessage](req.Name)
		rep, err = cloudbus.Call(ctx, p.bus, target, msg, req.Body, cloudbus.WithResource(req.ResourceUUID))
	}
	// Record with a context of its own: the call may have used up ctx.
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var job jobs.Job
	if err != nil {
		job, err = p.jobs.Fail(rctx, req.JobUUID, errcode.From(err))
	} else {
		var result any = struct{}{}
		switch req.Wrap {
		case "inventory":
			result = map[string]json.RawMessage{"inventory": rep}
		case "reply":
			result = rep
		}
		job, err = p.jobs.Succeed(rctx, req.JobUUID, result)
	}
	switch {
	case errcode.Has(err, errcode.InvalidState):
		return cloudbus.Empty{}, nil // finished already: a redelivered call
	case err != nil:
		p.log.Error("record job outcome", "job_uuid", req.JobUUID, "err", err)
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

// submit starts an API call: the job row, then the message to api.portal,
// then 202 with the job's location. A retried request (same X-Job-UUID)
// gets the existing job and starts nothing.
func (p *Portal) submit(w http.ResponseWriter, r *http.Request, apiName string, req submitReq) {
	job, created, err := p.jobs.Create(r.Context(), jobs.FromRequest(r, apiName, req.ResourceUUID))
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	req.JobUUID = job.UUID
	if created {
		ctx := cloudbus.WithMeta(r.Context(), cloudbus.Meta{APIID: job.UUID})
		if err := cloudbus.Send(ctx, p.bus, p.bus.SharedTarget(SharedQueue), msgSubmit, req, cloudbus.WithTimeout(p.opts.JobTimeout)); err != nil {
			_, _ = p.jobs.Fail(context.Background(), job.UUID, errcode.From(err))
		}
	}
	jobs.Accepted(w, r, "", job)
}
