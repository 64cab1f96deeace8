package route

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"

	"gorm.io/gorm"

	"mplane/api/rest"
	"mplane/errcode"
	"mplane/managementnode"
)

// In is what Build gets: the validated params and where they came from.
type In[P any] struct {
	Params P
	// UUID is the resource the call is about: the path's {uuid}, or the new
	// resource's UUID for a create.
	UUID string
	// Parent is the {uuid} of the path of a create under a parent resource
	// (POST /l3-networks/{uuid}/ip-ranges).
	Parent string
	// Query is the request's URL query.
	Query url.Values
	// DB is for reading what the params reference.
	DB *gorm.DB
	// SystemTags are the call's "systemTags" (ZStack's, e.g.
	// staticIp::<l3NetworkUuid>::<ip>), beside its params.
	SystemTags []string
}

// Build turns validated params into the message's request.
type Build[P, Req any] func(ctx context.Context, in In[P]) (Req, error)

type kind int

const (
	kindCreate kind = iota + 1
	kindAction
	kindDelete
	kindCall
)

// Op is one mutating call of a Resource. Make it with Create, Action or
// Delete.
type Op struct {
	kind      kind
	method    string // a call's method
	path      string // a create's own path, if not the resource's; a call's path
	action    string // an action's ZStack name
	mustExist bool
	creates   bool // a call that makes the resource it is routed by
	impl      op
}

type op interface {
	name() string
	params() reflect.Type
	accept(ctx context.Context, src source) (json.RawMessage, string, error)
	drive(ctx context.Context, n *managementnode.Node, body json.RawMessage) (any, error)
	request(body json.RawMessage) (any, error)
	outcome(msg string, body, reply json.RawMessage) (any, bool, error)
	messages() []string
	withoutResult() op
	// atPath makes an action take the variables of a path of its own
	// (CallActions); it panics on a variable naming no string field.
	atPath(path string) op
}

// source is where an op's params come from.
type source struct {
	r      *http.Request
	action *rest.Action
	uuid   string
	parent string
	db     *gorm.DB
}

// Name is the message's name: the portal's registry key and the job's API
// name.
func (o Op) Name() string { return o.impl.name() }

// Key identifies o in the portal's registry: its message's name, and for
// an action or a delete what it is, since one message may serve both
// (destroyVmInstance and DELETE /vm-instances/{uuid}) with different
// results.
func (o Op) Key() string {
	switch o.kind {
	case kindAction:
		return o.impl.name() + "#" + o.action
	case kindDelete:
		return o.impl.name() + "#delete"
	case kindCall:
		return o.impl.name() + "@" + o.method + " " + o.path
	}
	return o.impl.name()
}

// Params lists the JSON names of o's params, as the body carries them (a
// delete's come from the query: deleteMode; CallActions' are
// "<action>.<field>" but for the path's variables, or the action's name
// alone for one without other params).
func (o Op) Params() []string {
	if set, ok := o.impl.(*actionSet); ok {
		return set.paramNames()
	}
	if o.kind == kindDelete {
		return []string{"deleteMode"}
	}
	if o.kind == kindCall && o.method == http.MethodDelete {
		return nil
	}
	var names []string
	collectJSON(o.impl.params(), &names)
	return names
}

func collectJSON(t reflect.Type, out *[]string) {
	if t.Kind() != reflect.Struct {
		return
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case f.Anonymous && name == "":
			collectJSON(f.Type, out)
		case f.IsExported():
			if name == "" {
				name = f.Name
			}
			*out = append(*out, name)
		}
	}
}

// ActionName is an action's ZStack name ("startVmInstance").
func (o Op) ActionName() string { return o.action }

// Path is a create's own path relative to the API prefix ("hosts/kvm"), or
// "" for the resource's path; a call's path.
func (o Op) Path() string { return o.path }

// Method is a call's HTTP method (POST, PUT or DELETE); "" for the other
// ops, whose method their kind decides.
func (o Op) Method() string { return o.method }

