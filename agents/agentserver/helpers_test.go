package agentserver

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/protocol"
)

// eventually polls cond until it holds, failing the test after a generous
// bound (the bound is a hang guard, not a timing assertion).
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

// fastOptions retries deliveries quickly so tests do not wait seconds.
func fastOptions() Options {
	return Options{
		CallbackRetryInterval:  5 * time.Millisecond,
		CallbackRetryLimit:     10 * time.Second,
		CallbackAttemptTimeout: 5 * time.Second,
	}
}

// newAgent starts s behind a real loopback HTTP server.
func newAgent(t *testing.T, s *Server) string {
	t.Helper()
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		hs.Close()
		_ = s.Shutdown(t.Context())
	})
	return hs.URL
}

type delivery struct {
	header http.Header
	body   []byte
}

// receiver records every POST it gets, as a management node's callback or
// event endpoint would.
type receiver struct {
	mu  sync.Mutex
	got []delivery
	url string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.got = append(rc.got, delivery{header: r.Header.Clone(), body: body})
	rc.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{}
	hs := httptest.NewServer(rc)
	t.Cleanup(hs.Close)
	rc.url = hs.URL + protocol.DefaultCallbackPath
	return rc
}

// post sends a command with the given headers and returns status, headers
// and body of the answer.
func post(t *testing.T, url string, body any, headers map[string]string) (int, http.Header, []byte) {
	t.Helper()
	var data []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", protocol.JSONContentTypeCharset)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	out, _ := io.ReadAll(rsp.Body)
	return rsp.StatusCode, rsp.Header, out
}

func decode(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", data, err)
	}
	return m
}

// flakyListener closes the first n connections it accepts, so a client sees
// connection errors until the "receiver is up".
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
