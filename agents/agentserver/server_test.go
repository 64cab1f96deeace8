package agentserver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/protocol"
)

type echoCmd struct {
	Text  string  `json:"text"`
	Fail  string  `json:"fail,omitempty"`
	Panic bool    `json:"panic,omitempty"`
	Nulls bool    `json:"nulls,omitempty"`
	Items []*item `json:"items,omitempty"`
}

type item struct {
	N int `json:"n"`
}

type echoRsp struct {
	protocol.Response
	Text    string  `json:"text"`
	Missing *string `json:"missing"`
	Items   []*item `json:"items,omitempty"`
}

func echo(_ context.Context, _ *Request, cmd echoCmd) (echoRsp, error) {
	if cmd.Panic {
		panic("boom")
	}
	rsp := echoRsp{Text: cmd.Text}
	if cmd.Nulls {
		rsp.Items = []*item{{N: 1}, nil}
	}
	if cmd.Fail != "" {
		return rsp, errors.New(cmd.Fail)
	}
	return rsp, nil
}

func newEchoServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	s := New(opts)
	HandleSync(s, "/sync/echo", echo)
	HandleAsync(s, "/async/echo", echo)
	return s, newAgent(t, s)
}

func asyncHeaders(id, callback string) map[string]string {
	return map[string]string{protocol.TaskUUIDHeader: id, protocol.CallbackURLHeader: callback}
}

func TestSyncAnswerIsResultWithHTMLContentType(t *testing.T) {
	_, url := newEchoServer(t, fastOptions())
	status, h, body := post(t, url+"/sync/echo", echoCmd{Text: "hi"}, nil)
	if status != http.StatusOK {
		t.Fatalf("status %d, body %s", status, body)
	}
	if ct := h.Get("Content-Type"); ct != protocol.HTMLContentType {
		t.Errorf("Content-Type %q, want %q", ct, protocol.HTMLContentType)
	}
	m := decode(t, body)
	if m["success"] != true || m["error"] != "" || m["text"] != "hi" {
		t.Errorf("result %s", body)
	}
	if _, ok := m["missing"]; ok {
		t.Errorf("null field sent: %s", body)
	}
}

func TestSyncPathWithTaskUUIDIs500(t *testing.T) {
	_, url := newEchoServer(t, fastOptions())
	status, _, body := post(t, url+"/sync/echo", echoCmd{}, map[string]string{protocol.TaskUUIDHeader: "t1"})
	if status != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500; body %s", status, body)
	}
}

func TestAsyncHeaderMistakesAre400(t *testing.T) {
	rc := newReceiver(t)
	_, url := newEchoServer(t, fastOptions())
	tests := []struct {
		name    string
		headers map[string]string
	}{
		{"no taskuuid", map[string]string{protocol.CallbackURLHeader: rc.url}},
		{"no callbackurl", map[string]string{protocol.TaskUUIDHeader: "t1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := post(t, url+"/async/echo", echoCmd{}, tt.headers)
			if status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400; body %s", status, body)
			}
			if m := decode(t, body); m["success"] != false || m["error"] == "" {
				t.Errorf("error body %s", body)
			}
		})
	}
	if n := len(rc.deliveries()); n != 0 {
		t.Errorf("%d callbacks for rejected commands", n)
	}
}

func TestAsyncAckThenCallback(t *testing.T) {
	rc := newReceiver(t)
	_, url := newEchoServer(t, fastOptions())
	status, h, body := post(t, url+"/async/echo/", echoCmd{Text: "hello"}, asyncHeaders("task-1", rc.url))
	if status != http.StatusOK || len(body) != 0 {
		t.Fatalf("ack: status %d body %q; want 200 and an empty body", status, body)
	}
	if ct := h.Get("Content-Type"); ct != protocol.HTMLContentType {
		t.Errorf("ack Content-Type %q", ct)
	}
	eventually(t, "callback", func() bool { return len(rc.deliveries()) == 1 })
	d := rc.deliveries()[0]
	if got := d.header.Get(protocol.TaskUUIDHeader); got != "task-1" {
		t.Errorf("callback taskuuid %q", got)
	}
	if got := d.header.Get("Content-Type"); got != protocol.JSONContentType {
		t.Errorf("callback Content-Type %q", got)
	}
	m := decode(t, d.body)
	if m["success"] != true || m["error"] != "" || m["text"] != "hello" {
		t.Errorf("callback body %s", d.body)
	}
}

