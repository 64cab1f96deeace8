package network

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/db"
	"mplane/errcode"
	"mplane/services/resource"
	"mplane/services/zone"
	"mplane/uid"
)

// openWired opens dsn and migrates as cmd/mplane does: the resource kinds
// first (zone, then the network kinds), then Migrate.
func openWired(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	if err := resource.Migrate(ctx, gdb, []resource.Kind{zone.Kind, L3Kind, IPRangeKind}); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, gdb); err != nil {
		t.Fatal(err)
	}
	return gdb
}

func TestMigrateAfterResourceKinds(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			gdb := openWired(t, b.DSN(t))
			l3, _ := newL3(t, gdb, "10.0.0.0/24")
			// The foreign key exists: the row cannot go while it has a range.
			// (SQLite reports a parent-side violation with a code GORM does
			// not translate; MySQL's is translated.)
			err := gdb.Exec("DELETE FROM l3_networks WHERE uuid = ?", l3.UUID).Error
			if err == nil || (db.Dialect(gdb) == "mysql" && !errors.Is(err, gorm.ErrForeignKeyViolated)) {
				t.Fatalf("raw delete of an l3 network with a range: %v, want a foreign key violation", err)
			}
			if _, err := GetL3Network(context.Background(), gdb, l3.UUID); err != nil {
				t.Fatalf("l3 network gone: %v", err)
			}
		})
	}
}

func TestParamsCheck(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openWired(t, b.DSN(t))
			if err := gdb.Create(&zone.ZoneVO{UUID: strings.Repeat("a", 32), Name: "z", State: "Enabled", Type: "zstack",
				CreateDate: time.Now().UTC(), LastOpDate: time.Now().UTC()}).Error; err != nil {
				t.Fatal(err)
			}
			l3, r := newL3(t, gdb, "10.0.0.0/24")
			tests := []struct {
				name   string
				check  func() error
				code   errcode.Code // empty: valid
				detail string
			}{
				{"l3 in an existing zone", L3Params{Name: "n", ZoneUUID: strings.Repeat("a", 32)}.checker(ctx, gdb), "", ""},
				{"l3 in a missing zone", L3Params{Name: "n", ZoneUUID: "nozone"}.checker(ctx, gdb), errcode.InvalidArgument, "zoneUuid nozone does not exist"},
				{"l3 without name", L3Params{ZoneUUID: strings.Repeat("a", 32)}.checker(ctx, gdb), errcode.InvalidArgument, "name is required"},
				{"range with another gateway", IPRangeParams{L3NetworkUUID: l3.UUID, NetworkCIDR: "10.0.0.0/24"}.checkerOn(ctx, gdb, "10.1.0.0/24"),
					errcode.InvalidArgument, "must have gateway 10.0.0.1"},
				{"overlapping range", IPRangeParams{L3NetworkUUID: l3.UUID, NetworkCIDR: "10.0.0.0/24"}.checker(ctx, gdb),
					errcode.InvalidArgument, "overlaps ip range " + r.UUID},
				{"range of a missing network", IPRangeParams{L3NetworkUUID: "nope", NetworkCIDR: "10.0.0.0/24"}.checker(ctx, gdb),
					errcode.ResourceNotFound, "l3 network nope not found"},
				{"invalid range", IPRangeParams{L3NetworkUUID: l3.UUID, NetworkCIDR: "10.0.0.0/33"}.checker(ctx, gdb),
					errcode.InvalidArgument, "networkCidr"},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					err := tc.check()
					if tc.code == "" {
						if err != nil {
							t.Fatalf("Check: %v", err)
						}
						return
					}
					wantCode(t, err, tc.code)
					if !strings.Contains(err.Error(), tc.detail) {
						t.Errorf("error %q, want it to contain %q", err, tc.detail)
					}
				})
			}
			if rs, err := ListIpRanges(ctx, gdb, l3.UUID); err != nil || len(rs) != 1 {
				t.Errorf("Check changed the ranges: %d ranges, %v", len(rs), err)
			}
			// Another network's different subnet fits: only its own ranges count.
			other, err := CreateL3Network(ctx, gdb, L3Params{Name: "o", ZoneUUID: "z"})
			if err != nil {
				t.Fatal(err)
			}
			if err := (IPRangeParams{L3NetworkUUID: other.UUID, NetworkCIDR: "10.0.0.0/24"}).Check(ctx, gdb); err != nil {
				t.Errorf("same subnet on another network: %v", err)
			}
		})
	}
}

