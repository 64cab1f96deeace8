package portal_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"mplane/api/auth"
	"mplane/api/client"
	"mplane/api/jobs"
	"mplane/api/portal"
	"mplane/cloudbus"
	"mplane/errcode"
)

const missingUUID = "0123456789abcdef0123456789abcdef"

// TestLifecycle drives a gadget through every declared route with the
// typed client: create, get, query, the actions, delete.
func TestLifecycle(t *testing.T) {
	s := start(t)
	c := s.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	g, err := client.CreateAndWait[gadgetVO](ctx, c, "portal-test-gadgets", gadgetParams{Name: "sprocket", Color: "red", Weight: 4, ZoneUUID: s.Defaults["zone"]})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.UUID) != 32 || g.Name != "sprocket" || g.Color != "red" || g.Weight != 4 || g.ZoneID != s.Defaults["zone"] {
		t.Fatalf("created %+v", g)
	}
	got, err := client.GetAs[gadgetVO](ctx, c, "portal-test-gadgets", g.UUID)
	if err != nil || got.UUID != g.UUID || got.Color != "red" {
		t.Fatalf("get: %+v, %v", got, err)
	}
	rows, total, err := client.QueryAs[gadgetVO](ctx, c, "portal-test-gadgets", client.Query{Q: []string{"name=sprocket"}, ReplyWithCount: true})
	if err != nil || total != 1 || len(rows) != 1 || rows[0].UUID != g.UUID {
		t.Fatalf("query: %d rows (total %d), %v", len(rows), total, err)
	}
	painted, err := client.ActionAndWait[gadgetVO](ctx, c, "portal-test-gadgets", g.UUID, "paintGadget", paintParams{Color: "blue"})
	if err != nil || painted.Color != "blue" || painted.UUID != g.UUID {
		t.Fatalf("paintGadget: %+v, %v", painted, err)
	}
	renamed, err := client.ActionAndWait[gadgetVO](ctx, c, "portal-test-gadgets", g.UUID, "updateGadget", map[string]any{"name": "cog"})
	if err != nil || renamed.Name != "cog" || renamed.Color != "blue" {
		t.Fatalf("updateGadget: %+v, %v", renamed, err)
	}
	if got, err := client.GetAs[gadgetVO](ctx, c, "portal-test-gadgets", g.UUID); err != nil || got.Name != "cog" || got.Color != "blue" {
		t.Fatalf("get after the actions: %+v, %v", got, err)
	}
	j, err := c.Delete(ctx, "portal-test-gadgets", g.UUID, client.DeleteEnforcing)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := j.Wait(ctx, nil); err != nil || (len(res) > 0 && string(res) != "{}") {
		t.Fatalf("delete: %s, %v", res, err)
	}
	if _, err := c.Get(ctx, "portal-test-gadgets", g.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get after delete: %v, want 404", err)
	}
}

