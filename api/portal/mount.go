package portal

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"mplane/api/jobs"
	"mplane/api/query"
	"mplane/api/rest"
	"mplane/api/route"
	"mplane/api/tenancy"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/uid"
)

// Register mounts GET /api-jobs/{uuid} and every declared resource's routes
// on mux (under /v1 and /zstack/v1). Authentication is the caller's
// middleware.
func (p *Portal) Register(mux *http.ServeMux) {
	rest.Handle(mux, "GET /api-jobs/{uuid}", p.jobs.Handler(jobs.HandlerOptions{}))
	for _, res := range p.opts.Resources {
		p.mount(mux, res)
	}
}

func (p *Portal) mount(mux *http.ServeMux, res route.Resource) {
	if res.Query.Declared() {
		q := res.Query
		rest.HandleFunc(mux, "GET /"+res.Path, func(w http.ResponseWriter, r *http.Request) { p.query(w, r, res, q, "") })
		rest.HandleFunc(mux, "GET /"+res.Path+"/{uuid}", func(w http.ResponseWriter, r *http.Request) {
			if err := rest.CheckUUID("the uuid in the path", r.PathValue("uuid")); err != nil {
				rest.WriteError(w, err)
				return
			}
			p.query(w, r, res, q, r.PathValue("uuid"))
		})
	}
	if res.Create != nil {
		op := *res.Create
		rest.HandleFunc(mux, "POST /"+res.CreatePath(), func(w http.ResponseWriter, r *http.Request) {
			p.accept(w, r, res, op, uid.New(), r.PathValue("uuid"), nil)
		})
	}
	if len(res.Actions) > 0 {
		byName := make(map[string]route.Op, len(res.Actions))
		for _, a := range res.Actions {
			byName[a.ActionName()] = a
		}
		names := res.ActionNames()
		rest.HandleFunc(mux, "PUT /"+res.Path+"/{uuid}/actions", func(w http.ResponseWriter, r *http.Request) {
			uuid := r.PathValue("uuid")
			if err := p.onPath(r, res, res.Actions[0], uuid, true); err != nil {
				rest.WriteError(w, err)
				return
			}
			a, err := rest.DecodeAction(r, names...)
			if err != nil {
				rest.WriteError(w, err)
				return
			}
			p.accept(w, r, res, byName[a.Name], uuid, "", &a)
		})
	}
	if res.Delete != nil {
		op := *res.Delete
		rest.HandleFunc(mux, "DELETE /"+res.Path+"/{uuid}", func(w http.ResponseWriter, r *http.Request) {
			uuid := r.PathValue("uuid")
			if err := p.onPath(r, res, op, uuid, op.MustExist()); err != nil {
				rest.WriteError(w, err)
				return
			}
			p.accept(w, r, res, op, uuid, "", nil)
		})
	}
	for _, op := range res.Calls {
		rest.HandleFunc(mux, op.Method()+" /"+op.Path(), func(w http.ResponseWriter, r *http.Request) {
			p.accept(w, r, res, op, "", "", nil)
		})
	}
}

// onPath checks, before the body is read, an action or a delete of the
// path's resource uuid: the caller may change such resources, the
// resource exists (always for a normal account, whose delete of what it
// cannot see is not found whether it exists or not; for an admin when
// mustExist) and the caller owns it.
func (p *Portal) onPath(r *http.Request, res route.Resource, op route.Op, uuid string, mustExist bool) error {
	if err := rest.CheckUUID("the uuid in the path", uuid); err != nil {
		return err // a malformed one is the caller's mistake, not a resource deleted already
	}
	id, err := caller(r)
	if err == nil {
		err = mayChange(id, res, op)
	}
	if err == nil && (mustExist || !id.Admin) {
		err = res.Query.Exists(scope(r.Context(), id), p.db, res.Name, uuid)
	}
	if err == nil {
		err = p.mayAct(r.Context(), id, res, uuid)
	}
	return err
}

