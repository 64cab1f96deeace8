package client_test

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/api/client/clienttest"
	"mplane/errcode"
)

func TestNewNormalizesBaseURL(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"},
		{"http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"},
		{"https://api.example.invalid/zstack/v1/", "https://api.example.invalid/zstack/v1"},
		{" http://h:1/mplane ", "http://h:1/mplane/v1"},
	}
	for _, tc := range tests {
		c, err := client.New(tc.in)
		if err != nil {
			t.Errorf("New(%q): %v", tc.in, err)
			continue
		}
		if got := c.BaseURL(); got != tc.want {
			t.Errorf("New(%q).BaseURL() = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:8080", "ftp://h/", "http://", "http://h/?a=b", "http://u:p@h/"} {
		if _, err := client.New(bad); err == nil {
			t.Errorf("New(%q) accepted a bad URL", bad)
		}
	}
}

func TestLoginSendsSHA512DigestAndUsesSession(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{Password: "s3cret"}, false)
	s, err := c.Login(ctx(t), "admin", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if s.UUID == "" || c.Session() != s.UUID || s.AccountUUID == "" {
		t.Fatalf("session %+v, client session %q", s, c.Session())
	}
	if _, _, err := c.Query(ctx(t), "zones", client.Query{}); err != nil {
		t.Fatalf("query after login: %v", err)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	login := reqs[0]
	if login.Method != http.MethodPut || login.Path != "/v1/accounts/login" || login.Authorization != "" {
		t.Fatalf("login request %s %s auth %q", login.Method, login.Path, login.Authorization)
	}
	var body struct {
		L struct{ AccountName, Password string } `json:"logInByAccount"`
	}
	if err := json.Unmarshal(login.Body, &body); err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512([]byte("s3cret"))
	if body.L.AccountName != "admin" || body.L.Password != hex.EncodeToString(sum[:]) {
		t.Fatalf("login body %s: want the SHA-512 hex digest of the password", login.Body)
	}
	if got := reqs[1].Authorization; got != "OAuth "+s.UUID {
		t.Fatalf("Authorization = %q, want OAuth <session>", got)
	}
}

func TestLoginWrongPasswordIs401(t *testing.T) {
	_, c := newFake(t, clienttest.Options{}, false)
	_, err := c.Login(ctx(t), "admin", "wrong")
	if err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	var se *client.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized || se.Err == nil {
		t.Fatalf("err = %v (%T), want a 401 *StatusError with the API error", err, err)
	}
	if !errcode.Has(err, errcode.Unauthenticated) || !client.IsUnauthenticated(err) || client.StatusCode(err) != 401 {
		t.Fatalf("err %v: code checks fail", err)
	}
	if c.Session() != "" {
		t.Fatalf("a failed login set session %q", c.Session())
	}
	if _, err := c.Login(ctx(t), "", "x"); !errcode.Has(err, errcode.InvalidArgument) {
		t.Fatalf("login without account: %v, want InvalidArgument", err)
	}
}

func TestCallsWithoutValidSessionAre401(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{}, false)
	_, _, err := c.Query(ctx(t), "zones", client.Query{})
	if !client.IsUnauthenticated(err) {
		t.Fatalf("query without session: %v, want 401", err)
	}
	c.SetSession(srv.NewSession())
	if _, _, err := c.Query(ctx(t), "zones", client.Query{}); err != nil {
		t.Fatalf("query with session: %v", err)
	}
	srv.ExpireSessions()
	_, err = c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if !client.IsUnauthenticated(err) || !strings.Contains(err.Error(), "create zones") {
		t.Fatalf("create with an expired session: %v, want a 401 saying what was done", err)
	}
}

func TestCreateWaitsThroughPendingPolls(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{PendingPolls: 3}, true)
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "zone1", "description": "first"})
	if err != nil {
		t.Fatal(err)
	}
	if len(job.UUID) != 32 || !strings.HasSuffix(job.Location, "/v1/api-jobs/"+job.UUID) {
		t.Fatalf("job %q at %q", job.UUID, job.Location)
	}
	var states []string
	raw, err := job.Wait(ctx(t), func(_ time.Duration, state string) { states = append(states, state) })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{client.JobProcessing, client.JobProcessing, client.JobProcessing, client.JobSucceeded}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Fatalf("progress states %v, want %v", states, want)
	}
	z, err := client.Decode[inv](raw)
	if err != nil || z.s("name") != "zone1" || z.s("description") != "first" || z.s("uuid") == "" {
		t.Fatalf("inventory %s (%v)", raw, err)
	}
	var posts, polls int
	for _, r := range srv.Requests() {
		switch {
		case r.Method == http.MethodPost:
			posts++
			if r.JobUUID != job.UUID {
				t.Errorf("X-Job-UUID %q, job %q", r.JobUUID, job.UUID)
			}
			if string(r.Body) != `{"params":{"description":"first","name":"zone1"}}` {
				t.Errorf("create body %s", r.Body)
			}
		case strings.Contains(r.Path, "/api-jobs/"):
			polls++
		}
	}
	if posts != 1 || polls != 4 {
		t.Fatalf("%d creates and %d polls, want 1 and 4", posts, polls)
	}
	// A finished job answers from the handle, without asking again.
	if again, err := job.Wait(ctx(t), nil); err != nil || string(again) != string(raw) || len(srv.Requests()) != 5 {
		t.Fatalf("second Wait: %s %v after %d requests", again, err, len(srv.Requests()))
	}
}

