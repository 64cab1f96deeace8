package kvm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/errcode"
)

// TestClientDrivesAgentOverHTTP runs the agent in process on a loopback
// port and drives it with agents/agentclient over real HTTP, as a management
// node does.
func TestClientDrivesAgentOverHTTP(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{})
	silent := startAgent(t, Options{NoCallbackRate: 1})

	t.Run("echo, connect, start", func(t *testing.T) {
		if err := m.client.CallSync(t.Context(), a.url, protocol.PathEcho, nil, nil); err != nil {
			t.Fatal(err)
		}
		m.connect(t, a, "h1", "s1")
		var rsp protocol.VMRsp
		if err := m.client.Call(t.Context(), a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, &rsp, agentclient.WithSecret("s1")); err != nil {
			t.Fatal(err)
		}
		if !rsp.Success || rsp.Error != "" || rsp.VMState != "Running" {
			t.Errorf("result %+v", rsp)
		}
	})

	t.Run("agent never calls back: timeout at the deadline, record dropped", func(t *testing.T) {
		done := make(chan agentclient.Result, 1)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		err := m.client.Start(ctx, silent.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v9", RootVolume: testRoot("v9")},
			func(r agentclient.Result) { done <- r })
		if err != nil {
			t.Fatal(err)
		}
		// While waiting, the call is a pending record with its deadline.
		select {
		case <-done:
		default:
			p := m.client.Pending()
			if len(p) != 1 || p[0].Path != protocol.PathStartVM || p[0].Deadline.IsZero() {
				t.Errorf("Pending() = %+v", p)
			}
		}
		r := <-done
		if !errcode.Has(r.Err, errcode.Timeout) || errcode.CodeOf(r.Err) != "SYS.1001" {
			t.Fatalf("err = %v, want Timeout SYS.1001", r.Err)
		}
		if n := m.client.PendingCount(); n != 0 {
			t.Errorf("%d records still pending after the timeout", n)
		}
		eventually(t, "the agent to count the swallowed result", func() bool {
			return silent.Stats().InjectedNoCallbacks == 1
		})
	})

	t.Run("duplicate callback ignored", func(t *testing.T) {
		var rsp protocol.VMRsp
		if err := m.client.Call(t.Context(), a.url, protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1"}, &rsp, agentclient.WithSecret("s1")); err != nil {
			t.Fatal(err)
		}
		cbs := m.callbacksSoFar()
		last := cbs[len(cbs)-1]
		// The agent delivers the same result again (as after a lost answer).
		if got := repost(t, m.cbURL, last.taskUUID, last.body); got != http.StatusNotFound {
			t.Errorf("duplicate callback answered %d, want 404 (already completed)", got)
		}
		if st := m.client.Stats(); st.DuplicateCallbacks != 1 || st.Pending != 0 {
			t.Errorf("client stats %+v", st)
		}
		if a.vmState("v1") != "Shutdown" || rsp.VMState != "Shutdown" {
			t.Errorf("state %q, result %+v", a.vmState("v1"), rsp)
		}
	})

	t.Run("forged callback is 404", func(t *testing.T) {
		if got := repost(t, m.cbURL, "00000000000000000000000000000000", []byte(`{"success":true,"error":""}`)); got != http.StatusNotFound {
			t.Errorf("forged callback answered %d, want 404", got)
		}
		if got := repost(t, m.cbURL, "", []byte(`{"success":true}`)); got != http.StatusBadRequest {
			t.Errorf("callback without taskuuid answered %d, want 400", got)
		}
		if st := m.client.Stats(); st.UnknownCallbacks != 1 || st.BadCallbacks != 1 {
			t.Errorf("client stats %+v", st)
		}
	})
}

func repost(t *testing.T, url, taskUUID string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", protocol.JSONContentType)
	if taskUUID != "" {
		req.Header.Set(protocol.TaskUUIDHeader, taskUUID)
	}
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = rsp.Body.Close()
	return rsp.StatusCode
}

func TestDebugEndpoints(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{})
	m.connect(t, a, "h1", "s1")
	if err := m.client.Call(t.Context(), a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, nil, agentclient.WithSecret("s1")); err != nil {
		t.Fatal(err)
	}
	// The node has the result before the agent counts it delivered.
	eventually(t, "delivery to be counted", func() bool { return a.Stats().Server.Running == 0 })
	// GET needs no secret.
	rsp, err := http.Get(a.url + protocol.PathDebugStats)
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	err = json.NewDecoder(rsp.Body).Decode(&st)
	_ = rsp.Body.Close()
	if err != nil || rsp.StatusCode != http.StatusOK {
		t.Fatalf("GET stats: %d %v", rsp.StatusCode, err)
	}
	if st.Commands[protocol.PathStartVM] != 1 || st.Commands[protocol.PathConnect] != 1 || st.Overlaps != 0 ||
		st.VMs["Running"] != 1 || st.Arrivals.Count != 2 || st.Server.CallbacksDelivered != 1 {
		t.Errorf("stats %+v", st)
	}

	// The arrivals (task UUIDs) need the host secret.
	var arrivals []Arrival
	if status := getDebug(t, a.url+protocol.PathDebugArrivals, "s1", &arrivals); status != http.StatusOK {
		t.Fatalf("GET arrivals with the secret: %d", status)
	}
	if len(arrivals) != 2 || arrivals[0].Path != protocol.PathConnect || arrivals[1].Path != protocol.PathStartVM ||
		arrivals[1].TaskUUID == "" || arrivals[1].At.Before(arrivals[0].At) {
		t.Errorf("arrivals %+v", arrivals)
	}

	// The mutating debug endpoints need the secret.
	postDebug(t, a.url+protocol.PathDebugCrashVM, `{"vmUuid":"v1"}`, http.StatusUnauthorized)
	postDebug(t, a.url+protocol.PathDebugStats, `{}`, http.StatusMethodNotAllowed)
}

