package bench

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"mplane/api/jobs"
	"mplane/errcode"
)

func postHook(t *testing.T, tr *tracker, id, success, body string) int {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
	if id != "" {
		req.Header.Set(jobs.HeaderJobUUID, id)
	}
	req.Header.Set(jobs.HeaderJobSuccess, success)
	rec := httptest.NewRecorder()
	tr.ServeHTTP(rec, req)
	return rec.Code
}

func TestTrackerDeliversWebhooks(t *testing.T) {
	tr := newTracker()
	okCh := tr.register("job-ok")
	failCh := tr.register("job-fail")

	if code := postHook(t, tr, "job-ok", "true", `{"inventory":{"uuid":"vm1","state":"Running"}}`); code != http.StatusOK {
		t.Fatalf("webhook answered %d", code)
	}
	res := <-okCh
	if res.err != nil || !strings.Contains(string(res.inventory), `"vm1"`) || res.at.IsZero() {
		t.Errorf("success result %+v", res)
	}

	postHook(t, tr, "job-fail", "false", `{"error":{"code":"SYS.1000","description":"internal error","details":"boom"}}`)
	res = <-failCh
	var e *errcode.Error
	if !errors.As(res.err, &e) || e.Details != "boom" || !strings.Contains(res.err.Error(), "job-fail") {
		t.Errorf("failure result %v", res.err)
	}

	// A second delivery, or a job nobody waits for, is counted and answered 200.
	if code := postHook(t, tr, "job-ok", "true", `{}`); code != http.StatusOK {
		t.Errorf("duplicate answered %d", code)
	}
	if tr.unknown.Load() != 1 {
		t.Errorf("unknown = %d, want 1", tr.unknown.Load())
	}
	if code := postHook(t, tr, "", "true", `{}`); code != http.StatusBadRequest {
		t.Errorf("webhook without a job id answered %d", code)
	}
	req := httptest.NewRequest(http.MethodGet, "/hook", nil)
	rec := httptest.NewRecorder()
	tr.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET answered %d", rec.Code)
	}
}

func TestTrackerForgetAndOutstanding(t *testing.T) {
	tr := newTracker()
	tr.register("a")
	tr.register("b")
	tr.attach("b", nil) // no handle: not pollable
	if n := len(tr.outstanding()); n != 0 {
		t.Errorf("%d outstanding jobs without handles", n)
	}
	tr.forget("a")
	if tr.complete("a", result{}) {
		t.Error("a forgotten job was completed")
	}
	if !tr.complete("b", result{}) || tr.complete("b", result{}) {
		t.Error("complete must succeed exactly once")
	}
}

func TestDecodeWebhook(t *testing.T) {
	if r := decodeWebhook("j", true, []byte(`{"inventory":null}`)); r.err != nil || r.inventory != nil {
		t.Errorf("null inventory: %+v", r)
	}
	if r := decodeWebhook("j", true, []byte(`not json`)); r.err == nil {
		t.Error("a success with a malformed body is not an error")
	}
	if r := decodeWebhook("j", false, []byte(`<html>`)); r.err == nil || !strings.Contains(r.err.Error(), "<html>") {
		t.Errorf("failure with a foreign body: %v", r.err)
	}
}

func TestWebhookHeaderOnMutatingCallsOnly(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+"="+r.Header.Get(jobs.HeaderWebHook))
	}))
	defer srv.Close()
	hc := &http.Client{Transport: webhookHeader{base: http.DefaultTransport, url: "http://127.0.0.1:1/hook"}}
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(m, srv.URL, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := "GET=|POST=http://127.0.0.1:1/hook|PUT=http://127.0.0.1:1/hook|DELETE=http://127.0.0.1:1/hook"
	if got := strings.Join(seen, "|"); got != want {
		t.Errorf("headers %s, want %s", got, want)
	}
}