func TestFailuresAreFailureResults(t *testing.T) {
	tests := []struct {
		name      string
		cmd       echoCmd
		wantError string
	}{
		{"handler error", echoCmd{Text: "x", Fail: "disk on fire"}, "disk on fire"},
		{"panic", echoCmd{Panic: true}, "panicked: boom"},
		{"null in array", echoCmd{Nulls: true}, "$.items[1]"},
		{"undecodable command", echoCmd{}, "decode command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t)
			_, url := newEchoServer(t, fastOptions())
			var body any = tt.cmd
			if tt.name == "undecodable command" {
				body = []byte(`{"text": 12`)
			}
			check := func(where string, data []byte) {
				t.Helper()
				m := decode(t, data)
				if m["success"] != false || !strings.Contains(m["error"].(string), tt.wantError) {
					t.Errorf("%s result %s; want failure containing %q", where, data, tt.wantError)
				}
				if strings.Contains(string(data), ":null") || strings.Contains(string(data), "[null") || strings.Contains(string(data), ",null") {
					t.Errorf("%s result holds null: %s", where, data)
				}
			}
			status, _, sync := post(t, url+"/sync/echo", body, nil)
			if status != http.StatusOK {
				t.Fatalf("sync status %d", status)
			}
			check("sync", sync)
			post(t, url+"/async/echo", body, asyncHeaders("t-"+tt.name, rc.url))
			eventually(t, "callback", func() bool { return len(rc.deliveries()) == 1 })
			check("async", rc.deliveries()[0].body)
		})
	}
}

func TestCallbackRetriedUntilReceiverIsUp(t *testing.T) {
	// Reserve a loopback port and close it: connections are refused until
	// the receiver starts listening there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	s, url := newEchoServer(t, fastOptions())
	status, _, _ := post(t, url+"/async/echo", echoCmd{Text: "late"}, asyncHeaders("t-up", "http://"+addr+"/cb"))
	if status != http.StatusOK {
		t.Fatalf("ack status %d", status)
	}
	eventually(t, "two refused attempts", func() bool { return s.Stats().CallbackRetries >= 2 })

	rc := &receiver{}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("re-listen on %s: %v", addr, err)
	}
	hs := &http.Server{Handler: rc}
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() { _ = hs.Close() })

	eventually(t, "delivery once the receiver is up", func() bool { return len(rc.deliveries()) == 1 })
	if m := decode(t, rc.deliveries()[0].body); m["text"] != "late" {
		t.Errorf("callback body %v", m)
	}
	eventually(t, "task to finish", func() bool { return s.Stats().Running == 0 })
	if st := s.Stats(); st.CallbacksDelivered != 1 || st.CallbacksFailed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCallbackRetriedOnDroppedConnections(t *testing.T) {
	rc := &receiver{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: l}
	fl.remaining.Store(3)
	hs := &http.Server{Handler: rc}
	go func() { _ = hs.Serve(fl) }()
	t.Cleanup(func() { _ = hs.Close() })

	s, url := newEchoServer(t, fastOptions())
	post(t, url+"/async/echo", echoCmd{Text: "x"}, asyncHeaders("t-flaky", "http://"+l.Addr().String()+"/cb"))
	eventually(t, "delivery", func() bool { return len(rc.deliveries()) == 1 })
	if got := fl.refused.Load(); got != 3 {
		t.Errorf("refused %d connections, want 3", got)
	}
	eventually(t, "task to finish", func() bool { return s.Stats().Running == 0 })
	if st := s.Stats(); st.CallbackRetries != 3 {
		t.Errorf("CallbackRetries %d, want 3", st.CallbackRetries)
	}
}

func TestCallbackGivesUpAfterLimit(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	opts := fastOptions()
	opts.CallbackRetryLimit = 30 * time.Millisecond
	s, url := newEchoServer(t, opts)
	post(t, url+"/async/echo", echoCmd{}, asyncHeaders("t-lost", "http://"+addr+"/cb"))
	eventually(t, "delivery to be given up", func() bool { return s.Stats().CallbacksFailed == 1 })
	if s.Stats().Running != 0 {
		t.Errorf("task still running after giving up")
	}
}

