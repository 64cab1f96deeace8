package portal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/api/auth"
	"mplane/api/rest"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/resource"
)

// Two toy kinds the stack serves besides its own: gadgets, with a custom
// create that counts its calls and can fail on the owner, two actions and
// a dependent; and parts, created under a gadget
// (POST /v1/portal-test-gadgets/{uuid}/parts).

type gadgetVO struct {
	resource.Base
	Color  string `gorm:"column:color;size:32;not null" json:"color"`
	Weight int    `gorm:"column:weight;not null" json:"weight"`
	ZoneID string `gorm:"column:zone_uuid;size:32" json:"zoneUuid,omitempty"`
}

func (gadgetVO) TableName() string { return "portal_test_gadgets" }

type gadgetParams struct {
	Name     string `json:"name"`
	Color    string `json:"color"`
	Weight   int    `json:"weight,omitempty"`
	ZoneUUID string `json:"zoneUuid,omitempty"`
}

func (p *gadgetParams) Validate() error {
	if err := resource.ValidateName(p.Name); err != nil {
		return err
	}
	return checkColor(p.Color)
}

func checkColor(c string) error {
	switch c {
	case "red", "blue", "green":
		return nil
	}
	return errcode.New(errcode.InvalidArgument, "color must be red, blue or green, got %q", c)
}

type paintParams struct {
	Color string `json:"color"`
}

func (p *paintParams) Validate() error { return checkColor(p.Color) }

type partVO struct {
	resource.Base
	GadgetUUID string `gorm:"column:gadget_uuid;size:32;not null;index" json:"gadgetUuid"`
}

func (partVO) TableName() string { return "portal_test_parts" }

type partParams struct {
	Name       string `json:"name"`
	GadgetUUID string `json:"gadgetUuid"`
}

type zoneRow struct{ resource.Base }

func (zoneRow) TableName() string { return "zones" }

// creates counts the calls of the gadget's create on the owner, by name.
var creates = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

func createCalls(name string) int {
	creates.Lock()
	defer creates.Unlock()
	return creates.n[name]
}

var gadgetKind = resource.NewKind(resource.Spec[gadgetVO, gadgetParams]{
	Name: "portaltestgadget", Noun: "Gadget", Path: "portal-test-gadgets", What: "gadget",
	Check: func(ctx context.Context, db *gorm.DB, p *gadgetParams) error {
		if p.ZoneUUID == "" {
			return nil
		}
		return resource.MustExist(ctx, db, &zoneRow{}, "zoneUuid", p.ZoneUUID)
	},
	New: func(b resource.Base, p gadgetParams) gadgetVO {
		b.Name = p.Name
		return gadgetVO{Base: b, Color: p.Color, Weight: p.Weight, ZoneID: p.ZoneUUID}
	},
	Create: func(ctx context.Context, db *gorm.DB, uuid string, p gadgetParams) (gadgetVO, error) {
		creates.Lock()
		creates.n[p.Name]++
		creates.Unlock()
		if p.Name == "explode" {
			return gadgetVO{}, errcode.New(errcode.InvalidState, "gadget %s blew up on its owner", uuid)
		}
		row := gadgetVO{Base: resource.NewBase(uuid, p.Name, ""), Color: p.Color, Weight: p.Weight, ZoneID: p.ZoneUUID}
		out, err := resource.Insert(ctx, db, uuid, &row)
		if err != nil {
			return gadgetVO{}, err
		}
		return *out, nil
	},
	Dependents: []resource.Dependent{{Table: "portal_test_parts", Column: "gadget_uuid", What: "parts"}},
	Actions: []resource.Action[gadgetVO]{
		resource.NewAction("paintGadget", func(_ context.Context, _ *gorm.DB, row *gadgetVO, p paintParams) error {
			row.Color = p.Color
			return nil
		}),
		resource.NewAction("breakGadget", func(_ context.Context, _ *gorm.DB, row *gadgetVO, _ struct{}) error {
			return errcode.New(errcode.InvalidState, "gadget %s is unbreakable", row.UUID)
		}),
	},
})

