package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/protocol"
	"mplane/errcode"
)

// Fuzz targets of what decodes agents' answers, results and events. Their
// seeds run as unit tests in go test; `make fuzz` runs them for FUZZTIME
// each.

// answerSeeds are bodies an agent may answer or post, and an "error"
// header (the Python framework's, set when a handler raised).
var answerSeeds = []struct{ body, errHeader string }{
	{``, ""},
	{`{"success":true,"error":""}`, ""},
	{`{"success":true}`, ""},
	{`{"success":false,"error":"disk full"}`, ""},
	{`{"success":false}`, ""},
	{`{"error":"no success field"}`, ""},
	{`{"error":""}`, ""},
	{`{"success":true,"error":"ignored"}`, ""},
	{`{"success":"true"}`, ""},
	{`{"success":true,"error":5}`, ""},
	{`{"success":null,"error":null}`, ""},
	{`{"success":false,"error":"a","success":true}`, ""},
	{`{"success":true,"hostUuid":"h1","cpuNum":8,"totalMemory":17179869184,"usedMemory":1e400}`, ""},
	{`{"success":true,"vms":[{"uuid":"v1","state":"Running"},null]}`, ""},
	{`{"success":true,"states":{"v1":"Running"},"vmStates":{"v1":7}}`, ""},
	{`Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom`, "ValueError: boom"},
	{`<html><body>500 Internal Server Error</body></html>`, ""},
	{`null`, ""},
	{`[]`, ""},
	{`"ok"`, ""},
	{`true`, ""},
	{`{"success":tru`, ""},
	{`{"success":true} trailing`, ""},
	{`{"success":false,"error":"\ud800\u00e9"}`, ""},
	{"{\"success\":false,\"error\":\"\xff\xfe\"}", "\xff"},
	{`{"success":true,"x":` + strings.Repeat(`[`, 100) + strings.Repeat(`]`, 100) + `}`, ""},
	{`{"success":false,"error":"` + StaleFencePrefix + ` 3 < 4"}`, ""},
	{`{"error":"` + strings.Repeat("e", 300) + `"}`, ""},
}

