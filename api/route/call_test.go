package route_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"mplane/api/route"
	"mplane/errcode"
)

type attachParams struct {
	BoxUUID    string `json:"boxUuid"`
	WidgetUUID string `json:"widgetUuid"`
	Note       string `json:"note,omitempty"`
}

func (p *attachParams) Validate() error {
	if p.Note == "bad" {
		return errcode.New(errcode.InvalidArgument, "note must not be bad")
	}
	if p.WidgetUUID == "" {
		return errcode.New(errcode.InvalidArgument, "widgetUuid is required")
	}
	return nil
}

func buildAttach(_ context.Context, in route.In[attachParams]) (widgetReq, error) {
	return widgetReq{UUID: in.Params.WidgetUUID, Parent: in.Params.BoxUUID, Name: in.Params.Note}, nil
}

func TestCallDeclaration(t *testing.T) {
	op := route.Call(http.MethodPost, "/boxes/{boxUuid}/widgets/{widgetUuid}/", msgAction, buildAttach)
	if op.Method() != "POST" || op.Path() != "boxes/{boxUuid}/widgets/{widgetUuid}" {
		t.Errorf("method %q path %q", op.Method(), op.Path())
	}
	if op.Key() != "routetest.RenameWidget@POST boxes/{boxUuid}/widgets/{widgetUuid}" {
		t.Errorf("key %q", op.Key())
	}
	del := route.Call(http.MethodDelete, "boxes/{boxUuid}/widgets/{widgetUuid}", msgAction, buildAttach)
	if del.Key() == op.Key() {
		t.Errorf("POST and DELETE of one message share the key %q", op.Key())
	}
	res := route.Resource{Path: "widgets", Calls: []route.Op{op, del}}
	if got := len(res.Ops()); got != 2 {
		t.Errorf("Ops lists %d calls, want 2", got)
	}
	for _, bad := range []func(){
		func() { route.Call(http.MethodPost, "boxes/{nope}", msgAction, buildAttach) },
		func() { route.Call(http.MethodGet, "boxes/{boxUuid}", msgAction, buildAttach) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("a bad declaration did not panic")
				}
			}()
			bad()
		}()
	}
}

func TestAcceptCall(t *testing.T) {
	gdb := openDB(t)
	post := route.Call(http.MethodPost, "boxes/{boxUuid}/widgets/{widgetUuid}", msgAction, buildAttach)
	del := route.Call(http.MethodDelete, "boxes/{boxUuid}/widgets", msgAction, buildAttach)
	cases := []struct {
		name, method, target, body string
		op                         route.Op
		want                       widgetReq
		detail                     string
	}{
		{"post, variables from the path", "POST", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets/e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", `{"params": {"note": "n"}}`, post, widgetReq{UUID: "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", Parent: "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1", Name: "n"}, ""},
		{"post, empty body", "POST", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets/e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", ``, post, widgetReq{UUID: "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", Parent: "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"}, ""},
		{"post, body repeats the path", "POST", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets/e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", `{"params": {"boxUuid": "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1", "widgetUuid": "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"}}`, post, widgetReq{UUID: "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", Parent: "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"}, ""},
		{"post, body contradicts the path", "POST", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets/e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", `{"params": {"boxUuid": "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"}}`, post, widgetReq{},
			`the body gives boxUuid "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2" but the path gives "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"`},
		{"post, unknown field", "POST", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets/e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", `{"params": {"colour": "red"}}`, post, widgetReq{}, "colour"},
		{"post, validate runs", "POST", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets/e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1", `{"params": {"note": "bad"}}`, post, widgetReq{}, "note must not be bad"},
		{"post, empty body validates", "POST", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets/", ``, route.Call(http.MethodPost, "boxes/{boxUuid}/widgets/", msgAction, buildAttach),
			widgetReq{}, "widgetUuid is required"},
		{"delete, query fills the rest", "DELETE", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets?widgetUuid=e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9&note=x", ``, del, widgetReq{UUID: "e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9", Parent: "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1", Name: "x"}, ""},
		{"delete, unknown query parameter", "DELETE", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets?widgetUuid=e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9&colour=red", ``, del, widgetReq{},
			`unknown query parameter "colour"; this call takes boxUuid, note, widgetUuid`},
		{"delete, query repeats the path", "DELETE", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets?widgetUuid=e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9&boxUuid=b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1", ``, del, widgetReq{},
			`query parameter "boxUuid" repeats a path variable`},
		{"delete, validate runs", "DELETE", "/v1/boxes/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/widgets", ``, del, widgetReq{}, "widgetUuid is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			// What the ServeMux pattern would give.
			parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
			for i, seg := range strings.Split(tc.op.Path(), "/") {
				if strings.HasPrefix(seg, "{") && i < len(parts) {
					r.SetPathValue(strings.Trim(seg, "{}"), parts[i])
				}
			}
			body, resource, err := tc.op.Accept(context.Background(), r, gdb, "", "", nil)
			if tc.detail != "" {
				wantCode(t, err, errcode.InvalidArgument, tc.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req := decodeReq(t, body); req != tc.want || resource != tc.want.UUID {
				t.Errorf("request %+v (resource %q), want %+v", req, resource, tc.want)
			}
		})
	}
}