func TestQueryParameters(t *testing.T) {
	s := start(t)
	zone := s.Defaults["zone"]
	alpha := s.gadget("alpha", "red", 3, zone)
	s.gadget("beta", "blue", 7, zone)
	s.gadget("gamma", "green", 5, zone)
	// beta has no zone at all: NULL, for "is null".
	if err := s.DB().Exec("UPDATE portal_test_gadgets SET zone_uuid = NULL WHERE name = 'beta'").Error; err != nil {
		t.Fatal(err)
	}
	total := func(n int64) *int64 { return &n }

	cases := []struct {
		name   string
		path   string // "" is the collection
		params url.Values
		status int
		names  []string // in order; nil with a 200: not checked
		total  *int64
		fields []string // the inventories' members, if checked
		detail string   // of a 400's error
	}{
		{name: "everything", params: url.Values{"sort": {"+name"}}, status: 200, names: []string{"alpha", "beta", "gamma"}},
		{name: "equal", params: url.Values{"q": {"color=red"}}, status: 200, names: []string{"alpha"}},
		{name: "not equal", params: url.Values{"q": {"color!=red"}, "sort": {"+name"}}, status: 200, names: []string{"beta", "gamma"}},
		{name: "like", params: url.Values{"q": {"name~=%mm%"}}, status: 200, names: []string{"gamma"}},
		{name: "not like", params: url.Values{"q": {"name!~=%mm%"}, "sort": {"+name"}}, status: 200, names: []string{"alpha", "beta"}},
		{name: "in", params: url.Values{"q": {"color?=red,blue"}, "sort": {"+name"}}, status: 200, names: []string{"alpha", "beta"}},
		{name: "not in", params: url.Values{"q": {"color!?=red,blue"}}, status: 200, names: []string{"gamma"}},
		{name: "greater", params: url.Values{"q": {"weight>4"}, "sort": {"+weight"}}, status: 200, names: []string{"gamma", "beta"}},
		{name: "less or equal", params: url.Values{"q": {"weight<=5"}, "sort": {"+weight"}}, status: 200, names: []string{"alpha", "gamma"}},
		{name: "is null", params: url.Values{"q": {"zoneUuid is null"}}, status: 200, names: []string{"beta"}},
		{name: "not null", params: url.Values{"q": {"zoneUuid not null"}, "sort": {"+name"}}, status: 200, names: []string{"alpha", "gamma"}},
		{name: "two conditions", params: url.Values{"q": {"color!=red", "weight<7"}}, status: 200, names: []string{"gamma"}},
		{name: "sort descending", params: url.Values{"sort": {"-weight"}}, status: 200, names: []string{"beta", "gamma", "alpha"}},
		{name: "limit and start", params: url.Values{"sort": {"+name"}, "limit": {"1"}, "start": {"1"}}, status: 200, names: []string{"beta"}},
		{name: "start past the end", params: url.Values{"start": {"3"}}, status: 200, names: []string{}},
		{name: "limit 0", params: url.Values{"limit": {"0"}}, status: 200, names: []string{}},
		{name: "count", params: url.Values{"count": {"true"}}, status: 200, total: total(3)},
		{name: "count with a condition", params: url.Values{"q": {"color=red"}, "count": {"true"}}, status: 200, total: total(1)},
		{name: "replyWithCount", params: url.Values{"replyWithCount": {"true"}, "limit": {"1"}, "sort": {"-weight"}}, status: 200, names: []string{"beta"}, total: total(3)},
		{name: "fields", params: url.Values{"q": {"name=alpha"}, "fields": {"name,color"}}, status: 200, names: []string{"alpha"}, fields: []string{"color", "name"}},

		{name: "get", path: alpha.UUID, status: 200, names: []string{"alpha"}},
		{name: "get with fields", path: alpha.UUID, params: url.Values{"fields": {"color"}}, status: 200, fields: []string{"color"}},
		{name: "get a missing one", path: missingUUID, status: 404, detail: "portal-test-gadgets " + missingUUID + " not found"},
		{name: "count of a missing one", path: missingUUID, params: url.Values{"count": {"true"}}, status: 200, total: total(0)},
		{name: "get with an unknown field", path: alpha.UUID, params: url.Values{"fields": {"colour"}}, status: 400, detail: `fields: unknown field "colour"`},

		{name: "unknown q field", params: url.Values{"q": {"colour=red"}}, status: 400, detail: `unknown field "colour"`},
		{name: "unknown operator", params: url.Values{"q": {"color^red"}}, status: 400, detail: "unknown operator"},
		{name: "operator not for the type", params: url.Values{"q": {"weight~=3"}}, status: 400, detail: "operator ~= is not allowed on weight"},
		{name: "bad integer", params: url.Values{"q": {"weight>heavy"}}, status: 400, detail: "weight must be an integer"},
		{name: "unknown sort field", params: url.Values{"sort": {"-size"}}, status: 400, detail: `sort: unknown field "size"`},
		{name: "unknown fields field", params: url.Values{"fields": {"name,size"}}, status: 400, detail: `fields: unknown field "size"`},
		{name: "negative limit", params: url.Values{"limit": {"-1"}}, status: 400, detail: "limit must be an integer"},
		{name: "limit twice", params: url.Values{"limit": {"1", "2"}}, status: 400, detail: "limit may be given once"},
		{name: "bad start", params: url.Values{"start": {"x"}}, status: 400, detail: "start must be an integer"},
		{name: "bad count", params: url.Values{"count": {"maybe"}}, status: 400, detail: "count must be true or false"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/portal-test-gadgets"
			if tc.path != "" {
				path += "/" + tc.path
			}
			if len(tc.params) > 0 {
				path += "?" + tc.params.Encode()
			}
			a := s.do(http.MethodGet, path, "")
			if a.status != tc.status {
				t.Fatalf("GET %s: %d %s, want %d", path, a.status, a.body, tc.status)
			}
			if tc.status != http.StatusOK {
				if e := a.err(t); !strings.Contains(e.Details, tc.detail) {
					t.Fatalf("error %q, want %q", e.Details, tc.detail)
				}
				return
			}
			var inv inventories
			a.decode(t, &inv)
			if tc.names != nil && !reflect.DeepEqual(inv.names(), tc.names) {
				t.Errorf("names %q, want %q", inv.names(), tc.names)
			}
			switch {
			case tc.total == nil && inv.Total != nil:
				t.Errorf("total %d, want none", *inv.Total)
			case tc.total != nil && (inv.Total == nil || *inv.Total != *tc.total):
				t.Errorf("total %v, want %d (%s)", inv.Total, *tc.total, a.body)
			}
			if tc.total != nil && tc.names == nil && strings.Contains(string(a.body), "inventories") {
				t.Errorf("count answer %s has inventories", a.body)
			}
			for _, m := range inv.Inventories {
				if tc.fields == nil {
					break
				}
				var keys []string
				for k := range m {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				if !reflect.DeepEqual(keys, tc.fields) {
					t.Errorf("members %q, want %q", keys, tc.fields)
				}
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	s := start(t)
	before := s.jobCount()
	cases := []struct {
		name, body, detail string
	}{
		{"empty body", ``, "request body is empty"},
		{"malformed JSON", `{"params": {"name": "x"`, "malformed JSON"},
		{"not JSON", `hello`, "malformed JSON at line 1, column 1"},
		{"an array", `[{"params": {}}]`, "request body must be a JSON object"},
		{"null", `null`, "got null"},
		{"missing params", `{}`, `missing "params"`},
		{"params null", `{"params": null}`, "params must be a JSON object, got null"},
		{"unknown top-level field", `{"params": {"name": "x", "color": "red"}, "extra": 1}`, `unknown top-level field "extra"`},
		{"unknown field, named by its path", `{"params": {"name": "x", "color": "red", "size": 3}}`, `params: unknown field "size"; allowed fields: name, color, weight, zoneUuid`},
		{"wrong type", `{"params": {"name": 1, "color": "red"}}`, "params.name must be a string, got number"},
		{"bad tags", `{"params": {"name": "x", "color": "red"}, "systemTags": "a"}`, "systemTags must be an array of strings"},
		{"Validate", `{"params": {"name": "x", "color": "pink"}}`, `color must be red, blue or green, got "pink"`},
		{"Validate of the name", `{"params": {"name": " ", "color": "red"}}`, "name is required"},
		{"Build checks the reference", `{"params": {"name": "x", "color": "red", "zoneUuid": "0000000000000000000000000000beef"}}`, "zoneUuid 0000000000000000000000000000beef does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := s.do(http.MethodPost, "/v1/portal-test-gadgets", tc.body)
			if a.status != http.StatusBadRequest {
				t.Fatalf("answer %d %s, want 400", a.status, a.body)
			}
			if e := a.err(t); e.Code != errcode.InvalidArgument || !strings.Contains(e.Details, tc.detail) {
				t.Fatalf("error %s %q, want %s with %q", e.Code, e.Details, errcode.InvalidArgument, tc.detail)
			}
		})
	}
	if after := s.jobCount(); after != before {
		t.Errorf("refused creates left %d jobs", after-before)
	}
	if n := createCalls("x"); n != 0 {
		t.Errorf("refused creates reached the owner %d times", n)
	}
}

func TestActionErrors(t *testing.T) {
	s := start(t)
	g := s.gadget("widget", "red", 1, "")
	before := s.jobCount()
	cases := []struct {
		name   string
		uuid   string
		body   string
		status int
		detail string
	}{
		{"unknown action", g.UUID, `{"throwGadget": {}}`, 400, `unknown action "throwGadget"; valid actions: updateGadget, paintGadget, breakGadget`},
		{"two actions", g.UUID, `{"paintGadget": {"color": "blue"}, "updateGadget": {"name": "y"}}`, 400, "expected exactly one action, got 2 (paintGadget, updateGadget)"},
		{"no action", g.UUID, `{}`, 400, "missing action"},
		{"only tags", g.UUID, `{"systemTags": ["a"]}`, 400, "missing action"},
		{"body an array", g.UUID, `[{"paintGadget": {}}]`, 400, "request body must be a JSON object"},
		{"body a string", g.UUID, `"paintGadget"`, 400, "request body must be a JSON object"},
		{"empty body", g.UUID, ``, 400, "request body is empty"},
		{"malformed JSON", g.UUID, `{"paintGadget": {`, 400, "malformed JSON"},
		{"action not an object", g.UUID, `{"paintGadget": 3}`, 400, "paintGadget must be a JSON object, got number"},
		{"unknown field", g.UUID, `{"paintGadget": {"colour": "blue"}}`, 400, `paintGadget: unknown field "colour"`},
		{"Validate", g.UUID, `{"paintGadget": {"color": "pink"}}`, 400, `color must be red, blue or green, got "pink"`},
		{"missing resource", missingUUID, `{"paintGadget": {"color": "blue"}}`, 404, "gadget " + missingUUID + " not found"},
		{"missing resource before a bad body", missingUUID, `{"throwGadget": 1}`, 404, "gadget " + missingUUID + " not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := s.do(http.MethodPut, "/v1/portal-test-gadgets/"+tc.uuid+"/actions", tc.body)
			if a.status != tc.status {
				t.Fatalf("answer %d %s, want %d", a.status, a.body, tc.status)
			}
			if e := a.err(t); !strings.Contains(e.Details, tc.detail) {
				t.Fatalf("error %s %q, want %q", e.Code, e.Details, tc.detail)
			}
		})
	}
	if after := s.jobCount(); after != before {
		t.Errorf("refused actions left %d jobs", after-before)
	}
	if got, err := client.GetAs[gadgetVO](context.Background(), s.Client, "portal-test-gadgets", g.UUID); err != nil || got.Color != "red" || got.Name != "widget" {
		t.Errorf("gadget after refused actions: %+v, %v", got, err)
	}
}

func TestCreateUnder(t *testing.T) {
	s := start(t)
	g := s.gadget("frame", "green", 9, "")
	other := s.gadget("other", "green", 9, "")
	under := "/v1/portal-test-gadgets/" + g.UUID + "/parts"

	var wheel, axle partVO
	s.succeeded(s.do(http.MethodPost, under, `{"params": {"name": "wheel"}}`), &wheel)
	s.succeeded(s.do(http.MethodPost, under, `{"params": {"name": "axle", "gadgetUuid": "`+g.UUID+`"}}`), &axle)
	for _, p := range []partVO{wheel, axle} {
		if p.GadgetUUID != g.UUID || len(p.UUID) != 32 {
			t.Errorf("part %+v, want one of gadget %s", p, g.UUID)
		}
	}

	bad := []struct {
		name, path, body, detail string
	}{
		{"body names another parent", under, `{"params": {"name": "bolt", "gadgetUuid": "` + other.UUID + `"}}`,
			"the body names parent " + other.UUID + " but the path names " + g.UUID},
		{"the parent does not exist", "/v1/portal-test-gadgets/" + missingUUID + "/parts", `{"params": {"name": "bolt"}}`,
			"gadgetUuid " + missingUUID + " does not exist"},
		{"unknown field", under, `{"params": {"name": "bolt", "size": 1}}`, `params: unknown field "size"`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			a := s.do(http.MethodPost, tc.path, tc.body)
			if a.status != http.StatusBadRequest {
				t.Fatalf("answer %d %s, want 400", a.status, a.body)
			}
			if e := a.err(t); !strings.Contains(e.Details, tc.detail) {
				t.Fatalf("error %q, want %q", e.Details, tc.detail)
			}
		})
	}

	a := s.do(http.MethodGet, "/v1/portal-test-parts?"+url.Values{"q": {"gadgetUuid=" + g.UUID}, "sort": {"+name"}}.Encode(), "")
	var inv inventories
	a.decode(t, &inv)
	if a.status != http.StatusOK || !reflect.DeepEqual(inv.names(), []string{"axle", "wheel"}) {
		t.Fatalf("parts of the gadget: %d %s", a.status, a.body)
	}
	// There is no POST /v1/portal-test-parts: the create is under a gadget.
	if a := s.do(http.MethodPost, "/v1/portal-test-parts", `{"params": {"name": "x", "gadgetUuid": "`+g.UUID+`"}}`); a.status != http.StatusMethodNotAllowed && a.status != http.StatusNotFound {
		t.Errorf("POST /v1/portal-test-parts: %d, want no such route", a.status)
	}
	// The owner refuses to delete a gadget that has parts: the job fails.
	job := s.finished(s.accepted(s.do(http.MethodDelete, "/v1/portal-test-gadgets/"+g.UUID, "")))
	if e := job.err(t); job.status != http.StatusServiceUnavailable || e.Code != errcode.InvalidState || !strings.Contains(e.Details, "still has 2 parts") {
		t.Fatalf("delete of a gadget with parts: %d %s", job.status, job.body)
	}
}

func TestDelete(t *testing.T) {
	s := start(t)
	cases := []struct {
		name, query string
	}{
		{"default mode", ""},
		{"Permissive", "?deleteMode=Permissive"},
		{"Enforcing", "?deleteMode=Enforcing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := s.gadget("doomed", "red", 1, "")
			job := s.finished(s.accepted(s.do(http.MethodDelete, "/v1/portal-test-gadgets/"+g.UUID+tc.query, "")))
			if job.status != http.StatusOK || strings.TrimSpace(string(job.body)) != "{}" {
				t.Fatalf("delete job: %d %s, want 200 {}", job.status, job.body)
			}
			if a := s.do(http.MethodGet, "/v1/portal-test-gadgets/"+g.UUID, ""); a.status != http.StatusNotFound {
				t.Errorf("get after delete: %d, want 404", a.status)
			}
		})
	}
	t.Run("bad mode", func(t *testing.T) {
		g := s.gadget("kept", "red", 1, "")
		a := s.do(http.MethodDelete, "/v1/portal-test-gadgets/"+g.UUID+"?deleteMode=Now", "")
		if e := a.err(t); a.status != http.StatusBadRequest || !strings.Contains(e.Details, `deleteMode must be Permissive or Enforcing, got "Now"`) {
			t.Fatalf("answer %d %s, want 400", a.status, a.body)
		}
		if a := s.do(http.MethodGet, "/v1/portal-test-gadgets/"+g.UUID, ""); a.status != http.StatusOK {
			t.Errorf("get after a refused delete: %d, want 200", a.status)
		}
	})
	t.Run("a missing gadget is deleted already", func(t *testing.T) {
		if job := s.finished(s.accepted(s.do(http.MethodDelete, "/v1/portal-test-gadgets/"+missingUUID, ""))); job.status != http.StatusOK {
			t.Fatalf("delete job: %d %s, want 200", job.status, job.body)
		}
	})
	t.Run("an Existing delete of a missing VM", func(t *testing.T) {
		a := s.do(http.MethodDelete, "/v1/vm-instances/"+missingUUID, "")
		if e := a.err(t); a.status != http.StatusNotFound || e.Code != errcode.ResourceNotFound || !strings.Contains(e.Details, "VM "+missingUUID+" not found") {
			t.Fatalf("answer %d %s, want 404", a.status, a.body)
		}
	})
}

