package servertest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/api/client"
	"mplane/server"
)

// AgentOptions configure a simulated host a test starts itself (the
// stack's own hosts cannot be stopped or slowed down).
type AgentOptions struct {
	// Agent configures the simulator: capacity (CPUNum, MemoryBytes),
	// injected failures (FailRate, FaultPaths), Latency. Listen is ignored:
	// the agent listens on a free loopback port. A nil Storage serves the
	// stack's local primary storage (server.DefaultLocalStorageURL) from a
	// directory of the test's, as the stack's own hosts do, so VMs get
	// their root volumes there; an empty map serves none.
	Agent kvm.Options
	// Wrap, if set, wraps the agent's HTTP handler, e.g. with a Gate.
	Wrap func(http.Handler) http.Handler
}

// Agent is a simulated KVM host's agent serving on loopback.
type Agent struct {
	*kvm.Agent
	// IP and Port are where it listens: the managementIp and agentPort of
	// its host.
	IP   string
	Port int

	srv  *http.Server
	once sync.Once
	err  error
}

// Addr is IP:Port.
func (a *Agent) Addr() string { return net.JoinHostPort(a.IP, strconv.Itoa(a.Port)) }

// Stop stops the agent: its connections are cut and its port refuses
// connections from then on, as a host that went down. Idempotent; it is
// also called when the test ends.
func (a *Agent) Stop() error {
	a.once.Do(func() {
		closeErr := a.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.err = errors.Join(closeErr, a.Agent.Shutdown(ctx))
	})
	return a.err
}

// StartAgent starts a simulated host's agent on a free loopback port
// without adding it to the cloud (add it with POST /v1/hosts/kvm, or use
// AddHost). It is stopped when the test ends.
func (s *Stack) StartAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	ko := opts.Agent
	ko.Listen = ""
	if ko.Storage == nil {
		ko.Storage = map[string]string{server.DefaultLocalStorageURL: t.TempDir()}
	}
	ka, err := kvm.New(ko)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = ka.Shutdown(context.Background())
		t.Fatal(err)
	}
	h := ka.Handler()
	if opts.Wrap != nil {
		h = opts.Wrap(h)
	}
	addr := l.Addr().(*net.TCPAddr)
	a := &Agent{Agent: ka, IP: addr.IP.String(), Port: addr.Port, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = a.srv.Serve(l) }()
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("stop the simulated host at %s: %v", a.Addr(), err)
		}
	})
	return a
}

// Host is a host a test added (AddHost).
type Host struct {
	// UUID is the host's.
	UUID string
	// Agent is its agent.
	Agent *Agent
}

// AddHost starts a simulated host (StartAgent) and adds it to the default
// cluster through the API, as the stack's client.
func (s *Stack) AddHost(t testing.TB, opts AgentOptions) *Host {
	t.Helper()
	a := s.StartAgent(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := client.CreateAndWait[struct {
		UUID string `json:"uuid"`
	}](ctx, s.Client, "hosts/kvm", map[string]any{
		"managementIp": a.IP, "agentPort": a.Port, "clusterUuid": s.Defaults["cluster"], "name": "test-host-" + strconv.Itoa(a.Port),
	})
	if err != nil {
		t.Fatalf("add the simulated host at %s: %v", a.Addr(), err)
	}
	return &Host{UUID: h.UUID, Agent: a}
}

// NewSession logs in as admin once more, directly at the node (a Recorder
// in front does not see it), and returns the new session.
func (s *Stack) NewSession(t testing.TB) string {
	t.Helper()
	c, err := client.New(s.Embedded.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sess, err := c.Login(ctx, "admin", Password)
	if err != nil {
		t.Fatalf("log in to the embedded cloud: %v", err)
	}
	return sess.UUID
}

// Logout ends a session with the API's log out (DELETE
// /v1/accounts/sessions/{uuid}), directly at the node: every later call
// with it is answered 401, as for an expired session.
func (s *Stack) Logout(t testing.TB, session string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.Embedded.URL()+"/v1/accounts/sessions/"+session, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("log out: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("log out: HTTP %d", resp.StatusCode)
	}
}

// Front starts another test HTTP server in front of the node, wrapped by
// wrap if not nil, and returns its URL: a second address of the same
// cloud, as a client sees it. It is closed when the test ends.
func (s *Stack) Front(t testing.TB, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	h := reverseProxy(s.Embedded.URL())
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}