// TestDecodeNestingBeyondLimit: answers nested deeper than encoding/json's
// limit (10000) are errors, not crashes. Too large for a fuzz seed (the
// fuzzer mutates and minimizes seeds, slowly when they are large).
func TestDecodeNestingBeyondLimit(t *testing.T) {
	deep := []byte(`{"success":true,"x":` + strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}`)
	requireAgentError(t, "resultError", resultError("http://a", "/p", deep, ""), errcode.AgentError)
	requireAgentError(t, "Result.Decode", Result{Body: deep}.Decode(new(protocol.PingRsp)), errcode.MalformedMessage)
	if _, err := protocol.Object(deep); err == nil {
		t.Error("protocol.Object accepted a body nested beyond the limit")
	}
	if _, err := protocol.Clean(deep); err == nil {
		t.Error("protocol.Clean accepted a body nested beyond the limit")
	}
	within := []byte(`{"a":` + strings.Repeat(`[`, 9990) + `{"b":null}` + strings.Repeat(`]`, 9990) + `}`)
	c, err := protocol.Clean(within)
	if err != nil || bytes.Contains(c, []byte("null")) {
		t.Errorf("Clean of a deep body: %.40q, %v", c, err)
	}
}

// requireAgentError fails unless err is an error whose chain holds an
// *errcode.Error of one of the codes.
func requireAgentError(t *testing.T, what string, err error, codes ...errcode.Code) *errcode.Error {
	t.Helper()
	var e *errcode.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %v (%T) has no *errcode.Error", what, err, err)
	}
	for _, c := range codes {
		if e.Code == c {
			return e
		}
	}
	t.Fatalf("%s: error %v has code %s, want one of %v", what, err, e.Code, codes)
	return nil
}

// FuzzResultError fuzzes the interpretation of a result or sync answer
// (resultError), of an answer with a status other than 200 (statusError),
// and the decoding of a result into the protocol's response types
// (Result.Decode). Properties: none panics; resultError is nil or an
// AgentError whose chain holds the agent's text; it is nil for a body
// whose success is true, and an error when it is false; statusError is
// AgentError or, for a 409 of a stale fence, NodeUnavailable, retryable
// just for 502-504 (and the stale fence); Decode is nil or
// MalformedMessage.
func FuzzResultError(f *testing.F) {
	for i, s := range answerSeeds {
		f.Add([]byte(s.body), s.errHeader, []int{200, 400, 409, 500, 503}[i%5])
	}
	f.Fuzz(func(t *testing.T, body []byte, errHeader string, status int) {
		const agentURL, path = "http://10.0.0.1:7070/", "/kvm/ping"
		err := resultError(agentURL, path, body, errHeader)
		if err != nil {
			requireAgentError(t, "resultError", err, errcode.AgentError)
		}
		var env struct {
			Success *bool   `json:"success"`
			Error   *string `json:"error"`
		}
		if errHeader == "" && json.Unmarshal(bytes.TrimSpace(body), &env) == nil && env.Success != nil {
			if *env.Success != (err == nil) {
				t.Fatalf("resultError(%q) = %v for success %v", body, err, *env.Success)
			}
		}
		if errHeader != "" && err == nil {
			t.Fatalf("resultError with error header %q succeeded", errHeader)
		}

		if status < 100 || status > 999 {
			status = 100 + (status%900+900)%900
		}
		serr := statusError(agentURL, path, status, body)
		e := requireAgentError(t, "statusError", serr, errcode.AgentError, errcode.NodeUnavailable)
		var se *StatusError
		if !errors.As(serr, &se) || se.Status != status {
			t.Fatalf("statusError(%d): %v has no *StatusError of that status", status, serr)
		}
		_ = se.Error()
		retryable := status == 502 || status == 503 || status == 504 || e.Code == errcode.NodeUnavailable
		if e.Retryable != retryable {
			t.Fatalf("statusError(%d, %q) retryable %v", status, body, e.Retryable)
		}

		r := Result{TaskUUID: "t1", Body: body}
		for _, v := range []any{new(protocol.Response), new(protocol.ConnectRsp), new(protocol.PingRsp),
			new(protocol.CapacityRsp), new(protocol.VMRsp), new(protocol.ListVMsRsp), new(protocol.StorageRsp),
			new(protocol.VolumeRsp), new(protocol.SnapshotRsp), new(protocol.ImageRsp), new(protocol.CreateBridgeRsp),
			new(map[string]any)} {
			if err := r.Decode(v); err != nil {
				requireAgentError(t, "Result.Decode", err, errcode.MalformedMessage)
			}
		}
	})
}

// FuzzCallback posts fuzzed results to the callback endpoint for a pending
// call, as an agent does, then once more. Properties: nothing panics; the
// first post is answered 200 and completes the call exactly once, with
// Err nil or an AgentError and the body kept; the second is answered 404
// and does not complete it again; a post without a taskuuid is 400.
func FuzzCallback(f *testing.F) {
	for _, s := range answerSeeds {
		f.Add([]byte(s.body), s.errHeader, "")
	}
	f.Add([]byte(`{"success":true}`), "", "-")
	f.Add([]byte(`{"success":true}`), "", "\x00")
	c := New(Options{CallbackURL: "http://127.0.0.1:1/asyncrest/callback", RememberFinished: 16})
	defer c.Close()
	h := c.CallbackHandler()
	var seq atomic.Uint64
	f.Fuzz(func(t *testing.T, body []byte, errHeader, taskSuffix string) {
		id := fmt.Sprintf("task-%d/%s", seq.Add(1), taskSuffix)
		var calls atomic.Int32
		var got Result
		token := newToken()
		cl := &call{taskUUID: id, token: token, agentURL: "http://10.0.0.1:7070", path: "/kvm/startvm", started: time.Now(),
			deadline: time.Now().Add(time.Hour), done: func(r Result) { calls.Add(1); got = r }}
		c.mu.Lock()
		if _, dup := c.pending[id]; dup {
			c.mu.Unlock()
			t.Skip("task UUID in use")
		}
		c.pending[id] = cl
		cl.timer = time.AfterFunc(time.Hour, func() { c.expire(id) })
		cl.stopCtx = context.AfterFunc(context.Background(), func() {})
		c.mu.Unlock()

		post := func(taskUUID, token string) int {
			req := httptest.NewRequest(http.MethodPost, protocol.DefaultCallbackPath+"?"+CallbackTokenParam+"="+token, bytes.NewReader(body))
			req.Header.Set("Content-Type", protocol.JSONContentType)
			if taskUUID != "" {
				req.Header.Set(protocol.TaskUUIDHeader, taskUUID)
			}
			if errHeader != "" {
				req.Header.Set(protocol.ErrorHeader, errHeader)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec.Code
		}
		if st := post("", token); st != http.StatusBadRequest {
			t.Fatalf("callback without taskuuid answered %d", st)
		}
		for _, forged := range []string{"", token[:len(token)-1], newToken()} {
			if st := post(id, forged); st != http.StatusForbidden {
				t.Fatalf("callback with token %q answered %d, want 403", forged, st)
			}
		}
		if n := calls.Load(); n != 0 {
			t.Fatalf("forged callbacks completed the call %d times", n)
		}
		if st := post(id, token); st != http.StatusOK {
			t.Fatalf("callback answered %d", st)
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("call completed %d times", n)
		}
		if got.TaskUUID != id || !bytes.Equal(got.Body, body) {
			t.Fatalf("result %+v for body %q", got, body)
		}
		want := resultError(cl.agentURL, cl.path, body, errHeader)
		if (got.Err == nil) != (want == nil) {
			t.Fatalf("result error %v, resultError says %v", got.Err, want)
		}
		if got.Err != nil {
			requireAgentError(t, "callback result", got.Err, errcode.AgentError)
		}
		if st := post(id, token); st != http.StatusNotFound {
			t.Fatalf("second callback answered %d", st)
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("call completed %d times", n)
		}
	})
}

// FuzzEventHandler posts fuzzed events to the event endpoint, whose Handle
// decodes the body into the event type of its command path as the
// services do. Properties: nothing panics; the answer is always a result
// envelope (success true exactly when the status is 200); 400 without a
// commandpath, 404 for an unknown one; a body that does not decode is
// answered with the status of MalformedMessage (400).
func FuzzEventHandler(f *testing.F) {
	seeds := []struct{ path, body string }{
		{protocol.EventReportVMState, `{"hostUuid":"h1","vmUuid":"v1","vmState":"Running"}`},
		{protocol.EventReportVMCrash, `{"vmUuid":"v1"}`},
		{protocol.EventReconnectMe, `{"hostUuid":"h1","reason":"restarted"}`},
		{protocol.EventProgressReport, `{"progress":"50","processType":"download","resourceUuid":"i1"}`},
		{protocol.EventProgressReport, `{"progress":50}`},
		{protocol.EventReportVMState, `{"vmState":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 100) + `}`},
		{protocol.EventReportVMState, `not json`},
		{protocol.EventReportVMState, ``},
		{"", `{"vmUuid":"v1"}`},
		{"/kvm/unknown", `{}`},
		{"/kvm/report\xffvmstate", `{}`},
	}
	for _, s := range seeds {
		f.Add(s.path, []byte(s.body))
	}
	h := NewEventHandler(EventOptions{MaxBodyBytes: 1 << 16, Handle: func(ctx context.Context, ev Event) error {
		var v any
		switch ev.Path {
		case protocol.EventReportVMState:
			v = new(protocol.VMStateEvent)
		case protocol.EventReconnectMe:
			v = new(protocol.ReconnectMeEvent)
		case protocol.EventProgressReport:
			v = new(protocol.ProgressEvent)
		default:
			v = new(protocol.VMEvent)
		}
		if err := json.Unmarshal(ev.Body, v); err != nil {
			return errcode.Wrap(errcode.MalformedMessage, err, "event %s", ev.Path)
		}
		return nil
	}})
	known := map[string]bool{}
	for _, p := range protocol.EventPaths() {
		known[p] = true
	}
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, protocol.DefaultEventPath+"?hostUuid=h1", bytes.NewReader(body))
		req.Header.Set(protocol.CommandPathHeader, path)
		path = req.Header.Get(protocol.CommandPathHeader)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var rsp protocol.Response
		if err := json.Unmarshal(rec.Body.Bytes(), &rsp); err != nil {
			t.Fatalf("answer %d %q is not a result envelope: %v", rec.Code, rec.Body, err)
		}
		if rsp.Success != (rec.Code == http.StatusOK) || rsp.Success != (rsp.Error == "") {
			t.Fatalf("answer %d %q", rec.Code, rec.Body)
		}
		switch {
		case path == "":
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("event without commandpath answered %d", rec.Code)
			}
		case !known[path]:
			if rec.Code != http.StatusNotFound {
				t.Fatalf("event with commandpath %q answered %d", path, rec.Code)
			}
		case rec.Code != http.StatusOK && rec.Code != errcode.MalformedMessage.HTTPStatus():
			t.Fatalf("event %s %q answered %d %q", path, body, rec.Code, rec.Body)
		}
	})
}

