package jobs

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/api/auth"
	"mplane/api/rest"
	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
)

var backends = testenv.Backends

func newStore(t *testing.T, dsn string) (*Store, *gorm.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	if err := Migrate(ctx, gdb); err != nil {
		t.Fatal(err)
	}
	return NewStore(gdb), gdb
}

func wantCode(t *testing.T, err error, code errcode.Code, details string) {
	t.Helper()
	e := errcode.From(err)
	if err == nil || e.Code != code || (details != "" && e.Details != details) {
		t.Fatalf("error %v, want %s %q", err, code, details)
	}
}

func TestCreateIdempotentUnderConcurrency(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			s, gdb := newStore(t, b.DSN(t))
			const callers = 20
			type result struct {
				job     Job
				created bool
				err     error
			}
			results := make(chan result, callers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for range callers {
				wg.Go(func() {
					<-start
					j, created, err := s.Create(context.Background(), NewJob{
						UUID: "job-1", APIName: "vm.StartVmInstance", ResourceUUID: "vm1", AccountUUID: "acc1",
					})
					results <- result{j, created, err}
				})
			}
			close(start)
			wg.Wait()
			close(results)
			createdCount := 0
			for r := range results {
				if r.err != nil {
					t.Fatalf("Create: %v", r.err)
				}
				if r.created {
					createdCount++
				}
				if r.job.UUID != "job-1" || r.job.State != Processing || r.job.ResourceUUID != "vm1" {
					t.Errorf("job %+v", r.job)
				}
			}
			if createdCount != 1 {
				t.Errorf("%d callers created the job, want exactly 1", createdCount)
			}
			var n int64
			if err := gdb.Model(&Job{}).Count(&n).Error; err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("%d rows, want 1", n)
			}
		})
	}
}