// getDebug GETs a debug endpoint, with the host secret unless it is empty,
// and decodes a 200 answer into v.
func getDebug(t *testing.T, url, secret string, v any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set(protocol.SecretHeader, secret)
	}
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	if rsp.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(rsp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return rsp.StatusCode
}

// TestDebugArrivalsNeedTheSecret: /debug/arrivals lists the task UUIDs of
// the commands, those still running among them; without the host secret
// (or with a wrong one) it answers 401 and shows nothing, unless the agent
// runs with OpenDebug. The other GET debug endpoints, which show no task,
// still answer without it.
func TestDebugArrivalsNeedTheSecret(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{})
	open := startAgent(t, Options{OpenDebug: true})
	for _, ag := range []*testAgent{a, open} {
		m.connect(t, ag, "h1", "s1")
		if err := m.client.Call(t.Context(), ag.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, nil, agentclient.WithSecret("s1")); err != nil {
			t.Fatal(err)
		}
	}
	for _, secret := range []string{"", "guess"} {
		if status := getDebug(t, a.url+protocol.PathDebugArrivals, secret, nil); status != http.StatusUnauthorized {
			t.Errorf("GET arrivals with secret %q: %d, want 401", secret, status)
		}
	}
	for _, path := range []string{protocol.PathDebugStats, protocol.PathDebugVMs, protocol.PathDebugVMArrivals} {
		if status := getDebug(t, a.url+path, "", nil); status != http.StatusOK {
			t.Errorf("GET %s without the secret: %d, want 200", path, status)
		}
	}
	for name, tc := range map[string]struct {
		ag     *testAgent
		secret string
	}{"with the secret": {a, "s1"}, "OpenDebug, no secret": {open, ""}} {
		var arrivals []Arrival
		if status := getDebug(t, tc.ag.url+protocol.PathDebugArrivals, tc.secret, &arrivals); status != http.StatusOK {
			t.Fatalf("%s: %d, want 200", name, status)
		}
		if len(arrivals) != 2 || arrivals[1].Path != protocol.PathStartVM || arrivals[1].TaskUUID == "" {
			t.Errorf("%s: arrivals %+v", name, arrivals)
		}
	}
	// OpenDebug opens the reading only: the mutating endpoints still need
	// the secret.
	postDebug(t, open.url+protocol.PathDebugCrashVM, `{"vmUuid":"v1"}`, http.StatusUnauthorized)
}

func TestArrivalLogKeepsTheLast(t *testing.T) {
	l := newArrivalLog(3)
	for i := 0; i < 5; i++ {
		l.add(Arrival{Path: string(rune('a' + i))})
	}
	got := l.list()
	if len(got) != 3 || got[0].Path != "c" || got[2].Path != "e" || l.count != 5 {
		t.Errorf("arrivals %+v, count %d", got, l.count)
	}
}

// TestClaimToken: an agent started with a claim token is claimed only by a
// connect that carries it (before, a fresh agent took the first connect
// from anyone, who then held it); a different secret later needs the
// token again (an explicit re-claim); without the token nothing changes.
func TestClaimToken(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{ClaimToken: "claim-me"})
	tryConnect := func(secret string, opts ...agentclient.CallOption) error {
		var rsp protocol.ConnectRsp
		err := m.client.CallSync(t.Context(), a.url, protocol.PathConnect,
			protocol.ConnectCmd{HostUUID: "h1", SendCommandURL: m.eventURL, Version: "test", Secret: secret}, &rsp, opts...)
		if err == nil && !rsp.Success {
			err = fmt.Errorf("connect answered %+v", rsp)
		}
		return err
	}
	claim := agentclient.WithHeader(protocol.ClaimHeader, "claim-me")
	for name, opts := range map[string][]agentclient.CallOption{
		"no token":    nil,
		"wrong token": {agentclient.WithHeader(protocol.ClaimHeader, "guess")},
	} {
		if err := tryConnect("attacker", opts...); err == nil {
			t.Fatalf("a fresh agent claimed with %s", name)
		}
	}
	a.mu.Lock()
	held := a.secret
	a.mu.Unlock()
	if held != "" {
		t.Fatalf("a refused connect gave the host secret %q", held)
	}
	if err := tryConnect("s1", claim); err != nil {
		t.Fatalf("claim with the token: %v", err)
	}
	// The owner reconnects with its secret, with or without the token.
	if err := tryConnect("s1", agentclient.WithSecret("s1")); err != nil {
		t.Fatalf("reconnect with the secret: %v", err)
	}
	// Another secret: refused with the old secret alone, taken with the
	// token (a re-claim).
	if err := tryConnect("s2", agentclient.WithSecret("s1")); err == nil {
		t.Fatal("the secret replaced without the claim token")
	}
	if err := tryConnect("s2", claim); err != nil {
		t.Fatalf("re-claim with the token: %v", err)
	}
	if err := m.client.CallSync(t.Context(), a.url, protocol.PathEcho, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.client.Call(t.Context(), a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, nil,
		agentclient.WithSecret("s1")); err == nil {
		t.Fatal("the old secret still works after the re-claim")
	}
}
