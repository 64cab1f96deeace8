package portal

import (
	"mplane/api/route"
)

// Endpoint is one route the portal serves, as a reader of the API sees it.
type Endpoint struct {
	Method string
	// Path is under /v1 (and /zstack/v1).
	Path string
	// Action is the action's name, for PUT .../actions.
	Action string
	// Call is the message the call becomes (the job's API name); empty for
	// queries.
	Call string
	// Params are the body's (or, for a delete, the query's) fields.
	Params []string
	// Resource is the declared resource's path.
	Resource string
	// Access is who may use it (route.Resource.Access).
	Access route.Access
}

// Endpoints lists every route of the declared resources, in declaration
// order: the source of docs/api.md and, later, of the OpenAPI document.
func (p *Portal) Endpoints() []Endpoint {
	var out []Endpoint
	for _, res := range p.opts.Resources {
		out = append(out, endpointsOf(res)...)
	}
	return out
}

func endpointsOf(res route.Resource) []Endpoint {
	var out []Endpoint
	add := func(method, path, action string, op *route.Op) {
		e := Endpoint{Method: method, Path: "/" + path, Action: action, Resource: res.Path, Access: res.Access}
		if op != nil {
			e.Call, e.Params = op.Name(), op.Params()
		}
		out = append(out, e)
	}
	if res.Create != nil {
		add("POST", res.CreatePath(), "", res.Create)
	}
	if res.Query.Declared() {
		add("GET", res.Path, "", nil)
		add("GET", res.Path+"/{uuid}", "", nil)
	}
	for i := range res.Actions {
		add("PUT", res.Path+"/{uuid}/actions", res.Actions[i].ActionName(), &res.Actions[i])
	}
	if res.Delete != nil {
		add("DELETE", res.Path+"/{uuid}", "", res.Delete)
	}
	for i := range res.Calls {
		add(res.Calls[i].Method(), res.Calls[i].Path(), "", &res.Calls[i])
	}
	return out
}