// accept validates a call and submits it: the job row, then the message to
// api.portal, then 202 with the job's location. The call's Build reads in
// the caller's scope; a normal account may change only what it owns, and
// what it creates is recorded as its own first (tenancy.go). A retried
// request (same X-Job-UUID, same request) gets the existing job and starts
// nothing, unless the job's work never started or its runner is gone (it
// is sent again), or the job failed with a retryable error, which says
// nothing of it remains (it is run again: retrying is what the error asks
// for).
func (p *Portal) accept(w http.ResponseWriter, r *http.Request, res route.Resource, op route.Op, uuid, parent string, action *rest.Action) {
	id, err := caller(r)
	if err == nil {
		err = mayChange(id, res, op)
	}
	if err == nil && !id.Admin {
		var wait time.Duration
		if wait, err = p.limit.allow(id.AccountUUID); err != nil {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		}
	}
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	digest := digesting(r)
	body, resource, err := op.Accept(scope(r.Context(), id), r, p.db, uuid, parent, action)
	if err == nil {
		switch {
		case op.Creates() && id.Admin:
			// An admin's resource needs no record: admins see every row,
			// and a row without one is seen by no normal account (until an
			// admin shares it). One statement less per create.
		case op.Creates():
			err = tenancy.Claim(r.Context(), p.db, p.tableOf(res), resource, id.AccountUUID)
		case resource != uuid: // an action's or a delete's own was checked before the body was read
			err = p.mayAct(r.Context(), id, res, resource)
		}
	}
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	nj := jobs.FromRequest(r, op.Name(), resource)
	nj.Op, nj.Body, nj.Digest = op.Key(), string(body), digestOf(digest)
	if err := p.checkWebhook(nj.WebhookURL); err != nil {
		rest.WriteError(w, err)
		return
	}
	job, created, err := p.jobs.Create(r.Context(), nj)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	switch {
	case created:
		if err := p.reserve(r.Context(), id, op, job); err != nil {
			// Refused before any work: the job ends with the refusal, so a
			// retry of the request finds it.
			if _, ferr := p.jobs.FailUnstarted(r.Context(), job.UUID, errcode.From(err)); ferr != nil {
				p.log.Warn("record a refused API job", "job_uuid", job.UUID, "err", ferr)
			}
			rest.WriteError(w, err)
			return
		}
		ctx := cloudbus.WithMeta(r.Context(), cloudbus.Meta{APIID: job.UUID})
		sub := submission{JobUUID: job.UUID, Op: op.Key(), Body: body}
		if err := cloudbus.Send(ctx, p.bus, p.bus.SharedTarget(SharedQueue), msgSubmit, sub, cloudbus.WithTimeout(p.JobTimeout())); err != nil {
			// The job is recorded: drive it from here instead.
			p.log.Warn("hand an API call to api.portal: driving it on this node", "job_uuid", job.UUID, "err", err)
			p.redrive(r.Context(), job)
		}
	case jobs.Rerunnable(job):
		if err := p.reserve(r.Context(), id, op, job); err != nil {
			rest.WriteError(w, err)
			return
		}
		if again, ok, err := p.jobs.Reopen(r.Context(), job); err != nil {
			rest.WriteError(w, err)
			return
		} else if ok {
			p.log.Info("running an API job again: the same request came after a retryable failure", "job_uuid", job.UUID,
				"api", job.APIName, "resource_uuid", job.ResourceUUID, "code", job.Err().Code)
			job = again
			p.redrive(r.Context(), job)
		}
	case !job.Finished() && job.Op != "":
		// A retry of a job still processing: send its work again if it has
		// not started or its runner is gone (the owner runs it once).
		if job.RunNode == "" {
			p.redrive(r.Context(), job)
		} else if alive, err := p.node.Alive(r.Context(), job.RunNode); err == nil && !alive {
			p.redrive(r.Context(), job)
		}
	}
	jobs.Accepted(w, r, "", job)
}

// query serves GET /<path> and GET /<path>/{uuid} from this node's database.
func (p *Portal) query(w http.ResponseWriter, r *http.Request, res route.Resource, q route.Query, uuid string) {
	id, err := caller(r)
	if err == nil {
		err = mayRead(id, res)
	}
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	pq, err := query.ParseRaw(q.Schema(), r.URL.RawQuery)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rows, total, n, err := q.Find(scope(r.Context(), id), p.db, pq, uuid)
	if err != nil {
		rest.WriteError(w, errcode.Wrap(errcode.Internal, err, "query %s", res.Path))
		return
	}
	if uuid != "" && n == 0 && !pq.Count {
		rest.WriteError(w, errcode.New(errcode.ResourceNotFound, "%s %s not found", res.Path, uuid))
		return
	}
	rep, err := pq.Reply(rows, total)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rest.WriteJSON(w, http.StatusOK, rep)
}

// tableOf is the table of res's rows (its path if it has no query).
func (p *Portal) tableOf(res route.Resource) string {
	if t, ok := p.tables[res.Path]; ok {
		return t
	}
	return res.Path
}