func TestJobUUIDIdempotency(t *testing.T) {
	s := start(t)
	const jobUUID = "portal-test-job-1"
	body := `{"params": {"name": "once", "color": "blue"}}`
	first := s.accepted(s.do(http.MethodPost, "/v1/portal-test-gadgets", body, jobs.HeaderJobUUID, jobUUID))
	if !strings.HasSuffix(first, "/v1/api-jobs/"+jobUUID) {
		t.Fatalf("location %s, want the job %s", first, jobUUID)
	}
	if _, err := jobs.NewStore(s.DB()).Get(context.Background(), jobs.ScopedUUID(auth.AdminUUID, jobUUID)); err != nil {
		t.Fatalf("the job the admin names %s: %v", jobUUID, err)
	}
	job := s.finished(first)
	if job.status != http.StatusOK {
		t.Fatalf("job %d %s", job.status, job.body)
	}
	// Retries, after the job finished, get the same job and do nothing.
	for i := 0; i < 2; i++ {
		again := s.accepted(s.do(http.MethodPost, "/v1/portal-test-gadgets", body, jobs.HeaderJobUUID, jobUUID))
		if again != first {
			t.Fatalf("retry %d: location %s, want %s", i+1, again, first)
		}
		if j := s.finished(again); string(j.body) != string(job.body) {
			t.Fatalf("retry %d: job %s, want %s", i+1, j.body, job.body)
		}
	}
	var n int64
	if err := s.DB().Model(&gadgetVO{}).Where("name = ?", "once").Count(&n).Error; err != nil || n != 1 {
		t.Fatalf("%d gadgets named once (%v), want 1", n, err)
	}
	if calls := createCalls("once"); calls != 1 {
		t.Fatalf("the owner's create ran %d times, want 1", calls)
	}

	bad := []struct {
		name, method, path, body, jobUUID, detail string
	}{
		{"the job UUID of another call", http.MethodPut, "", `{"paintGadget": {"color": "red"}}`, jobUUID, "was used for another request"},
		{"the job UUID of another body", http.MethodPost, "/v1/portal-test-gadgets", `{"params": {"name": "twice", "color": "blue"}}`, jobUUID,
			"was used for another request; a retry must repeat the request exactly"},
		{"a malformed job UUID", http.MethodPost, "/v1/portal-test-gadgets", body, "not a job!", "X-Job-UUID must be 1 to 64 letters"},
	}
	var g struct{ Inventory gadgetVO }
	job.decode(t, &g)
	bad[0].path = "/v1/portal-test-gadgets/" + g.Inventory.UUID + "/actions"
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			a := s.do(tc.method, tc.path, tc.body, jobs.HeaderJobUUID, tc.jobUUID)
			if e := a.err(t); a.status != http.StatusBadRequest || !strings.Contains(e.Details, tc.detail) {
				t.Fatalf("answer %d %s, want 400 with %q", a.status, a.body, tc.detail)
			}
		})
	}
}

