package route_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gorm.io/gorm"

	"mplane/api/rest"
	"mplane/api/route"
	"mplane/db"
	"mplane/errcode"
	"mplane/managementnode"
)

// The widget is the test's resource: its params validate themselves, its
// requests name the resource they are about.

type widgetParams struct {
	Name     string `json:"name"`
	Parent   string `json:"parentUuid,omitempty"`
	Required bool   `json:"requireParent,omitempty"`
}

func (p *widgetParams) Validate() error {
	switch {
	case p.Name == "":
		return errcode.New(errcode.InvalidArgument, "name is required")
	case p.Name == "plain":
		return errors.New("a plain error")
	case p.Required && p.Parent == "":
		return errcode.New(errcode.InvalidArgument, "parentUuid is required")
	}
	return nil
}

type widgetReq struct {
	UUID   string `json:"uuid"`
	Name   string `json:"name,omitempty"`
	Parent string `json:"parentUuid,omitempty"`
	Mode   string `json:"mode,omitempty"`
}

func (r widgetReq) ResourceUUID() string { return r.UUID }

type widgetRep struct {
	UUID string `json:"uuid"`
	Name string `json:"name"`
}

// badReq cannot be encoded: Accept must refuse it as an internal error.
type badReq struct {
	UUID string   `json:"uuid"`
	Ch   chan int `json:"ch"`
}

func (r badReq) ResourceUUID() string { return r.UUID }

const svc = "routetest"

var (
	msgCreate = managementnode.NewOwnedMsg[widgetReq, widgetRep](svc, "routetest.CreateWidget")
	msgAction = managementnode.NewOwnedMsg[widgetReq, widgetRep](svc, "routetest.RenameWidget")
	msgDelete = managementnode.NewOwnedMsg[widgetReq, widgetRep](svc, "routetest.DeleteWidget")
	msgBad    = managementnode.NewOwnedMsg[badReq, widgetRep](svc, "routetest.Bad")
)

func buildWidget(_ context.Context, in route.In[widgetParams]) (widgetReq, error) {
	if in.Params.Name == "refused" {
		return widgetReq{}, errcode.New(errcode.InvalidArgument, "zoneUuid z does not exist")
	}
	return widgetReq{UUID: in.UUID, Name: in.Params.Name, Parent: in.Parent}, nil
}

func buildDelete(_ context.Context, in route.In[route.DeleteParams]) (widgetReq, error) {
	return widgetReq{UUID: in.UUID, Mode: in.Params.Mode}, nil
}

func TestOpDeclarations(t *testing.T) {
	cases := []struct {
		name                      string
		op                        route.Op
		wantName, wantKey, action string
		path                      string
		mustExist                 bool
	}{
		{"create", route.Create(msgCreate, buildWidget), "routetest.CreateWidget", "routetest.CreateWidget", "", "", false},
		{"create at", route.Create(msgCreate, buildWidget).At("widgets/kvm"), "routetest.CreateWidget", "routetest.CreateWidget", "", "widgets/kvm", false},
		{"create under", route.CreateUnder(msgCreate, func(p *widgetParams) *string { return &p.Parent }, buildWidget).At("boxes/{uuid}/widgets"),
			"routetest.CreateWidget", "routetest.CreateWidget", "", "boxes/{uuid}/widgets", false},
		{"action", route.Action("renameWidget", msgAction, buildWidget), "routetest.RenameWidget", "routetest.RenameWidget#renameWidget", "renameWidget", "", true},
		{"action without result", route.ActionNoResult("touchWidget", msgAction, buildWidget), "routetest.RenameWidget", "routetest.RenameWidget#touchWidget", "touchWidget", "", true},
		{"delete", route.Delete(msgDelete, buildDelete), "routetest.DeleteWidget", "routetest.DeleteWidget#delete", "", "", false},
		{"delete existing", route.Delete(msgDelete, buildDelete).Existing(), "routetest.DeleteWidget", "routetest.DeleteWidget#delete", "", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.op.Name(); got != tc.wantName {
				t.Errorf("Name = %q, want %q", got, tc.wantName)
			}
			if got := tc.op.Key(); got != tc.wantKey {
				t.Errorf("Key = %q, want %q", got, tc.wantKey)
			}
			if got := tc.op.ActionName(); got != tc.action {
				t.Errorf("ActionName = %q, want %q", got, tc.action)
			}
			if got := tc.op.Path(); got != tc.path {
				t.Errorf("Path = %q, want %q", got, tc.path)
			}
			if got := tc.op.MustExist(); got != tc.mustExist {
				t.Errorf("MustExist = %v, want %v", got, tc.mustExist)
			}
		})
	}

	// One message serving an action and a delete gets two keys.
	a, d := route.Action("destroyWidget", msgDelete, buildWidget), route.Delete(msgDelete, buildDelete)
	if a.Key() == d.Key() || a.Name() != d.Name() {
		t.Errorf("action key %q and delete key %q of one message: want the same name, different keys", a.Key(), d.Key())
	}
	// At and Existing return modified copies.
	base := route.Delete(msgDelete, buildDelete)
	_ = base.Existing()
	_ = base.At("x")
	if base.MustExist() || base.Path() != "" {
		t.Errorf("Existing/At changed the receiver: MustExist %v, Path %q", base.MustExist(), base.Path())
	}
}

