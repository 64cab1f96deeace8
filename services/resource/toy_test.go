package resource_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/resource"
)

// A toy resource, declared as a new resource package would declare itself:
// a model that embeds resource.Base, create params that validate
// themselves, and an action. Nothing in api/ knows it; the stack serves it
// because it is given as one more kind (the one line a real kind adds to
// server.Kinds).

type ToyVO struct {
	resource.Base
	Color  string `gorm:"column:color;size:32;not null" json:"color"`
	Shine  int    `gorm:"column:shine;not null" json:"shine"`
	ZoneID string `gorm:"column:zone_uuid;size:32" json:"zoneUuid,omitempty"`
}

func (ToyVO) TableName() string { return "toys" }

type CreateToyParams struct {
	resource.Params
	Color    string `json:"color"`
	ZoneUUID string `json:"zoneUuid,omitempty"`
}

func (p *CreateToyParams) Validate() error {
	problems := p.Problems()
	if p.Color != "red" && p.Color != "blue" {
		problems = append(problems, fmt.Sprintf("color must be red or blue, got %q", p.Color))
	}
	return resource.Invalid(problems)
}

type PolishParams struct {
	Times int `json:"times"`
}

func (p *PolishParams) Validate() error {
	if p.Times < 1 || p.Times > 10 {
		return errcode.New(errcode.InvalidArgument, "times must be between 1 and 10")
	}
	return nil
}

type zoneRow struct{ resource.Base }

func (zoneRow) TableName() string { return "zones" }

var toyKind = resource.NewKind(resource.Spec[ToyVO, CreateToyParams]{
	Name: "toy", Noun: "Toy", Path: "toys",
	Check: func(ctx context.Context, db *gorm.DB, p *CreateToyParams) error {
		if p.ZoneUUID == "" {
			return nil
		}
		return resource.MustExist(ctx, db, &zoneRow{}, "zoneUuid", p.ZoneUUID)
	},
	New: func(b resource.Base, p CreateToyParams) ToyVO {
		return ToyVO{Base: b, Color: p.Color, ZoneID: p.ZoneUUID}
	},
	Actions: []resource.Action[ToyVO]{
		resource.NewAction("polishToy", func(_ context.Context, _ *gorm.DB, row *ToyVO, p PolishParams) error {
			if row.Shine+p.Times > 10 {
				return errcode.New(errcode.InvalidState, "toy %s shines %d already; polishing %d more times would pass 10", row.UUID, row.Shine, p.Times)
			}
			row.Shine += p.Times
			return nil
		}),
	},
	// A further create, a call on a path of its own and a view.
	Calls: []resource.Call[ToyVO]{shinyToy, paintToy},
	Views: []resource.View{{Path: "toys/red", What: "red toy", Where: "color = ?", Args: []any{"red"}}},
})

type ShinyToyParams struct {
	resource.Params
	Shine int `json:"shine"`
}

func (p *ShinyToyParams) Validate() error {
	problems := p.Problems()
	if p.Shine < 1 || p.Shine > 10 {
		problems = append(problems, "shine must be between 1 and 10")
	}
	return resource.Invalid(problems)
}

var shinyToy = resource.NewCreate(resource.CreateSpec[ToyVO, ShinyToyParams]{
	Noun: "ShinyToy", Path: "toys/shiny",
	Create: func(ctx context.Context, db *gorm.DB, uuid string, p ShinyToyParams) (ToyVO, error) {
		row := ToyVO{Base: resource.NewBase(uuid, p.Name, p.Description), Color: "blue", Shine: p.Shine}
		out, err := resource.Insert(ctx, db, uuid, &row)
		if err != nil {
			return ToyVO{}, err
		}
		return *out, nil
	},
})

type PaintParams struct {
	ToyUUID string `json:"toyUuid"`
	Color   string `json:"color"`
}

var paintToy = resource.NewCall(resource.CallSpec[ToyVO, PaintParams]{
	Name: "PaintToy", Method: http.MethodPost, Path: "toys/{toyUuid}/colors/{color}",
	Target: func(p *PaintParams) string { return p.ToyUUID },
	Check: func(_ context.Context, _ *gorm.DB, row *ToyVO, p *PaintParams) error {
		if p.Color != "red" && p.Color != "blue" {
			return errcode.New(errcode.InvalidArgument, "toy %s cannot be %s", row.UUID, p.Color)
		}
		return nil
	},
	Apply: func(_ context.Context, tx *gorm.DB, row *ToyVO, p PaintParams) error {
		return tx.Model(&ToyVO{}).Where("uuid = ?", row.UUID).Update("color", p.Color).Error
	},
})

