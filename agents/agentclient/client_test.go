package agentclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/errcode"
)

// silentAgent acknowledges async commands and never calls back; it hands
// each command's taskuuid to the test.
func silentAgent(t *testing.T) (string, <-chan string) {
	t.Helper()
	ids := make(chan string, 16)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ids <- r.Header.Get(protocol.TaskUUIDHeader)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(hs.Close)
	return hs.URL, ids
}

// recordingAgent is silentAgent handing the test each command's taskuuid
// and callbackurl.
func recordingAgent(t *testing.T) (string, <-chan sentCommand) {
	t.Helper()
	cmds := make(chan sentCommand, 16)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cmds <- sentCommand{taskUUID: r.Header.Get(protocol.TaskUUIDHeader), callbackURL: r.Header.Get(protocol.CallbackURLHeader)}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(hs.Close)
	return hs.URL, cmds
}

type sentCommand struct{ taskUUID, callbackURL string }

func TestCallbackHandlerAnswers(t *testing.T) {
	url, cmds := recordingAgent(t)
	n := newNode(t, 0)
	cb := n.url + protocol.DefaultCallbackPath
	results := make(chan agentclient.Result, 2)
	if err := n.client.Start(t.Context(), url, "/vm/start", struct{}{}, func(r agentclient.Result) { results <- r }); err != nil {
		t.Fatal(err)
	}
	sent := <-cmds
	id := sent.taskUUID
	if got := n.client.Pending(); len(got) != 1 || got[0].TaskUUID != id || got[0].Path != "/vm/start" {
		t.Fatalf("Pending() = %+v", got)
	}

	if status := postCallback(t, cb, "", `{"success":true}`); status != http.StatusBadRequest {
		t.Errorf("no taskuuid: %d, want 400", status)
	}
	if status := postCallback(t, cb, "ffffffffffffffffffffffffffffffff", `{"success":true}`); status != http.StatusNotFound {
		t.Errorf("forged taskuuid: %d, want 404", status)
	}
	if status := postCallback(t, sent.callbackURL, id, `{"success":true,"error":""}`); status != http.StatusOK {
		t.Errorf("pending taskuuid: %d, want 200", status)
	}
	if r := <-results; r.Err != nil || r.TaskUUID != id {
		t.Fatalf("result %+v", r)
	}
	if status := postCallback(t, sent.callbackURL, id, `{"success":false,"error":"late"}`); status != http.StatusNotFound {
		t.Errorf("duplicate: %d, want 404", status)
	}
	select {
	case r := <-results:
		t.Fatalf("done called twice: %+v", r)
	default:
	}
	st := n.client.Stats()
	if st.BadCallbacks != 1 || st.UnknownCallbacks != 1 || st.DuplicateCallbacks != 1 || st.Succeeded != 1 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
	rsp, err := http.Get(cb)
	if err != nil {
		t.Fatal(err)
	}
	_ = rsp.Body.Close()
	if rsp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", rsp.StatusCode)
	}
}