func TestResourceOps(t *testing.T) {
	create := route.Create(msgCreate, buildWidget)
	rename := route.Action("renameWidget", msgAction, buildWidget)
	touch := route.ActionNoResult("touchWidget", msgAction, buildWidget)
	del := route.Delete(msgDelete, buildDelete)
	cases := []struct {
		name       string
		res        route.Resource
		keys       []string
		actions    []string
		createPath string
	}{
		{"empty", route.Resource{Path: "widgets"}, nil, []string{}, "widgets"},
		{"full", route.Resource{Path: "widgets", Create: route.Ptr(create), Actions: []route.Op{rename, touch}, Delete: route.Ptr(del)},
			[]string{create.Key(), rename.Key(), touch.Key(), del.Key()}, []string{"renameWidget", "touchWidget"}, "widgets"},
		{"actions only", route.Resource{Path: "widgets", Actions: []route.Op{touch}}, []string{touch.Key()}, []string{"touchWidget"}, "widgets"},
		{"create at", route.Resource{Path: "widgets", Create: route.Ptr(create.At("widgets/kvm"))}, []string{create.Key()}, []string{}, "widgets/kvm"},
		{"create at with a slash", route.Resource{Path: "widgets", Create: route.Ptr(create.At("/boxes/{uuid}/widgets"))}, []string{create.Key()}, []string{}, "boxes/{uuid}/widgets"},
		{"delete only", route.Resource{Path: "widgets", Delete: route.Ptr(del)}, []string{del.Key()}, []string{}, "widgets"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var keys []string
			for _, op := range tc.res.Ops() {
				keys = append(keys, op.Key())
			}
			if !reflect.DeepEqual(keys, tc.keys) {
				t.Errorf("Ops keys = %q, want %q", keys, tc.keys)
			}
			if got := tc.res.ActionNames(); !reflect.DeepEqual(got, tc.actions) {
				t.Errorf("ActionNames = %q, want %q", got, tc.actions)
			}
			if got := tc.res.CreatePath(); got != tc.createPath {
				t.Errorf("CreatePath = %q, want %q", got, tc.createPath)
			}
		})
	}
}

func TestPtrCopies(t *testing.T) {
	op := route.Delete(msgDelete, buildDelete)
	p := route.Ptr(op)
	*p = p.Existing()
	if op.MustExist() || !p.MustExist() {
		t.Errorf("Ptr must point to a copy: op.MustExist %v, p.MustExist %v", op.MustExist(), p.MustExist())
	}
}

