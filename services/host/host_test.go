package host

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"mplane/agents/protocol"
	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
)

func TestAddParamsValidate(t *testing.T) {
	tests := []struct {
		name string
		req  AddKVMHostParams
		want string // substring of the error; "" means valid
	}{
		{"ok", AddKVMHostParams{ClusterUUID: "c1", ManagementIP: "10.0.0.5"}, ""},
		{"no cluster", AddKVMHostParams{ManagementIP: "10.0.0.5"}, "clusterUuid is required"},
		{"no ip", AddKVMHostParams{ClusterUUID: "c1"}, "managementIp is required"},
		{"hostname", AddKVMHostParams{ClusterUUID: "c1", ManagementIP: "kvm-1.example"}, `managementIp must be an IP address, got "kvm-1.example"`},
		{"unspecified", AddKVMHostParams{ClusterUUID: "c1", ManagementIP: "0.0.0.0"}, "unicast"},
		{"port", AddKVMHostParams{ClusterUUID: "c1", ManagementIP: "10.0.0.5", AgentPort: 70000}, "agentPort must be between 1 and 65535"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			err := req.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if req.AgentPort != DefaultAgentPort || req.Name != req.ManagementIP {
					t.Fatalf("defaults not applied: %+v", req)
				}
				return
			}
			if errcode.CodeOf(err) != errcode.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want SYS.1007 with %q", err, tc.want)
			}
		})
	}
}

// TestEventAuthentication: an event acts only if it carries the host's
// secret, or, without one, comes from the host's registered address.
func TestEventAuthentication(t *testing.T) {
	gdb, err := db.Open(context.Background(), testenv.SQLiteDSN(t), db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	if err := Migrate(context.Background(), gdb); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	h := HostVO{UUID: "h1", Name: "h1", ManagementIP: "10.0.0.5", AgentPort: 7070, HypervisorType: HypervisorKVM,
		State: StateEnabled, Status: StatusConnected, Secret: "s3cret", CreateDate: now, LastOpDate: now}
	if err := gdb.Create(&h).Error; err != nil {
		t.Fatal(err)
	}
	s := &Service{db: gdb, log: slog.New(slog.NewTextHandler(io.Discard, nil)), ctx: context.Background()}
	var seen []string
	s.OnAgentEvent(func(_ context.Context, ev AgentEvent) { seen = append(seen, ev.HostUUID+" "+ev.Path) })

	tests := []struct {
		name   string
		req    agentEventReq
		code   errcode.Code // "" = accepted
		reason string
	}{
		{"right secret from anywhere", agentEventReq{Secret: "s3cret", RemoteIP: "192.0.2.9"}, "", ""},
		{"wrong secret", agentEventReq{Secret: "guess", RemoteIP: "10.0.0.5"}, errcode.Unauthenticated, "wrong"},
		{"legacy from the host's address", agentEventReq{RemoteIP: "10.0.0.5"}, "", ""},
		{"legacy from elsewhere", agentEventReq{RemoteIP: "192.0.2.9"}, errcode.PermissionDenied, "must come from 10.0.0.5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(seen)
			req := tc.req
			req.HostUUID, req.Path, req.Body = "h1", protocol.EventReportVMState, []byte(`{"vmUuid":"v1","vmState":"Running"}`)
			_, err := s.onEvent(context.Background(), req)
			if tc.code == "" {
				if err != nil || len(seen) != before+1 {
					t.Fatalf("accepted event: err %v, hooks ran %d times", err, len(seen)-before)
				}
				return
			}
			if errcode.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
			if len(seen) != before {
				t.Fatal("a refused event reached the hooks")
			}
		})
	}
	if _, err := s.onEvent(context.Background(), agentEventReq{HostUUID: "nope", Secret: "x"}); errcode.CodeOf(err) != errcode.ResourceNotFound {
		t.Fatalf("event for an unknown host: %v", err)
	}
}
