package globalconfig

import (
	"context"
	"strings"

	"mplane/api/route"
	"mplane/errcode"
)

// UpdateParams are the params of updateGlobalConfig: the path's category
// and name, and the new value (required; in the form of its type).
type UpdateParams struct {
	Category string  `json:"category"`
	Name     string  `json:"name"`
	Value    *string `json:"value"`
}

// Validate requires a value.
func (p *UpdateParams) Validate() error {
	if p.Value == nil {
		return errcode.New(errcode.InvalidArgument, "value is required: the configuration's new value, such as \"2s\" for a Duration")
	}
	return nil
}

// ResetParams are the params of resetGlobalConfig: only the path's.
type ResetParams struct {
	Category string `json:"category"`
	Name     string `json:"name"`
}

// known finds the configuration of the path: 404 naming the known ones
// otherwise.
func (s *Service) known(category, name string) (config, error) {
	c, ok := s.configs[category+"/"+name]
	if !ok {
		return config{}, errcode.New(errcode.ResourceNotFound, "global configuration %s/%s not found; there are: %s",
			category, name, strings.Join(s.ids(), ", "))
	}
	return c, nil
}

// checked is the request setting c to value, if this node accepts the
// value (400 with its reason otherwise; every node checks it again at
// stage).
func (s *Service) checked(action string, c config, value string) (UpdateReq, error) {
	v, err := s.opts.Check(c.Key, value)
	if err != nil {
		return UpdateReq{}, errcode.New(errcode.InvalidArgument, "%s %s: %v", action, c.ID(), err)
	}
	return UpdateReq{Category: c.Category, Name: c.Name, Value: v}, nil
}

func (s *Service) buildUpdate(_ context.Context, in route.In[UpdateParams]) (UpdateReq, error) {
	c, err := s.known(in.Params.Category, in.Params.Name)
	if err != nil {
		return UpdateReq{}, err
	}
	return s.checked("updateGlobalConfig", c, *in.Params.Value)
}

func (s *Service) buildReset(_ context.Context, in route.In[ResetParams]) (UpdateReq, error) {
	c, err := s.known(in.Params.Category, in.Params.Name)
	if err != nil {
		return UpdateReq{}, err
	}
	return s.checked("resetGlobalConfig", c, c.def)
}

// API is the REST surface, ZStack's: GET /v1/global-configurations, and
// PUT /v1/global-configurations/{category}/{name}/actions with
// {"updateGlobalConfig": {"value": "2s"}} or {"resetGlobalConfig": {}}
// (back to the default); both jobs answer {"inventory": the configuration}.
func (s *Service) API() []route.Resource {
	return []route.Resource{{
		Path:  "global-configurations",
		Name:  "global configuration",
		Query: route.QueryOf[GlobalConfigVO](),
		Calls: []route.Op{
			route.CallActions("global-configurations/{category}/{name}/actions",
				route.Action("updateGlobalConfig", MsgUpdateGlobalConfig, s.buildUpdate),
				route.Action("resetGlobalConfig", MsgUpdateGlobalConfig, s.buildReset),
			),
		},
	}}
}