// TestToyCallsAndViews: a further create on a path of its own, a call on
// a path naming the toy (run on its owner, answering the row read again),
// and a view of the red toys.
func TestToyCallsAndViews(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1, ExtraKinds: []resource.Kind{toyKind}})
	c := st.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	shiny, err := client.CreateAndWait[ToyVO](ctx, c, "toys/shiny", map[string]any{"name": "star", "shine": 9})
	if err != nil || len(shiny.UUID) != 32 || shiny.Shine != 9 || shiny.Color != "blue" {
		t.Fatalf("create at toys/shiny: %+v, %v", shiny, err)
	}
	if _, err := c.Create(ctx, "toys/shiny", map[string]any{"name": "dull", "shine": 0}); client.StatusCode(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "shine must be between 1 and 10") {
		t.Fatalf("a shiny toy with shine 0: %v, want 400", err)
	}
	if got, err := client.GetAs[ToyVO](ctx, c, "toys", shiny.UUID); err != nil || got.Shine != 9 {
		t.Fatalf("the shiny toy under toys: %+v, %v", got, err)
	}
	if _, err := c.Get(ctx, "toys/red", shiny.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("a blue toy in the red view: %v, want 404", err)
	}
	painted, err := client.CreateAndWait[ToyVO](ctx, c, "toys/"+shiny.UUID+"/colors/red", nil)
	if err != nil || painted.UUID != shiny.UUID || painted.Color != "red" || painted.Shine != 9 {
		t.Fatalf("paint: %+v, %v", painted, err)
	}
	rows, total, err := client.QueryAs[ToyVO](ctx, c, "toys/red", client.Query{ReplyWithCount: true})
	if err != nil || total != 1 || len(rows) != 1 || rows[0].UUID != shiny.UUID {
		t.Fatalf("the red view: %+v (total %d), %v", rows, total, err)
	}
	if _, err := c.Create(ctx, "toys/"+shiny.UUID+"/colors/green", nil); client.StatusCode(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "cannot be green") {
		t.Fatalf("paint green: %v, want 400 from Check", err)
	}
	missing := strings.Repeat("0", 32)
	if _, err := c.Create(ctx, "toys/"+missing+"/colors/red", nil); client.StatusCode(err) != http.StatusNotFound ||
		!strings.Contains(err.Error(), "toy "+missing+" not found") {
		t.Fatalf("paint a missing toy: %v, want 404", err)
	}
}

func TestToyResourceOverREST(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1, ExtraKinds: []resource.Kind{toyKind}})
	c := st.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Create, with the zone reference checked at the edge.
	toy, err := client.CreateAndWait[ToyVO](ctx, c, "toys", map[string]any{"name": "ball", "color": "red", "zoneUuid": st.Defaults["zone"]})
	if err != nil {
		t.Fatal(err)
	}
	if len(toy.UUID) != 32 || toy.Name != "ball" || toy.Color != "red" || toy.CreateDate.IsZero() {
		t.Fatalf("created %+v", toy)
	}
	for _, bad := range []struct {
		params map[string]any
		code   errcode.Code
		detail string
	}{
		{map[string]any{"name": "x", "color": "green"}, errcode.InvalidArgument, "color must be red or blue"},
		{map[string]any{"name": "", "color": "red"}, errcode.InvalidArgument, "name is required"},
		{map[string]any{"name": "x", "color": "red", "size": 3}, errcode.InvalidArgument, "size"},
		{map[string]any{"name": "x", "color": "red", "zoneUuid": "0000000000000000000000000000beef"}, errcode.InvalidArgument, "zoneUuid 0000000000000000000000000000beef does not exist"},
	} {
		_, err := c.Create(ctx, "toys", bad.params)
		if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, bad.code) || !strings.Contains(err.Error(), bad.detail) {
			t.Errorf("create %v: %v, want 400 %s with %q", bad.params, err, bad.code, bad.detail)
		}
	}

	// Query and get, by fields derived from the model's tags.
	rows, total, err := client.QueryAs[ToyVO](ctx, c, "toys", client.Query{Q: []string{"color=red"}, ReplyWithCount: true})
	if err != nil || total != 1 || len(rows) != 1 || rows[0].UUID != toy.UUID {
		t.Fatalf("query color=red: %d rows (total %d), %v", len(rows), total, err)
	}
	if _, _, err := c.Query(ctx, "toys", client.Query{Q: []string{"colour=red"}}); client.StatusCode(err) != http.StatusBadRequest {
		t.Fatalf("query on an unknown field: %v, want 400", err)
	}
	got, err := client.GetAs[ToyVO](ctx, c, "toys", toy.UUID)
	if err != nil || got.Color != "red" {
		t.Fatalf("get: %+v, %v", got, err)
	}

	// The declared action, and the update every kind has.
	polished, err := client.ActionAndWait[ToyVO](ctx, c, "toys", toy.UUID, "polishToy", map[string]any{"times": 7})
	if err != nil || polished.Shine != 7 {
		t.Fatalf("polishToy: %+v, %v", polished, err)
	}
	if _, err := client.ActionAndWait[ToyVO](ctx, c, "toys", toy.UUID, "polishToy", map[string]any{"times": 7}); !errcode.Has(err, errcode.InvalidState) {
		t.Fatalf("polishing past 10: %v, want InvalidState from the owner", err)
	}
	if _, err := c.Action(ctx, "toys", toy.UUID, "polishToy", map[string]any{"times": 0}); client.StatusCode(err) != http.StatusBadRequest {
		t.Fatalf("polishToy times 0: %v, want 400", err)
	}
	if _, err := c.Action(ctx, "toys", toy.UUID, "throwToy", map[string]any{}); client.StatusCode(err) != http.StatusBadRequest {
		t.Fatalf("unknown action: %v, want 400", err)
	}
	if _, err := c.Action(ctx, "toys", strings.Repeat("0", 32), "polishToy", map[string]any{"times": 1}); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("action on a missing toy: %v, want 404", err)
	}
	renamed, err := client.ActionAndWait[ToyVO](ctx, c, "toys", toy.UUID, "updateToy", map[string]any{"name": "shiny ball"})
	if err != nil || renamed.Name != "shiny ball" || renamed.Shine != 7 || !renamed.LastOpDate.After(toy.LastOpDate) {
		t.Fatalf("updateToy: %+v, %v", renamed, err)
	}

	// Delete, twice: the second finds nothing to do.
	for i := 0; i < 2; i++ {
		j, err := c.Delete(ctx, "toys", toy.UUID, client.DeletePermissive)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Wait(ctx, nil); err != nil {
			t.Fatalf("delete #%d: %v", i+1, err)
		}
	}
	if _, err := c.Get(ctx, "toys", toy.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get after delete: %v, want 404", err)
	}
}
