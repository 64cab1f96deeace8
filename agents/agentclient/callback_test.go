package agentclient_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/errcode"
)

// countingBody is a request body of n bytes of JSON-ish filler that counts
// what the server read of it.
type countingBody struct {
	n    int64
	read atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	left := b.n - b.read.Load()
	if left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	for i := range p {
		p[i] = ' '
	}
	b.read.Add(int64(len(p)))
	return len(p), nil
}

func (b *countingBody) Close() error { return nil }

var hexToken = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestCallbackTokenAuthenticatesResult: each async command's callbackurl
// is the client's with a token of 128 random bits of its own; a result
// posted for a pending task without that token (none, a wrong one,
// another call's) is refused with 403 and changes nothing: the call stays
// pending and completes with the agent's result posted to the URL it was
// given.
func TestCallbackTokenAuthenticatesResult(t *testing.T) {
	agent, cmds := recordingAgent(t)
	n := newNode(t, 0)
	cb := n.url + protocol.DefaultCallbackPath
	results := make(chan agentclient.Result, 4)
	for range 2 {
		if err := n.client.Start(t.Context(), agent, "/vm/start", struct{}{}, func(r agentclient.Result) { results <- r }); err != nil {
			t.Fatal(err)
		}
	}
	a, b := <-cmds, <-cmds
	tokens := map[string]bool{}
	for _, sent := range []sentCommand{a, b} {
		u, err := url.Parse(sent.callbackURL)
		if err != nil {
			t.Fatal(err)
		}
		tok := u.Query().Get(agentclient.CallbackTokenParam)
		if !hexToken.MatchString(tok) || u.Scheme+"://"+u.Host+u.Path != cb || len(u.Query()) != 1 {
			t.Fatalf("callbackurl %q: want %s?%s=<32 hex digits>", sent.callbackURL, cb, agentclient.CallbackTokenParam)
		}
		tokens[tok] = true
	}
	if len(tokens) != 2 {
		t.Fatalf("two calls share their token: %s, %s", a.callbackURL, b.callbackURL)
	}

	forged := []struct{ name, url string }{
		{"no token", cb},
		{"empty token", cb + "?" + agentclient.CallbackTokenParam + "="},
		{"wrong token", cb + "?" + agentclient.CallbackTokenParam + "=0123456789abcdef0123456789abcdef"},
		{"another call's token", b.callbackURL},
		{"token truncated", a.callbackURL[:len(a.callbackURL)-1]},
	}
	for _, f := range forged {
		if status := postCallback(t, f.url, a.taskUUID, `{"success":false,"error":"forged"}`); status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", f.name, status)
		}
	}
	select {
	case r := <-results:
		t.Fatalf("a forged result completed a call: %+v", r)
	default:
	}
	st := n.client.Stats()
	if st.RejectedCallbacks != uint64(len(forged)) || st.Pending != 2 || st.Succeeded != 0 || st.Failed != 0 ||
		st.UnknownCallbacks != 0 || st.BadCallbacks != 0 {
		t.Fatalf("after forged results: stats %+v", st)
	}

	// The agent's own results, to the URLs they were given.
	if status := postCallback(t, a.callbackURL, a.taskUUID, `{"success":true,"error":""}`); status != http.StatusOK {
		t.Fatalf("genuine result: %d, want 200", status)
	}
	if r := <-results; r.Err != nil || r.TaskUUID != a.taskUUID {
		t.Fatalf("result %+v", r)
	}
	if status := postCallback(t, b.callbackURL, b.taskUUID, `{"success":false,"error":"disk full"}`); status != http.StatusOK {
		t.Fatalf("genuine failure: %d, want 200", status)
	}
	if r := <-results; !errcode.Has(r.Err, errcode.AgentError) || !strings.Contains(r.Err.Error(), "disk full") {
		t.Fatalf("result %+v, want the agent's failure", r)
	}
	// Delivered again: acknowledged with 404 as before, token or not.
	if status := postCallback(t, a.callbackURL, a.taskUUID, `{"success":true}`); status != http.StatusNotFound {
		t.Errorf("duplicate: %d, want 404", status)
	}
	if st := n.client.Stats(); st.Succeeded != 1 || st.Failed != 1 || st.DuplicateCallbacks != 1 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestForgedCallbackBodyIsNotRead: the callback endpoint decides on a post