// Creates reports whether o makes the resource it is routed by (the UUID
// Accept returns is new): Create, CreateUnder, and a Call marked with
// Creating. The portal records the caller as the new resource's owner
// before the job.
func (o Op) Creates() bool { return o.kind == kindCreate || o.creates }

// Creating marks a call that makes the resource it is routed by (POST
// /volumes/data): see Creates.
func (o Op) Creating() Op { o.creates = true; return o }

// MustExist reports whether the resource in the path must exist (404
// otherwise) before the call is accepted.
func (o Op) MustExist() bool { return o.mustExist }

// At gives a create its own path: "hosts/kvm", or a path under a parent,
// "l3-networks/{uuid}/ip-ranges", whose {uuid} becomes In.Parent.
func (o Op) At(path string) Op { o.path = path; return o }

// Existing makes a delete refuse (404) a resource that does not exist; by
// default a delete of a missing resource succeeds, as ZStack's do.
func (o Op) Existing() Op { o.mustExist = true; return o }

// Accept decodes and validates a request for o and builds the message's
// request: the body to carry to the driving node and the resource's UUID.
// uuid is the path's {uuid} (actions, deletes) or the new resource's UUID
// (creates); parent the path's {uuid} of a create under a parent; action the
// decoded action body of an action.
func (o Op) Accept(ctx context.Context, r *http.Request, db *gorm.DB, uuid, parent string, action *rest.Action) (body json.RawMessage, resource string, err error) {
	return o.impl.accept(ctx, source{r: r, action: action, uuid: uuid, parent: parent, db: db})
}

// Drive decodes body into the message's request, calls the owner of its
// resource and returns the job's result.
func (o Op) Drive(ctx context.Context, n *managementnode.Node, body json.RawMessage) (any, error) {
	return o.impl.drive(ctx, n, body)
}

// Request decodes body, as Accept made it, into the message's request (a
// Req value): what the portal asks of it (quota.Demander).
func (o Op) Request(body json.RawMessage) (any, error) { return o.impl.request(body) }

// Outcome shapes reply, the owner's answer to the message named msg, into
// the job's result, for a job of o whose body (as Accept built it) is body.
// ok is false when msg is not the message that body is sent as: a call the
// work itself made, carrying the job's ID.
func (o Op) Outcome(msg string, body, reply json.RawMessage) (result any, ok bool, err error) {
	return o.impl.outcome(msg, body, reply)
}

// Messages are the names of the messages o may send its owner (an
// action set's: each action's).
func (o Op) Messages() []string { return o.impl.messages() }

// Result shapes a reply into a job result.
type Result[Rep any] func(Rep) any

// Inventory is the default Result: {"inventory": rep}.
func Inventory[Rep any](rep Rep) any { return map[string]any{"inventory": rep} }

// Nothing is the Result of calls that answer no inventory (deletes): {}.
func Nothing[Rep any](Rep) any { return struct{}{} }

type typed[P any, Req managementnode.Owned, Rep any] struct {
	kind   kind
	msg    managementnode.OwnedMsg[Req, Rep]
	build  Build[P, Req]
	result Result[Rep]
	// parentField fills P from the path's parent UUID (creates At a path
	// with {uuid}).
	parentField func(*P) *string
	// vars are a call's path variables and query parameters, by JSON
	// name, with the index paths of the string fields of P they fill.
	vars map[string][]int
	// method is a call's HTTP method.
	method string
}

// Create declares POST /<path> with body {"params": P}. The new resource's
// UUID is chosen by the portal (In.UUID).
func Create[P any, Req managementnode.Owned, Rep any](msg managementnode.OwnedMsg[Req, Rep], build Build[P, Req]) Op {
	return Op{kind: kindCreate, impl: &typed[P, Req, Rep]{kind: kindCreate, msg: msg, build: build, result: Inventory[Rep]}}
}

