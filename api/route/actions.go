package route

import (
	"context"
	"encoding/json"
	"reflect"

	"mplane/api/rest"
	"mplane/errcode"
	"mplane/managementnode"
)

// actionSet is the op of CallActions: one PUT path whose body picks one of
// several actions, each a typed action op that takes the path's variables.
type actionSet struct {
	names []string // in declaration order
	ops   map[string]op
	vars  map[string]bool // the path's variables
}

// chosen is what an actionSet carries to the driving node: the action the
// body named and that action's request.
type chosen struct {
	Action string          `json:"action"`
	Body   json.RawMessage `json:"body"`
}

func (s *actionSet) name() string { return s.ops[s.names[0]].name() }

// params is unused: Op.Params asks paramNames.
func (s *actionSet) params() reflect.Type { return reflect.TypeFor[struct{}]() }

func (s *actionSet) paramNames() []string {
	var out []string
	for _, a := range s.names {
		var fields []string
		var all []string
		collectJSON(s.ops[a].params(), &all)
		for _, f := range all {
			if !s.vars[f] {
				fields = append(fields, f)
			}
		}
		if len(fields) == 0 {
			out = append(out, a)
		}
		for _, f := range fields {
			out = append(out, a+"."+f)
		}
	}
	return out
}

func (s *actionSet) accept(ctx context.Context, src source) (json.RawMessage, string, error) {
	a, err := rest.DecodeAction(src.r, s.names...)
	if err != nil {
		return nil, "", err
	}
	src.action = &a
	body, resource, err := s.ops[a.Name].accept(ctx, src)
	if err != nil {
		return nil, "", err
	}
	wrapped, err := json.Marshal(chosen{Action: a.Name, Body: body})
	if err != nil {
		return nil, "", errcode.Wrap(errcode.Internal, err, "encode %s", a.Name)
	}
	return wrapped, resource, nil
}

func (s *actionSet) drive(ctx context.Context, n *managementnode.Node, body json.RawMessage) (any, error) {
	var c chosen
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, errcode.Wrap(errcode.MalformedMessage, err, "decode %s", s.name())
	}
	o, ok := s.ops[c.Action]
	if !ok {
		return nil, errcode.New(errcode.UnknownMessage, "no action %q of %s on this node (mixed versions?)", c.Action, s.name())
	}
	return o.drive(ctx, n, c.Body)
}

func (s *actionSet) request(body json.RawMessage) (any, error) {
	var c chosen
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, errcode.Wrap(errcode.MalformedMessage, err, "decode %s", s.name())
	}
	o, ok := s.ops[c.Action]
	if !ok {
		return nil, errcode.New(errcode.UnknownMessage, "no action %q of %s on this node (mixed versions?)", c.Action, s.name())
	}
	return o.request(c.Body)
}

func (s *actionSet) outcome(msg string, body, reply json.RawMessage) (any, bool, error) {
	var c chosen
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, false, errcode.Wrap(errcode.MalformedMessage, err, "decode %s", s.name())
	}
	o, ok := s.ops[c.Action]
	if !ok {
		return nil, false, nil
	}
	return o.outcome(msg, c.Body, reply)
}

func (s *actionSet) messages() []string {
	var out []string
	for _, a := range s.names {
		out = append(out, s.ops[a].messages()...)
	}
	return out
}

func (s *actionSet) withoutResult() op {
	c := &actionSet{names: s.names, ops: map[string]op{}, vars: s.vars}
	for name, o := range s.ops {
		c.ops[name] = o.withoutResult()
	}
	return c
}

// atPath is never called: CallActions takes Action ops only.
func (s *actionSet) atPath(string) op { return s }
