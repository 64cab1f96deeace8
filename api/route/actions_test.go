package route_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"mplane/api/route"
	"mplane/errcode"
)

// The widget's actions on a path of their own, named by box and widget.

type paintParams struct {
	BoxUUID    string `json:"boxUuid"`
	WidgetUUID string `json:"widgetUuid"`
	Colour     string `json:"colour"`
}

func (p *paintParams) Validate() error {
	if p.Colour == "" {
		return errcode.New(errcode.InvalidArgument, "colour is required")
	}
	return nil
}

type scrubParams struct {
	BoxUUID    string `json:"boxUuid"`
	WidgetUUID string `json:"widgetUuid"`
}

func paintActions() route.Op {
	return route.CallActions("/boxes/{boxUuid}/widgets/{widgetUuid}/actions/",
		route.Action("paintWidget", msgAction, func(_ context.Context, in route.In[paintParams]) (widgetReq, error) {
			return widgetReq{UUID: in.Params.WidgetUUID, Parent: in.Params.BoxUUID, Name: in.Params.Colour}, nil
		}),
		route.ActionNoResult("scrubWidget", msgAction, func(_ context.Context, in route.In[scrubParams]) (widgetReq, error) {
			return widgetReq{UUID: in.Params.WidgetUUID, Parent: in.Params.BoxUUID, Name: "scrubbed"}, nil
		}),
	)
}

func TestCallActionsDeclaration(t *testing.T) {
	op := paintActions()
	if op.Method() != "PUT" || op.Path() != "boxes/{boxUuid}/widgets/{widgetUuid}/actions" || op.Name() != "routetest.RenameWidget" {
		t.Errorf("method %q path %q name %q", op.Method(), op.Path(), op.Name())
	}
	if op.Key() != "routetest.RenameWidget@PUT boxes/{boxUuid}/widgets/{widgetUuid}/actions" {
		t.Errorf("key %q", op.Key())
	}
	want := []string{"paintWidget.colour", "scrubWidget"} // the path's variables are not the body's
	if got := op.Params(); !reflect.DeepEqual(got, want) {
		t.Errorf("Params = %q, want %q", got, want)
	}
	touch := route.Action("touchWidget", msgAction, func(_ context.Context, in route.In[struct{}]) (widgetReq, error) { return widgetReq{}, nil })
	if got := route.CallActions("widgets/actions", touch).Params(); !reflect.DeepEqual(got, []string{"touchWidget"}) {
		t.Errorf("Params of an action without params = %q", got)
	}
	paint := route.Action("paintWidget", msgAction, func(_ context.Context, in route.In[paintParams]) (widgetReq, error) { return widgetReq{}, nil })
	for name, bad := range map[string]func(){
		"no actions":           func() { route.CallActions("boxes/{boxUuid}/actions") },
		"not an action":        func() { route.CallActions("boxes/{boxUuid}/actions", route.Create(msgAction, buildWidget)) },
		"two messages":         func() { route.CallActions("boxes/{boxUuid}/actions", paint, route.Action("x", msgCreate, buildWidget)) },
		"one name twice":       func() { route.CallActions("boxes/{boxUuid}/actions", paint, paint) },
		"variable of no field": func() { route.CallActions("boxes/{nope}/actions", paint) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: the declaration did not panic", name)
				}
			}()
			bad()
		}()
	}
}

func TestAcceptCallActions(t *testing.T) {
	gdb := openDB(t)
	op := paintActions()
	cases := []struct {
		name, body string
		want       widgetReq
		detail     string
	}{
		{"variables from the path", `{"paintWidget": {"colour": "red"}}`, widgetReq{UUID: "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", Parent: "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1", Name: "red"}, ""},
		{"the other action", `{"scrubWidget": {}}`, widgetReq{UUID: "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", Parent: "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1", Name: "scrubbed"}, ""},
		{"tags beside the action", `{"scrubWidget": {}, "systemTags": ["a::b"]}`, widgetReq{UUID: "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", Parent: "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1", Name: "scrubbed"}, ""},
		{"body repeats the path", `{"paintWidget": {"colour": "red", "boxUuid": "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"}}`, widgetReq{UUID: "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", Parent: "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1", Name: "red"}, ""},
		{"body contradicts the path", `{"paintWidget": {"colour": "red", "widgetUuid": "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2"}}`, widgetReq{},
			`the body gives widgetUuid "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2" but the path gives "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"`},
		{"validate runs with the path's variables", `{"paintWidget": {}}`, widgetReq{}, "colour is required"},
		{"a field of the other action", `{"scrubWidget": {"colour": "red"}}`, widgetReq{}, `scrubWidget: unknown field "colour"`},
		{"unknown action", `{"bendWidget": {}}`, widgetReq{}, `unknown action "bendWidget"; valid actions: paintWidget, scrubWidget`},
		{"two actions", `{"paintWidget": {"colour": "red"}, "scrubWidget": {}}`, widgetReq{}, "expected exactly one action"},
		{"ZStack's params body is not an action", `{"params": {"colour": "red"}}`, widgetReq{}, `unknown action "params"`},
		{"empty body", ``, widgetReq{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets/e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1/actions", strings.NewReader(tc.body))
			r.SetPathValue("boxUuid", "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1")
			r.SetPathValue("widgetUuid", "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1")
			body, resource, err := op.Accept(context.Background(), r, gdb, "", "", nil)
			if tc.body == "" {
				wantCode(t, err, errcode.InvalidArgument, "")
				return
			}
			if tc.detail != "" {
				wantCode(t, err, errcode.InvalidArgument, tc.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var carried struct {
				Action string          `json:"action"`
				Body   json.RawMessage `json:"body"`
			}
			if err := json.Unmarshal(body, &carried); err != nil {
				t.Fatal(err)
			}
			if req := decodeReq(t, carried.Body); req != tc.want || resource != tc.want.UUID {
				t.Errorf("request %+v (resource %q), want %+v", req, resource, tc.want)
			}
		})
	}
}