func TestAnyHTTPAnswerCountsAsDelivered(t *testing.T) {
	var hits atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(hs.Close)
	s, url := newEchoServer(t, fastOptions())
	post(t, url+"/async/echo", echoCmd{}, asyncHeaders("t-500", hs.URL))
	eventually(t, "delivery", func() bool { return s.Stats().CallbacksDelivered == 1 })
	if hits.Load() != 1 {
		t.Errorf("%d attempts, want 1", hits.Load())
	}
}

func TestDuplicateTaskUUIDIgnored(t *testing.T) {
	rc := newReceiver(t)
	release := make(chan struct{})
	var runs atomic.Int32
	s := New(fastOptions())
	HandleAsync(s, "/slow", func(ctx context.Context, _ *Request, _ struct{}) (struct{}, error) {
		runs.Add(1)
		<-release
		return struct{}{}, nil
	})
	url := newAgent(t, s)

	for i := 0; i < 2; i++ {
		status, _, body := post(t, url+"/slow", nil, asyncHeaders("same-task", rc.url))
		if status != http.StatusOK || len(body) != 0 {
			t.Fatalf("command %d: status %d body %q", i, status, body)
		}
	}
	if d := s.Stats().Duplicates; d != 1 {
		t.Fatalf("Duplicates %d, want 1", d)
	}
	close(release)
	eventually(t, "task to finish", func() bool { return s.Stats().Running == 0 })
	// The duplicate never started, so no second callback can come.
	if n := len(rc.deliveries()); n != 1 || runs.Load() != 1 {
		t.Fatalf("%d callbacks, %d runs; want 1 and 1", n, runs.Load())
	}
	// Once finished, the same task UUID is a new command.
	post(t, url+"/slow", nil, asyncHeaders("same-task", rc.url))
	eventually(t, "second callback", func() bool { return len(rc.deliveries()) == 2 })
}

func TestNoReplyMeansNoCallback(t *testing.T) {
	rc := newReceiver(t)
	s := New(fastOptions())
	HandleAsync(s, "/crash", func(context.Context, *Request, struct{}) (struct{}, error) {
		return struct{}{}, ErrNoReply
	})
	HandleSync(s, "/crash-sync", func(context.Context, *Request, struct{}) (struct{}, error) {
		return struct{}{}, ErrNoReply
	})
	url := newAgent(t, s)
	post(t, url+"/crash", nil, asyncHeaders("t-crash", rc.url))
	eventually(t, "task to end", func() bool { return s.Stats().NoReply == 1 && s.Stats().Running == 0 })
	if n := len(rc.deliveries()); n != 0 {
		t.Errorf("%d callbacks, want none", n)
	}
	if status, _, _ := post(t, url+"/crash-sync", nil, nil); status != http.StatusInternalServerError {
		t.Errorf("sync no-reply status %d, want 500", status)
	}
}

func TestTimeoutFieldBoundsHandlerContext(t *testing.T) {
	s := New(fastOptions())
	type rsp struct {
		HasDeadline bool `json:"hasDeadline"`
	}
	HandleSync(s, "/deadline", func(ctx context.Context, req *Request, _ struct{}) (rsp, error) {
		_, ok := ctx.Deadline()
		return rsp{HasDeadline: ok && !req.Deadline.IsZero()}, nil
	})
	url := newAgent(t, s)
	_, _, with := post(t, url+"/deadline", []byte(`{"timeoutMs": 60000}`), nil)
	_, _, without := post(t, url+"/deadline", []byte(`{}`), nil)
	if decode(t, with)["hasDeadline"] != true || decode(t, without)["hasDeadline"] != false {
		t.Errorf("with timeoutMs: %s; without: %s", with, without)
	}
}

func TestAdmitRejects(t *testing.T) {
	var seen []Route
	opts := fastOptions()
	opts.Admit = func(r *http.Request, route Route) error {
		seen = append(seen, route)
		if r.Header.Get("X-Key") != "k" {
			return &StatusError{Status: http.StatusUnauthorized, Msg: "no key"}
		}
		return nil
	}
	_, url := newEchoServer(t, opts)
	if status, _, _ := post(t, url+"/sync/echo", echoCmd{}, nil); status != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", status)
	}
	if status, _, _ := post(t, url+"/sync/echo", echoCmd{}, map[string]string{"X-Key": "k"}); status != http.StatusOK {
		t.Errorf("status %d, want 200", status)
	}
	if len(seen) != 2 || seen[0] != (Route{Path: "/sync/echo", Kind: Sync}) {
		t.Errorf("Admit saw %v", seen)
	}
}