func TestCreate(t *testing.T) {
	s, _ := newStore(t, testenv.SQLiteDSN(t))
	ctx := context.Background()
	j, created, err := s.Create(ctx, NewJob{APIName: "zone.CreateZone", AccountUUID: "acc1", WebhookURL: "https://hooks.example/x?token=1"})
	if err != nil || !created {
		t.Fatalf("Create = %+v, %v, %v", j, created, err)
	}
	if len(j.UUID) != 32 || strings.Contains(j.UUID, "-") {
		t.Errorf("generated UUID %q, want 32 hex digits", j.UUID)
	}
	j2, _, err := s.Create(ctx, NewJob{ClientUUID: "j2", APIName: "zone.CreateZone", AccountUUID: "acc1", Digest: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	if j2.UUID != ScopedUUID("acc1", "j2") || j2.Name() != "j2" {
		t.Errorf("job named j2 has UUID %s, name %s", j2.UUID, j2.Name())
	}
	// Another account's j2 is a job of its own: names are per account.
	other, created, err := s.Create(ctx, NewJob{ClientUUID: "j2", APIName: "zone.DeleteZone", AccountUUID: "acc2", Digest: "d9"})
	if err != nil || !created || other.UUID == j2.UUID {
		t.Fatalf("acc2's j2: %+v, created %v, %v; want a job of its own", other, created, err)
	}
	// A retry of the same request finds the job.
	again, created, err := s.Create(ctx, NewJob{ClientUUID: "j2", APIName: "zone.CreateZone", AccountUUID: "acc1", Digest: "d1"})
	if err != nil || created || again.UUID != j2.UUID {
		t.Fatalf("retry of j2: %+v, created %v, %v; want the same job", again, created, err)
	}
	tests := []struct {
		name    string
		n       NewJob
		code    errcode.Code
		details string
	}{
		{"another API", NewJob{ClientUUID: "j2", APIName: "zone.DeleteZone", AccountUUID: "acc1", Digest: "d1"}, errcode.InvalidArgument,
			"X-Job-UUID j2 was used for another request; a retry must repeat the request exactly, and a new request needs a new X-Job-UUID"},
		{"another body", NewJob{ClientUUID: "j2", APIName: "zone.CreateZone", AccountUUID: "acc1", Digest: "d2"}, errcode.InvalidArgument,
			"X-Job-UUID j2 was used for another request; a retry must repeat the request exactly, and a new request needs a new X-Job-UUID"},
		{"bad uuid", NewJob{ClientUUID: "a b", APIName: "x"}, errcode.InvalidArgument,
			`X-Job-UUID must be 1 to 64 letters, digits, '-' or '_', got "a b"`},
		{"long uuid", NewJob{ClientUUID: strings.Repeat("a", 65), APIName: "x"}, errcode.InvalidArgument, ""},
		{"relative webhook", NewJob{APIName: "x", WebhookURL: "/hook"}, errcode.InvalidArgument,
			`X-Web-Hook must be an absolute http or https URL of at most 2048 bytes, got "/hook"`},
		{"ftp webhook", NewJob{APIName: "x", WebhookURL: "ftp://h/x"}, errcode.InvalidArgument, ""},
		{"no API name", NewJob{UUID: "j3"}, errcode.Internal, "create api job: APIName is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.Create(ctx, tc.n)
			wantCode(t, err, tc.code, tc.details)
		})
	}
}

func TestFinishedJobsNeverChange(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			s, _ := newStore(t, b.DSN(t))
			ctx := context.Background()
			for _, id := range []string{"ok", "bad"} {
				if _, _, err := s.Create(ctx, NewJob{UUID: id, APIName: "vm.StartVmInstance"}); err != nil {
					t.Fatal(err)
				}
			}
			result := map[string]any{"inventory": map[string]any{"uuid": "vm1", "state": "Running"}}
			j, err := s.Succeed(ctx, "ok", result)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != Succeeded || string(j.ResultJSON()) != `{"inventory":{"state":"Running","uuid":"vm1"}}` {
				t.Fatalf("succeeded job %+v", j)
			}
			cause := errcode.New(errcode.AgentError, "host h1 refused")
			jb, err := s.Fail(ctx, "bad", errcode.Wrap(errcode.Internal, cause, "start vm vm2"))
			if err != nil {
				t.Fatal(err)
			}
			if e := jb.Err(); e == nil || e.Code != errcode.Internal || e.Cause == nil || e.Cause.Code != errcode.AgentError {
				t.Fatalf("failed job error %+v", jb.Err())
			}

			_, err = s.Succeed(ctx, "ok", map[string]any{"inventory": "other"})
			wantCode(t, err, errcode.InvalidState, "api job ok already succeeded")
			_, err = s.Fail(ctx, "ok", errcode.New(errcode.Timeout, ""))
			wantCode(t, err, errcode.InvalidState, "api job ok already succeeded")
			_, err = s.Succeed(ctx, "bad", nil)
			wantCode(t, err, errcode.InvalidState, "api job bad already failed")
			_, err = s.Succeed(ctx, "nope", nil)
			wantCode(t, err, errcode.ResourceNotFound, "api job nope not found")

			again, err := s.Get(ctx, "ok")
			if err != nil || again.State != Succeeded || again.Result != j.Result || again.Error != "" {
				t.Errorf("succeeded job changed: %+v, %v", again, err)
			}
			againBad, err := s.Get(ctx, "bad")
			if err != nil || againBad.State != Failed || againBad.Error != jb.Error || againBad.Result != "" {
				t.Errorf("failed job changed: %+v, %v", againBad, err)
			}
		})
	}
}

