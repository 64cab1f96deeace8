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
	"mplane/services/cluster"
	"mplane/services/resource"
	"mplane/services/zone"
	"mplane/uid"
)

// openWired opens dsn and migrates as cmd/mplane does: the resource kinds
// first (zone, cluster, then the network kinds), then Migrate.
func openWired(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	kinds := append([]resource.Kind{zone.Kind, cluster.Kind}, NewL2Kinds(nil).All()...)
	if err := resource.Migrate(ctx, gdb, append(kinds, L3Kind, IPRangeKind)); err != nil {
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
			ctx := context.Background()
			l3, _ := newL3(t, gdb, "10.0.0.0/24")
			// The foreign keys exist: the row cannot go while it has a
			// range, nor its L2 network while it has the L3 network.
			// (SQLite reports a parent-side violation with a code GORM does
			// not translate; MySQL's is translated.)
			err := gdb.Exec("DELETE FROM l3_networks WHERE uuid = ?", l3.UUID).Error
			if err == nil || (db.Dialect(gdb) == "mysql" && !errors.Is(err, gorm.ErrForeignKeyViolated)) {
				t.Fatalf("raw delete of an l3 network with a range: %v, want a foreign key violation", err)
			}
			err = gdb.Exec("DELETE FROM l2_networks WHERE uuid = ?", *l3.L2NetworkUUID).Error
			if err == nil || (db.Dialect(gdb) == "mysql" && !errors.Is(err, gorm.ErrForeignKeyViolated)) {
				t.Fatalf("raw delete of an l2 network with an l3 network: %v, want a foreign key violation", err)
			}
			missing := uid.New()
			err = gdb.Create(&L3NetworkVO{Base: resource.NewBase(uid.New(), "dangling", ""), ZoneUUID: "zone1", L2NetworkUUID: &missing,
				Type: L3BasicNetwork, State: L3StateEnabled, Category: L3CategoryPrivate, IPVersion: IPv4}).Error
			if !errors.Is(err, gorm.ErrForeignKeyViolated) {
				t.Fatalf("an l3 network on a missing l2 network: %v, want a foreign key violation", err)
			}
			// The DNS servers go with their L3 network.
			if err := gdb.Create(&L3NetworkDNSVO{L3NetworkUUID: l3.UUID, DNS: "8.8.8.8", CreateDate: now()}).Error; err != nil {
				t.Fatal(err)
			}
			if _, err := GetL3Network(ctx, gdb, l3.UUID); err != nil {
				t.Fatalf("l3 network gone: %v", err)
			}
			if err := gdb.Exec("DELETE FROM ip_ranges WHERE l3_network_uuid = ?", l3.UUID).Error; err != nil {
				t.Fatal(err)
			}
			if err := gdb.Exec("DELETE FROM l3_networks WHERE uuid = ?", l3.UUID).Error; err != nil {
				t.Fatalf("delete of an l3 network with dns: %v", err)
			}
			var dns int64
			if err := gdb.Model(&L3NetworkDNSVO{}).Where("l3_network_uuid = ?", l3.UUID).Count(&dns).Error; err != nil || dns != 0 {
				t.Fatalf("%d dns rows left (%v) after their l3 network's delete", dns, err)
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
			l2 := *l3.L2NetworkUUID
			tests := []struct {
				name   string
				check  func() error
				code   errcode.Code // empty: valid
				detail string
			}{
				{"l3 on an existing l2", L3Params{Name: "n", L2NetworkUUID: l2}.checker(ctx, gdb), "", ""},
				{"l3 on an existing l2 in its zone", L3Params{Name: "n", L2NetworkUUID: l2, ZoneUUID: "zone1"}.checker(ctx, gdb), "", ""},
				{"l3 on a missing l2", L3Params{Name: "n", L2NetworkUUID: "nol2"}.checker(ctx, gdb), errcode.InvalidArgument, "l2NetworkUuid nol2 does not exist"},
				{"l3 in another zone than its l2", L3Params{Name: "n", L2NetworkUUID: l2, ZoneUUID: strings.Repeat("a", 32)}.checker(ctx, gdb),
					errcode.InvalidArgument, "is not the zone zone1 of l2 network " + l2},
				{"l3 without an l2", L3Params{Name: "n", ZoneUUID: "zone1"}.checker(ctx, gdb), errcode.InvalidArgument, "l2NetworkUuid is required"},
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
			other, err := CreateL3Network(ctx, gdb, L3Params{Name: "o", L2NetworkUUID: l2})
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