// CreateUnder declares POST /<parent path>/{uuid}/<sub> (give the path with
// At): the parent's UUID from the path is put into the params field that
// field returns before they are validated; a body that names another parent
// is refused.
func CreateUnder[P any, Req managementnode.Owned, Rep any](msg managementnode.OwnedMsg[Req, Rep], field func(*P) *string, build Build[P, Req]) Op {
	return Op{kind: kindCreate, impl: &typed[P, Req, Rep]{kind: kindCreate, msg: msg, build: build, result: Inventory[Rep], parentField: field}}
}

// Action declares the action name (ZStack's, e.g. "startVmInstance") of
// PUT /<path>/{uuid}/actions with body {"<name>": P}. The resource must
// exist (404 otherwise).
func Action[P any, Req managementnode.Owned, Rep any](name string, msg managementnode.OwnedMsg[Req, Rep], build Build[P, Req]) Op {
	return Op{kind: kindAction, action: name, mustExist: true, impl: &typed[P, Req, Rep]{kind: kindAction, msg: msg, build: build, result: Inventory[Rep]}}
}

// ActionNoResult is Action for an action whose job answers {}.
func ActionNoResult[P any, Req managementnode.Owned, Rep any](name string, msg managementnode.OwnedMsg[Req, Rep], build Build[P, Req]) Op {
	return Op{kind: kindAction, action: name, mustExist: true, impl: &typed[P, Req, Rep]{kind: kindAction, msg: msg, build: build, result: Nothing[Rep]}}
}

// DeleteParams are a delete's params, from the query: deleteMode is
// Permissive (the default) or Enforcing.
type DeleteParams struct {
	Mode string
}

// Delete declares DELETE /<path>/{uuid}[?deleteMode=Permissive|Enforcing];
// its job answers {}.
func Delete[Req managementnode.Owned, Rep any](msg managementnode.OwnedMsg[Req, Rep], build Build[DeleteParams, Req]) Op {
	return Op{kind: kindDelete, impl: &typed[DeleteParams, Req, Rep]{kind: kindDelete, msg: msg, build: build, result: Nothing[Rep]}}
}

// Call declares a call on a path of its own, below the resources' paths
// the way ZStack puts its attach and detach calls: method POST, PUT or
// DELETE, and a path relative to /v1 with {name} variables, such as
// "clusters/{clusterUuid}/primary-storage/{primaryStorageUuid}". Each
// variable fills the string field of P whose JSON name it is, before the
// params are validated; so do, for DELETE, the URL query's parameters
// (?vmUuid=...). POST and PUT read {"params": P} (an empty body is empty
// params), which may repeat a variable but not contradict it; DELETE has
// no body. The job answers {"inventory": Rep}; NoResult makes it {}.
// A path variable naming no string field of P is a programming error:
// Call panics.
func Call[P any, Req managementnode.Owned, Rep any](method, path string, msg managementnode.OwnedMsg[Req, Rep], build Build[P, Req]) Op {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		panic("route.Call " + path + ": method must be POST, PUT or DELETE, got " + method)
	}
	path = strings.Trim(path, "/")
	t := &typed[P, Req, Rep]{kind: kindCall, msg: msg, build: build, result: Inventory[Rep], vars: pathVars[P]("route.Call "+method, path), method: method}
	if method == http.MethodDelete {
		t.vars = stringFields(reflect.TypeFor[P](), nil, map[string][]int{}) // the query fills any string field
	}
	return Op{kind: kindCall, method: method, path: path, impl: t}
}

// pathVars maps the {name} variables of path to the index paths of the
// string fields of P they fill; a variable naming none is a programming
// error: it panics, naming what declared it.
func pathVars[P any](what, path string) map[string][]int {
	fields := stringFields(reflect.TypeFor[P](), nil, map[string][]int{})
	vars := map[string][]int{}
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			name := seg[1 : len(seg)-1]
			idx, ok := fields[name]
			if !ok {
				panic(fmt.Sprintf("%s %s: path variable {%s} names no string field of %s", what, path, name, reflect.TypeFor[P]()))
			}
			vars[name] = idx
		}
	}
	return vars
}

