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

	"mplane/agents/kvm"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
)

func TestNewNormalizesBaseURL(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
	// A stack of its own, with the recorder in front through Options.Wrap.
	rec := servertest.NewRecorder()
	st := servertest.Start(t, servertest.Options{Hosts: -1, Wrap: rec.Wrap})
	if reqs := rec.Requests(); len(reqs) == 0 || reqs[0].Path != "/v1/accounts/login" {
		t.Fatalf("the stack's own login did not go through the wrapper: %+v", reqs)
	}
	rec.Reset()
	c := newClient(t, st.URL)
	s, err := c.Login(ctx(t), "admin", servertest.Password)
	if err != nil {
		t.Fatal(err)
	}
	if s.UUID == "" || c.Session() != s.UUID || s.AccountUUID == "" || s.ExpiredDate == "" {
		t.Fatalf("session %+v, client session %q", s, c.Session())
	}
	if _, _, err := c.Query(ctx(t), "zones", client.Query{}); err != nil {
		t.Fatalf("query after login: %v", err)
	}
	reqs := rec.Requests()
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
	sum := sha512.Sum512([]byte(servertest.Password))
	if body.L.AccountName != "admin" || body.L.Password != hex.EncodeToString(sum[:]) {
		t.Fatalf("login body %s: want the SHA-512 hex digest of the password", login.Body)
	}
	if got := reqs[1].Authorization; got != "OAuth "+s.UUID {
		t.Fatalf("Authorization = %q, want OAuth <session>", got)
	}
}

func TestLoginWrongPasswordIs401(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := newClient(t, e.url)
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
	before := len(e.rec.Requests())
	if _, err := c.Login(ctx(t), "", "x"); !errcode.Has(err, errcode.InvalidArgument) {
		t.Fatalf("login without account: %v, want InvalidArgument", err)
	}
	if n := len(e.rec.Requests()) - before; n != 0 {
		t.Fatalf("a login without account sent %d requests", n)
	}
}

func TestCallsWithoutValidSessionAre401(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := newClient(t, e.url)
	_, _, err := c.Query(ctx(t), "zones", client.Query{})
	if !client.IsUnauthenticated(err) {
		t.Fatalf("query without session: %v, want 401", err)
	}
	session := stack.NewSession(t)
	c.SetSession(session)
	if _, _, err := c.Query(ctx(t), "zones", client.Query{}); err != nil {
		t.Fatalf("query with session: %v", err)
	}
	stack.Logout(t, session)
	_, err = c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if !client.IsUnauthenticated(err) || client.StatusCode(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "create zones") {
		t.Fatalf("create with a logged out session: %v, want a 401 saying what was done", err)
	}
}