// FuzzProtocolObject fuzzes protocol.Object, which agents use to read a
// command body, and protocol.Clean. Properties: neither panics; Object's
// map holds no null member at any depth; Clean's output is valid JSON
// without null members, and cleaning it again changes nothing.
func FuzzProtocolObject(f *testing.F) {
	for _, s := range answerSeeds {
		f.Add([]byte(s.body))
	}
	f.Add([]byte(`{"a":null,"b":{"c":null,"d":[1,{"e":null}]},"n":12345678901234567890123}`))
	f.Add([]byte(`{"xs":[1,null]}`))
	f.Add([]byte(`{"a":{"a":1},"a":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if obj, err := protocol.Object(body); err == nil {
			if obj == nil {
				t.Fatalf("Object(%q) = nil map", body)
			}
			var walk func(v any)
			walk = func(v any) {
				switch x := v.(type) {
				case map[string]any:
					for k, e := range x {
						if e == nil {
							t.Fatalf("Object(%q) kept null member %q", body, k)
						}
						walk(e)
					}
				case []any:
					for _, e := range x {
						walk(e)
					}
				}
			}
			walk(obj)
		}
		// Clean re-encodes what Marshal encoded: valid JSON only.
		if !json.Valid(body) {
			return
		}
		c, err := protocol.Clean(body)
		if err != nil {
			return
		}
		if !json.Valid(c) {
			t.Fatalf("Clean(%q) = %q, not valid JSON", body, c)
		}
		c2, err := protocol.Clean(c)
		if err != nil || !bytes.Equal(bytes.TrimSpace(c), bytes.TrimSpace(c2)) {
			t.Fatalf("Clean not idempotent: %q -> %q -> %q, %v", body, c, c2, err)
		}
	})
}
