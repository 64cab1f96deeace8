package portal

import (
	"net/http"

	"mplane/api/jobs"
	"mplane/api/query"
	"mplane/api/rest"
	"mplane/api/route"
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
		rest.HandleFunc(mux, "GET /"+res.Path+"/{uuid}", func(w http.ResponseWriter, r *http.Request) { p.query(w, r, res, q, r.PathValue("uuid")) })
	}
	if res.Create != nil {
		op := *res.Create
		rest.HandleFunc(mux, "POST /"+res.CreatePath(), func(w http.ResponseWriter, r *http.Request) {
			p.accept(w, r, op, uid.New(), r.PathValue("uuid"), nil)
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
			if err := res.Query.Exists(r.Context(), p.db, res.Name, uuid); err != nil {
				rest.WriteError(w, err)
				return
			}
			a, err := rest.DecodeAction(r, names...)
			if err != nil {
				rest.WriteError(w, err)
				return
			}
			p.accept(w, r, byName[a.Name], uuid, "", &a)
		})
	}
	if res.Delete != nil {
		op := *res.Delete
		rest.HandleFunc(mux, "DELETE /"+res.Path+"/{uuid}", func(w http.ResponseWriter, r *http.Request) {
			uuid := r.PathValue("uuid")
			if op.MustExist() {
				if err := res.Query.Exists(r.Context(), p.db, res.Name, uuid); err != nil {
					rest.WriteError(w, err)
					return
				}
			}
			p.accept(w, r, op, uuid, "", nil)
		})
	}
	for _, op := range res.Calls {
		rest.HandleFunc(mux, op.Method()+" /"+op.Path(), func(w http.ResponseWriter, r *http.Request) {
			p.accept(w, r, op, "", "", nil)
		})
	}
}

// accept validates a call and submits it: the job row, then the message to
// api.portal, then 202 with the job's location. A retried request (same
// X-Job-UUID) gets the existing job and starts nothing, unless the job's
// work never started or its runner is gone (it is sent again), or the job
// failed with a retryable error, which says nothing of it remains (it is
// run again: retrying is what the error asks for).
func (p *Portal) accept(w http.ResponseWriter, r *http.Request, op route.Op, uuid, parent string, action *rest.Action) {
	body, resource, err := op.Accept(r.Context(), r, p.db, uuid, parent, action)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	nj := jobs.FromRequest(r, op.Name(), resource)
	nj.Op, nj.Body = op.Key(), string(body)
	job, created, err := p.jobs.Create(r.Context(), nj)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	switch {
	case created:
		ctx := cloudbus.WithMeta(r.Context(), cloudbus.Meta{APIID: job.UUID})
		sub := submission{JobUUID: job.UUID, Op: op.Key(), Body: body}
		if err := cloudbus.Send(ctx, p.bus, p.bus.SharedTarget(SharedQueue), msgSubmit, sub, cloudbus.WithTimeout(p.JobTimeout())); err != nil {
			// The job is recorded: drive it from here instead.
			p.log.Warn("hand an API call to api.portal: driving it on this node", "job_uuid", job.UUID, "err", err)
			p.redrive(r.Context(), job)
		}
	case jobs.Rerunnable(job):
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
	pq, err := query.Parse(q.Schema(), r.URL.Query())
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rows, total, n, err := q.Find(r.Context(), p.db, pq, uuid)
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