func TestCreateWaitsThroughPendingPolls(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	host, gate := gatedHost(t)
	c := e.c
	params := vmParams("web1", host.UUID)
	params["description"] = "first"
	job, err := c.Create(ctx(t), "vm-instances", params)
	if err != nil {
		t.Fatal(err)
	}
	if len(job.UUID) != 32 || job.Location != e.url+"/v1/api-jobs/"+job.UUID {
		t.Fatalf("job %q at %q", job.UUID, job.Location)
	}
	// The agent holds the VM's start until the first poll is answered:
	// that poll certainly finds the job running.
	var states []string
	raw, err := job.Wait(ctx(t), func(_ time.Duration, state string) {
		states = append(states, state)
		gate.Open()
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(states) < 2 || states[0] != client.JobProcessing || states[len(states)-1] != client.JobSucceeded {
		t.Fatalf("progress states %v, want processing ones, then succeeded", states)
	}
	for _, s := range states[:len(states)-1] {
		if s != client.JobProcessing {
			t.Fatalf("progress states %v: %q before the end", states, s)
		}
	}
	vm, err := client.Decode[inv](raw)
	if err != nil || vm.s("name") != "web1" || vm.s("description") != "first" || vm.s("uuid") == "" ||
		vm.s("state") != "Running" || vm.s("hostUuid") != host.UUID {
		t.Fatalf("inventory %s (%v)", raw, err)
	}
	reqs := e.rec.Requests()
	posts := requestsWith(reqs, http.MethodPost)
	want := fmt.Sprintf(`{"params":{"description":"first","hostUuid":"%s","imageUuid":"%s","instanceOfferingUuid":"%s","l3NetworkUuids":["%s"],"name":"web1"}}`,
		host.UUID, stack.Defaults["image"], stack.Defaults["offering"], stack.Defaults["l3"])
	if len(posts) != 1 || posts[0].Path != "/v1/vm-instances" || posts[0].JobUUID != job.UUID || string(posts[0].Body) != want {
		t.Fatalf("creates on the wire: %+v, want one POST /v1/vm-instances with X-Job-UUID %s and body %s", posts, job.UUID, want)
	}
	polls := 0
	for _, r := range reqs {
		if r.Method == http.MethodGet && r.Path == "/v1/api-jobs/"+job.UUID {
			polls++
		}
	}
	// One poll per progress call, none after the outcome.
	if polls != len(states) || len(reqs) != 1+polls {
		t.Fatalf("%d polls for %d progress calls, %d requests in all", polls, len(states), len(reqs))
	}
	// A finished job answers from the handle, without asking again.
	if again, err := job.Wait(ctx(t), nil); err != nil || string(again) != string(raw) || len(e.rec.Requests()) != len(reqs) {
		t.Fatalf("second Wait: %s %v after %d requests", again, err, len(e.rec.Requests()))
	}
}

func TestFailedJobIs503WithTheJobsError(t *testing.T) {
	t.Parallel()
	c := newEnv(t).c
	// A host that went down: reconnecting it fails on its owner, with the
	// dial error as the cause.
	down := stack.AddHost(t, servertest.AgentOptions{})
	if err := down.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	job, err := c.Action(ctx(t), "hosts", down.UUID, "reconnectHost", nil)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	_, err = job.Wait(ctx(t), func(_ time.Duration, state string) { last = state })
	var se *client.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable || se.Err == nil {
		t.Fatalf("err = %v, want a 503 *StatusError", err)
	}
	if errcode.CodeOf(err) != errcode.AgentError || se.Err.Cause == nil || !errcode.Has(err, errcode.Internal) ||
		!strings.Contains(se.Err.Details, "reconnect host "+down.UUID) || !strings.Contains(err.Error(), down.Agent.Addr()) {
		t.Fatalf("job error %v: code, details or cause chain lost", err)
	}
	if last != client.JobFailed || !job.Done() {
		t.Fatalf("last state %q, done %v", last, job.Done())
	}
	if !strings.Contains(err.Error(), job.UUID) {
		t.Fatalf("error %q does not name the job", err)
	}
	// A VM no host has room for.
	small := stack.AddHost(t, servertest.AgentOptions{Agent: kvm.Options{CPUNum: 1, MemoryBytes: 512 << 20}})
	_, err = client.CreateAndWait[inv](ctx(t), c, "vm-instances", vmParams("big", small.UUID))
	if client.StatusCode(err) != http.StatusServiceUnavailable || errcode.CodeOf(err) != errcode.CapacityExhausted {
		t.Fatalf("vm without capacity: %v, want 503 %s", err, errcode.CapacityExhausted)
	}
}

func TestValidationErrorsAreImmediate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.c
	_, err := c.Create(ctx(t), "instance-offerings", map[string]any{"name": "small", "cpuNum": 1})
	if client.StatusCode(err) != http.StatusBadRequest || errcode.CodeOf(err) != errcode.InvalidArgument {
		t.Fatalf("err = %v, want 400 SYS.1007", err)
	}
	var ae *errcode.Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Details, "memorySize") {
		t.Fatalf("details lost: %v", err)
	}
	posts := requestsWith(e.rec.Requests(), http.MethodPost)
	if len(posts) != 1 || posts[0].JobUUID == "" || jobsWithUUID(t, posts[0].JobUUID) != 0 {
		t.Fatalf("a rejected create started a job (creates %+v)", posts)
	}
	e.rec.Reset()
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"empty path", func() error { _, err := c.Create(ctx(t), "/", nil); return err }()},
		{"action without uuid", func() error { _, err := c.Action(ctx(t), "vm-instances", "", "startVmInstance", nil); return err }()},
		{"action without name", func() error { _, err := c.Action(ctx(t), "vm-instances", "x", "", nil); return err }()},
		{"delete without uuid", func() error { _, err := c.Delete(ctx(t), "zones", "", ""); return err }()},
		{"get without uuid", func() error { _, err := c.Get(ctx(t), "zones", ""); return err }()},
		{"query without path", func() error { _, _, err := c.Query(ctx(t), "", client.Query{}); return err }()},
		{"job without id", func() error { _, err := c.Job(" "); return err }()},
	} {
		if !errcode.Has(tc.err, errcode.InvalidArgument) {
			t.Errorf("%s: %v, want a local InvalidArgument", tc.name, tc.err)
		}
	}
	if n := len(e.rec.Requests()); n != 0 {
		t.Fatalf("local checks sent %d requests", n)
	}
}

func TestActionsAndDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.c
	host := stack.AddHost(t, servertest.AgentOptions{}).UUID
	vm, err := client.CreateAndWait[inv](ctx(t), c, "vm-instances", vmParams("web1", host))
	if err != nil {
		t.Fatal(err)
	}
	id := vm.s("uuid")
	if vm.s("state") != "Running" || vm.s("hostUuid") != host {
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
	// Deleting a VM destroys it; expunging removes it.
	if got, err := client.GetAs[inv](ctx(t), c, "vm-instances", id); err != nil || got.s("state") != "Destroyed" {
		t.Fatalf("vm after delete: %v %v", got, err)
	}
	if raw, err := client.ActionAndWait[json.RawMessage](ctx(t), c, "vm-instances", id, "expungeVmInstance", nil); err != nil || raw != nil {
		t.Fatalf("expunge: %s %v, want no inventory", raw, err)
	}
	if _, err := c.Get(ctx(t), "vm-instances", id); client.StatusCode(err) != http.StatusNotFound || errcode.CodeOf(err) != errcode.ResourceNotFound {
		t.Fatalf("get an expunged vm: %v, want 404 SYS.1005", err)
	}
	var sawStop, sawDelete bool
	for _, r := range e.rec.Requests() {
		if r.Method == http.MethodPut && r.Path == "/v1/vm-instances/"+id+"/actions" && string(r.Body) == `{"stopVmInstance":{"type":"cold"}}` && r.JobUUID != "" {
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
		t.Fatalf("action on an expunged vm: %v, want 404 SYS.1005", err)
	}
	// An action the state machine refuses fails its job.
	vm2, err := client.CreateAndWait[inv](ctx(t), c, "vm-instances", vmParams("web2", host))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.ActionAndWait[inv](ctx(t), c, "vm-instances", vm2.s("uuid"), "startVmInstance", nil); client.StatusCode(err) != http.StatusServiceUnavailable ||
		errcode.CodeOf(err) != errcode.InvalidState {
		t.Fatalf("start a running vm: %v, want 503 %s", err, errcode.InvalidState)
	}
}

// TestDeleteQueryParams: QueryParam puts a DELETE call's parameters in
// its query, after deleteMode, escaped and repeatable; on the server,
// vmUuid detaches a volume from that VM and a misspelled name is a 400.
func TestDeleteQueryParams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.c
	// The encoding, answered before the server: deleteMode first, then
	// the parameters in order, an empty name left out.
	e.rec.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/zones/qp-zone" {
			return false
		}
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error": {"code": "SYS.1005", "description": "resource not found", "details": "zone qp-zone"}}`))
		return true
	})
	_, err := c.Delete(ctx(t), "zones", "qp-zone", client.DeleteEnforcing,
		client.QueryParam("note", "a b"), client.QueryParam("", "x"), client.QueryParam("note", "c&d"), client.JobUUID(client.NewJobUUID()))
	if client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("intercepted delete: %v, want its 404", err)
	}
	if del := requestsWith(e.rec.Requests(), http.MethodDelete); len(del) != 1 || del[0].RawQuery != "deleteMode=Enforcing&note=a+b&note=c%26d" || del[0].JobUUID == "" {
		t.Fatalf("delete requests %+v", del)
	}
	e.rec.Intercept(nil)

	host := stack.AddHost(t, servertest.AgentOptions{}).UUID
	vm, err := client.CreateAndWait[inv](ctx(t), c, "vm-instances", vmParams("qp-"+tag(), host))
	if err != nil {
		t.Fatal(err)
	}
	vol, err := client.CreateAndWait[inv](ctx(t), c, "volumes/data", map[string]any{"name": "qp-" + tag(), "diskSize": 1 << 20,
		"primaryStorageUuid": stack.Defaults["ps"], "hostUuid": host})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := client.CreateAndWait[inv](ctx(t), c, "volumes/"+vol.s("uuid")+"/vm-instances/"+vm.s("uuid"), nil); err != nil || got.s("vmInstanceUuid") != vm.s("uuid") {
		t.Fatalf("attach: %v %v", got, err)
	}
	_, err = c.Delete(ctx(t), "volumes/"+vol.s("uuid"), "vm-instances", "", client.QueryParam("vmUUID", vm.s("uuid")))
	if client.StatusCode(err) != http.StatusBadRequest || errcode.CodeOf(err) != errcode.InvalidArgument || !strings.Contains(err.Error(), `unknown query parameter "vmUUID"`) {
		t.Fatalf("detach with a misspelled parameter: %v, want a 400 naming it", err)
	}
	job, err := c.Delete(ctx(t), "volumes/"+vol.s("uuid"), "vm-instances", "", client.QueryParam("vmUuid", vm.s("uuid")))
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.WaitAs[inv](ctx(t), job, nil)
	if err != nil || got.s("uuid") != vol.s("uuid") || got["vmInstanceUuid"] != nil {
		t.Fatalf("detach: %v %v", got, err)
	}
	del := requestsWith(e.rec.Requests(), http.MethodDelete)
	if last := del[len(del)-1]; last.Path != "/v1/volumes/"+vol.s("uuid")+"/vm-instances" || last.RawQuery != "vmUuid="+vm.s("uuid") {
		t.Fatalf("detach request %+v", last)
	}
}

