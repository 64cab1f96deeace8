package diskoffering_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/diskoffering"
)

func TestDiskOfferingAPI(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	c := st.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	d, err := client.CreateAndWait[diskoffering.DiskOfferingVO](ctx, c, "disk-offerings", map[string]any{"name": "10G", "diskSize": 10 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if d.DiskSize != 10<<30 || d.State != "Enabled" || d.Name != "10G" {
		t.Fatalf("created %+v", d)
	}
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail string
	}{
		{"no size", map[string]any{"name": "x"}, "diskSize must be between"},
		{"negative size", map[string]any{"name": "x", "diskSize": -1}, "got -1"},
		{"too large", map[string]any{"name": "x", "diskSize": int64(65) << 40}, "64 TiB"},
		{"no name", map[string]any{"diskSize": 1 << 30}, "name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "disk-offerings", tc.params)
			if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("%v, want 400 SYS.1007 with %q", err, tc.detail)
			}
		})
	}
	rows, _, err := client.QueryAs[diskoffering.DiskOfferingVO](ctx, c, "disk-offerings", client.Query{Q: []string{"diskSize>" + "1073741824"}})
	if err != nil || len(rows) != 1 || rows[0].UUID != d.UUID {
		t.Fatalf("query diskSize>1G: %d rows, %v", len(rows), err)
	}
	j, err := c.Delete(ctx, "disk-offerings", d.UUID, client.DeletePermissive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Wait(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "disk-offerings", d.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get a deleted disk offering: %v, want 404", err)
	}
}
