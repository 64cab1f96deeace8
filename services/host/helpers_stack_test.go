package host_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/conf"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/host"
)

// testTimeout bounds every call a test makes to its stack.
const testTimeout = time.Minute

// startStack starts an embedded cloud without simulated hosts of its own
// (the tests add the agents they control) and a context for its calls.
func startStack(t *testing.T, configure func(*conf.Config)) (*servertest.Stack, context.Context) {
	t.Helper()
	st := servertest.Start(t, servertest.Options{Hosts: -1, Configure: configure})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return st, ctx
}

// fastPing makes the ping tracker run every 200ms (the ping timeout too)
// and disconnect a host after failures failed pings.
func fastPing(failures int) func(*conf.Config) {
	return func(c *conf.Config) {
		c.HostPingInterval = 200 * time.Millisecond
		c.HostPingMaxFailures = failures
	}
}

// agent is a simulated KVM agent served on a loopback listener by the test.
type agent struct {
	*kvm.Agent
	Addr string // host:port
	IP   string
	Port int

	once sync.Once
	done chan error
}

// startAgent serves a new simulated agent on addr ("127.0.0.1:0" for any
// port). Rebinding the address of an agent just stopped is retried.
func startAgent(t *testing.T, addr string, opts kvm.Options) *agent {
	t.Helper()
	a, err := kvm.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	poll(t, 5*time.Second, func() (bool, string) {
		l, err = net.Listen("tcp", addr)
		return err == nil, "listen on " + addr + ": " + fmt.Sprint(err)
	})
	ip, portStr, _ := net.SplitHostPort(l.Addr().String())
	port, _ := strconv.Atoi(portStr)
	ag := &agent{Agent: a, Addr: l.Addr().String(), IP: ip, Port: port, done: make(chan error, 1)}
	go func() { ag.done <- a.Serve(l) }()
	t.Cleanup(func() { ag.stop(t) })
	return ag
}

// stop shuts the agent down and waits until it no longer serves. Idempotent.
func (a *agent) stop(t *testing.T) {
	t.Helper()
	a.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shut down agent %s: %v", a.Addr, err)
		}
		if err := <-a.done; err != nil {
			t.Errorf("agent %s served with %v", a.Addr, err)
		}
	})
}

// commands is how many times the agent got path.
func (a *agent) commands(path string) uint64 { return a.Stats().Commands[path] }

func addParams(st *servertest.Stack, a *agent, name string) map[string]any {
	return map[string]any{"name": name, "managementIp": a.IP, "agentPort": a.Port, "clusterUuid": st.Defaults["cluster"]}
}

// addHost adds a as a KVM host through POST /v1/hosts/kvm.
func addHost(t *testing.T, ctx context.Context, st *servertest.Stack, a *agent, name string) host.HostVO {
	t.Helper()
	h, err := client.CreateAndWait[host.HostVO](ctx, st.Client, "hosts/kvm", addParams(st, a, name))
	if err != nil {
		t.Fatalf("add host %s at %s: %v", name, a.Addr, err)
	}
	return h
}

func getHost(t *testing.T, ctx context.Context, st *servertest.Stack, uuid string) host.HostVO {
	t.Helper()
	h, err := client.GetAs[host.HostVO](ctx, st.Client, "hosts", uuid)
	if err != nil {
		t.Fatalf("get host %s: %v", uuid, err)
	}
	return h
}

// waitStatus polls GET /v1/hosts/{uuid} until the host has status.
func waitStatus(t *testing.T, ctx context.Context, st *servertest.Stack, uuid, status string) {
	t.Helper()
	poll(t, 10*time.Second, func() (bool, string) {
		h, err := client.GetAs[host.HostVO](ctx, st.Client, "hosts", uuid)
		if err != nil {
			return false, err.Error()
		}
		return h.Status == status, "host " + uuid + " is " + h.Status + ", want " + status
	})
}

// poll checks cond every 10ms until it holds; after timeout the test fails
// with what cond said last.
func poll(t *testing.T, timeout time.Duration, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// secretOf reads a host's secret, which the API never shows.
func secretOf(t *testing.T, st *servertest.Stack, uuid string) string {
	t.Helper()
	var h host.HostVO
	if err := st.DB().First(&h, "uuid = ?", uuid).Error; err != nil {
		t.Fatal(err)
	}
	if h.Secret == "" {
		t.Fatalf("host %s has no secret", uuid)
	}
	return h.Secret
}

// hostRows counts the hosts rows with the agent's address.
func hostRows(t *testing.T, st *servertest.Stack, a *agent) int64 {
	t.Helper()
	var n int64
	if err := st.DB().Model(&host.HostVO{}).Where("management_ip = ? AND agent_port = ?", a.IP, a.Port).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// wantAPIError checks that err is an API answer with status and code
// whose message contains every one of details.
func wantAPIError(t *testing.T, err error, status int, code errcode.Code, details ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want HTTP %d %s", status, code)
	}
	if got := client.StatusCode(err); got != status {
		t.Fatalf("HTTP %d (%v), want %d", got, err, status)
	}
	wantCode(t, err, code, details...)
}

// wantCode checks err's code and that its message contains details.
func wantCode(t *testing.T, err error, code errcode.Code, details ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s", code)
	}
	if !errcode.Has(err, code) {
		t.Fatalf("error %v has code %s, want %s", err, errcode.CodeOf(err), code)
	}
	for _, d := range details {
		if !strings.Contains(err.Error(), d) {
			t.Fatalf("error %q does not say %q", err, d)
		}
	}
}

// deleteAndWait deletes a resource through the API and waits for the job.
func deleteAndWait(ctx context.Context, c *client.Client, path, uuid string, mode client.DeleteMode) error {
	j, err := c.Delete(ctx, path, uuid, mode)
	if err != nil {
		return err
	}
	_, err = j.Wait(ctx, nil)
	return err
}

// postEvent posts an agent event to the node's event endpoint, from the
// local address localIP (empty: any).
func postEvent(t *testing.T, st *servertest.Stack, query, path, secret, body, localIP string) int {
	t.Helper()
	tr := &http.Transport{}
	if localIP != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
		tr.DialContext = d.DialContext
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := st.URL + protocol.DefaultEventPath
	if query != "" {
		url += "?" + query
	}
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(protocol.CommandPathHeader, path)
	req.Header.Set("Content-Type", protocol.JSONContentType)
	if secret != "" {
		req.Header.Set(protocol.SecretHeader, secret)
	}
	rsp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("post event %s: %v", path, err)
	}
	rsp.Body.Close()
	return rsp.StatusCode
}