func (p L3Params) checker(ctx context.Context, gdb *gorm.DB) func() error {
	return func() error { return p.Check(ctx, gdb) }
}

func (p IPRangeParams) checker(ctx context.Context, gdb *gorm.DB) func() error {
	return func() error { return p.Check(ctx, gdb) }
}

// checkerOn checks p with its CIDR replaced.
func (p IPRangeParams) checkerOn(ctx context.Context, gdb *gorm.DB, cidr string) func() error {
	p.NetworkCIDR = cidr
	return p.checker(ctx, gdb)
}

func TestKindsCreateIdempotentAndDelete(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openWired(t, b.DSN(t))
			l3UUID, rangeUUID := uid.New(), uid.New()
			l3Params, _ := json.Marshal(L3Params{Name: "pub", ZoneUUID: "z1"})
			rangeParams, _ := json.Marshal(IPRangeParams{L3NetworkUUID: l3UUID, StartIP: "10.0.0.10", EndIP: "10.0.0.20",
				Netmask: "255.255.255.0", Gateway: "10.0.0.1"})

			var first [2]any
			for i := range 2 { // the second time is a redelivered create
				inv, err := L3Kind.Create(ctx, gdb, l3UUID, l3Params)
				if err != nil {
					t.Fatalf("L3Kind.Create #%d: %v", i+1, err)
				}
				l3, ok := inv.(L3NetworkVO)
				if !ok || l3.UUID != l3UUID || l3.Name != "pub" || l3.State != L3StateEnabled {
					t.Fatalf("L3Kind.Create #%d = %#v", i+1, inv)
				}
				rinv, err := IPRangeKind.Create(ctx, gdb, rangeUUID, rangeParams)
				if err != nil {
					t.Fatalf("IPRangeKind.Create #%d: %v", i+1, err)
				}
				r, ok := rinv.(IpRangeVO)
				if !ok || r.UUID != rangeUUID || r.Name != "10.0.0.10-10.0.0.20" || r.L3NetworkUUID != l3UUID {
					t.Fatalf("IPRangeKind.Create #%d = %#v", i+1, rinv)
				}
				if i == 0 {
					first = [2]any{l3.CreateDate, r.CreateDate}
				} else if !l3.CreateDate.Equal(first[0].(time.Time)) || !r.CreateDate.Equal(first[1].(time.Time)) {
					t.Errorf("redelivered create made new rows: %v %v, first %v", l3.CreateDate, r.CreateDate, first)
				}
			}
			if _, err := IPRangeKind.Create(ctx, gdb, uid.New(), []byte(`{"l3NetworkUuid":`)); !errcode.Has(err, errcode.InvalidArgument) {
				t.Errorf("malformed params: %v, want InvalidArgument", err)
			}
			if c := capacity(t, gdb, l3UUID); c.Total != 11 {
				t.Errorf("capacity %+v, want 11 addresses", c)
			}

			u, err := AllocateIP(ctx, gdb, l3UUID, "nic", AllocateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantCode(t, IPRangeKind.Delete(ctx, gdb, rangeUUID), errcode.InvalidState)
			wantCode(t, L3Kind.Delete(ctx, gdb, l3UUID), errcode.InvalidState)
			if err := ReleaseIP(ctx, gdb, u.UUID); err != nil {
				t.Fatal(err)
			}
			if err := IPRangeKind.Delete(ctx, gdb, rangeUUID); err != nil {
				t.Fatalf("delete range: %v", err)
			}
			if err := L3Kind.Delete(ctx, gdb, l3UUID); err != nil {
				t.Fatalf("delete l3: %v", err)
			}
			if err := L3Kind.Delete(ctx, gdb, l3UUID); err != nil {
				t.Errorf("second delete: %v", err)
			}
		})
	}
}