func TestFailedJobIs503WithTheJobsError(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{PendingPolls: 2}, true)
	ids := seed(t, c)
	srv.FailNextJob(errcode.Wrap(errcode.CapacityExhausted, errcode.New(errcode.AgentError, "host said no"), "no host for vm web1"))
	job, err := c.Create(ctx(t), "vm-instances", map[string]any{
		"name": "web1", "instanceOfferingUuid": ids["offering"], "imageUuid": ids["image"], "l3NetworkUuids": []string{ids["l3"]}})
	if err != nil {
		t.Fatal(err)
	}
	var last string
	_, err = job.Wait(ctx(t), func(_ time.Duration, state string) { last = state })
	var se *client.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want a 503 *StatusError", err)
	}
	if errcode.CodeOf(err) != errcode.CapacityExhausted || !errcode.Has(err, errcode.AgentError) || se.Err.Details != "no host for vm web1" {
		t.Fatalf("job error %v: code or cause chain lost", err)
	}
	if last != client.JobFailed || !job.Done() {
		t.Fatalf("last state %q, done %v", last, job.Done())
	}
	if !strings.Contains(err.Error(), job.UUID) {
		t.Fatalf("error %q does not name the job", err)
	}
}

func TestValidationErrorsAreImmediate(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{}, true)
	_, err := c.Create(ctx(t), "instance-offerings", map[string]any{"name": "small", "cpuNum": 1})
	if client.StatusCode(err) != http.StatusBadRequest || errcode.CodeOf(err) != errcode.InvalidArgument {
		t.Fatalf("err = %v, want 400 SYS.1007", err)
	}
	var e *errcode.Error
	if !errors.As(err, &e) || !strings.Contains(e.Details, "memorySize is required") {
		t.Fatalf("details lost: %v", err)
	}
	if srv.JobCount() != 0 {
		t.Fatalf("a rejected create started %d jobs", srv.JobCount())
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"empty path", func() error { _, err := c.Create(ctx(t), "/", nil); return err }()},
		{"action without uuid", func() error { _, err := c.Action(ctx(t), "vm-instances", "", "startVmInstance", nil); return err }()},
		{"action without name", func() error { _, err := c.Action(ctx(t), "vm-instances", "x", "", nil); return err }()},
		{"delete without uuid", func() error { _, err := c.Delete(ctx(t), "zones", "", ""); return err }()},
		{"get without uuid", func() error { _, err := c.Get(ctx(t), "zones", ""); return err }()},
		{"job without id", func() error { _, err := c.Job(" "); return err }()},
	} {
		if !errcode.Has(tc.err, errcode.InvalidArgument) {
			t.Errorf("%s: %v, want a local InvalidArgument", tc.name, tc.err)
		}
	}
}

