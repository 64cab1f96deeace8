package portal

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/api/jobs"
	"mplane/api/rest"
	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/db"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/thread"
)

var discard = slog.New(slog.DiscardHandler)

type boxVO struct {
	UUID  string   `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name  string   `gorm:"column:name;size:64" json:"name"`
	Items []itemVO `gorm:"foreignKey:BoxUUID;references:UUID" json:"items"`
}

func (boxVO) TableName() string { return "portaltest_boxes" }

type itemVO struct {
	UUID    string `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	BoxUUID string `gorm:"column:box_uuid;size:32;index" json:"boxUuid"`
	Name    string `gorm:"column:name;size:64" json:"name"`
}

func (itemVO) TableName() string { return "portaltest_items" }

// ghostVO's table is never created: reading it fails.
type ghostVO struct {
	UUID string `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
}

func (ghostVO) TableName() string { return "portaltest_ghosts" }

type boxParams struct {
	Name string `json:"name"`
}

func (p *boxParams) Validate() error {
	if p.Name == "" {
		return errcode.New(errcode.InvalidArgument, "name is required")
	}
	return nil
}

type boxReq struct {
	UUID string `json:"uuid"`
	Name string `json:"name,omitempty"`
	Mode string `json:"mode,omitempty"`
}

func (r boxReq) ResourceUUID() string { return r.UUID }

var (
	msgCreateBox  = managementnode.NewOwnedMsg[boxReq, boxVO](ownerService, "portaltest.CreateBox")
	msgRenameBox  = managementnode.NewOwnedMsg[boxReq, boxVO](ownerService, "portaltest.RenameBox")
	msgDeleteBox  = managementnode.NewOwnedMsg[boxReq, cloudbus.Empty](ownerService, "portaltest.DeleteBox")
	msgDropBox    = managementnode.NewOwnedMsg[boxReq, cloudbus.Empty](ownerService, "portaltest.DropBox")
	msgHauntGhost = managementnode.NewOwnedMsg[boxReq, cloudbus.Empty](ownerService, "portaltest.HauntGhost")
)

// boxes is the test's resource service: the owner's handlers and the
// declared resources, recording the delete modes its Builds were given.
type boxes struct {
	db *gorm.DB

	mu    sync.Mutex
	modes []string
}

func (b *boxes) recordMode(mode string) {
	b.mu.Lock()
	b.modes = append(b.modes, mode)
	b.mu.Unlock()
}

func (b *boxes) takeModes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.modes
	b.modes = nil
	return m
}

func (b *boxes) serve(mux *cloudbus.Mux) {
	managementnode.Handle(mux, msgCreateBox, func(ctx context.Context, req boxReq) (boxVO, error) {
		row := boxVO{UUID: req.UUID, Name: req.Name}
		if err := b.db.WithContext(ctx).Create(&row).Error; err != nil {
			return boxVO{}, errcode.Wrap(errcode.Internal, err, "create box")
		}
		return row, nil
	})
	managementnode.Handle(mux, msgRenameBox, func(ctx context.Context, req boxReq) (boxVO, error) {
		if err := b.db.WithContext(ctx).Model(&boxVO{}).Where("uuid = ?", req.UUID).Update("name", req.Name).Error; err != nil {
			return boxVO{}, errcode.Wrap(errcode.Internal, err, "rename box")
		}
		return boxVO{UUID: req.UUID, Name: req.Name}, nil
	})
	del := func(ctx context.Context, req boxReq) (cloudbus.Empty, error) {
		return cloudbus.Empty{}, b.db.WithContext(ctx).Delete(&boxVO{}, "uuid = ?", req.UUID).Error
	}
	managementnode.Handle(mux, msgDeleteBox, del)
	managementnode.Handle(mux, msgDropBox, del)
}

func (b *boxes) resources() []route.Resource {
	build := func(_ context.Context, in route.In[boxParams]) (boxReq, error) {
		return boxReq{UUID: in.UUID, Name: in.Params.Name}, nil
	}
	buildDelete := func(_ context.Context, in route.In[route.DeleteParams]) (boxReq, error) {
		b.recordMode(in.Params.Mode)
		return boxReq{UUID: in.UUID, Mode: in.Params.Mode}, nil
	}
	return []route.Resource{
		{
			Path: "boxes", Name: "box", Query: route.QueryOf[boxVO](route.Preload("Items")),
			Create:  route.Ptr(route.Create(msgCreateBox, build)),
			Actions: []route.Op{route.Action("renameBox", msgRenameBox, build)},
			Delete:  route.Ptr(route.Delete(msgDeleteBox, buildDelete).Existing()),
		},
		{
			// The same rows, with a delete that accepts missing ones.
			Path: "loose-boxes", Name: "box", Query: route.QueryOf[boxVO](),
			Delete: route.Ptr(route.Delete(msgDropBox, buildDelete)),
		},
		{
			Path: "ghosts", Name: "ghost", Query: route.QueryOf[ghostVO](),
			Actions: []route.Op{route.ActionNoResult("hauntGhost", msgHauntGhost, func(_ context.Context, in route.In[struct{}]) (boxReq, error) {
				return boxReq{UUID: in.UUID}, nil
			})},
		},
	}
}

func startBoxes(t *testing.T, noStart bool) (*harness, *boxes) {
	t.Helper()
	b := &boxes{}
	h := startHarness(t, harnessOptions{resources: b.resources(), models: []any{&boxVO{}, &itemVO{}}, serve: b.serve, noStart: noStart})
	b.db = h.db
	return h, b
}

func TestNewRefuses(t *testing.T) {
	build := func(_ context.Context, in route.In[boxParams]) (boxReq, error) { return boxReq{UUID: in.UUID}, nil }
	buildDelete := func(_ context.Context, in route.In[route.DeleteParams]) (boxReq, error) {
		return boxReq{UUID: in.UUID}, nil
	}
	create := route.Create(msgCreateBox, build)
	rename := route.Action("renameBox", msgRenameBox, build)
	base := Options{DB: openDB(t), Bus: &cloudbus.Bus{}, Node: &managementnode.Node{}, Scheduler: thread.New(thread.Options{}), Jobs: jobs.NewStore(nil)}
	with := func(res ...route.Resource) Options { o := base; o.Resources = res; return o }
	cases := []struct {
		name string
		opts Options
		err  string // "" for success
	}{
		{"nothing declared", with(), ""},
		{"distinct resources", with(route.Resource{Path: "a", Create: route.Ptr(create)}, route.Resource{Path: "b", Actions: []route.Op{rename}}), ""},
		{"one message as an action and a delete", with(route.Resource{Path: "a",
			Actions: []route.Op{route.Action("deleteBox", msgDeleteBox, build)}, Delete: route.Ptr(route.Delete(msgDeleteBox, buildDelete))}), ""},
		{"a required option missing", Options{DB: base.DB, Bus: base.Bus, Node: base.Node, Jobs: base.Jobs}, "Options.DB, Bus, Node, Scheduler and Jobs are required"},
		{"an empty path", with(route.Resource{Path: ""}), `resource path "" empty or declared twice`},
		{"a path declared twice", with(route.Resource{Path: "a"}, route.Resource{Path: "b"}, route.Resource{Path: "a"}), `resource path "a" empty or declared twice`},
		{"a call declared twice", with(route.Resource{Path: "a", Create: route.Ptr(create)}, route.Resource{Path: "b", Create: route.Ptr(create.At("b/kvm"))}),
			"call portaltest.CreateBox declared twice"},
		{"an action declared twice", with(route.Resource{Path: "a", Actions: []route.Op{rename, route.Action("renameBox", msgCreateBox, build)}}),
			"action renameBox declared twice on a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.opts)
			if tc.err == "" {
				if err != nil || p == nil {
					t.Fatalf("New: %v", err)
				}
				if p.opts.JobTimeout != 30*time.Minute || p.log == nil {
					t.Errorf("defaults: JobTimeout %s, logger %v", p.opts.JobTimeout, p.log)
				}
				if want := len(tc.opts.Resources); len(p.opts.Resources) != want {
					t.Errorf("%d resources kept, want %d", len(p.opts.Resources), want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("New: %v, want an error with %q", err, tc.err)
			}
		})
	}
}

func TestDeleteModeReachesBuild(t *testing.T) {
	h, b := startBoxes(t, false)
	cases := []struct {
		query  string
		status int
		modes  []string
	}{
		{"", http.StatusAccepted, []string{"Permissive"}},
		{"?deleteMode=Permissive", http.StatusAccepted, []string{"Permissive"}},
		{"?deleteMode=Enforcing", http.StatusAccepted, []string{"Enforcing"}},
		{"?deleteMode=Forcefully", http.StatusBadRequest, nil},
		{"?deleteMode=", http.StatusAccepted, []string{"Permissive"}},
	}
	for _, tc := range cases {
		t.Run("query "+tc.query, func(t *testing.T) {
			a := h.do(http.MethodDelete, "/v1/loose-boxes/0000000000000000000000000000b0c5"+tc.query, "")
			if a.status != tc.status {
				t.Fatalf("answer %d %s, want %d", a.status, a.body, tc.status)
			}
			if a.status == http.StatusAccepted {
				if job := h.finished(h.accepted(a)); job.status != http.StatusOK || string(job.body) != "{}\n" {
					t.Errorf("job answer %d %s, want 200 {}", job.status, job.body)
				}
			} else if !strings.Contains(string(a.body), "deleteMode must be Permissive or Enforcing") {
				t.Errorf("answer %s", a.body)
			}
			if got := b.takeModes(); strings.Join(got, ",") != strings.Join(tc.modes, ",") {
				t.Errorf("Build got modes %q, want %q", got, tc.modes)
			}
		})
	}
}

func TestExistingDelete(t *testing.T) {
	h, b := startBoxes(t, false)
	if err := h.db.Create(&boxVO{UUID: "000000000000000000000000000b0c51", Name: "one"}).Error; err != nil {
		t.Fatal(err)
	}
	a := h.do(http.MethodDelete, "/v1/boxes/0000000000000000000000000000b0c5?deleteMode=Enforcing", "")
	if a.status != http.StatusNotFound || !strings.Contains(string(a.body), "box 0000000000000000000000000000b0c5 not found") {
		t.Fatalf("delete of a missing box: %d %s, want 404", a.status, a.body)
	}
	if got := b.takeModes(); len(got) != 0 {
		t.Errorf("Build ran for a refused delete: %q", got)
	}
	if job := h.finished(h.accepted(h.do(http.MethodDelete, "/v1/boxes/000000000000000000000000000b0c51", ""))); job.status != http.StatusOK {
		t.Fatalf("delete job: %d %s", job.status, job.body)
	}
	var n int64
	h.db.Model(&boxVO{}).Where("uuid = ?", "000000000000000000000000000b0c51").Count(&n)
	if n != 0 {
		t.Errorf("the box still there after its delete")
	}
	if a := h.do(http.MethodDelete, "/v1/boxes/000000000000000000000000000b0c51", ""); a.status != http.StatusNotFound {
		t.Errorf("second delete: %d %s, want 404", a.status, a.body)
	}
}

func TestCreateActionAndQueryOnTheMinimalNode(t *testing.T) {
	h, _ := startBoxes(t, false)
	job := h.finished(h.accepted(h.do(http.MethodPost, "/v1/boxes", `{"params": {"name": "crate"}}`)))
	var created struct{ Inventory boxVO }
	job.decode(t, &created)
	if job.status != http.StatusOK || created.Inventory.Name != "crate" || len(created.Inventory.UUID) != 32 {
		t.Fatalf("create job: %d %s", job.status, job.body)
	}
	id := created.Inventory.UUID
	if err := h.db.Create(&[]itemVO{{UUID: "i1", BoxUUID: id, Name: "x"}, {UUID: "i2", BoxUUID: id, Name: "y"}}).Error; err != nil {
		t.Fatal(err)
	}
	job = h.finished(h.accepted(h.do(http.MethodPut, "/v1/boxes/"+id+"/actions", `{"renameBox": {"name": "chest"}}`)))
	if job.status != http.StatusOK || !strings.Contains(string(job.body), `"name":"chest"`) {
		t.Fatalf("rename job: %d %s", job.status, job.body)
	}

	t.Run("fields with an association", func(t *testing.T) {
		a := h.do(http.MethodGet, "/v1/boxes?fields=name,items", "")
		var rep struct{ Inventories []map[string]json.RawMessage }
		a.decode(t, &rep)
		if a.status != http.StatusOK || len(rep.Inventories) != 1 {
			t.Fatalf("answer %d %s", a.status, a.body)
		}
		inv := rep.Inventories[0]
		var items []itemVO
		if err := json.Unmarshal(inv["items"], &items); err != nil || len(items) != 2 || items[0].BoxUUID != id {
			t.Errorf("items %s (%v), want the box's 2 items", inv["items"], err)
		}
		if _, ok := inv["uuid"]; ok || string(inv["name"]) != `"chest"` || len(inv) != 2 {
			t.Errorf("inventory %v, want only name and items", inv)
		}
	})
	t.Run("one by uuid, preloaded", func(t *testing.T) {
		a := h.do(http.MethodGet, "/v1/boxes/"+id, "")
		var rep struct{ Inventories []boxVO }
		a.decode(t, &rep)
		if a.status != http.StatusOK || len(rep.Inventories) != 1 || len(rep.Inventories[0].Items) != 2 {
			t.Errorf("answer %d %s", a.status, a.body)
		}
	})
	t.Run("not preloaded elsewhere", func(t *testing.T) {
		a := h.do(http.MethodGet, "/v1/loose-boxes/"+id, "")
		var rep struct{ Inventories []boxVO }
		a.decode(t, &rep)
		if a.status != http.StatusOK || len(rep.Inventories) != 1 || len(rep.Inventories[0].Items) != 0 {
			t.Errorf("answer %d %s", a.status, a.body)
		}
	})
}

func TestDatabaseErrorsAreInternal(t *testing.T) {
	h, _ := startBoxes(t, false)
	cases := []struct{ method, path, body string }{
		{http.MethodGet, "/v1/ghosts", ""},
		{http.MethodGet, "/v1/ghosts/00000000000000000000000000000061", ""},
		{http.MethodPut, "/v1/ghosts/00000000000000000000000000000061/actions", `{"hauntGhost": {}}`},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			a := h.do(tc.method, tc.path, tc.body)
			var e rest.ErrorBody
			a.decode(t, &e)
			if a.status != http.StatusInternalServerError || e.Error == nil || e.Error.Code != errcode.Internal {
				t.Errorf("answer %d %s, want 500 %s", a.status, a.body, errcode.Internal)
			}
		})
	}
}

// TestUnsentCallIsDrivenByItsNode: with no node consuming api.portal the
// call cannot be handed on; the job is recorded, so the node that accepted
// it drives it itself.
func TestUnsentCallIsDrivenByItsNode(t *testing.T) {
	h, _ := startBoxes(t, true)
	loc := h.accepted(h.do(http.MethodPost, "/v1/boxes", `{"params": {"name": "crate"}}`))
	job := h.finished(loc)
	if job.status != http.StatusOK || !strings.Contains(string(job.body), `"name":"crate"`) {
		t.Fatalf("job %d %s, want 200 with the box", job.status, job.body)
	}
}

func TestDrive(t *testing.T) {
	h, _ := startBoxes(t, false)
	ctx := context.Background()
	newJob := func(t *testing.T) jobs.Job {
		t.Helper()
		j, _, err := h.jobs.Create(ctx, jobs.NewJob{APIName: "portaltest.Something", ResourceUUID: "r1", Op: msgCreateBox.Name(), Body: `{"uuid": "b2", "name": "x"}`})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	t.Run("an unknown registry key fails the job", func(t *testing.T) {
		j := newJob(t)
		if _, err := h.portal.drive(ctx, submission{JobUUID: j.UUID, Op: "portaltest.Unknown#nope", Body: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
		got, err := h.jobs.Get(ctx, j.UUID)
		if err != nil {
			t.Fatal(err)
		}
		if e := got.Err(); got.State != jobs.Failed || e == nil || e.Code != "SYS.1003" ||
			!strings.Contains(e.Details, "no API call portaltest.Unknown#nope on this node") {
			t.Fatalf("job %+v, want failed with SYS.1003", got)
		}
		// A redelivered call finds the job finished and changes nothing.
		if _, err := h.portal.drive(ctx, submission{JobUUID: j.UUID, Op: msgCreateBox.Name(), Body: json.RawMessage(`{"uuid": "b1", "name": "x"}`)}); err != nil {
			t.Fatal(err)
		}
		if again, _ := h.jobs.Get(ctx, j.UUID); again.State != jobs.Failed || again.Error != got.Error {
			t.Errorf("redelivered call changed the job: %+v", again)
		}
	})
	t.Run("a known key succeeds the job", func(t *testing.T) {
		j := newJob(t)
		if _, err := h.portal.drive(ctx, submission{JobUUID: j.UUID, Op: msgCreateBox.Name(), Body: json.RawMessage(`{"uuid": "b2", "name": "x"}`)}); err != nil {
			t.Fatal(err)
		}
		if got, _ := h.jobs.Get(ctx, j.UUID); got.State != jobs.Succeeded || !strings.Contains(got.Result, `"uuid":"b2"`) {
			t.Fatalf("job %+v, want succeeded with box b2", got)
		}
	})
	t.Run("a job that does not exist", func(t *testing.T) {
		if _, err := h.portal.drive(ctx, submission{JobUUID: "nojob", Op: "x"}); err != nil {
			t.Fatalf("drive of a missing job: %v", err)
		}
		if _, err := h.jobs.Get(ctx, "nojob"); !errcode.Has(err, errcode.ResourceNotFound) {
			t.Errorf("a job appeared: %v", err)
		}
	})
	t.Run("over the queue", func(t *testing.T) {
		// The same through the api.portal queue, as another node sends it.
		j := newJob(t)
		sub := submission{JobUUID: j.UUID, Op: "portaltest.Unknown", Body: json.RawMessage(`{}`)}
		if err := cloudbus.Send(ctx, h.bus, h.bus.SharedTarget(SharedQueue), msgSubmit, sub); err != nil {
			t.Fatal(err)
		}
		job := h.finished("/v1/api-jobs/" + j.UUID)
		if job.status != http.StatusServiceUnavailable || !strings.Contains(string(job.body), string(errcode.UnknownMessage)) {
			t.Fatalf("job %d %s, want 503 %s", job.status, job.body, errcode.UnknownMessage)
		}
	})
}

func TestWebhookRefusedByTheReceiver(t *testing.T) {
	h, _ := startBoxes(t, false)
	var posts atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		posts.Add(1)
		w.WriteHeader(http.StatusBadRequest)
	}))
	defer hook.Close()
	loc := h.accepted(h.do(http.MethodPost, "/v1/boxes", `{"params": {"name": "crate"}}`, jobs.HeaderWebHook, hook.URL+"/hook"))
	if job := h.finished(loc); job.status != http.StatusOK {
		t.Fatalf("job %d %s: a refused webhook must not change it", job.status, job.body)
	}
	// Delivery follows the outcome: poll until the one attempt (a 400 is
	// final) has been made.
	eventually(t, "webhook attempted", func() bool { return posts.Load() == 1 })
}

func TestSweeperFailsStaleJobs(t *testing.T) {
	h, _ := startBoxes(t, false)
	ctx := context.Background()
	stale, _, err := h.jobs.Create(ctx, jobs.NewJob{APIName: "portaltest.Old"})
	if err != nil {
		t.Fatal(err)
	}
	fresh, _, err := h.jobs.Create(ctx, jobs.NewJob{APIName: "portaltest.New"})
	if err != nil {
		t.Fatal(err)
	}
	// The stale job was created long before the job timeout (30m, plus the
	// sweeper's minute of slack).
	if err := h.db.Model(&jobs.Job{}).Where("uuid = ?", stale.UUID).Update("created_at", time.Now().UTC().Add(-2*time.Hour)).Error; err != nil {
		t.Fatal(err)
	}
	eventually(t, "sweeper scheduled", func() bool { return h.clock.pending() > 0 })
	h.clock.fire()
	eventually(t, "stale job failed", func() bool {
		j, err := h.jobs.Get(ctx, stale.UUID)
		return err == nil && j.State == jobs.Failed
	})
	j, _ := h.jobs.Get(ctx, stale.UUID)
	if e := j.Err(); e == nil || e.Code != errcode.Timeout {
		t.Errorf("stale job error %+v, want %s", e, errcode.Timeout)
	}
	// The next round is scheduled once this one is over; the fresh job
	// survives it.
	eventually(t, "sweeper rescheduled", func() bool { return h.clock.pending() > 0 })
	if j, _ := h.jobs.Get(ctx, fresh.UUID); j.State != jobs.Processing {
		t.Errorf("fresh job %s, want processing", j.State)
	}
	// Stop ends the sweeper, and is idempotent.
	for range 2 {
		if err := h.portal.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "sweeper stopped", func() bool { return h.clock.pending() == 0 })
	if err := (&Portal{}).Stop(ctx); err != nil {
		t.Errorf("Stop of an unstarted portal: %v", err)
	}
}

func TestEndpoints(t *testing.T) {
	b := &boxes{}
	res := b.resources()
	res = append(res, route.Resource{Path: "crates", Create: route.Ptr(route.Create(msgCreateBox, func(_ context.Context, in route.In[boxParams]) (boxReq, error) {
		return boxReq{UUID: in.UUID}, nil
	}).At("boxes/{uuid}/crates"))})
	p, err := New(Options{DB: openDB(t), Bus: &cloudbus.Bus{}, Node: &managementnode.Node{}, Scheduler: thread.New(thread.Options{}),
		Jobs: jobs.NewStore(nil), Resources: res[:1]})
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{
		{Method: "POST", Path: "/boxes", Call: "portaltest.CreateBox", Params: []string{"name"}, Resource: "boxes"},
		{Method: "GET", Path: "/boxes", Resource: "boxes"},
		{Method: "GET", Path: "/boxes/{uuid}", Resource: "boxes"},
		{Method: "PUT", Path: "/boxes/{uuid}/actions", Action: "renameBox", Call: "portaltest.RenameBox", Params: []string{"name"}, Resource: "boxes"},
		{Method: "DELETE", Path: "/boxes/{uuid}", Call: "portaltest.DeleteBox", Params: []string{"deleteMode"}, Resource: "boxes"},
	}
	if got := p.Endpoints(); !reflect.DeepEqual(got, want) {
		t.Errorf("Endpoints\n got %+v\nwant %+v", got, want)
	}
	// A create at its own path, and a resource without a query.
	if got := endpointsOf(res[3]); len(got) != 1 || got[0].Path != "/boxes/{uuid}/crates" || got[0].Resource != "crates" {
		t.Errorf("endpoints of crates: %+v", got)
	}
}

// TestSetJobTimeout: the job timeout refuses a value that is not
// positive, and a new one applies at once to the stale-job sweeper (which
// fails the jobs processing for longer than the timeout plus a minute)
// and to the calls submitted from then on (their deadline).
func TestSetJobTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	// A box whose create never ends before its deadline: its owner records
	// how long its context had left, and waits until it is done.
	left := make(chan time.Duration, 1)
	msgStall := managementnode.NewOwnedMsg[boxReq, boxVO](ownerService, "portaltest.StallBox")
	h := startHarness(t, harnessOptions{
		resources: []route.Resource{{Path: "stalls", Name: "box", Query: route.QueryOf[boxVO](),
			Create: route.Ptr(route.Create(msgStall, func(_ context.Context, in route.In[boxParams]) (boxReq, error) {
				return boxReq{UUID: in.UUID, Name: in.Params.Name}, nil
			}))}},
		models: []any{&boxVO{}},
		serve: func(mux *cloudbus.Mux) {
			managementnode.Handle(mux, msgStall, func(ctx context.Context, _ boxReq) (boxVO, error) {
				d := time.Duration(-1) // no deadline
				if dl, ok := ctx.Deadline(); ok {
					d = time.Until(dl)
				}
				select {
				case left <- d:
				default:
				}
				select {
				case <-ctx.Done():
					return boxVO{}, ctx.Err()
				case <-release:
					return boxVO{}, errcode.New(errcode.Internal, "the test ended")
				}
			})
		},
	})
	p, ctx := h.portal, context.Background()
	if got := p.JobTimeout(); got != 30*time.Minute {
		t.Fatalf("JobTimeout() = %s, want the default 30m", got)
	}
	for _, bad := range []time.Duration{0, -time.Second} {
		if err := p.SetJobTimeout(bad); err == nil || !strings.Contains(err.Error(), "must be > 0") {
			t.Errorf("SetJobTimeout(%s) = %v, want an error saying it must be > 0", bad, err)
		}
	}
	if got := p.JobTimeout(); got != 30*time.Minute {
		t.Fatalf("JobTimeout() = %s after refused changes, want 30m", got)
	}

	// The sweeper: a job processing for 10 minutes is not stale under the
	// default timeout, and is under a 5-minute one; one processing for 2
	// minutes is under neither.
	created := func(name string, age time.Duration) string {
		t.Helper()
		j, _, err := h.jobs.Create(ctx, jobs.NewJob{APIName: name})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.db.Model(&jobs.Job{}).Where("uuid = ?", j.UUID).Update("created_at", time.Now().UTC().Add(-age)).Error; err != nil {
			t.Fatal(err)
		}
		return j.UUID
	}
	state := func(uuid string) jobs.State {
		t.Helper()
		j, err := h.jobs.Get(ctx, uuid)
		if err != nil {
			t.Fatal(err)
		}
		return j.State
	}
	older, younger := created("portaltest.TenMinutes", 10*time.Minute), created("portaltest.TwoMinutes", 2*time.Minute)
	if err := p.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if s := state(older); s != jobs.Processing {
		t.Fatalf("a 10-minute-old job is %s under a 30m timeout, want processing", s)
	}
	if err := p.SetJobTimeout(5 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := p.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if s := state(older); s != jobs.Failed {
		t.Errorf("a 10-minute-old job is %s under a 5m timeout, want failed", s)
	}
	if s := state(younger); s != jobs.Processing {
		t.Errorf("a 2-minute-old job is %s under a 5m timeout, want processing", s)
	}

	// A call submitted now is bounded by the new timeout: the owner gets
	// at most that much time (under 5 minutes it would get the bus's 30s
	// call timeout), and the job fails with Timeout.
	const short = 300 * time.Millisecond
	if err := p.SetJobTimeout(short); err != nil {
		t.Fatal(err)
	}
	a := h.finished(h.accepted(h.do(http.MethodPost, "/v1/stalls", `{"params": {"name": "stuck"}}`)))
	if d := <-left; d < 0 || d > short {
		t.Errorf("the owner's call had %s left, want at most the job timeout %s", d, short)
	}
	var e struct {
		Error errcode.Error `json:"error"`
	}
	a.decode(t, &e)
	if a.status == http.StatusOK || !errcode.Has(&e.Error, errcode.Timeout) {
		t.Errorf("a call under a %s timeout answered %d %s, want its job failed with %s", short, a.status, a.body, errcode.Timeout)
	}
}

// openDB opens a database of its own for t, closed at its end.
func openDB(t *testing.T) *gorm.DB {
	t.Helper()
	gdb, err := db.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "new.db"), db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	return gdb
}
