package kvm

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mgmt is a management node's agent-facing side on a loopback port: the
// client, its callback endpoint (which records what it receives) and an
// event endpoint that records events.
type mgmt struct {
	client   *agentclient.Client
	url      string
	eventURL string
	cbURL    string

	mu        sync.Mutex
	events    []agentclient.Event
	callbacks []recordedCallback
}

type recordedCallback struct {
	taskUUID string
	body     []byte
}

func newMgmt(t testing.TB) *mgmt {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &mgmt{url: "http://" + l.Addr().String()}
	m.cbURL = m.url + protocol.DefaultCallbackPath
	m.eventURL = m.url + protocol.DefaultEventPath
	m.client = agentclient.New(agentclient.Options{CallbackURL: m.cbURL})
	cb := m.client.CallbackHandler()
	mux := http.NewServeMux()
	mux.Handle(protocol.DefaultCallbackPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m.mu.Lock()
		m.callbacks = append(m.callbacks, recordedCallback{taskUUID: r.Header.Get(protocol.TaskUUIDHeader), body: body})
		m.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		cb.ServeHTTP(w, r)
	}))
	mux.Handle(protocol.DefaultEventPath, agentclient.NewEventHandler(agentclient.EventOptions{
		Handle: func(_ context.Context, ev agentclient.Event) error {
			m.mu.Lock()
			m.events = append(m.events, ev)
			m.mu.Unlock()
			return nil
		},
	}))
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() {
		m.client.Close()
		_ = hs.Close()
	})
	return m
}

func (m *mgmt) eventsSoFar() []agentclient.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]agentclient.Event(nil), m.events...)
}

func (m *mgmt) callbacksSoFar() []recordedCallback {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]recordedCallback(nil), m.callbacks...)
}

// eventPaths lists the received events as "path vmState-or-vmUuid".
func (m *mgmt) eventPaths() []string {
	var out []string
	for _, ev := range m.eventsSoFar() {
		var body struct {
			VMState string `json:"vmState"`
		}
		_ = json.Unmarshal(ev.Body, &body)
		s := ev.Path
		if body.VMState != "" {
			s += " " + body.VMState
		}
		out = append(out, s)
	}
	return out
}

// testAgent is an agent served on a loopback port.
type testAgent struct {
	*Agent
	url string
}

func fastServer() agentserver.Options {
	return agentserver.Options{
		CallbackRetryInterval:  5 * time.Millisecond,
		CallbackRetryLimit:     10 * time.Second,
		CallbackAttemptTimeout: 5 * time.Second,
	}
}

// startAgent builds and serves an agent; setup, if given, runs before it
// serves (to set test hooks).
func startAgent(t testing.TB, opts Options, setup ...func(*Agent)) *testAgent {
	t.Helper()
	if opts.Server.CallbackRetryInterval == 0 {
		opts.Server = fastServer()
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(a)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(l) }()
	t.Cleanup(func() {
		if err := a.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testAgent{Agent: a, url: "http://" + l.Addr().String()}
}

func (m *mgmt) connect(t testing.TB, a *testAgent, hostUUID, secret string, opts ...agentclient.CallOption) {
	t.Helper()
	var rsp protocol.ConnectRsp
	err := m.client.CallSync(t.Context(), a.url, protocol.PathConnect,
		protocol.ConnectCmd{HostUUID: hostUUID, SendCommandURL: m.eventURL, Version: "test", Secret: secret}, &rsp, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", hostUUID, err)
	}
	if !rsp.Success {
		t.Fatalf("connect answer %+v", rsp)
	}
}

// vmState is the state the agent has for a VM, "" when it has none.
func (a *testAgent) vmState(uuid string) string {
	for _, vm := range a.VMs() {
		if vm.UUID == uuid {
			return vm.State
		}
	}
	return ""
}

func newLoopbackListener() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// testRoot is a root volume for VM vmUUID on no storage a test agent
// serves: its file is not checked (a fully simulated host).
func testRoot(vmUUID string) *protocol.VolumeTO {
	return &protocol.VolumeTO{VolumeUUID: "root-" + vmUUID, InstallPath: "/simulated/rootVolumes/root-" + vmUUID + "/root.qcow2",
		DeviceType: "file", Format: protocol.FormatQcow2, UseVirtio: true, CacheMode: "none", Type: volumeTypeRoot}
}