var partKind = resource.NewKind(resource.Spec[partVO, partParams]{
	Name: "portaltestpart", Noun: "Part", Path: "portal-test-parts", What: "part",
	CreateAt: "portal-test-gadgets/{uuid}/parts",
	Parent:   func(p *partParams) *string { return &p.GadgetUUID },
	Check: func(ctx context.Context, db *gorm.DB, p *partParams) error {
		return resource.MustExist(ctx, db, &gadgetVO{}, "gadgetUuid", p.GadgetUUID)
	},
	New: func(b resource.Base, p partParams) partVO {
		b.Name = p.Name
		return partVO{Base: b, GadgetUUID: p.GadgetUUID}
	},
})

// stack is the real embedded cloud, serving the toy kinds, and raw HTTP
// helpers for what the typed client would refuse to send.
type stack struct {
	*servertest.Stack
	t *testing.T
}

func start(t *testing.T) *stack {
	t.Helper()
	st := servertest.Start(t, servertest.Options{Hosts: -1, ExtraKinds: []resource.Kind{gadgetKind, partKind}})
	return &stack{Stack: st, t: t}
}

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

// err is the error of an error answer.
func (a answer) err(t *testing.T) *errcode.Error {
	t.Helper()
	var e rest.ErrorBody
	a.decode(t, &e)
	if e.Error == nil {
		t.Fatalf("answer %d %s has no error", a.status, a.body)
	}
	return e.Error
}

// do sends a request as the admin; path is from the server root
// ("/v1/..."); header holds name, value pairs.
func (s *stack) do(method, path, body string, header ...string) answer {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", auth.Scheme+" "+s.Client.Session())
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// accepted checks a 202 {"location": ...} and returns the location's path.
func (s *stack) accepted(a answer) string {
	s.t.Helper()
	if a.status != http.StatusAccepted {
		s.t.Fatalf("answer %d %s, want 202", a.status, a.body)
	}
	var loc struct{ Location string }
	a.decode(s.t, &loc)
	u, err := url.Parse(loc.Location)
	if err != nil || u.Host == "" {
		s.t.Fatalf("location %q: %v", loc.Location, err)
	}
	return u.Path
}

// finished long-polls the job at location until it has finished.
func (s *stack) finished(location string) answer {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if a := s.do(http.MethodGet, location+"?wait=5s", ""); a.status != http.StatusAccepted {
			return a
		}
	}
	s.t.Fatalf("job %s still processing after 30s", location)
	return answer{}
}

// succeeded runs a call through its job and returns the job's inventory.
func (s *stack) succeeded(a answer, inv any) {
	s.t.Helper()
	job := s.finished(s.accepted(a))
	if job.status != http.StatusOK {
		s.t.Fatalf("job %d %s, want 200", job.status, job.body)
	}
	if inv != nil {
		var out struct{ Inventory json.RawMessage }
		job.decode(s.t, &out)
		if err := json.Unmarshal(out.Inventory, inv); err != nil {
			s.t.Fatalf("job %s: %v", job.body, err)
		}
	}
}

// gadget creates a gadget through the portal.
func (s *stack) gadget(name, color string, weight int, zone string) gadgetVO {
	s.t.Helper()
	params, _ := json.Marshal(gadgetParams{Name: name, Color: color, Weight: weight, ZoneUUID: zone})
	var g gadgetVO
	s.succeeded(s.do(http.MethodPost, "/v1/portal-test-gadgets", `{"params": `+string(params)+`}`), &g)
	return g
}

// jobCount is the number of API jobs recorded.
func (s *stack) jobCount() int64 {
	s.t.Helper()
	var n int64
	if err := s.DB().Table("api_jobs").Count(&n).Error; err != nil {
		s.t.Fatal(err)
	}
	return n
}

// inventories is the answer of a query.
type inventories struct {
	Inventories []map[string]json.RawMessage `json:"inventories"`
	Total       *int64                       `json:"total"`
}

func (inv inventories) names() []string {
	out := []string{}
	for _, m := range inv.Inventories {
		var name string
		_ = json.Unmarshal(m["name"], &name)
		out = append(out, name)
	}
	return out
}