func TestActionsAndDelete(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{PendingPolls: 1}, true)
	ids := seed(t, c)
	vm, err := client.CreateAndWait[inv](ctx(t), c, "vm-instances", map[string]any{
		"name": "web1", "instanceOfferingUuid": ids["offering"], "imageUuid": ids["image"], "l3NetworkUuids": []string{ids["l3"]}})
	if err != nil {
		t.Fatal(err)
	}
	id := vm.s("uuid")
	if vm.s("state") != "Running" || vm.s("hostUuid") != ids["host"] {
		t.Fatalf("new vm %v", vm)
	}
	stopped, err := client.ActionAndWait[inv](ctx(t), c, "vm-instances", id, "stopVmInstance", map[string]string{"type": "cold"})
	if err != nil || stopped.s("state") != "Stopped" {
		t.Fatalf("stop: %v %v", stopped, err)
	}
	started, err := client.ActionAndWait[inv](ctx(t), c, "vm-instances", id, "startVmInstance", nil)
	if err != nil || started.s("state") != "Running" {
		t.Fatalf("start: %v %v", started, err)
	}
	job, err := c.Delete(ctx(t), "vm-instances", id, client.DeleteEnforcing)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := job.Wait(ctx(t), nil); err != nil || raw != nil {
		t.Fatalf("delete result %s %v, want no inventory", raw, err)
	}
	if srv.Get("vm-instances", id) != nil {
		t.Fatal("vm still there after delete")
	}
	var sawStop, sawDelete bool
	for _, r := range srv.Requests() {
		if r.Method == http.MethodPut && r.Path == "/v1/vm-instances/"+id+"/actions" && string(r.Body) == `{"stopVmInstance":{"type":"cold"}}` {
			sawStop = true
		}
		if r.Method == http.MethodDelete && r.Path == "/v1/vm-instances/"+id && r.RawQuery == "deleteMode=Enforcing" && r.JobUUID != "" {
			sawDelete = true
		}
	}
	if !sawStop || !sawDelete {
		t.Fatalf("requests on the wire: stop %v delete %v", sawStop, sawDelete)
	}
	_, err = c.Action(ctx(t), "vm-instances", id, "rebootVmInstance", nil)
	if client.StatusCode(err) != http.StatusNotFound || errcode.CodeOf(err) != errcode.ResourceNotFound {
		t.Fatalf("action on a deleted vm: %v, want 404 SYS.1005", err)
	}
}

func TestQueryEncodesEveryParameter(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{}, true)
	q := client.Query{
		Q: []string{
			"name~=%web&1%",
			"description=a+b c=d",
			client.Where("uuid", client.OpIn, "a", "b"),
			client.Where("hostUuid", client.OpIsNull),
			client.Where("name", client.OpNe, "ü#?/"),
			"cpuNum>=2",
		},
		Limit: 5, Start: 10, ReplyWithCount: true, Sort: "+createDate", Fields: []string{"uuid", "name"},
	}
	if _, _, err := c.Query(ctx(t), "vm-instances", q); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	got := reqs[len(reqs)-1]
	if got.Path != "/v1/vm-instances" {
		t.Fatalf("path %q", got.Path)
	}
	wantQ := []string{"name~=%web&1%", "description=a+b c=d", "uuid?=a,b", "hostUuid is null", "name!=ü#?/", "cpuNum>=2"}
	if fmt.Sprint(got.Query["q"]) != fmt.Sprint(wantQ) {
		t.Fatalf("server decoded q=%q, want %q (raw %s)", got.Query["q"], wantQ, got.RawQuery)
	}
	for k, want := range map[string]string{"limit": "5", "start": "10", "replyWithCount": "true", "sort": "+createDate", "fields": "uuid,name"} {
		if v := got.Query.Get(k); v != want {
			t.Errorf("%s=%q, want %q (raw %s)", k, v, want, got.RawQuery)
		}
	}
	if got.Query.Has("count") {
		t.Errorf("count sent without being asked: %s", got.RawQuery)
	}
	if e := (client.Query{}).Encode(); e != "" {
		t.Errorf("zero Query encodes to %q", e)
	}
}