// CallActions declares PUT path, a path of its own with {name} variables,
// whose body is ZStack's action body {"<action>": P}, one of actions (made
// with Action or ActionNoResult): the actions ZStack puts on resources
// named by more than a UUID, such as PUT
// global-configurations/{category}/{name}/actions with
// {"updateGlobalConfig": {"value": "2s"}} or {"resetGlobalConfig": {}}.
// Each variable fills the string field of the chosen action's P whose JSON
// name it is, before the params are validated; the body may repeat it but
// not contradict it. Nothing checks that the path names an existing
// resource: Build does. The actions share one message, whose name is the
// job's API name (Op.Name); each keeps its own params, Build and result.
// Actions that are not Action ops, with other messages, with one name
// twice, or a variable naming no string field of some P, are programming
// errors: CallActions panics.
func CallActions(path string, actions ...Op) Op {
	path = strings.Trim(path, "/")
	if len(actions) == 0 {
		panic("route.CallActions " + path + ": no actions")
	}
	set := &actionSet{ops: map[string]op{}, vars: map[string]bool{}}
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			set.vars[seg[1:len(seg)-1]] = true
		}
	}
	for _, a := range actions {
		switch {
		case a.kind != kindAction:
			panic("route.CallActions " + path + ": every action must be made with Action or ActionNoResult")
		case a.impl.name() != actions[0].impl.name():
			panic(fmt.Sprintf("route.CallActions %s: actions %s and %s have different messages (%s, %s); a call has one",
				path, actions[0].action, a.action, actions[0].impl.name(), a.impl.name()))
		case set.ops[a.action] != nil:
			panic("route.CallActions " + path + ": action " + a.action + " declared twice")
		}
		set.names = append(set.names, a.action)
		set.ops[a.action] = a.impl.atPath(path)
	}
	return Op{kind: kindCall, method: http.MethodPut, path: path, impl: set}
}

// NoResult makes a call's job answer {} instead of its inventory.
func (o Op) NoResult() Op {
	o.impl = o.impl.withoutResult()
	return o
}

func (t *typed[P, Req, Rep]) withoutResult() op {
	c := *t
	c.result = Nothing[Rep]
	return &c
}

func (t *typed[P, Req, Rep]) atPath(path string) op {
	c := *t
	c.vars = pathVars[P]("route.CallActions", path)
	return &c
}

// stringFields maps the JSON names of t's string fields (embedded structs'
// included) to their index paths.
func stringFields(t reflect.Type, prefix []int, out map[string][]int) map[string][]int {
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		idx := append(append([]int{}, prefix...), i)
		switch {
		case name == "-":
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			stringFields(f.Type, idx, out)
		case f.IsExported() && f.Type.Kind() == reflect.String:
			if name == "" {
				name = f.Name
			}
			out[name] = idx
		}
	}
	return out
}

