package agentclient_test

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
)

// flakyListener closes the first n connections it accepts.
type flakyListener struct {
	net.Listener
	remaining atomic.Int32
	refused   atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.remaining.Add(-1) >= 0 {
			l.refused.Add(1)
			_ = c.Close()
			continue
		}
		return c, nil
	}
}

// node is a management node's agent-facing side: a client and its callback
// endpoint on a loopback port.
type node struct {
	client   *agentclient.Client
	listener *flakyListener
	url      string
}

// newNode starts a callback endpoint whose first dropConns connections are
// closed unanswered.
func newNode(t testing.TB, dropConns int32) *node {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: l}
	fl.remaining.Store(dropConns)
	n := &node{listener: fl, url: "http://" + l.Addr().String()}
	n.client = agentclient.New(agentclient.Options{CallbackURL: n.url + protocol.DefaultCallbackPath})
	mux := http.NewServeMux()
	mux.Handle(protocol.DefaultCallbackPath, n.client.CallbackHandler())
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(fl) }()
	t.Cleanup(func() {
		n.client.Close()
		_ = hs.Close()
	})
	return n
}

func newPyServer(t testing.TB) (*pyAgent, string) {
	t.Helper()
	a := newPyAgent()
	hs := httptest.NewServer(a)
	t.Cleanup(func() {
		hs.Close()
		a.wait()
	})
	return a, hs.URL
}

// postCallback posts a result to a callback endpoint as an agent would.
func postCallback(t testing.TB, url, taskUUID, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(body)))
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

func newPyServerWith(t testing.TB, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return hs, hs.URL
}