func TestQueryEncodesEveryParameter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
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
	if _, _, err := e.c.Query(ctx(t), "vm-instances", q); err != nil {
		t.Fatal(err)
	}
	reqs := e.rec.Requests()
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
	t.Parallel()
	c, tg := newEnv(t).c, tag()
	for i := range 5 {
		if _, err := client.CreateAndWait[inv](ctx(t), c, "zones", map[string]any{"name": fmt.Sprintf("zone-%s-%d", tg, i), "description": tg}); err != nil {
			t.Fatal(err)
		}
	}
	other, err := client.CreateAndWait[inv](ctx(t), c, "zones", map[string]any{"name": "other-" + tg, "description": tg})
	if err != nil {
		t.Fatal(err)
	}
	type zone struct {
		UUID        string `json:"uuid"`
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	zones, total, err := client.QueryAs[zone](ctx(t), c, "zones", client.Query{
		Q: []string{"name~=zone-" + tg + "-%", "description=" + tg}, Limit: 2, Start: 1, Sort: "-name", ReplyWithCount: true})
	if err != nil {
		t.Fatal(err)
	}
	if total != 5 || len(zones) != 2 || zones[0].Name != "zone-"+tg+"-3" || zones[1].Name != "zone-"+tg+"-2" {
		t.Fatalf("total %d zones %+v", total, zones)
	}
	invs, total, err := c.Query(ctx(t), "zones", client.Query{Q: []string{"description=" + tg}, Count: true})
	if err != nil || total != 6 || len(invs) != 0 {
		t.Fatalf("count: %d inventories, total %d, %v", len(invs), total, err)
	}
	_, total, err = c.Query(ctx(t), "zones", client.Query{Q: []string{"description=" + tg}, Limit: 4})
	if err != nil || total != 4 {
		t.Fatalf("total without replyWithCount is the page size: %d %v", total, err)
	}
	z, err := client.GetAs[zone](ctx(t), c, "zones", other.s("uuid"))
	if err != nil || z.Name != "other-"+tg || z.UUID != other.s("uuid") {
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
	if _, _, err := client.QueryAs[struct{ Name int }](ctx(t), c, "zones", client.Query{}); err == nil || !strings.Contains(err.Error(), "query zones: inventory 0") {
		t.Fatalf("undecodable inventory: %v", err)
	}
}

func TestRetryAfterDroppedConnectionReusesJobUUID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, zone1, zone2 := e.c, "zone1-"+tag(), "zone2-"+tag()
	e.rec.DropResponses(1)
	z, err := client.CreateAndWait[inv](ctx(t), c, "zones", map[string]any{"name": zone1})
	if err != nil {
		t.Fatalf("create through a dropped answer: %v", err)
	}
	var ids []string
	for _, r := range requestsWith(e.rec.Requests(), http.MethodPost) {
		ids = append(ids, r.JobUUID)
	}
	if len(ids) != 2 || ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("X-Job-UUIDs of the create attempts: %q, want the same id twice", ids)
	}
	if n, zones := jobsWithUUID(t, ids[0]), count(t, c, "zones", "name="+zone1); n != 1 || zones != 1 || z.s("name") != zone1 {
		t.Fatalf("%d jobs, %d zones: the retry did the work again", n, zones)
	}
	// A caller-chosen id is kept across calls: the same create is the same job.
	id := client.NewJobUUID()
	j1, err := c.Create(ctx(t), "zones", map[string]any{"name": zone2}, client.JobUUID(id))
	if err != nil {
		t.Fatal(err)
	}
	j2, err := c.Create(ctx(t), "zones", map[string]any{"name": zone2}, client.JobUUID(id))
	if err != nil || j1.UUID != id || j2.UUID != id || j2.Location != j1.Location {
		t.Fatalf("jobs %q %q (%v)", j1.Location, j2.Location, err)
	}
	r1, err1 := j1.Wait(ctx(t), nil)
	r2, err2 := j2.Wait(ctx(t), nil)
	if err1 != nil || err2 != nil || string(r1) != string(r2) {
		t.Fatalf("results %s %v / %s %v", r1, err1, r2, err2)
	}
	if n := count(t, c, "zones", "name="+zone2); n != 1 {
		t.Fatalf("%d zones named zone2, want 1", n)
	}
}

