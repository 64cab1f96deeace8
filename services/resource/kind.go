package resource

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/thread"
	"mplane/uid"
)

// BusService is the bus service of the simple kinds: each node consumes
// "resource.<node>", and every kind's messages are handled there.
const BusService = "resource"

// Spec declares a simple kind. Name, Noun, Path and New are required.
type Spec[VO any, P any] struct {
	// Name is the kind's name: chains are "<name>-<uuid>".
	Name string
	// Noun is ZStack's name of the kind in API names: the messages are
	// resource.CreateZone, resource.UpdateZone (action updateZone) and
	// resource.DeleteZone; an action polishToy is resource.PolishToy.
	Noun string
	// Path is the REST path ("zones").
	Path string
	// What is what errors call one ("zone"); default Name.
	What string
	// New makes the row of a new resource from validated params; base has
	// its UUID, dates and, if P embeds Params, its name and description.
	New func(base Base, p P) VO
	// Check verifies what the params reference (a cluster's zone exists).
	// It runs at the edge, and again on the owner before the row is
	// written, since a reference may have gone in between.
	Check func(ctx context.Context, db *gorm.DB, p *P) error
	// Create, if set, writes the new resource instead of inserting New's
	// row; it must answer a redelivered create with the existing row.
	Create func(ctx context.Context, db *gorm.DB, uuid string, p P) (VO, error)
	// CreateAt and Parent put the create under a parent resource:
	// "l3-networks/{uuid}/ip-ranges", and the params field the path's
	// {uuid} fills. CreateAt alone gives the create a path of its own
	// ("l2-networks/no-vlan").
	CreateAt string
	Parent   func(*P) *string
	// CreateNoun, if set, names the create's message instead of Noun:
	// resource.CreateL2NoVlanNetwork for a kind whose Noun is L2Network.
	CreateNoun string
	// CreateAliases are further paths of the create (another spelling of
	// ZStack's path); a parent in one is the {variable} named as the
	// Parent field's JSON name.
	CreateAliases []string
	// Dependents keep a resource from being deleted while they refer to it.
	Dependents []Dependent
	// Delete, if set, deletes instead of RefuseIfUsed(Dependents) and a
	// plain delete of the row; req has the delete mode (Permissive or
	// Enforcing). Deleting a missing resource must succeed.
	Delete func(ctx context.Context, db *gorm.DB, req DeleteReq) error
	// Models are migrated for the kind; default the model VO.
	Models []any
	// Actions are the kind's actions besides update<Noun>.
	Actions []Action[VO]
	// Calls are the kind's calls on paths of their own: further creates
	// with params of their own (NewCreate) and operations on a resource
	// the path names (NewCall), such as ZStack's attach and detach.
	Calls []Call[VO]
	// Query adjusts the kind's query (route.Preload) and its Views'.
	Query []route.QueryOption
	// Views are query-only paths over some of the kind's rows.
	Views []View
	// Access is who may use the kind (route.Resource.Access); its views
	// share it. The zero value is admin only.
	Access route.Access
}

// View is a query-only path over the rows of a kind for which Where (with
// Args, as gorm.DB.Where takes them) holds: GET /<Path> and
// GET /<Path>/{uuid}, as ZStack's /l2-networks/vlan shows its L2
// networks of one type; without Where, all of them (another spelling of
// the kind's path). What is what errors call one.
type View struct {
	Path, What string
	Where      string
	Args       []any
}

// CreateReq creates a resource with the UUID the API layer chose.
type CreateReq[P any] struct {
	UUID   string `json:"uuid"`
	Params P      `json:"params"`
}

// ResourceUUID is the resource being created.
func (r CreateReq[P]) ResourceUUID() string { return r.UUID }

// DeleteReq deletes a resource.
type DeleteReq struct {
	UUID string `json:"uuid"`
	Mode string `json:"mode,omitempty"`
}

// ResourceUUID is the resource being deleted.
func (r DeleteReq) ResourceUUID() string { return r.UUID }

// ActionReq runs an action with its params on a resource.
type ActionReq[AP any] struct {
	UUID   string `json:"uuid"`
	Params AP     `json:"params"`
}

// ResourceUUID is the resource acted on.
func (r ActionReq[AP]) ResourceUUID() string { return r.UUID }

// UpdateParams are the params of update<Noun>: the fields given change.
type UpdateParams struct {
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
}

// Validate checks the new name and description.
func (p *UpdateParams) Validate() error {
	if p.Name != nil {
		if err := ValidateName(*p.Name); err != nil {
			return err
		}
	}
	if p.Description != nil && len(*p.Description) > MaxDescriptionLen {
		return errcode.New(errcode.InvalidArgument, "description must be at most %d characters", MaxDescriptionLen)
	}
	return nil
}

