package route_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/server/servertest"
)

// TestDrive calls the owner through each kind of Op on the real node: the
// owner is a service of the test's own on the node's bus, behind Guard.
func TestDrive(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	mux := cloudbus.NewMux()
	handler := func(ctx context.Context, req widgetReq) (widgetRep, error) {
		if req.Name == "boom" {
			return widgetRep{}, errcode.New(errcode.InvalidState, "widget %s cannot go boom", req.UUID)
		}
		return widgetRep{UUID: req.UUID, Name: req.Name + req.Mode}, nil
	}
	for _, m := range []managementnode.OwnedMsg[widgetReq, widgetRep]{msgCreate, msgAction, msgDelete} {
		managementnode.Handle(mux, m, handler)
	}
	mux.Intercept(st.Node().Guard(svc))
	if err := st.Bus().Serve(svc, mux); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		op     route.Op
		body   string
		want   string
		code   errcode.Code
		detail string
	}{
		{"create answers the inventory", route.Create(msgCreate, buildWidget), `{"uuid": "w1", "name": "one"}`, `{"inventory":{"uuid":"w1","name":"one"}}`, "", ""},
		{"action answers the inventory", route.Action("renameWidget", msgAction, buildWidget), `{"uuid": "w1", "name": "two"}`, `{"inventory":{"uuid":"w1","name":"two"}}`, "", ""},
		{"action without result", route.ActionNoResult("touchWidget", msgAction, buildWidget), `{"uuid": "w1", "name": "two"}`, `{}`, "", ""},
		{"delete answers nothing", route.Delete(msgDelete, buildDelete), `{"uuid": "w1", "mode": "Enforcing"}`, `{}`, "", ""},
		{"the owner's error", route.Create(msgCreate, buildWidget), `{"uuid": "w2", "name": "boom"}`, "", errcode.InvalidState, "widget w2 cannot go boom"},
		{"a body that does not decode", route.Create(msgCreate, buildWidget), `{"uuid": 5}`, "", errcode.MalformedMessage, "decode routetest.CreateWidget"},
		{"call actions: the action the body named", paintActions(), `{"action": "paintWidget", "body": {"uuid": "w1", "name": "red"}}`, `{"inventory":{"uuid":"w1","name":"red"}}`, "", ""},
		{"call actions: an action without result", paintActions(), `{"action": "scrubWidget", "body": {"uuid": "w1"}}`, `{}`, "", ""},
		{"call actions: an action of another build", paintActions(), `{"action": "bendWidget", "body": {}}`, "", errcode.UnknownMessage, `no action "bendWidget"`},
		{"call actions: NoResult", paintActions().NoResult(), `{"action": "paintWidget", "body": {"uuid": "w1"}}`, `{}`, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			got, err := tc.op.Drive(ctx, st.Node(), json.RawMessage(tc.body))
			if tc.code != "" {
				wantCode(t, err, tc.code, tc.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != tc.want {
				t.Errorf("result %s, want %s", data, tc.want)
			}
		})
	}
}