// TestRacingOutcomes finishes one job from many goroutines at once: one
// outcome is stored, the others are refused.
func TestRacingOutcomes(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			s, _ := newStore(t, b.DSN(t))
			ctx := context.Background()
			if _, _, err := s.Create(ctx, NewJob{UUID: "race", APIName: "x"}); err != nil {
				t.Fatal(err)
			}
			var wins atomic.Int32
			var wg sync.WaitGroup
			errs := make(chan error, 10)
			for i := range 10 {
				wg.Go(func() {
					var err error
					if i%2 == 0 {
						_, err = s.Succeed(ctx, "race", map[string]int{"i": i})
					} else {
						_, err = s.Fail(ctx, "race", errcode.New(errcode.Timeout, "%d", i))
					}
					switch {
					case err == nil:
						wins.Add(1)
					case !errcode.Has(err, errcode.InvalidState):
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if wins.Load() != 1 {
				t.Fatalf("%d outcomes stored, want 1", wins.Load())
			}
		})
	}
}

type answer struct {
	status int
	body   map[string]json.RawMessage
	raw    string
}

func get(t *testing.T, h http.Handler, path string, id *auth.Identity) answer {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://mn.example:8080"+path, nil)
	if id != nil {
		req = req.WithContext(auth.WithIdentity(req.Context(), *id))
	}
	h.ServeHTTP(rec, req)
	a := answer{status: rec.Code, raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
		t.Fatalf("GET %s: body %q is not a JSON object: %v", path, rec.Body, err)
	}
	return a
}

func (a answer) errorCode(t *testing.T) errcode.Code {
	t.Helper()
	var e errcode.Error
	if err := json.Unmarshal(a.body["error"], &e); err != nil {
		t.Fatalf("answer %s has no error: %v", a.raw, err)
	}
	return e.Code
}

func TestHandler(t *testing.T) {
	s, _ := newStore(t, testenv.SQLiteDSN(t))
	ctx := context.Background()
	for _, id := range []string{"running", "done", "broken"} {
		if _, _, err := s.Create(ctx, NewJob{UUID: id, APIName: "vm.StartVmInstance", AccountUUID: "alice"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Succeed(ctx, "done", map[string]any{"inventory": map[string]any{"uuid": "vm1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fail(ctx, "broken", errcode.New(errcode.CapacityExhausted, "no host has 64 CPUs")); err != nil {
		t.Fatal(err)
	}
	named, _, err := s.Create(ctx, NewJob{ClientUUID: "mine", APIName: "vm.StartVmInstance", AccountUUID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	rest.Handle(mux, "GET /api-jobs/{uuid}", s.Handler(HandlerOptions{}))

	alice := &auth.Identity{AccountUUID: "alice"}
	bob := &auth.Identity{AccountUUID: "bob"}
	admin := &auth.Identity{AccountUUID: auth.AdminUUID, Admin: true}
	tests := []struct {
		name   string
		path   string
		id     *auth.Identity
		status int
		check  func(t *testing.T, a answer)
	}{
		{"processing", "/v1/api-jobs/running", alice, 202, func(t *testing.T, a answer) {
			if a.raw != `{"location":"http://mn.example:8080/v1/api-jobs/running"}`+"\n" {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"processing under zstack prefix", "/zstack/v1/api-jobs/running", alice, 202, func(t *testing.T, a answer) {
			if string(a.body["location"]) != `"http://mn.example:8080/zstack/v1/api-jobs/running"` {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"succeeded", "/v1/api-jobs/done", alice, 200, func(t *testing.T, a answer) {
			if a.raw != `{"inventory":{"uuid":"vm1"}}`+"\n" {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"failed", "/v1/api-jobs/broken", alice, 503, func(t *testing.T, a answer) {
			if a.errorCode(t) != errcode.CapacityExhausted || !strings.Contains(a.raw, "no host has 64 CPUs") {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"unknown", "/v1/api-jobs/nope", alice, 404, func(t *testing.T, a answer) {
			if a.errorCode(t) != errcode.ResourceNotFound {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"another account: as if absent", "/v1/api-jobs/done", bob, 404, func(t *testing.T, a answer) {
			if a.errorCode(t) != errcode.ResourceNotFound || strings.Contains(a.raw, "vm1") || !strings.Contains(a.raw, `"api job done not found"`) {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"admin sees all", "/v1/api-jobs/done", admin, 200, nil},
		{"by the caller's X-Job-UUID", "/v1/api-jobs/mine", alice, 202, func(t *testing.T, a answer) {
			if a.raw != `{"location":"http://mn.example:8080/v1/api-jobs/mine"}`+"\n" || named.UUID == "mine" {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"another account's X-Job-UUID names nothing", "/v1/api-jobs/mine", bob, 404, nil},
		{"no identity", "/v1/api-jobs/done", nil, 401, func(t *testing.T, a answer) {
			if a.errorCode(t) != errcode.Unauthenticated {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"bad wait", "/v1/api-jobs/running?wait=forever", alice, 400, func(t *testing.T, a answer) {
			if !strings.Contains(a.raw, `wait must be a duration like 30s (or a number of seconds) from 0s to 1m0s, got \"forever\"`) {
				t.Errorf("body %s", a.raw)
			}
		}},
		{"wait too long", "/v1/api-jobs/running?wait=2m", alice, 400, nil},
		{"short wait on a running job", "/v1/api-jobs/running?wait=1ms", alice, 202, nil},
		{"wait on a finished job", "/v1/api-jobs/done?wait=30", alice, 200, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := get(t, mux, tc.path, tc.id)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.raw)
			}
			if tc.check != nil {
				tc.check(t, a)
			}
		})
	}
}

func TestHandlerLongPoll(t *testing.T) {
	s, _ := newStore(t, testenv.SQLiteDSN(t))
	ctx := context.Background()
	if _, _, err := s.Create(ctx, NewJob{UUID: "slow", APIName: "x", AccountUUID: "alice"}); err != nil {
		t.Fatal(err)
	}
	// A poll interval longer than the test: only the store's signal can
	// wake the waiter in time.
	h := http.NewServeMux()
	rest.Handle(h, "GET /api-jobs/{uuid}", s.Handler(HandlerOptions{PollInterval: time.Hour}))

	done := make(chan answer, 1)
	go func() {
		done <- get(t, h, "/v1/api-jobs/slow?wait=1m", &auth.Identity{AccountUUID: "alice"})
	}()
	testenv.Eventually(t, 10*time.Second, func() bool { return s.waiting.get() == 1 }, "the request waits on the job")
	if _, err := s.Succeed(ctx, "slow", map[string]string{"inventory": "x"}); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.status != 200 || a.raw != `{"inventory":"x"}`+"\n" {
		t.Fatalf("long poll answered %d %s", a.status, a.raw)
	}
}

func TestAcceptedAndFromRequest(t *testing.T) {
	req := httptest.NewRequest("POST", "http://mn:8080/zstack/v1/vm-instances", nil)
	req.Header.Set(HeaderJobUUID, "client-id")
	req.Header.Set(HeaderWebHook, "http://hook/x")
	req = req.WithContext(auth.WithIdentity(req.Context(), auth.Identity{AccountUUID: "alice"}))
	n := FromRequest(req, "vm.CreateVmInstance", "vm9")
	if n != (NewJob{ClientUUID: "client-id", APIName: "vm.CreateVmInstance", ResourceUUID: "vm9", AccountUUID: "alice", WebhookURL: "http://hook/x"}) {
		t.Errorf("FromRequest = %+v", n)
	}
	rec := httptest.NewRecorder()
	Accepted(rec, req, "https://cloud.example", Job{UUID: "client-id"})
	if rec.Code != 202 || rec.Body.String() != `{"location":"https://cloud.example/zstack/v1/api-jobs/client-id"}`+"\n" {
		t.Errorf("Accepted: %d %s", rec.Code, rec.Body)
	}
}

// hookServer records webhook POSTs and answers with the statuses given,
// then 200.
type hookServer struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []hookRequest
}

type hookRequest struct {
	jobUUID, success, contentType, body string
}

func newHookServer(t *testing.T, statuses ...int) *hookServer {
	hs := &hookServer{statuses: statuses}
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hs.mu.Lock()
		hs.got = append(hs.got, hookRequest{r.Header.Get(HeaderJobUUID), r.Header.Get(HeaderJobSuccess), r.Header.Get("Content-Type"), string(body)})
		status := http.StatusOK
		if len(hs.statuses) > 0 {
			status, hs.statuses = hs.statuses[0], hs.statuses[1:]
		}
		hs.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *hookServer) requests() []hookRequest {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]hookRequest(nil), hs.got...)
}

func TestWebhookDeliver(t *testing.T) {
	fast := Webhook{Backoff: time.Millisecond, Timeout: 5 * time.Second}
	ok := Job{UUID: "j1", State: Succeeded, Result: `{"inventory":{"uuid":"vm1"}}`}
	failed := Job{UUID: "j2", State: Failed, Error: `{"code":"SYS.1015","description":"not enough capacity"}`}

	tests := []struct {
		name     string
		job      Job
		statuses []int
		wantErr  string // empty: delivered
		attempts int
	}{
		{"succeeded", ok, nil, "", 1},
		{"failed job", failed, nil, "", 1},
		{"retried after 500 and 429", ok, []int{500, 429}, "", 3},
		{"gives up after attempts", ok, []int{503, 503, 503, 503}, "attempt 3 of 3: answered 503 Service Unavailable", 3},
		{"no retry on 400", ok, []int{400}, "attempt 1 of 3: answered 400 Bad Request", 1},
		{"redirect not followed", ok, []int{302}, "attempt 1 of 3: answered 302 Found", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHookServer(t, tc.statuses...)
			j := tc.job
			j.WebhookURL = hs.URL + "/hook?token=secret"
			err := fast.Deliver(context.Background(), j)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Deliver: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Deliver error %v, want %q", err, tc.wantErr)
			case err != nil && strings.Contains(err.Error(), "secret"):
				t.Errorf("error leaks the URL's query: %v", err)
			}
			got := hs.requests()
			if len(got) != tc.attempts {
				t.Fatalf("%d POSTs, want %d", len(got), tc.attempts)
			}
			r := got[len(got)-1]
			wantSuccess, wantBody := "true", j.Result
			if j.State == Failed {
				wantSuccess, wantBody = "false", `{"error":`+j.Error+`}`
			}
			if r.jobUUID != j.UUID || r.success != wantSuccess || r.contentType != rest.ContentType || !jsonEqual(r.body, wantBody) {
				t.Errorf("POST %+v, want job %s success %s body %s", r, j.UUID, wantSuccess, wantBody)
			}
		})
	}

	t.Run("no webhook", func(t *testing.T) {
		if err := fast.Deliver(context.Background(), ok); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unfinished job", func(t *testing.T) {
		err := fast.Deliver(context.Background(), Job{UUID: "j", State: Processing, WebhookURL: "http://x/"})
		if err == nil || !strings.Contains(err.Error(), "still processing") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestWebhookBounded checks that a receiver that never answers cannot hold
// Deliver: each attempt ends at Timeout.
func TestWebhookBounded(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	wh := Webhook{Attempts: 2, Timeout: 50 * time.Millisecond, Backoff: time.Millisecond}
	err := wh.Deliver(context.Background(), Job{UUID: "j", State: Succeeded, Result: "{}", WebhookURL: srv.URL})
	if err == nil || !strings.Contains(err.Error(), "attempt 2 of 2") || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("error %v, want both attempts to time out", err)
	}
	if calls.Load() != 2 {
		t.Errorf("%d attempts, want 2", calls.Load())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := wh.Deliver(ctx, Job{UUID: "j", State: Succeeded, WebhookURL: srv.URL}); err == nil {
		t.Error("Deliver with a cancelled context succeeded")
	}
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func TestFailStale(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			s, gdb := newStore(t, b.DSN(t))
			ctx := context.Background()
			for _, id := range []string{"old", "old-done", "new"} {
				if _, _, err := s.Create(ctx, NewJob{UUID: id, APIName: "x"}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Succeed(ctx, "old-done", nil); err != nil {
				t.Fatal(err)
			}
			past := time.Now().UTC().Add(-2 * time.Hour)
			if err := gdb.Model(&Job{}).Where("uuid IN ?", []string{"old", "old-done"}).Update("created_at", past).Error; err != nil {
				t.Fatal(err)
			}
			n, err := s.FailStale(ctx, time.Hour)
			if err != nil || n != 1 {
				t.Fatalf("FailStale = %d, %v; want 1", n, err)
			}
			for id, want := range map[string]State{"old": Failed, "old-done": Succeeded, "new": Processing} {
				j, err := s.Get(ctx, id)
				if err != nil || j.State != want {
					t.Errorf("job %s: %s, %v; want %s", id, j.State, err, want)
				}
			}
			j, _ := s.Get(ctx, "old")
			if e := j.Err(); e == nil || e.Code != errcode.Timeout {
				t.Errorf("stale job error %+v", j.Err())
			}
		})
	}
}

func TestPurgeFinished(t *testing.T) {
	s, gdb := newStore(t, testenv.SQLiteDSN(t))
	ctx := context.Background()
	for _, id := range []string{"old-done", "old-failed", "old-running", "new-done"} {
		if _, _, err := s.Create(ctx, NewJob{UUID: id, APIName: "zone.CreateZone"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"old-done", "new-done"} {
		if _, err := s.Succeed(ctx, id, map[string]any{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Fail(ctx, "old-failed", errcode.New(errcode.InvalidState, "no")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().UTC().Add(-48 * time.Hour)
	if err := gdb.Model(&Job{}).Where("uuid LIKE ?", "old-%").UpdateColumn("updated_at", old).Error; err != nil {
		t.Fatal(err)
	}
	n, err := s.PurgeFinished(ctx, 24*time.Hour, 1000)
	if err != nil || n != 2 {
		t.Fatalf("purged %d (%v), want the 2 old finished jobs", n, err)
	}
	var left []string
	gdb.Model(&Job{}).Order("uuid").Pluck("uuid", &left)
	if strings.Join(left, ",") != "new-done,old-running" {
		t.Fatalf("jobs left %v, want the new one and the one still processing", left)
	}
}