// Params are the create params every resource has; embed them in a kind's
// create params, and NewKind fills the new row's Base from them.
type Params struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// BaseParams returns p: it makes the create params that embed Params name
// the new row.
func (p Params) BaseParams() Params { return p }

// Problems lists what is wrong with the name and description, for a
// Validate to add its own to (see Invalid).
func (p Params) Problems() []string {
	var problems []string
	if msg := nameProblem(p.Name); msg != "" {
		problems = append(problems, msg)
	}
	if len([]rune(p.Description)) > MaxDescriptionLen {
		problems = append(problems, fmt.Sprintf("description must be at most %d characters", MaxDescriptionLen))
	}
	return problems
}

// Invalid is nil without problems, else an InvalidArgument listing them.
func Invalid(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return errcode.New(errcode.InvalidArgument, "%s", strings.Join(problems, "; "))
}

// Limits of the Base columns.
const (
	MaxNameLen        = 255
	MaxDescriptionLen = 2048
)

// ValidateName checks a resource name: not blank, at most MaxNameLen
// characters.
func ValidateName(name string) error {
	if msg := nameProblem(name); msg != "" {
		return errcode.New(errcode.InvalidArgument, "%s", msg)
	}
	return nil
}

func nameProblem(name string) string {
	if len(trimSpace(name)) == 0 {
		return "name is required"
	}
	if len([]rune(name)) > MaxNameLen {
		return fmt.Sprintf("name must be at most %d characters", MaxNameLen)
	}
	return ""
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t' || s[0] == '\n' || s[0] == '\r') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t' || s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// Kind is a simple kind, made by NewKind, served by the resource Service.
type Kind interface {
	kindName() string
	models() []any
	register(mux *cloudbus.Mux, s *Service)
	resources() []route.Resource
}

// KindOf is a simple kind of model VO and create params P: its messages
// are fields, so callers and readers reach them by name.
type KindOf[VO any, P any] struct {
	spec      Spec[VO, P]
	MsgCreate managementnode.OwnedMsg[CreateReq[P], VO]
	MsgUpdate managementnode.OwnedMsg[ActionReq[UpdateParams], VO]
	MsgDelete managementnode.OwnedMsg[DeleteReq, cloudbus.Empty]
	actions   []boundAction
	calls     []boundAction
	setBase   func(*VO) *Base
}

type boundAction struct {
	op       route.Op
	register func(mux *cloudbus.Mux, s *Service)
}

// NewKind declares a simple kind from its spec. A spec missing what it
// needs is a programming error: NewKind panics.
func NewKind[VO any, P any, PVO interface {
	*VO
	Row
}](spec Spec[VO, P]) *KindOf[VO, P] {
	if spec.Name == "" || spec.Noun == "" || spec.Path == "" || spec.New == nil {
		panic("resource.NewKind: Name, Noun, Path and New are required")
	}
	if spec.What == "" {
		spec.What = spec.Name
	}
	if spec.CreateNoun == "" {
		spec.CreateNoun = spec.Noun
	}
	if len(spec.Models) == 0 {
		spec.Models = []any{new(VO)}
	}
	k := &KindOf[VO, P]{
		spec:      spec,
		MsgCreate: managementnode.NewOwnedMsg[CreateReq[P], VO](BusService, BusService+".Create"+spec.CreateNoun),
		MsgUpdate: managementnode.NewOwnedMsg[ActionReq[UpdateParams], VO](BusService, BusService+".Update"+spec.Noun),
		MsgDelete: managementnode.NewOwnedMsg[DeleteReq, cloudbus.Empty](BusService, BusService+".Delete"+spec.Noun),
		setBase:   func(v *VO) *Base { return PVO(v).BaseOf() },
	}
	update := NewAction("update"+spec.Noun, func(_ context.Context, _ *gorm.DB, row *VO, p UpdateParams) error {
		b := PVO(row).BaseOf()
		if p.Name != nil {
			b.Name = *p.Name
		}
		if p.Description != nil {
			b.Description = *p.Description
		}
		return nil
	})
	k.actions = append(k.actions, update.(*action[VO, UpdateParams]).bindWith(k.core(), k.MsgUpdate))
	for _, a := range spec.Actions {
		k.actions = append(k.actions, a.bind(k.core()))
	}
	for _, c := range spec.Calls {
		k.calls = append(k.calls, c.bindCall(k.core()))
	}
	return k
}

func (k *KindOf[VO, P]) kindName() string { return k.spec.Name }
func (k *KindOf[VO, P]) models() []any    { return k.spec.Models }

// core is what an action needs of its kind.
func (k *KindOf[VO, P]) core() kindCore[VO] {
	return kindCore[VO]{name: k.spec.Name, what: k.spec.What, base: k.setBase}
}

type kindCore[VO any] struct {
	name, what string
	base       func(*VO) *Base
}

func (c kindCore[VO]) chain(uuid string) string { return c.name + "-" + uuid }

// inChain runs fn in the resource's chain, one operation at a time.
func inChain[T any](ctx context.Context, s *Service, chain, op string, fn func(ctx context.Context) (T, error)) (T, error) {
	return thread.Sync(ctx, s.opts.Scheduler, thread.Task{Signature: chain, Name: op, Level: 1}, fn)
}

func (k *KindOf[VO, P]) register(mux *cloudbus.Mux, s *Service) {
	managementnode.Handle(mux, k.MsgCreate, func(ctx context.Context, req CreateReq[P]) (VO, error) {
		return inChain(ctx, s, k.core().chain(req.UUID), "create", func(ctx context.Context) (VO, error) {
			return k.create(ctx, s.opts.DB.WithContext(ctx), req)
		})
	})
	managementnode.Handle(mux, k.MsgDelete, func(ctx context.Context, req DeleteReq) (cloudbus.Empty, error) {
		return inChain(ctx, s, k.core().chain(req.UUID), "delete", func(ctx context.Context) (cloudbus.Empty, error) {
			return cloudbus.Empty{}, k.delete(ctx, s.opts.DB.WithContext(ctx), req)
		})
	})
	for _, a := range k.actions {
		a.register(mux, s)
	}
	for _, c := range k.calls {
		c.register(mux, s)
	}
}

func (k *KindOf[VO, P]) create(ctx context.Context, db *gorm.DB, req CreateReq[P]) (VO, error) {
	if k.spec.Create != nil {
		return createWith(ctx, db, k.spec.What, req, k.spec.Check, k.spec.Create)
	}
	return createWith(ctx, db, k.spec.What, req, k.spec.Check, k.insertNew)
}

// createWith is a create on the owner: a redelivered one answers the row
// that exists; otherwise check the references again, then create.
func createWith[VO, P any](ctx context.Context, db *gorm.DB, what string, req CreateReq[P],
	check func(context.Context, *gorm.DB, *P) error, create func(context.Context, *gorm.DB, string, P) (VO, error)) (VO, error) {
	var zero VO
	if row, err := Load[VO](ctx, db, what, req.UUID); err == nil {
		return *row, nil // a redelivered create: answer with what exists
	}
	if check != nil {
		if err := check(ctx, db, &req.Params); err != nil {
			return zero, err
		}
	}
	return create(ctx, db, req.UUID, req.Params)
}

// insertNew inserts New's row, named by the params if they embed Params.
func (k *KindOf[VO, P]) insertNew(ctx context.Context, db *gorm.DB, uuid string, p P) (VO, error) {
	var zero VO
	req := CreateReq[P]{UUID: uuid, Params: p}
	base := NewBase(req.UUID, "", "")
	if named, ok := any(req.Params).(interface{ BaseParams() Params }); ok {
		base.Name, base.Description = named.BaseParams().Name, named.BaseParams().Description
	}
	row := k.spec.New(base, req.Params)
	b := k.setBase(&row)
	b.UUID = req.UUID
	if b.CreateDate.IsZero() {
		now := time.Now().UTC()
		b.CreateDate, b.LastOpDate = now, now
	}
	out, err := Insert(ctx, db, req.UUID, &row)
	if err != nil {
		return zero, err
	}
	return *out, nil
}

func (k *KindOf[VO, P]) delete(ctx context.Context, db *gorm.DB, req DeleteReq) error {
	uuid := req.UUID
	if k.spec.Delete != nil {
		return k.spec.Delete(ctx, db, req)
	}
	if err := RefuseIfUsed(ctx, db, k.spec.What, uuid, k.spec.Dependents...); err != nil {
		return err
	}
	if err := db.Delete(new(VO), "uuid = ?", uuid).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "delete %s %s", k.spec.What, uuid)
	}
	return nil
}