func TestQueryResultsAndCounts(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{}, true)
	for i := range 5 {
		srv.Put("zones", map[string]any{"uuid": fmt.Sprintf("%032d", i), "name": fmt.Sprintf("zone-%d", i), "state": "Enabled"})
	}
	srv.Put("zones", map[string]any{"uuid": fmt.Sprintf("%032d", 9), "name": "other", "state": "Disabled"})
	type zone struct {
		UUID  string `json:"uuid"`
		Name  string `json:"name"`
		State string `json:"state"`
	}
	zones, total, err := client.QueryAs[zone](ctx(t), c, "zones", client.Query{
		Q: []string{"name~=zone-%", "state=Enabled"}, Limit: 2, Start: 1, Sort: "-name", ReplyWithCount: true})
	if err != nil {
		t.Fatal(err)
	}
	if total != 5 || len(zones) != 2 || zones[0].Name != "zone-3" || zones[1].Name != "zone-2" {
		t.Fatalf("total %d zones %+v", total, zones)
	}
	invs, total, err := c.Query(ctx(t), "zones", client.Query{Count: true})
	if err != nil || total != 6 || len(invs) != 0 {
		t.Fatalf("count: %d inventories, total %d, %v", len(invs), total, err)
	}
	_, total, err = c.Query(ctx(t), "zones", client.Query{Q: []string{"state!=Enabled"}})
	if err != nil || total != 1 {
		t.Fatalf("total without replyWithCount is the page size: %d %v", total, err)
	}
	z, err := client.GetAs[zone](ctx(t), c, "zones", fmt.Sprintf("%032d", 9))
	if err != nil || z.Name != "other" {
		t.Fatalf("get: %+v %v", z, err)
	}
	_, err = c.Get(ctx(t), "zones", "0123456789abcdef0123456789abcdef")
	if errcode.CodeOf(err) != errcode.ResourceNotFound {
		t.Fatalf("get unknown: %v, want ResourceNotFound", err)
	}
	_, _, err = c.Query(ctx(t), "zones", client.Query{Q: []string{"name"}})
	if client.StatusCode(err) != 400 || errcode.CodeOf(err) != errcode.InvalidArgument {
		t.Fatalf("bad condition: %v, want 400 SYS.1007", err)
	}
}

func TestRetryAfterDroppedConnectionReusesJobUUID(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{}, true)
	srv.DropNextResponses(1)
	z, err := client.CreateAndWait[inv](ctx(t), c, "zones", map[string]any{"name": "zone1"})
	if err != nil {
		t.Fatalf("create through a dropped answer: %v", err)
	}
	var ids []string
	for _, r := range srv.Requests() {
		if r.Method == http.MethodPost {
			ids = append(ids, r.JobUUID)
		}
	}
	if len(ids) != 2 || ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("X-Job-UUIDs of the create attempts: %q, want the same id twice", ids)
	}
	if srv.JobCount() != 1 || srv.Count("zones") != 1 || z.s("name") != "zone1" {
		t.Fatalf("%d jobs, %d zones: the retry did the work again", srv.JobCount(), srv.Count("zones"))
	}
	// A caller-chosen id is kept across calls: the same create is the same job.
	id := client.NewJobUUID()
	j1, err := c.Create(ctx(t), "zones", map[string]any{"name": "zone2"}, client.JobUUID(id))
	if err != nil {
		t.Fatal(err)
	}
	j2, err := c.Create(ctx(t), "zones", map[string]any{"name": "zone2"}, client.JobUUID(id))
	if err != nil || j1.UUID != id || j2.Location != j1.Location {
		t.Fatalf("jobs %q %q (%v)", j1.Location, j2.Location, err)
	}
	if srv.Count("zones") != 2 {
		t.Fatalf("%d zones, want 2", srv.Count("zones"))
	}
}