func TestFailingOwner(t *testing.T) {
	s := start(t)
	g := s.gadget("sturdy", "red", 1, "")
	cases := []struct {
		name, method, path, body, detail string
	}{
		{"create", http.MethodPost, "/v1/portal-test-gadgets", `{"params": {"name": "explode", "color": "red"}}`, "blew up on its owner"},
		{"action", http.MethodPut, "/v1/portal-test-gadgets/" + g.UUID + "/actions", `{"breakGadget": {}}`, "gadget " + g.UUID + " is unbreakable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			job := s.finished(s.accepted(s.do(tc.method, tc.path, tc.body)))
			if job.status != http.StatusServiceUnavailable {
				t.Fatalf("job %d %s, want 503", job.status, job.body)
			}
			if e := job.err(t); e.Code != errcode.InvalidState || !strings.Contains(e.Details, tc.detail) {
				t.Fatalf("job error %s %q, want %s with %q", e.Code, e.Details, errcode.InvalidState, tc.detail)
			}
		})
	}
	var n int64
	if err := s.DB().Model(&gadgetVO{}).Where("name = ?", "explode").Count(&n).Error; err != nil || n != 0 {
		t.Errorf("%d exploded gadgets stored (%v)", n, err)
	}
}

// delivery is one webhook POST received.
type delivery struct {
	header http.Header
	body   []byte
}