func (k *KindOf[VO, P]) resources() []route.Resource {
	build := func(ctx context.Context, in route.In[P]) (CreateReq[P], error) {
		if k.spec.Check != nil {
			if err := k.spec.Check(ctx, in.DB, &in.Params); err != nil {
				return CreateReq[P]{}, err
			}
		}
		return CreateReq[P]{UUID: in.UUID, Params: in.Params}, nil
	}
	create := route.Create(k.MsgCreate, build)
	if k.spec.Parent != nil {
		create = route.CreateUnder(k.MsgCreate, k.spec.Parent, build)
	}
	if k.spec.CreateAt != "" {
		create = create.At(k.spec.CreateAt)
	}
	res := route.Resource{
		Path:   k.spec.Path,
		Name:   k.spec.What,
		Query:  route.QueryOf[VO](k.spec.Query...),
		Create: route.Ptr(create),
		Access: k.spec.Access,
		Delete: route.Ptr(route.Delete(k.MsgDelete, func(_ context.Context, in route.In[route.DeleteParams]) (DeleteReq, error) {
			return DeleteReq{UUID: in.UUID, Mode: in.Params.Mode}, nil
		})),
	}
	for _, a := range k.actions {
		res.Actions = append(res.Actions, a.op)
	}
	for _, alias := range k.spec.CreateAliases {
		res.Calls = append(res.Calls, route.Call(http.MethodPost, alias, k.MsgCreate, func(ctx context.Context, in route.In[P]) (CreateReq[P], error) {
			in.UUID = uid.New()
			return build(ctx, in)
		}).Creating())
	}
	for _, c := range k.calls {
		res.Calls = append(res.Calls, c.op)
	}
	out := []route.Resource{res}
	for _, v := range k.spec.Views {
		opts := append([]route.QueryOption(nil), k.spec.Query...)
		if v.Where != "" {
			opts = append(opts, route.Where(v.Where, v.Args...))
		}
		what := v.What
		if what == "" {
			what = k.spec.What
		}
		out = append(out, route.Resource{Path: v.Path, Name: what, Query: route.QueryOf[VO](opts...), Access: k.spec.Access})
	}
	return out
}