// before reading its body: an unknown task (404), a pending one without
// its token (403) and a result announced larger than MaxResultBytes (413)
// read nothing of a 64 MiB body; before, each was read up to MaxResultBytes
// first, so a few parallel forged posts cost the node hundreds of MiB.
func TestForgedCallbackBodyIsNotRead(t *testing.T) {
	const big = 64 << 20
	agent, cmds := recordingAgent(t)
	c := agentclient.New(agentclient.Options{CallbackURL: "http://node.invalid" + protocol.DefaultCallbackPath, MaxResultBytes: 1 << 20})
	t.Cleanup(c.Close)
	h := c.CallbackHandler()
	results := make(chan agentclient.Result, 2)
	start := func() sentCommand {
		t.Helper()
		if err := c.Start(t.Context(), agent, "/vm/start", struct{}{}, func(r agentclient.Result) { results <- r }); err != nil {
			t.Fatal(err)
		}
		return <-cmds
	}
	post := func(target, taskUUID string, length int64, chunked bool) (int, int64) {
		t.Helper()
		body := &countingBody{n: length}
		req := httptest.NewRequest(http.MethodPost, target, nil)
		req.Body = body
		req.ContentLength = length
		if chunked {
			req.ContentLength = -1
		}
		req.Header.Set(protocol.TaskUUIDHeader, taskUUID)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, body.read.Load()
	}
	pathOf := func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return u.RequestURI()
	}

	sent := start()
	own := pathOf(sent.callbackURL)
	for _, tc := range []struct {
		name, target, task string
		want               int
	}{
		{"unknown task", own, "ffffffffffffffffffffffffffffffff", http.StatusNotFound},
		{"pending task, no token", protocol.DefaultCallbackPath, sent.taskUUID, http.StatusForbidden},
		{"pending task, wrong token", protocol.DefaultCallbackPath + "?token=0123456789abcdef0123456789abcdef", sent.taskUUID, http.StatusForbidden},
	} {
		for _, chunked := range []bool{false, true} {
			status, read := post(tc.target, tc.task, big, chunked)
			if status != tc.want || read != 0 {
				t.Errorf("%s (chunked %v): %d after reading %d bytes; want %d, nothing read", tc.name, chunked, status, read, tc.want)
			}
		}
	}
	if c.PendingCount() != 1 {
		t.Fatalf("a forged post ended the call: %d pending", c.PendingCount())
	}

	// The call's own agent, with a result over MaxResultBytes: refused by
	// its Content-Length unread, and the call fails at once.
	if status, read := post(own, sent.taskUUID, big, false); status != http.StatusRequestEntityTooLarge || read != 0 {
		t.Errorf("oversized result: %d after reading %d bytes; want 413, nothing read", status, read)
	}
	if r := <-results; !errcode.Has(r.Err, errcode.AgentError) || !strings.Contains(r.Err.Error(), "larger") {
		t.Fatalf("oversized result: %+v, want an AgentError", r)
	}
	// Without a Content-Length: read up to the limit, then refused.
	sent = start()
	if status, read := post(pathOf(sent.callbackURL), sent.taskUUID, big, true); status != http.StatusRequestEntityTooLarge || read > 2<<20 {
		t.Errorf("oversized chunked result: %d after reading %d bytes; want 413 within about 1 MiB", status, read)
	}
	if r := <-results; !errcode.Has(r.Err, errcode.AgentError) {
		t.Fatalf("oversized chunked result: %+v, want an AgentError", r)
	}
	st := c.Stats()
	if st.UnknownCallbacks != 2 || st.RejectedCallbacks != 4 || st.OversizedCallbacks != 2 || st.Failed != 2 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestForgedCallbacksOverHTTPCostNoMemory: four parallel 64 MiB posts for
// unknown tasks, over a real connection, are answered 404 while the sender
// has pushed little of its body (the node reads none of it; what is pulled
// is what the sockets buffer).
func TestForgedCallbacksOverHTTPCostNoMemory(t *testing.T) {
	const big = 64 << 20
	n := newNode(t, 0)
	cb := n.url + protocol.DefaultCallbackPath
	type outcome struct {
		status int
		err    error
		pulled int64
	}
	out := make(chan outcome, 4)
	for range 4 {
		go func() {
			body := &countingBody{n: big}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cb, body)
			req.ContentLength = big
			req.Header.Set(protocol.TaskUUIDHeader, "ffffffffffffffffffffffffffffffff")
			rsp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
			o := outcome{err: err}
			if err == nil {
				o.status = rsp.StatusCode
				_ = rsp.Body.Close()
			}
			o.pulled = body.read.Load()
			out <- o
		}()
	}
	for range 4 {
		o := <-out
		// The server may close the connection while the body is being
		// written: the transport then reports the write error rather
		// than the answer. Either way the body was not taken.
		if o.err == nil && o.status != http.StatusNotFound {
			t.Errorf("forged post answered %d, want 404", o.status)
		}
		if o.err != nil && errors.Is(o.err, context.DeadlineExceeded) {
			t.Errorf("forged post hung: %v", o.err)
		}
		if o.pulled > 16<<20 {
			t.Errorf("the node took %d MiB of a forged body", o.pulled>>20)
		}
	}
}