func TestUnknownPathIs404(t *testing.T) {
	_, url := newEchoServer(t, fastOptions())
	if status, _, _ := post(t, url+"/no/such", nil, nil); status != http.StatusNotFound {
		t.Errorf("status %d, want 404", status)
	}
}

func TestPostEventCarriesCommandPath(t *testing.T) {
	rc := &receiver{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: l}
	fl.remaining.Store(2)
	hs := &http.Server{Handler: rc}
	go func() { _ = hs.Serve(fl) }()
	t.Cleanup(func() { _ = hs.Close() })

	s := New(fastOptions())
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	ev := protocol.VMStateEvent{HostUUID: "h1", VMUUID: "v1", VMState: protocol.VMStateRunning}
	err = s.PostEvent(t.Context(), "http://"+l.Addr().String()+protocol.DefaultEventPath,
		protocol.EventReportVMState, ev, http.Header{protocol.SecretHeader: {"s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	got := rc.deliveries()
	if len(got) != 1 {
		t.Fatalf("%d deliveries", len(got))
	}
	if p := got[0].header.Get(protocol.CommandPathHeader); p != protocol.EventReportVMState {
		t.Errorf("commandpath %q", p)
	}
	if sec := got[0].header.Get(protocol.SecretHeader); sec != "s3cret" {
		t.Errorf("secret header %q", sec)
	}
	if m := decode(t, got[0].body); m["vmState"] != "Running" || m["hostUuid"] != "h1" {
		t.Errorf("event body %s", got[0].body)
	}
	if st := s.Stats(); st.EventsDelivered != 1 || st.EventRetries != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestShutdownWaitsForTasksAndIsIdempotent(t *testing.T) {
	rc := newReceiver(t)
	release := make(chan struct{})
	s := New(fastOptions())
	HandleAsync(s, "/slow", func(context.Context, *Request, struct{}) (struct{}, error) {
		<-release
		return struct{}{}, nil
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	url := "http://" + l.Addr().String()
	post(t, url+"/slow", nil, asyncHeaders("t1", rc.url))

	shut := make(chan error, 2)
	go func() { shut <- s.Shutdown(context.Background()) }()
	go func() { shut <- s.Shutdown(context.Background()) }()
	eventually(t, "server to refuse new commands", func() bool {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/slow", nil))
		return rec.Code == http.StatusServiceUnavailable
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a task was running", err)
	default:
	}
	close(release)
	for i := 0; i < 2; i++ {
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n := len(rc.deliveries()); n != 1 {
		t.Errorf("%d callbacks, want the running task's one", n)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("third Shutdown: %v", err)
	}
	if err := s.Serve(l); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Shutdown = %v, want ErrClosed", err)
	}
}

func TestShutdownHardStopCancelsHandlers(t *testing.T) {
	rc := newReceiver(t)
	s := New(fastOptions())
	started := make(chan struct{})
	var cancelled atomic.Bool
	HandleAsync(s, "/forever", func(ctx context.Context, _ *Request, _ struct{}) (struct{}, error) {
		close(started)
		<-ctx.Done()
		cancelled.Store(true)
		return struct{}{}, ctx.Err()
	})
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	post(t, hs.URL+"/forever", nil, asyncHeaders("t1", rc.url))
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	<-s.Done()
	if !cancelled.Load() {
		t.Error("handler context not cancelled")
	}
}

func TestExpiredCommandSendsNoResult(t *testing.T) {
	rc := newReceiver(t)
	s := New(fastOptions())
	HandleAsync(s, "/wait", func(ctx context.Context, _ *Request, _ struct{}) (struct{}, error) {
		<-ctx.Done()
		return struct{}{}, ctx.Err()
	})
	url := newAgent(t, s)
	post(t, url+"/wait", []byte(`{"timeoutMs": 20}`), asyncHeaders("t-exp", rc.url))
	eventually(t, "task to expire", func() bool { return s.Stats().Expired == 1 && s.Stats().Running == 0 })
	if n := len(rc.deliveries()); n != 0 {
		t.Errorf("%d results sent for an expired command", n)
	}
}