// Action is an action of a simple kind of model VO: it changes the row.
// Make it with NewAction.
type Action[VO any] interface {
	bind(k kindCore[VO]) boundAction
}

type action[VO any, AP any] struct {
	name  string
	apply func(ctx context.Context, tx *gorm.DB, row *VO, p AP) error
}

// NewAction declares the action name (ZStack's: "changeZoneState") with
// params AP (validated at the edge if AP has Validate). It runs on the
// resource's owner, in its chain, in one transaction: apply changes the
// loaded row (it may also read or refuse with tx), and the row is saved
// with a new lastOpDate. The job answers the row.
func NewAction[VO any, AP any](name string, apply func(ctx context.Context, tx *gorm.DB, row *VO, p AP) error) Action[VO] {
	return &action[VO, AP]{name: name, apply: apply}
}

func (a *action[VO, AP]) bind(k kindCore[VO]) boundAction {
	return a.bindWith(k, managementnode.NewOwnedMsg[ActionReq[AP], VO](BusService, BusService+"."+strings.ToUpper(a.name[:1])+a.name[1:]))
}

func (a *action[VO, AP]) bindWith(k kindCore[VO], msg managementnode.OwnedMsg[ActionReq[AP], VO]) boundAction {
	op := route.Action(a.name, msg, func(_ context.Context, in route.In[AP]) (ActionReq[AP], error) {
		return ActionReq[AP]{UUID: in.UUID, Params: in.Params}, nil
	})
	register := func(mux *cloudbus.Mux, s *Service) {
		managementnode.Handle(mux, msg, func(ctx context.Context, req ActionReq[AP]) (VO, error) {
			return onRow(ctx, s, k, req.UUID, a.name, func(ctx context.Context, tx *gorm.DB, row *VO) (*VO, error) {
				if err := a.apply(ctx, tx, row, req.Params); err != nil {
					return nil, err
				}
				k.base(row).LastOpDate = time.Now().UTC()
				// The row's own columns: an association it shows
				// (attached clusters) is not the action's to write.
				return row, tx.Omit(clause.Associations).Save(row).Error
			})
		})
	}
	return boundAction{op: op, register: register}
}

// onRow runs fn on the resource's owner, in its chain, in one transaction
// with its row loaded, and answers the row fn returns (an action's, saved;
// a call's, read again). An error that is not an *errcode.Error is
// Internal, naming the call and the resource.
func onRow[VO any](ctx context.Context, s *Service, k kindCore[VO], uuid, name string,
	fn func(ctx context.Context, tx *gorm.DB, row *VO) (*VO, error)) (VO, error) {
	return inChain(ctx, s, k.chain(uuid), name, func(ctx context.Context) (VO, error) {
		var out VO
		err := s.opts.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			row, err := Load[VO](ctx, tx, k.what, uuid)
			if err != nil {
				return err
			}
			if row, err = fn(ctx, tx, row); err != nil {
				return err
			}
			out = *row
			return nil
		})
		return out, errcode.OrInternal(err, "%s %s %s", name, k.what, uuid)
	})
}
