package offering_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/offering"
)

func TestOfferingAPI(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	c := st.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	o, err := client.CreateAndWait[offering.InstanceOfferingVO](ctx, c, "instance-offerings",
		map[string]any{"name": "big", "cpuNum": 8, "memorySize": 16 << 30, "cpuSpeed": 2000})
	if err != nil {
		t.Fatal(err)
	}
	if o.CPUNum != 8 || o.MemorySize != 16<<30 || o.CPUSpeed != 2000 || o.Type != "UserVm" || o.State != "Enabled" {
		t.Fatalf("created %+v", o)
	}
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail string
	}{
		{"no cpu", map[string]any{"name": "x", "memorySize": 1 << 30}, "cpuNum must be between 1 and 1024"},
		{"too many cpus", map[string]any{"name": "x", "cpuNum": 1025, "memorySize": 1 << 30}, "cpuNum must be between 1 and 1024"},
		{"little memory", map[string]any{"name": "x", "cpuNum": 1, "memorySize": 1 << 20}, "memorySize must be from 16777216 bytes (16 MiB) to 70368744177664 bytes (64 TiB), got 1048576"},
		{"int64-max memory", map[string]any{"name": "x", "cpuNum": 1, "memorySize": int64(1<<63 - 1)}, "memorySize must be from 16777216 bytes (16 MiB)"},
		{"negative speed", map[string]any{"name": "x", "cpuNum": 1, "memorySize": 1 << 30, "cpuSpeed": -1}, "cpuSpeed must not be negative"},
		{"no name", map[string]any{"cpuNum": 1, "memorySize": 1 << 30}, "name is required"},
		{"memory as text", map[string]any{"name": "x", "cpuNum": 1, "memorySize": "1G"}, "memorySize must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "instance-offerings", tc.params)
			if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("%v, want 400 SYS.1007 with %q", err, tc.detail)
			}
		})
	}
	rows, _, err := client.QueryAs[offering.InstanceOfferingVO](ctx, c, "instance-offerings", client.Query{Q: []string{"cpuNum>=4"}})
	if err != nil || len(rows) != 1 || rows[0].UUID != o.UUID {
		t.Fatalf("query cpuNum>=4: %d rows, %v", len(rows), err)
	}
	j, err := c.Delete(ctx, "instance-offerings", o.UUID, client.DeletePermissive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Wait(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "instance-offerings", o.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Fatalf("get a deleted offering: %v, want 404", err)
	}
}