func TestWebhook(t *testing.T) {
	s := start(t)
	got := make(chan delivery, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/hook" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		got <- delivery{header: r.Header.Clone(), body: body}
	}))
	defer hook.Close()

	cases := []struct {
		name, body, jobUUID, success, want string
	}{
		{"success", `{"params": {"name": "hooked", "color": "green"}}`, "portal-test-hook-1", "true", `"name":"hooked"`},
		{"failure", `{"params": {"name": "explode", "color": "green"}}`, "portal-test-hook-2", "false", `"error":{"code":"SYS.1006"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			loc := s.accepted(s.do(http.MethodPost, "/v1/portal-test-gadgets", tc.body,
				jobs.HeaderJobUUID, tc.jobUUID, jobs.HeaderWebHook, hook.URL+"/hook?token=secret"))
			job := s.finished(loc)
			var d delivery
			select {
			case d = <-got:
			case <-time.After(30 * time.Second):
				t.Fatal("no webhook delivery in 30s")
			}
			if h := d.header.Get(jobs.HeaderJobUUID); h != tc.jobUUID {
				t.Errorf("%s: %q, want %q", jobs.HeaderJobUUID, h, tc.jobUUID)
			}
			if h := d.header.Get(jobs.HeaderJobSuccess); h != tc.success {
				t.Errorf("%s: %q, want %q", jobs.HeaderJobSuccess, h, tc.success)
			}
			if !strings.Contains(string(d.body), tc.want) {
				t.Errorf("webhook body %s, want %s in it", d.body, tc.want)
			}
			if strings.TrimSpace(string(d.body)) != strings.TrimSpace(string(job.body)) {
				t.Errorf("webhook body %s, job answer %s: want the same", d.body, job.body)
			}
		})
	}
	t.Run("an invalid webhook URL", func(t *testing.T) {
		a := s.do(http.MethodPost, "/v1/portal-test-gadgets", `{"params": {"name": "x", "color": "red"}}`, jobs.HeaderWebHook, "ftp://example.com/hook")
		if e := a.err(t); a.status != http.StatusBadRequest || !strings.Contains(e.Details, "X-Web-Hook must be an absolute http or https URL") {
			t.Fatalf("answer %d %s, want 400", a.status, a.body)
		}
	})
	select {
	case d := <-got:
		t.Errorf("unexpected delivery %s", d.body)
	default:
	}
}

// TestZStackPrefix: every route answers under /zstack/v1 as under /v1, and
// its job's location keeps the prefix the call came by.
func TestZStackPrefix(t *testing.T) {
	s := start(t)
	var g gadgetVO
	loc := s.accepted(s.do(http.MethodPost, "/zstack/v1/portal-test-gadgets", `{"params": {"name": "zs", "color": "red"}}`))
	if !strings.HasPrefix(loc, "/zstack/v1/api-jobs/") {
		t.Fatalf("location %s, want it under /zstack/v1", loc)
	}
	job := s.finished(loc)
	var out struct{ Inventory gadgetVO }
	job.decode(t, &out)
	g = out.Inventory
	if job.status != http.StatusOK || g.Name != "zs" {
		t.Fatalf("job %d %s", job.status, job.body)
	}
	if v1 := s.finished(strings.Replace(loc, "/zstack/v1/", "/v1/", 1)); string(v1.body) != string(job.body) {
		t.Errorf("job under /v1: %s, under /zstack/v1: %s", v1.body, job.body)
	}
	for _, path := range []string{"/portal-test-gadgets", "/portal-test-gadgets/" + g.UUID, "/portal-test-gadgets?q=name=zs&fields=uuid"} {
		v1, zs := s.do(http.MethodGet, "/v1"+path, ""), s.do(http.MethodGet, "/zstack/v1"+path, "")
		if v1.status != http.StatusOK || zs.status != v1.status || string(zs.body) != string(v1.body) {
			t.Errorf("GET %s: /v1 %d %s, /zstack/v1 %d %s", path, v1.status, v1.body, zs.status, zs.body)
		}
	}
	a := s.do(http.MethodPut, "/zstack/v1/portal-test-gadgets/"+g.UUID+"/actions", `{"paintGadget": {"color": "blue"}}`)
	if job := s.finished(s.accepted(a)); job.status != http.StatusOK || !strings.Contains(string(job.body), `"color":"blue"`) {
		t.Errorf("action under /zstack/v1: %d %s", job.status, job.body)
	}
	if a := s.do(http.MethodPut, "/zstack/v1/portal-test-gadgets/"+g.UUID+"/actions", `{"nope": {}}`); a.status != http.StatusBadRequest {
		t.Errorf("unknown action under /zstack/v1: %d, want 400", a.status)
	}
	if job := s.finished(s.accepted(s.do(http.MethodDelete, "/zstack/v1/portal-test-gadgets/"+g.UUID, ""))); job.status != http.StatusOK {
		t.Errorf("delete under /zstack/v1: %d %s", job.status, job.body)
	}
	if a := s.do(http.MethodGet, "/zstack/v1/portal-test-gadgets/"+g.UUID, ""); a.status != http.StatusNotFound {
		t.Errorf("get after delete under /zstack/v1: %d, want 404", a.status)
	}
}

// submission is what a node sends on the api.portal queue, as another
// node (of another version, perhaps) would encode it.
type submission struct {
	JobUUID string          `json:"jobUuid"`
	Op      string          `json:"op"`
	Body    json.RawMessage `json:"body"`
}

var msgSubmit = cloudbus.NewMsg[submission, cloudbus.Empty]("api.Submit")

// TestUnknownCallOnTheQueue: a call the driving node does not know (a
// newer node's) fails its job with UnknownMessage instead of leaving it
// processing.
func TestUnknownCallOnTheQueue(t *testing.T) {
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, created, err := jobs.NewStore(s.DB()).Create(ctx, jobs.NewJob{APIName: "future.DoSomething", ResourceUUID: missingUUID})
	if err != nil || !created {
		t.Fatalf("create the job: %v (created %v)", err, created)
	}
	sub := submission{JobUUID: j.UUID, Op: "future.DoSomething#doSomething", Body: json.RawMessage(`{"uuid": "` + missingUUID + `"}`)}
	if err := cloudbus.Send(ctx, s.Bus(), s.Bus().SharedTarget(portal.SharedQueue), msgSubmit, sub); err != nil {
		t.Fatal(err)
	}
	job := s.finished("/v1/api-jobs/" + j.UUID)
	if job.status != http.StatusServiceUnavailable {
		t.Fatalf("job %d %s, want 503", job.status, job.body)
	}
	if e := job.err(t); e.Code != "SYS.1003" || !strings.Contains(e.Details, "no API call future.DoSomething#doSomething on this node") {
		t.Fatalf("job error %s %q, want SYS.1003", e.Code, e.Details)
	}
}