func TestRetriesGiveUpWithWhatWasDone(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{}, true)
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return true
	})
	_, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err == nil || !strings.HasPrefix(err.Error(), "create zones: ") || client.StatusCode(err) != 0 {
		t.Fatalf("err = %v, want a transport error saying what was done", err)
	}
	if n := len(srv.Requests()); n != 1+2 {
		t.Fatalf("%d attempts, want 3 (1 + 2 retries)", n)
	}
	for _, r := range srv.Requests() {
		if r.JobUUID != srv.Requests()[0].JobUUID {
			t.Fatal("retries changed X-Job-UUID")
		}
	}
}

func TestTransportErrorNamesTheCall(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close() // nothing listens there now
	c := newClient(t, url, client.WithRetries(0, 0))
	_, _, err := c.Query(ctx(t), "hosts", client.Query{})
	var opErr *net.OpError
	if err == nil || !strings.HasPrefix(err.Error(), "query hosts: ") || !errors.As(err, &opErr) {
		t.Fatalf("err = %v, want the dial error wrapped with the call", err)
	}
}

func TestNonJSONAnswersAreClearErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ctype  string
		body   string
		want   []string
	}{
		{"proxy page", http.StatusBadGateway, "text/html", "<html><body>502 Bad Gateway</body></html>", []string{"HTTP 502 Bad Gateway", "not an API error answer (text/html)", "<html><body>502"}},
		{"error without code", http.StatusInternalServerError, "application/json", `{"error": {}}`, []string{"HTTP 500", `{\"error\": {}}`}},
		{"success not JSON", http.StatusOK, "text/plain", "hello", []string{"HTTP 200 OK", "unexpected answer", "hello"}},
		{"long body cut", http.StatusTeapot, "text/plain", strings.Repeat("x", 5000), []string{"HTTP 418", "xxx..."}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, c := newFake(t, clienttest.Options{}, true)
			srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
				return true
			})
			_, _, err := c.Query(ctx(t), "zones", client.Query{})
			var se *client.StatusError
			if !errors.As(err, &se) || se.StatusCode != tc.status || se.Err != nil {
				t.Fatalf("err = %v (%T), want a *StatusError without API error", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if len(se.Body) > 300 {
				t.Errorf("body kept whole: %d bytes", len(se.Body))
			}
		})
	}
}

func TestWaitEndsWithContextAndJobGoesOn(t *testing.T) {
	_, c := newFake(t, clienttest.Options{PendingPolls: 1 << 20}, true)
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "slow"})
	if err != nil {
		t.Fatal(err)
	}
	cx, cancel := context.WithCancel(ctx(t))
	polls := 0
	_, err = job.Wait(cx, func(_ time.Duration, state string) {
		if polls++; polls == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || job.Done() || !strings.Contains(err.Error(), job.UUID) {
		t.Fatalf("err = %v, done %v; want context.Canceled naming the job", err, job.Done())
	}
}

func TestPollFailureIsNotJobFailure(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{PendingPolls: 1}, true)
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err != nil {
		t.Fatal(err)
	}
	srv.ExpireSessions()
	_, err = job.Wait(ctx(t), nil)
	if !client.IsUnauthenticated(err) || job.Done() {
		t.Fatalf("err = %v, done %v: a 401 while polling must not end the job", err, job.Done())
	}
	c.SetSession(srv.NewSession())
	if _, err := job.Wait(ctx(t), nil); err != nil {
		t.Fatalf("wait again after a new login: %v", err)
	}
}