func TestRetriesGiveUpWithWhatWasDone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, rec := e.c, e.rec
	rec.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		servertest.HijackAndClose(w)
		return true
	})
	_, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err == nil || !strings.HasPrefix(err.Error(), "create zones: ") || client.StatusCode(err) != 0 {
		t.Fatalf("err = %v, want a transport error saying what was done", err)
	}
	reqs := rec.Requests()
	if len(reqs) != 1+2 {
		t.Fatalf("%d attempts, want 3 (1 + 2 retries)", len(reqs))
	}
	for _, r := range reqs {
		if r.JobUUID == "" || r.JobUUID != reqs[0].JobUUID {
			t.Fatal("retries changed X-Job-UUID")
		}
	}
	// An answer, even an error, is never sent again.
	rec.Reset()
	rec.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	if _, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"}); client.StatusCode(err) != http.StatusInternalServerError || len(rec.Requests()) != 1 {
		t.Fatalf("a 500: %v after %d requests, want it once", err, len(rec.Requests()))
	}
}

func TestTransportErrorNamesTheCall(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
	e := newEnv(t)
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
			e.rec.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
				return true
			})
			_, _, err := e.c.Query(ctx(t), "zones", client.Query{})
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
	e.rec.Intercept(nil)
	if _, _, err := e.c.Query(ctx(t), "zones", client.Query{}); err != nil {
		t.Fatalf("the real answer again: %v", err)
	}
}

func TestAnswerSizeIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := newClient(t, e.url, client.WithSession(stack.Client.Session()), client.WithMaxAnswerBytes(64))
	_, _, err := c.Query(ctx(t), "zones", client.Query{})
	if err == nil || !strings.Contains(err.Error(), "answer too large") || len(e.rec.Requests()) != 1 {
		t.Fatalf("err = %v after %d requests, want one request and a too-large answer", err, len(e.rec.Requests()))
	}
}

