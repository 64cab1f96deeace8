package host_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/server/servertest"
	"mplane/services/host"
	"mplane/uid"
)

// TestEventsAuthenticatedBeforeTheBody: the node's event endpoint settles
// who sent an event from its URL and headers alone, before it reads a byte
// of the body: an event without the host's secret is refused (401) even
// from the host's registered address (127.0.0.1, that of every host of an
// embedded cloud, and of anyone on the machine), as are a wrong secret, an
// unknown host, an event whose URL names no host (400) and a body
// announced larger than 64 KiB (413). A body that is not JSON is 400, not
// 500. A reconnect asked by forged events never happens.
func TestEventsAuthenticatedBeforeTheBody(t *testing.T) {
	st, ctx := startStack(t, nil)
	a := startAgent(t, "127.0.0.1:0", kvm.Options{})
	h := addHost(t, ctx, st, a, "kvm")
	secret := secretOf(t, st, h.UUID)
	q := "?hostUuid=" + h.UUID
	state := `{"hostUuid":"` + h.UUID + `","vmUuid":"vm-x","vmState":"Running"}`

	for _, tc := range []struct {
		name, query, secret, body string
		length                    int64 // 0: len(body)
		want                      int
		read                      bool
	}{
		{"no secret, from the host's address", q, "", state, 0, http.StatusUnauthorized, false},
		{"wrong secret", q, "guess", state, 0, http.StatusUnauthorized, false},
		{"unknown host", "?hostUuid=" + uid.New(), secret, state, 0, http.StatusNotFound, false},
		{"no host in the URL, one in the body", "", secret, state, 0, http.StatusBadRequest, false},
		{"larger than 64 KiB", q, secret, "", 16 << 20, http.StatusRequestEntityTooLarge, false},
		{"not JSON", q, secret, "not json", 0, http.StatusBadRequest, true},
		{"the host's own event", q, secret, state, 0, http.StatusOK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			length := int64(len(tc.body))
			if tc.length > 0 {
				body, length = io.LimitReader(servertest.Zeros{}, tc.length), tc.length
			}
			status, sent := servertest.PostEventExpecting(t, st.URL+protocol.DefaultEventPath+tc.query, protocol.EventReportVMState, tc.secret, body, length)
			if status != tc.want {
				t.Errorf("answered %d, want %d", status, tc.want)
			}
			if read := sent > 0; read != tc.read {
				t.Errorf("the node read %d bytes of the body; want it read: %v", sent, tc.read)
			}
		})
	}

	t.Run("forged reconnects", func(t *testing.T) {
		before := a.commands(protocol.PathConnect)
		for range 50 {
			if got := postEvent(t, st, q[1:], protocol.EventReconnectMe, "", `{"hostUuid":"`+h.UUID+`","reason":"forged"}`, "127.0.0.1"); got != http.StatusUnauthorized {
				t.Fatalf("forged reconnectme answered %d, want 401", got)
			}
		}
		// The host's own afterwards is the only reconnect the agent sees.
		if got := postEvent(t, st, q[1:], protocol.EventReconnectMe, secret, `{}`, ""); got != http.StatusOK {
			t.Fatalf("reconnectme answered %d", got)
		}
		poll(t, 10*time.Second, func() (bool, string) {
			return a.commands(protocol.PathConnect) >= before+1, "waiting for the asked reconnect"
		})
		time.Sleep(200 * time.Millisecond)
		if n := a.commands(protocol.PathConnect); n != before+1 {
			t.Fatalf("agent got %d connects, want exactly one more", n-before)
		}
		waitStatus(t, ctx, st, h.UUID, host.StatusConnected)
	})
}