func TestJobHandleByLocationOrUUID(t *testing.T) {
	_, c := newFake(t, clienttest.Options{PendingPolls: 1}, true)
	started, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err != nil {
		t.Fatal(err)
	}
	byLoc, err := c.Job(started.Location)
	if err != nil || byLoc.UUID != started.UUID || byLoc.Location != started.Location {
		t.Fatalf("by location: %+v %v", byLoc, err)
	}
	byID, err := c.Job(started.UUID)
	if err != nil || byID.Location != started.Location {
		t.Fatalf("by uuid: %q, want %q (%v)", byID.Location, started.Location, err)
	}
	for _, j := range []*client.Job{byLoc, byID} {
		z, err := client.WaitAs[inv](ctx(t), j, nil)
		if err != nil || z.s("name") != "z" {
			t.Fatalf("wait %s: %v %v", j.Location, z, err)
		}
	}
	unknown, _ := c.Job(client.NewJobUUID())
	if _, err := unknown.Wait(ctx(t), nil); client.StatusCode(err) != http.StatusNotFound || unknown.Done() {
		t.Fatalf("unknown job: %v", err)
	}
}

func TestSynchronousResultNeedsNoPoll(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{}, true)
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"inventory": {"uuid": "u1", "name": "now"}}`))
		return true
	})
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "now"})
	if err != nil || !job.Done() {
		t.Fatalf("create: %v, done %v", err, job != nil && job.Done())
	}
	z, err := client.WaitAs[inv](ctx(t), job, nil)
	if err != nil || z.s("name") != "now" || len(srv.Requests()) != 1 {
		t.Fatalf("wait: %v %v after %d requests", z, err, len(srv.Requests()))
	}
}

func TestZStackPrefixIsKept(t *testing.T) {
	srv := clienttest.NewServer(clienttest.Options{PendingPolls: 1})
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL+"/zstack/v1", client.WithSession(srv.NewSession()))
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := job.Wait(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range srv.Requests() {
		if !strings.HasPrefix(r.Path, "/zstack/v1/") {
			t.Errorf("request to %s, want under /zstack/v1", r.Path)
		}
	}
}

func TestConnectionsAreReused(t *testing.T) {
	var conns atomic.Int32
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"inventories": []}`))
	}))
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	c := newClient(t, ts.URL)
	for range 10 {
		if _, _, err := c.Query(ctx(t), "zones", client.Query{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 10 sequential calls, want 1", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	srv, c := newFake(t, clienttest.Options{PendingPolls: 1}, true)
	session := c.Session()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			if _, err := client.CreateAndWait[inv](ctx(t), c, "zones", map[string]any{"name": fmt.Sprint("z", i)}); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			c.SetSession(session)
			if _, _, err := c.Query(ctx(t), "zones", client.Query{}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if srv.Count("zones") != 8 {
		t.Fatalf("%d zones, want 8", srv.Count("zones"))
	}
}

func TestDecodeHelpers(t *testing.T) {
	type x struct {
		N int `json:"n"`
	}
	if v, err := client.Decode[x](nil); err != nil || v.N != 0 {
		t.Fatalf("nil inventory: %v %v", v, err)
	}
	if _, err := client.Decode[x](json.RawMessage(`{"n": "one"}`)); err == nil || !strings.Contains(err.Error(), "decode inventory") {
		t.Fatalf("bad inventory: %v", err)
	}
}

func TestSessionNotSentToAnotherOrigin(t *testing.T) {
	var sawAuth atomic.Value
	sawAuth.Store("unset")
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth.Store(r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"inventory": {"uuid": "x"}}`))
	}))
	t.Cleanup(other.Close)
	srv, c := newFake(t, clienttest.Options{}, true)
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"location": "` + other.URL + `/v1/api-jobs/0123456789abcdef0123456789abcdef"}`))
		return true
	})
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := job.Wait(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	if got := sawAuth.Load(); got != "" {
		t.Fatalf("the other origin got Authorization %q", got)
	}
	if got := srv.Requests()[0].Authorization; got != "OAuth "+c.Session() {
		t.Fatalf("the API itself got Authorization %q", got)
	}
}
