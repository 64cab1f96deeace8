package resource

import (
	"context"
	"net/http"

	"gorm.io/gorm"

	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/managementnode"
	"mplane/uid"
)

// Call is a call of a simple kind of model VO on a path of its own (see
// Spec.Calls): a further create (NewCreate) or an operation on one
// resource the path names (NewCall).
type Call[VO any] interface {
	bindCall(k kindCore[VO]) boundAction
}

// CreateSpec declares a further create of a kind: its own path and params,
// as ZStack's CreateL2VlanNetwork (POST /l2-networks/vlan) is beside
// CreateL2NoVlanNetwork. Noun, Path and Create are required.
type CreateSpec[VO any, P any] struct {
	// Noun names the message: resource.Create<Noun>.
	Noun string
	// Path is the POST path ("l2-networks/vlan"), whose body is
	// {"params": P}.
	Path string
	// Check verifies what the params reference, at the edge and again on
	// the owner (see Spec.Check); it may complete the params (a zone taken
	// from a parent).
	Check func(ctx context.Context, db *gorm.DB, p *P) error
	// Create writes the new resource; it must answer a redelivered create
	// with the existing row (the owner answers one whose row exists
	// without calling it).
	Create func(ctx context.Context, db *gorm.DB, uuid string, p P) (VO, error)
}

// CreateOf is a further create, made by NewCreate; its message is a field
// so callers reach it by name.
type CreateOf[VO any, P any] struct {
	spec CreateSpec[VO, P]
	Msg  managementnode.OwnedMsg[CreateReq[P], VO]
}

// NewCreate declares a further create. A spec missing what it needs is a
// programming error: NewCreate panics.
func NewCreate[VO any, P any](spec CreateSpec[VO, P]) *CreateOf[VO, P] {
	if spec.Noun == "" || spec.Path == "" || spec.Create == nil {
		panic("resource.NewCreate: Noun, Path and Create are required")
	}
	return &CreateOf[VO, P]{spec: spec, Msg: managementnode.NewOwnedMsg[CreateReq[P], VO](BusService, BusService+".Create"+spec.Noun)}
}

func (c *CreateOf[VO, P]) bindCall(k kindCore[VO]) boundAction {
	op := route.Call(http.MethodPost, c.spec.Path, c.Msg, func(ctx context.Context, in route.In[P]) (CreateReq[P], error) {
		if c.spec.Check != nil {
			if err := c.spec.Check(ctx, in.DB, &in.Params); err != nil {
				return CreateReq[P]{}, err
			}
		}
		return CreateReq[P]{UUID: uid.New(), Params: in.Params}, nil
	}).Creating()
	register := func(mux *cloudbus.Mux, s *Service) {
		managementnode.Handle(mux, c.Msg, func(ctx context.Context, req CreateReq[P]) (VO, error) {
			return inChain(ctx, s, k.chain(req.UUID), "create", func(ctx context.Context) (VO, error) {
				return createWith(ctx, s.opts.DB.WithContext(ctx), k.what, req, c.spec.Check, c.spec.Create)
			})
		})
	}
	return boundAction{op: op, register: register}
}

// CallSpec declares an operation on one resource of a kind, on a path of
// its own that names it, as ZStack's attach and detach are: POST or
// DELETE /l2-networks/{l2NetworkUuid}/clusters/{clusterUuid}. The path's
// variables fill the string fields of P with their JSON names (see
// route.Call). Name, Method, Path, Target and Apply are required.
type CallSpec[VO any, P any] struct {
	// Name is ZStack's name of the call ("AttachL2NetworkToCluster"): the
	// message is resource.<Name>.
	Name string
	// Method is POST, PUT or DELETE.
	Method, Path string
	// Target is the UUID of the resource operated on, from the params (a
	// path variable): it must exist (ResourceNotFound, a 404, otherwise).
	Target func(*P) string
	// Check, if set, verifies the rest of the params at the edge, once the
	// target is found; Apply checks again what may have changed.
	Check func(ctx context.Context, db *gorm.DB, row *VO, p *P) error
	// Apply runs on the target's owner, in its chain, in one transaction
	// with the target's row loaded: it makes the change with tx. The job
	// answers the row read again afterwards.
	Apply func(ctx context.Context, tx *gorm.DB, row *VO, p P) error
}

// CallOf is an operation made by NewCall; its message is a field so
// callers reach it by name.
type CallOf[VO any, P any] struct {
	spec CallSpec[VO, P]
	Msg  managementnode.OwnedMsg[ActionReq[P], VO]
}

// NewCall declares an operation on a path of its own. A spec missing what
// it needs is a programming error: NewCall panics (route.Call too, on a
// path variable that names no field of P).
func NewCall[VO any, P any](spec CallSpec[VO, P]) *CallOf[VO, P] {
	if spec.Name == "" || spec.Method == "" || spec.Path == "" || spec.Target == nil || spec.Apply == nil {
		panic("resource.NewCall: Name, Method, Path, Target and Apply are required")
	}
	return &CallOf[VO, P]{spec: spec, Msg: managementnode.NewOwnedMsg[ActionReq[P], VO](BusService, BusService+"."+spec.Name)}
}

func (c *CallOf[VO, P]) bindCall(k kindCore[VO]) boundAction {
	op := route.Call(c.spec.Method, c.spec.Path, c.Msg, func(ctx context.Context, in route.In[P]) (ActionReq[P], error) {
		target := c.spec.Target(&in.Params)
		row, err := Load[VO](ctx, in.DB, k.what, target)
		if err != nil {
			return ActionReq[P]{}, err
		}
		if c.spec.Check != nil {
			if err := c.spec.Check(ctx, in.DB, row, &in.Params); err != nil {
				return ActionReq[P]{}, err
			}
		}
		return ActionReq[P]{UUID: target, Params: in.Params}, nil
	})
	register := func(mux *cloudbus.Mux, s *Service) {
		managementnode.Handle(mux, c.Msg, func(ctx context.Context, req ActionReq[P]) (VO, error) {
			return onRow(ctx, s, k, req.UUID, c.spec.Name, func(ctx context.Context, tx *gorm.DB, row *VO) (*VO, error) {
				if err := c.spec.Apply(ctx, tx, row, req.Params); err != nil {
					return nil, err
				}
				return Load[VO](ctx, tx, k.what, req.UUID)
			})
		})
	}
	return boundAction{op: op, register: register}
}