func TestWaitEndsWithContextAndJobGoesOn(t *testing.T) {
	t.Parallel()
	c := newEnv(t).c
	host, gate := gatedHost(t)
	job, err := c.Create(ctx(t), "vm-instances", vmParams("slow", host.UUID))
	if err != nil {
		t.Fatal(err)
	}
	cx, cancel := context.WithCancel(ctx(t))
	polls := 0
	_, err = job.Wait(cx, func(_ time.Duration, state string) {
		if state != client.JobProcessing {
			t.Errorf("state %q while the host holds the job", state)
		}
		if polls++; polls == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || job.Done() || !strings.Contains(err.Error(), job.UUID) || polls != 3 {
		t.Fatalf("err = %v, done %v after %d polls; want context.Canceled naming the job after 3", err, job.Done(), polls)
	}
	// The job went on; waiting again gets its outcome.
	gate.Open()
	vm, err := client.WaitAs[inv](ctx(t), job, nil)
	if err != nil || vm.s("name") != "slow" || vm.s("state") != "Running" {
		t.Fatalf("wait again: %v %v", vm, err)
	}
}

func TestPollFailureIsNotJobFailure(t *testing.T) {
	t.Parallel()
	c := newClient(t, newEnv(t).url, client.WithSession(stack.NewSession(t)))
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err != nil {
		t.Fatal(err)
	}
	stack.Logout(t, c.Session())
	_, err = job.Wait(ctx(t), nil)
	if !client.IsUnauthenticated(err) || job.Done() || !strings.Contains(err.Error(), job.UUID) {
		t.Fatalf("err = %v, done %v: a 401 while polling must not end the job", err, job.Done())
	}
	if _, err := c.Login(ctx(t), "admin", servertest.Password); err != nil {
		t.Fatal(err)
	}
	if z, err := client.WaitAs[inv](ctx(t), job, nil); err != nil || z.s("name") != "z" {
		t.Fatalf("wait again after a new login: %v %v", z, err)
	}
}

func TestJobHandleByLocationOrUUID(t *testing.T) {
	t.Parallel()
	c := newEnv(t).c
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
	byPath, err := c.Job("/v1/api-jobs/" + started.UUID)
	if err != nil || byPath.Location != started.Location {
		t.Fatalf("by path: %q, want %q (%v)", byPath.Location, started.Location, err)
	}
	for _, j := range []*client.Job{byLoc, byID, byPath} {
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
	t.Parallel()
	e := newEnv(t)
	e.rec.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost {
			return false
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"inventory": {"uuid": "u1", "name": "now"}}`))
		return true
	})
	job, err := e.c.Create(ctx(t), "zones", map[string]any{"name": "now"})
	if err != nil || !job.Done() {
		t.Fatalf("create: %v, done %v", err, job != nil && job.Done())
	}
	z, err := client.WaitAs[inv](ctx(t), job, nil)
	if err != nil || z.s("name") != "now" || len(e.rec.Requests()) != 1 {
		t.Fatalf("wait: %v %v after %d requests", z, err, len(e.rec.Requests()))
	}
}

func TestZStackPrefixIsKept(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := newClient(t, e.url+"/zstack/v1", client.WithSession(stack.Client.Session()))
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(job.Location, e.url+"/zstack/v1/api-jobs/") {
		t.Fatalf("location %q, want under /zstack/v1", job.Location)
	}
	if _, err := job.Wait(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	reqs := e.rec.Requests()
	if len(reqs) < 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for _, r := range reqs {
		if !strings.HasPrefix(r.Path, "/zstack/v1/") {
			t.Errorf("request to %s, want under /zstack/v1", r.Path)
		}
	}
}

func TestConnectionsAreReused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.c
	for range 10 {
		if _, _, err := c.Query(ctx(t), "zones", client.Query{}); err != nil {
			t.Fatal(err)
		}
	}
	conns := map[string]bool{}
	for _, r := range e.rec.Requests() {
		conns[r.RemoteAddr] = true
	}
	if len(conns) != 1 {
		t.Fatalf("%d connections for 10 sequential calls, want 1", len(conns))
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	c, prefix := newEnv(t).c, "cz-"+tag()+"-"
	session := c.Session()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			if _, err := client.CreateAndWait[inv](ctx(t), c, "zones", map[string]any{"name": fmt.Sprint(prefix, i)}); err != nil {
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
	if n := count(t, c, "zones", "name~="+prefix+"%"); n != 8 {
		t.Fatalf("%d zones, want 8", n)
	}
}

func TestDecodeHelpers(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
	var sawAuth atomic.Value
	sawAuth.Store("unset")
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth.Store(r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"inventory": {"uuid": "x"}}`))
	}))
	t.Cleanup(other.Close)
	e := newEnv(t)
	e.rec.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"location": "` + other.URL + `/v1/api-jobs/0123456789abcdef0123456789abcdef"}`))
		return true
	})
	c := e.c
	job, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err != nil {
		t.Fatal(err)
	}
	if job.UUID != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("job %q: the location names the job", job.UUID)
	}
	if _, err := job.Wait(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	if got := sawAuth.Load(); got != "" {
		t.Fatalf("the other origin got Authorization %q", got)
	}
	if got := e.rec.Requests()[0].Authorization; got != "OAuth "+c.Session() {
		t.Fatalf("the API itself got Authorization %q", got)
	}
}

// A 503 with Retry-After while polling is the server failing to read the
// job (its database was unavailable), not the job's failure: Wait polls
// again and gets the real outcome. A 503 without it is the job's failure.
func TestWaitPollsAgainAfterRetryAfter(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost:
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, `{"location": "http://%s/v1/api-jobs/j1"}`, r.Host)
		case polls.Add(1) <= 2:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error": {"code": "SYS.1018", "description": "database unavailable; try again", "retryable": true}}`)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error": {"code": "SYS.1006", "description": "operation not allowed in the resource's current state"}}`)
		}
	}))
	defer ts.Close()
	c := newClient(t, ts.URL)
	j, err := c.Create(ctx(t), "zones", map[string]any{"name": "z"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = j.Wait(ctx(t), nil)
	if !errcode.Has(err, errcode.InvalidState) || polls.Load() != 3 {
		t.Fatalf("wait: %v after %d polls, want the job's InvalidState after 3", err, polls.Load())
	}
}