func TestResults(t *testing.T) {
	rep := widgetRep{UUID: "w1", Name: "one"}
	cases := []struct {
		name string
		got  any
		want string
	}{
		{"inventory", route.Inventory(rep), `{"inventory":{"uuid":"w1","name":"one"}}`},
		{"nothing", route.Nothing(rep), `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := json.Marshal(tc.got)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != tc.want {
				t.Errorf("result %s, want %s", data, tc.want)
			}
		})
	}
}

// openDB opens a SQLite database of the test's own.
func openDB(t *testing.T) *gorm.DB {
	t.Helper()
	gdb, err := db.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "route.db"), db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	return gdb
}

// wantCode fails unless err is an *errcode.Error of code whose text holds
// detail.
func wantCode(t *testing.T, err error, code errcode.Code, detail string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s with %q", code, detail)
	}
	if !errcode.Has(err, code) || !strings.Contains(err.Error(), detail) {
		t.Fatalf("error %v, want %s with %q", err, code, detail)
	}
}

func decodeReq(t *testing.T, body json.RawMessage) widgetReq {
	t.Helper()
	var req widgetReq
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return req
}

func TestAcceptCreate(t *testing.T) {
	gdb := openDB(t)
	var seen route.In[widgetParams]
	op := route.Create(msgCreate, func(ctx context.Context, in route.In[widgetParams]) (widgetReq, error) {
		seen = in
		return buildWidget(ctx, in)
	})
	cases := []struct {
		name   string
		body   string
		code   errcode.Code
		detail string
	}{
		{"ok", `{"params": {"name": "w"}}`, "", ""},
		{"ok with tags", `{"params": {"name": "w"}, "systemTags": ["a::b"]}`, "", ""},
		{"malformed JSON", `{"params": {"name": "w"`, errcode.InvalidArgument, "malformed JSON"},
		{"params missing, another field given", `{"name": "w"}`, errcode.InvalidArgument, `unknown top-level field "name"`},
		{"missing params", `{}`, errcode.InvalidArgument, `missing "params"`},
		{"not an object", `[1]`, errcode.InvalidArgument, "must be a JSON object"},
		{"unknown field", `{"params": {"name": "w", "size": 3}}`, errcode.InvalidArgument, `params: unknown field "size"`},
		{"wrong type", `{"params": {"name": 3}}`, errcode.InvalidArgument, "params.name must be a string"},
		{"validate", `{"params": {"name": ""}}`, errcode.InvalidArgument, "name is required"},
		{"validate with a plain error", `{"params": {"name": "plain"}}`, errcode.InvalidArgument, "params: a plain error"},
		{"build refuses", `{"params": {"name": "refused"}}`, errcode.InvalidArgument, "zoneUuid z does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen = route.In[widgetParams]{}
			r := httptest.NewRequest(http.MethodPost, "/v1/widgets?color=red", strings.NewReader(tc.body))
			body, resource, err := op.Accept(context.Background(), r, gdb, "new-uuid", "", nil)
			if tc.code != "" {
				wantCode(t, err, tc.code, tc.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resource != "new-uuid" {
				t.Errorf("resource %q, want new-uuid", resource)
			}
			if req := decodeReq(t, body); req != (widgetReq{UUID: "new-uuid", Name: "w"}) {
				t.Errorf("request %+v", req)
			}
			if seen.UUID != "new-uuid" || seen.Parent != "" || seen.Params.Name != "w" || seen.DB == nil ||
				!reflect.DeepEqual(seen.Query, url.Values{"color": {"red"}}) {
				t.Errorf("Build got %+v", seen)
			}
		})
	}
}

func TestAcceptCreateUnder(t *testing.T) {
	gdb := openDB(t)
	op := route.CreateUnder(msgCreate, func(p *widgetParams) *string { return &p.Parent }, func(_ context.Context, in route.In[widgetParams]) (widgetReq, error) {
		// The params field is the path's parent, whatever the body said.
		return widgetReq{UUID: in.UUID, Name: in.Params.Name, Parent: in.Params.Parent + "|" + in.Parent}, nil
	}).At("boxes/{uuid}/widgets")
	cases := []struct {
		name   string
		body   string
		want   string
		detail string
	}{
		{"parent from the path", `{"params": {"name": "w"}}`, "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0|b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0", ""},
		{"validate sees the parent", `{"params": {"name": "w", "requireParent": true}}`, "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0|b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0", ""},
		{"body names the same parent", `{"params": {"name": "w", "parentUuid": "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"}}`, "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0|b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0", ""},
		{"body names another parent", `{"params": {"name": "w", "parentUuid": "b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3"}}`, "", "the body names parent b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3 but the path names b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"},
		{"body clears the parent", `{"params": {"name": "w", "parentUuid": ""}}`, "", "the body names parent  but the path names b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/boxes/b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0/widgets", strings.NewReader(tc.body))
			body, resource, err := op.Accept(context.Background(), r, gdb, "new-uuid", "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0", nil)
			if tc.detail != "" {
				wantCode(t, err, errcode.InvalidArgument, tc.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req := decodeReq(t, body); req.Parent != tc.want || resource != "new-uuid" {
				t.Errorf("request %+v (resource %q), want parent %q", req, resource, tc.want)
			}
		})
	}
}

func TestAcceptAction(t *testing.T) {
	gdb := openDB(t)
	op := route.Action("renameWidget", msgAction, buildWidget)
	cases := []struct {
		name   string
		body   string
		detail string
	}{
		{"ok", `{"renameWidget": {"name": "w2"}}`, ""},
		{"unknown field", `{"renameWidget": {"name": "w2", "size": 1}}`, `renameWidget: unknown field "size"`},
		{"validate", `{"renameWidget": {}}`, "name is required"},
		{"build refuses", `{"renameWidget": {"name": "refused"}}`, "zoneUuid z does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/v1/widgets/w1/actions", strings.NewReader(tc.body))
			a, err := rest.DecodeAction(r, "renameWidget")
			if err != nil {
				t.Fatal(err)
			}
			body, resource, err := op.Accept(context.Background(), r, gdb, "w1", "", &a)
			if tc.detail != "" {
				wantCode(t, err, errcode.InvalidArgument, tc.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req := decodeReq(t, body); req != (widgetReq{UUID: "w1", Name: "w2"}) || resource != "w1" {
				t.Errorf("request %+v (resource %q)", req, resource)
			}
		})
	}
}

func TestAcceptDelete(t *testing.T) {
	gdb := openDB(t)
	op := route.Delete(msgDelete, buildDelete)
	cases := []struct {
		query, mode, detail string
	}{
		{"", "Permissive", ""},
		{"?deleteMode=Permissive", "Permissive", ""},
		{"?deleteMode=Enforcing", "Enforcing", ""},
		{"?deleteMode=enforcing", "", `deleteMode must be Permissive or Enforcing, got "enforcing"`},
		{"?deleteMode=Force", "", `deleteMode must be Permissive or Enforcing, got "Force"`},
	}
	for _, tc := range cases {
		t.Run("query "+tc.query, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodDelete, "/v1/widgets/w1"+tc.query, nil)
			body, resource, err := op.Accept(context.Background(), r, gdb, "w1", "", nil)
			if tc.detail != "" {
				wantCode(t, err, errcode.InvalidArgument, tc.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req := decodeReq(t, body); req != (widgetReq{UUID: "w1", Mode: tc.mode}) || resource != "w1" {
				t.Errorf("request %+v (resource %q), want mode %q", req, resource, tc.mode)
			}
		})
	}
}

func TestAcceptUnencodableRequest(t *testing.T) {
	gdb := openDB(t)
	op := route.Create(msgBad, func(_ context.Context, in route.In[widgetParams]) (badReq, error) {
		return badReq{UUID: in.UUID, Ch: make(chan int)}, nil
	})
	r := httptest.NewRequest(http.MethodPost, "/v1/widgets", strings.NewReader(`{"params": {"name": "w"}}`))
	_, _, err := op.Accept(context.Background(), r, gdb, "u", "", nil)
	wantCode(t, err, errcode.Internal, "encode routetest.Bad")
}

type embeddedParams struct {
	Zone string `json:"zoneUuid"`
}

type everyParams struct {
	embeddedParams
	Name   string `json:"name,omitempty"`
	Secret string `json:"-"`
	hidden int
	Plain  string
}

func TestParams(t *testing.T) {
	build := func(_ context.Context, in route.In[everyParams]) (widgetReq, error) {
		return widgetReq{UUID: in.UUID}, nil
	}
	cases := []struct {
		name string
		op   route.Op
		want []string
	}{
		{"create", route.Create(msgCreate, buildWidget), []string{"name", "parentUuid", "requireParent"}},
		{"embedded, skipped and untagged fields", route.Create(msgCreate, build), []string{"zoneUuid", "name", "Plain"}},
		{"no params", route.Action("touchWidget", msgAction, func(_ context.Context, in route.In[struct{}]) (widgetReq, error) {
			return widgetReq{UUID: in.UUID}, nil
		}), nil},
		{"params not a struct", route.Action("tagWidget", msgAction, func(_ context.Context, in route.In[map[string]string]) (widgetReq, error) {
			return widgetReq{UUID: in.UUID}, nil
		}), nil},
		{"delete", route.Delete(msgDelete, buildDelete), []string{"deleteMode"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.op.Params(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Params = %q, want %q", got, tc.want)
			}
		})
	}
	_ = everyParams{hidden: 1}.hidden
}