// fillVars sets p's fields from a call's path variables (and, for
// DELETE, query parameters) and returns what it set, to compare after the
// body is decoded.
func (t *typed[P, Req, Rep]) fillVars(p *P, src source) (map[string]string, error) {
	v := reflect.ValueOf(p).Elem()
	set := map[string]string{}
	for name, idx := range t.vars {
		val := src.r.PathValue(name)
		if val == "" {
			continue
		}
		if strings.HasSuffix(name, "Uuid") || name == "uuid" {
			if err := rest.CheckUUID("{"+name+"} in the path", val); err != nil {
				return nil, err
			}
		}
		v.FieldByIndex(idx).SetString(val)
		set[name] = val
	}
	if t.method != http.MethodDelete {
		return set, nil
	}
	q := src.r.URL.Query()
	for _, k := range sortedKeys(q) {
		idx, ok := t.vars[k]
		if !ok {
			return nil, errcode.New(errcode.InvalidArgument, "unknown query parameter %q; this call takes %s", k, strings.Join(sortedKeys(t.vars), ", "))
		}
		if _, inPath := set[k]; inPath {
			return nil, errcode.New(errcode.InvalidArgument, "query parameter %q repeats a path variable; leave it out", k)
		}
		if strings.HasSuffix(k, "Uuid") && q.Get(k) != "" {
			if err := rest.CheckUUID("query parameter "+k, q.Get(k)); err != nil {
				return nil, err
			}
		}
		v.FieldByIndex(idx).SetString(q.Get(k))
	}
	return set, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// sameVars refuses params whose body contradicts the path variables set
// (fillVars).
func (t *typed[P, Req, Rep]) sameVars(p *P, set map[string]string) error {
	pv := reflect.ValueOf(p).Elem()
	for _, name := range sortedKeys(set) {
		if got, want := pv.FieldByIndex(t.vars[name]).String(), set[name]; got != want {
			return errcode.New(errcode.InvalidArgument, "the body gives %s %q but the path gives %q; leave it out of the body", name, got, want)
		}
	}
	return nil
}

func (t *typed[P, Req, Rep]) name() string { return t.msg.Name() }

func (t *typed[P, Req, Rep]) params() reflect.Type { return reflect.TypeFor[P]() }

func (t *typed[P, Req, Rep]) accept(ctx context.Context, src source) (json.RawMessage, string, error) {
	var p P
	var tags rest.Tags
	switch t.kind {
	case kindCreate:
		var field *string
		if t.parentField != nil {
			field = t.parentField(&p)
			*field = src.parent
		}
		var err error
		if tags, err = rest.DecodeParams(src.r, &p); err != nil {
			return nil, "", err
		}
		if field != nil && *field != src.parent {
			return nil, "", errcode.New(errcode.InvalidArgument, "the body names parent %s but the path names %s; leave it out of the body", *field, src.parent)
		}
	case kindAction:
		set, err := t.fillVars(&p, src) // a CallActions path's variables
		if err != nil {
			return nil, "", err
		}
		if err := src.action.Decode(&p); err != nil {
			return nil, "", err
		}
		tags = src.action.Tags
		if err := t.sameVars(&p, set); err != nil {
			return nil, "", err
		}
	case kindDelete:
		mode := src.r.URL.Query().Get("deleteMode")
		switch mode {
		case "", "Permissive", "Enforcing":
		default:
			return nil, "", errcode.New(errcode.InvalidArgument, "deleteMode must be Permissive or Enforcing, got %q", mode)
		}
		if mode == "" {
			mode = "Permissive"
		}
		p = any(DeleteParams{Mode: mode}).(P)
	case kindCall:
		set, err := t.fillVars(&p, src)
		if err != nil {
			return nil, "", err
		}
		switch {
		case t.method == http.MethodDelete:
			if err := validate(&p); err != nil {
				return nil, "", err
			}
		case src.r.ContentLength == 0:
			if err := validate(&p); err != nil {
				return nil, "", err
			}
		default:
			if tags, err = rest.DecodeParams(src.r, &p); err != nil {
				return nil, "", err
			}
		}
		if err := t.sameVars(&p, set); err != nil {
			return nil, "", err
		}
	}
	req, err := t.build(ctx, In[P]{Params: p, UUID: src.uuid, Parent: src.parent, Query: src.r.URL.Query(), DB: src.db.WithContext(ctx),
		SystemTags: tags.SystemTags})
	if err != nil {
		return nil, "", err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, "", errcode.Wrap(errcode.Internal, err, "encode %s", t.msg.Name())
	}
	return body, req.ResourceUUID(), nil
}

func (t *typed[P, Req, Rep]) drive(ctx context.Context, n *managementnode.Node, body json.RawMessage) (any, error) {
	var req Req
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errcode.Wrap(errcode.MalformedMessage, err, "decode %s", t.msg.Name())
	}
	rep, err := managementnode.CallOwner(ctx, n, t.msg, req)
	if err != nil {
		return nil, err
	}
	return t.result(rep), nil
}

