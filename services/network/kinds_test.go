package network

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/db"
	"mplane/errcode"
	"mplane/services/resource"
	"mplane/services/zone"
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
			if err := gdb.Create(&zone.ZoneVO{Base: resource.NewBase(strings.Repeat("a", 32), "z", ""), State: "Enabled", Type: "zstack"}).Error; err != nil {
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