func TestLateResultAfterCallEndedIs404(t *testing.T) {
	url, ids := silentAgent(t)
	n := newNode(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- n.client.Call(ctx, url, "/vm/stop", struct{}{}, nil) }()
	id := <-ids
	cancel()
	if err := <-errc; !errcode.Has(err, errcode.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	// The agent did the work after all and reports it.
	if status := postCallback(t, n.url+protocol.DefaultCallbackPath, id, `{"success":true}`); status != http.StatusNotFound {
		t.Errorf("late result: %d, want 404", status)
	}
	if st := n.client.Stats(); st.LateCallbacks != 1 || st.Canceled != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestCallCanceledByContext(t *testing.T) {
	url, ids := silentAgent(t)
	n := newNode(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- n.client.Call(ctx, url, "/vm/start", struct{}{}, nil) }()
	<-ids
	cancel()
	if err := <-errc; !errcode.Has(err, errcode.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	if n.client.PendingCount() != 0 {
		t.Error("cancelled call still pending")
	}
}

func TestCloseFailsPendingCalls(t *testing.T) {
	url, ids := silentAgent(t)
	n := newNode(t, 0)
	errc := make(chan error, 1)
	go func() { errc <- n.client.Call(t.Context(), url, "/vm/start", struct{}{}, nil) }()
	<-ids
	n.client.Close()
	n.client.Close()
	if err := <-errc; !errcode.Has(err, errcode.ShuttingDown) || !errcode.IsRetryable(err) {
		t.Fatalf("err = %v, want retryable ShuttingDown", err)
	}
	if err := n.client.Call(t.Context(), url, "/vm/start", struct{}{}, nil); !errcode.Has(err, errcode.ShuttingDown) {
		t.Fatalf("Call after Close = %v", err)
	}
}

func TestUnreachableAgentIsRetryable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	_ = l.Close()
	n := newNode(t, 0)
	for name, call := range map[string]func() error{
		"async": func() error { return n.client.Call(t.Context(), url, "/vm/start", struct{}{}, nil) },
		"sync":  func() error { return n.client.CallSync(t.Context(), url, "/host/echo", nil, nil) },
	} {
		err := call()
		if !errcode.Has(err, errcode.AgentError) || !errcode.IsRetryable(err) {
			t.Errorf("%s: err = %v, want retryable AgentError", name, err)
		}
	}
	if n.client.PendingCount() != 0 {
		t.Error("unsent call still pending")
	}
}

func TestAgentStoppingIsRetryable(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"success":false,"error":"agent is stopping"}`))
	}))
	t.Cleanup(hs.Close)
	n := newNode(t, 0)
	err := n.client.Call(t.Context(), hs.URL, "/vm/start", struct{}{}, nil)
	var se *agentclient.StatusError
	if !errcode.IsRetryable(err) || !errors.As(err, &se) || se.Text != "agent is stopping" {
		t.Fatalf("err = %v, want retryable with the agent's text", err)
	}
}

func TestCallWithoutCallbackURL(t *testing.T) {
	c := agentclient.New(agentclient.Options{})
	defer c.Close()
	if err := c.Call(t.Context(), "http://127.0.0.1:1", "/vm/start", nil, nil); !errcode.Has(err, errcode.InvalidArgument) {
		t.Fatalf("err = %v", err)
	}
}

func TestEventHandler(t *testing.T) {
	var got atomic.Value
	h := agentclient.NewEventHandler(agentclient.EventOptions{
		Handle: func(_ context.Context, ev agentclient.Event) error {
			if ev.Secret == "wrong" {
				return errcode.New(errcode.Unauthenticated, "bad secret")
			}
			got.Store(ev)
			return nil
		},
	})
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	send := func(path, secret string) int {
		req, _ := http.NewRequest(http.MethodPost, hs.URL, strings.NewReader(`{"vmUuid":"v1"}`))
		if path != "" {
			req.Header.Set(protocol.CommandPathHeader, path)
		}
		if secret != "" {
			req.Header.Set(protocol.SecretHeader, secret)
		}
		rsp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = rsp.Body.Close()
		return rsp.StatusCode
	}
	if s := send("", ""); s != http.StatusBadRequest {
		t.Errorf("no commandpath: %d, want 400", s)
	}
	if s := send("/kvm/nosuchevent", ""); s != http.StatusNotFound {
		t.Errorf("unknown commandpath: %d, want 404", s)
	}
	if s := send(protocol.EventReportVMCrash, "wrong"); s != http.StatusUnauthorized {
		t.Errorf("refused by Handle: %d, want 401", s)
	}
	if s := send(protocol.EventReportVMCrash, "s1"); s != http.StatusOK {
		t.Fatalf("event: %d, want 200", s)
	}
	ev := got.Load().(agentclient.Event)
	if ev.Path != protocol.EventReportVMCrash || string(ev.Body) != `{"vmUuid":"v1"}` || ev.Secret != "s1" ||
		ev.RemoteIP != "127.0.0.1" || !strings.HasPrefix(ev.RemoteAddr, "127.0.0.1:") {
		t.Errorf("event %+v", ev)
	}
}