func (t *typed[P, Req, Rep]) request(body json.RawMessage) (any, error) {
	var req Req
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errcode.Wrap(errcode.MalformedMessage, err, "decode %s", t.msg.Name())
	}
	return req, nil
}

func (t *typed[P, Req, Rep]) outcome(msg string, _, reply json.RawMessage) (any, bool, error) {
	if msg != t.msg.Name() {
		return nil, false, nil
	}
	var rep Rep
	if len(reply) > 0 {
		if err := json.Unmarshal(reply, &rep); err != nil {
			return nil, true, errcode.Wrap(errcode.MalformedMessage, err, "decode the reply to %s", msg)
		}
	}
	return t.result(rep), true, nil
}

func (t *typed[P, Req, Rep]) messages() []string { return []string{t.msg.Name()} }

// validate runs p's Validate, if it has one, as the strict decoder does.
func validate(p any) error {
	v, ok := p.(rest.Validator)
	if !ok {
		return nil
	}
	err := v.Validate()
	if err == nil {
		return nil
	}
	var e *errcode.Error
	if errors.As(err, &e) {
		return err
	}
	return errcode.New(errcode.InvalidArgument, "%v", err)
}

// Resource is one REST resource as a service declares it.
type Resource struct {
	// Path is the resource's path under /v1: GET /<path>, GET /<path>/{uuid},
	// PUT /<path>/{uuid}/actions, DELETE /<path>/{uuid}, and POST /<path>
	// unless the create says otherwise (Op.At).
	Path string
	// Name is what errors call one of them ("VM", "host").
	Name string
	// Query serves GET; it also decides whether a path's {uuid} exists.
	Query Query
	// Create, Actions and Delete are the mutating calls; nil and empty for
	// none.
	Create  *Op
	Actions []Op
	Delete  *Op
	// Calls are the resource's calls on paths of their own (Call): attach
	// and detach.
	Calls []Op
	// Access is who may use the resource: the zero value, AdminOnly, for
	// infrastructure.
	Access Access
}

// Access is who may use a resource. Admin accounts may do everything; it
// says what normal accounts may.
type Access int

// The accesses.
const (
	// AdminOnly is infrastructure (hosts, storage, L2 networks, global
	// configuration): a normal account's every call is refused, 403.
	AdminOnly Access = iota
	// ReadOnly: normal accounts query it (zones, which a create names);
	// only admins change it.
	ReadOnly
	// Owned: each account creates its own and sees and changes only those
	// (VMs, volumes); another account's do not exist for it (404).
	Owned
	// Shared: admins create it and share it (shareResource); a normal
	// account sees and uses those shared to it or to everyone, and changes
	// none (instance and disk offerings, L3 networks).
	Shared
	// OwnedShared: each account creates its own, changes only those, and
	// may share them; it also sees and uses those shared to it (images).
	OwnedShared
)

// String names a.
func (a Access) String() string {
	switch a {
	case AdminOnly:
		return "admin only"
	case ReadOnly:
		return "read by all"
	case Owned:
		return "owned"
	case Shared:
		return "shared by admins"
	case OwnedShared:
		return "owned, shareable"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// Ops lists r's mutating calls.
func (r Resource) Ops() []Op {
	var ops []Op
	if r.Create != nil {
		ops = append(ops, *r.Create)
	}
	ops = append(ops, r.Actions...)
	if r.Delete != nil {
		ops = append(ops, *r.Delete)
	}
	return append(ops, r.Calls...)
}

// ActionNames lists r's action names, in declaration order.
func (r Resource) ActionNames() []string {
	names := make([]string, len(r.Actions))
	for i, a := range r.Actions {
		names[i] = a.action
	}
	return names
}

// CreatePath is the path of r's create relative to the API prefix.
func (r Resource) CreatePath() string {
	if r.Create != nil && r.Create.path != "" {
		return strings.TrimPrefix(r.Create.path, "/")
	}
	return r.Path
}

// Ptr returns a pointer to o, for Resource.Create and Resource.Delete.
func Ptr(o Op) *Op { return &o }
