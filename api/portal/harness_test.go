package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/api/auth"
	"mplane/api/jobs"
	"mplane/api/route"
	"mplane/api/tenancy"
	"mplane/cloudbus"
	"mplane/db"
	"mplane/managementnode"
	"mplane/thread"
	"mplane/uid"
)

// The package's own tests cannot start servertest's stack (server imports
// this package), so they run the portal on a minimal node of their own:
// a SQLite file, an in-process bus, one management node, the test's owner
// service and the portal, behind a middleware that makes every request the
// admin's.

// ownerService is the bus service of the test's messages.
const ownerService = "portaltest"

type harnessOptions struct {
	resources []route.Resource
	models    []any
	// serve registers the owner's handlers.
	serve func(mux *cloudbus.Mux)
	// noStart leaves the portal's queue and sweeper unstarted.
	noStart bool
}

type harness struct {
	t      *testing.T
	db     *gorm.DB
	bus    *cloudbus.Bus
	node   *managementnode.Node
	clock  *manualClock
	jobs   *jobs.Store
	portal *Portal
	url    string
}

func startHarness(t *testing.T, opts harnessOptions) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := &harness{t: t, clock: newManualClock()}
	var err error
	h.db, err = db.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "portal.db"), db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(h.db) })
	if err := tenancy.Migrate(ctx, h.db); err != nil {
		t.Fatal(err)
	}
	if err := jobs.Migrate(ctx, h.db); err != nil {
		t.Fatal(err)
	}
	if len(opts.models) > 0 {
		if err := h.db.AutoMigrate(opts.models...); err != nil {
			t.Fatal(err)
		}
	}
	h.bus, err = cloudbus.New(cloudbus.Options{URL: "memory://", NodeUUID: uid.New(), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.bus.Stop(context.Background()) })
	sched := thread.New(thread.Options{Clock: h.clock})
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sched.Stop(sctx); err != nil {
			t.Errorf("stop the scheduler: %v", err)
		}
	})
	h.node, err = managementnode.New(managementnode.Options{DB: h.db, Bus: h.bus, Scheduler: sched, Logger: discard,
		Host: "127.0.0.1", DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.node.Stop(sctx); err != nil {
			t.Errorf("stop the node: %v", err)
		}
	})
	if opts.serve != nil {
		mux := cloudbus.NewMux()
		opts.serve(mux)
		mux.Intercept(h.node.Guard(ownerService))
		if err := h.bus.Serve(ownerService, mux); err != nil {
			t.Fatal(err)
		}
	}
	h.jobs = jobs.NewStore(h.db)
	h.portal, err = New(Options{DB: h.db, Bus: h.bus, Node: h.node, Scheduler: sched, Jobs: h.jobs, Logger: discard,
		Resources: opts.resources})
	if err != nil {
		t.Fatal(err)
	}
	if !opts.noStart {
		if err := h.portal.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.portal.Stop(context.Background()) })
	}
	mux := http.NewServeMux()
	h.portal.Register(mux)
	admin := auth.Identity{AccountUUID: "admin-account", AccountName: "admin", Admin: true}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(auth.WithIdentity(r.Context(), admin)))
	}))
	t.Cleanup(ts.Close)
	h.url = ts.URL
	return h
}

// answer is an HTTP answer of the portal.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
}

// do sends a request to the portal; path is under the server root
// ("/v1/...").
func (h *harness) do(method, path, body string, header ...string) answer {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// accepted checks a 202 and returns the job's location path.
func (h *harness) accepted(a answer) string {
	h.t.Helper()
	if a.status != http.StatusAccepted {
		h.t.Fatalf("answer %d %s, want 202", a.status, a.body)
	}
	var loc jobs.LocationBody
	a.decode(h.t, &loc)
	if len(loc.Location) <= len(h.url) {
		h.t.Fatalf("location %q", loc.Location)
	}
	return loc.Location[len(h.url):]
}

// finished long-polls the job at location until it is finished.
func (h *harness) finished(location string) answer {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		a := h.do(http.MethodGet, location+"?wait=5s", "")
		if a.status != http.StatusAccepted {
			return a
		}
	}
	h.t.Fatalf("job %s still processing after 30s", location)
	return answer{}
}

// manualClock is the scheduler's clock: a periodic task runs when the test
// fires its timers.
type manualClock struct {
	mu     sync.Mutex
	timers map[*manualTimer]struct{}
}

type manualTimer struct {
	c *manualClock
	f func()
}

func newManualClock() *manualClock { return &manualClock{timers: map[*manualTimer]struct{}{}} }

func (c *manualClock) Now() time.Time { return time.Now() }

func (c *manualClock) AfterFunc(_ time.Duration, f func()) thread.Timer {
	tm := &manualTimer{c: c, f: f}
	c.mu.Lock()
	c.timers[tm] = struct{}{}
	c.mu.Unlock()
	return tm
}

func (tm *manualTimer) Stop() bool {
	tm.c.mu.Lock()
	defer tm.c.mu.Unlock()
	_, ok := tm.c.timers[tm]
	delete(tm.c.timers, tm)
	return ok
}

// pending is the number of timers waiting.
func (c *manualClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// fire runs every waiting timer.
func (c *manualClock) fire() {
	c.mu.Lock()
	var fs []func()
	for tm := range c.timers {
		fs = append(fs, tm.f)
		delete(c.timers, tm)
	}
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// eventually polls cond until it holds or 30s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
