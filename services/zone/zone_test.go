package zone_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/zone"
)

func TestZoneAPI(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	c := st.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	z, err := client.CreateAndWait[zone.ZoneVO](ctx, c, "zones", map[string]any{"name": "z1", "description": "first"})
	if err != nil {
		t.Fatal(err)
	}
	if z.Name != "z1" || z.Description != "first" || z.State != "Enabled" || z.Type != "zstack" || len(z.UUID) != 32 {
		t.Fatalf("created %+v", z)
	}
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail string
	}{
		{"no name", map[string]any{}, "name is required"},
		{"blank name", map[string]any{"name": "  "}, "name is required"},
		{"long name", map[string]any{"name": strings.Repeat("n", 256)}, "at most 255"},
		{"long description", map[string]any{"name": "x", "description": strings.Repeat("d", 2049)}, "description must be at most 2048"},
		{"unknown field", map[string]any{"name": "x", "zoneType": "y"}, "zoneType"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "zones", tc.params)
			if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("%v, want 400 SYS.1007 with %q", err, tc.detail)
			}
		})
	}

	renamed, err := client.ActionAndWait[zone.ZoneVO](ctx, c, "zones", z.UUID, "updateZone", map[string]any{"description": "renamed"})
	if err != nil || renamed.Name != "z1" || renamed.Description != "renamed" {
		t.Fatalf("updateZone: %+v, %v", renamed, err)
	}

	// A zone with a cluster or an L3 network cannot go.
	if _, err := client.CreateAndWait[map[string]any](ctx, c, "clusters", map[string]any{"name": "c", "zoneUuid": z.UUID}); err != nil {
		t.Fatal(err)
	}
	j, err := c.Delete(ctx, "zones", z.UUID, client.DeletePermissive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Wait(ctx, nil); !errcode.Has(err, errcode.InvalidState) || !strings.Contains(err.Error(), "1 clusters") {
		t.Fatalf("delete a zone with a cluster: %v, want InvalidState naming the clusters", err)
	}
	if _, err := client.GetAs[zone.ZoneVO](ctx, c, "zones", z.UUID); err != nil {
		t.Fatalf("the refused delete removed the zone: %v", err)
	}

	empty, err := client.CreateAndWait[zone.ZoneVO](ctx, c, "zones", map[string]any{"name": "z2"})
	if err != nil {
		t.Fatal(err)
	}
	j, err = c.Delete(ctx, "zones", empty.UUID, client.DeleteEnforcing)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Wait(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "zones", empty.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get a deleted zone: %v, want 404", err)
	}
}
