package network

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"gorm.io/gorm/clause"

	"mplane/db"
	"mplane/errcode"
	"mplane/services/resource"
	"mplane/uid"
)

func TestCreateL3NetworkAndInventoryJSON(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l2 := newL2(t, gdb)
			l3, err := CreateL3Network(ctx, gdb, L3Params{Name: "pub", Description: "public", L2NetworkUUID: l2})
			if err != nil {
				t.Fatal(err)
			}
			got, err := GetL3Network(ctx, gdb, l3.UUID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != L3BasicNetwork || got.State != L3StateEnabled || got.Name != "pub" || got.ZoneUUID != "zone1" ||
				got.CreateDate.IsZero() || !got.CreateDate.Equal(l3.CreateDate) || len(got.UUID) != 32 {
				t.Fatalf("read back %+v, created %+v", got, l3)
			}
			if _, err := CreateL3Network(ctx, gdb, L3Params{UUID: l3.UUID, Name: "again", L2NetworkUUID: l2}); !errcode.Has(err, errcode.InvalidArgument) {
				t.Errorf("duplicate uuid: %v, want InvalidArgument", err)
			}
			_, err = GetL3Network(ctx, gdb, "nope")
			wantCode(t, err, errcode.ResourceNotFound)

			r, err := AddIpRange(ctx, gdb, IPRangeParams{L3NetworkUUID: l3.UUID, Name: "r1", NetworkCIDR: "10.0.0.0/24"})
			if err != nil {
				t.Fatal(err)
			}
			data, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"l3NetworkUuid": l3.UUID, "startIp": "10.0.0.2", "endIp": "10.0.0.254",
				"netmask": "255.255.255.0", "gateway": "10.0.0.1", "networkCidr": "10.0.0.0/24", "prefixLen": 24.0, "ipVersion": 4.0}
			for k, v := range want {
				if m[k] != v {
					t.Errorf("inventory %s = %v, want %v (%s)", k, m[k], v, data)
				}
			}
			for _, k := range []string{"uuid", "name", "createDate", "lastOpDate"} {
				if _, ok := m[k]; !ok {
					t.Errorf("inventory lacks %s: %s", k, data)
				}
			}
			if _, ok := m["startIpLong"]; ok {
				t.Errorf("inventory exposes internal columns: %s", data)
			}
		})
	}
}

func TestAddIpRangeDatabaseRules(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l2 := newL2(t, gdb)
			l3, err := CreateL3Network(ctx, gdb, L3Params{Name: "n", L2NetworkUUID: l2})
			if err != nil {
				t.Fatal(err)
			}
			other, err := CreateL3Network(ctx, gdb, L3Params{Name: "other", L2NetworkUUID: l2})
			if err != nil {
				t.Fatal(err)
			}
			add := func(l3UUID, start, end string) (IpRangeVO, error) {
				return AddIpRange(ctx, gdb, IPRangeParams{L3NetworkUUID: l3UUID, Name: start,
					StartIP: start, EndIP: end, Netmask: "255.255.255.0", Gateway: "10.0.0.1"})
			}
			first, err := add(l3.UUID, "10.0.0.10", "10.0.0.100")
			if err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name       string
				do         func() error
				code       errcode.Code // empty: success
				wantDetail string
			}{
				{"overlap at the end", func() error { _, err := add(l3.UUID, "10.0.0.100", "10.0.0.120"); return err },
					errcode.InvalidArgument, "overlaps ip range " + first.UUID},
				{"overlap inside", func() error { _, err := add(l3.UUID, "10.0.0.20", "10.0.0.30"); return err },
					errcode.InvalidArgument, "overlaps"},
				{"overlap around", func() error { _, err := add(l3.UUID, "10.0.0.5", "10.0.0.200"); return err },
					errcode.InvalidArgument, "overlaps"},
				{"adjacent range", func() error { _, err := add(l3.UUID, "10.0.0.101", "10.0.0.120"); return err }, "", ""},
				{"same addresses on another network", func() error { _, err := add(other.UUID, "10.0.0.10", "10.0.0.100"); return err }, "", ""},
				{"different gateway", func() error {
					_, err := AddIpRange(ctx, gdb, IPRangeParams{L3NetworkUUID: l3.UUID, Name: "g",
						StartIP: "10.0.0.200", EndIP: "10.0.0.210", Netmask: "255.255.255.0", Gateway: "10.0.0.254"})
					return err
				}, errcode.InvalidArgument, "must have gateway 10.0.0.1 and netmask 255.255.255.0"},
				{"different netmask", func() error {
					_, err := AddIpRange(ctx, gdb, IPRangeParams{L3NetworkUUID: l3.UUID, Name: "m",
						StartIP: "10.0.0.200", EndIP: "10.0.0.210", Netmask: "255.255.0.0", Gateway: "10.0.0.1"})
					return err
				}, errcode.InvalidArgument, "must have gateway"},
				{"unknown l3", func() error { _, err := add("nope", "10.0.0.10", "10.0.0.20"); return err },
					errcode.ResourceNotFound, "l3 network nope not found"},
				{"duplicate uuid", func() error {
					_, err := AddIpRange(ctx, gdb, IPRangeParams{UUID: first.UUID, L3NetworkUUID: other.UUID, Name: "d",
						StartIP: "10.0.0.150", EndIP: "10.0.0.160", Netmask: "255.255.255.0", Gateway: "10.0.0.1"})
					return err
				}, errcode.InvalidArgument, "already exists"},
				{"invalid params never reach the database", func() error { _, err := add(l3.UUID, "10.0.0.50", "10.0.0.40"); return err },
					errcode.InvalidArgument, "is after"},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					err := tc.do()
					if tc.code == "" {
						if err != nil {
							t.Fatalf("want success: %v", err)
						}
						return
					}
					wantCode(t, err, tc.code)
					if !strings.Contains(err.Error(), tc.wantDetail) {
						t.Errorf("error %q, want it to contain %q", err, tc.wantDetail)
					}
				})
			}
			ranges, err := ListIpRanges(ctx, gdb, l3.UUID)
			if err != nil {
				t.Fatal(err)
			}
			if len(ranges) != 2 || ranges[0].StartIP != "10.0.0.10" || ranges[1].StartIP != "10.0.0.101" {
				t.Errorf("ranges of l3: %+v", ranges)
			}
		})
	}
}

func TestDeleteL3NetworkWithUsedIPs(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, r := newL3(t, gdb, "10.0.0.0/29")
			u, err := AllocateIP(ctx, gdb, l3.UUID, "nic1", AllocateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantCode(t, DeleteL3Network(ctx, gdb, l3.UUID), errcode.InvalidState)
			wantCode(t, DeleteIpRange(ctx, gdb, r.UUID), errcode.InvalidState)
			if _, err := GetL3Network(ctx, gdb, l3.UUID); err != nil {
				t.Fatalf("network gone after a refused delete: %v", err)
			}
			if err := ReleaseIP(ctx, gdb, u.UUID); err != nil {
				t.Fatal(err)
			}
			if err := DeleteL3Network(ctx, gdb, l3.UUID); err != nil {
				t.Fatalf("delete after release: %v", err)
			}
			_, err = GetL3Network(ctx, gdb, l3.UUID)
			wantCode(t, err, errcode.ResourceNotFound)
			if rs, err := ListIpRanges(ctx, gdb, l3.UUID); err != nil || len(rs) != 0 {
				t.Errorf("ranges left: %v %v", rs, err)
			}
			if err := DeleteL3Network(ctx, gdb, l3.UUID); err != nil {
				t.Errorf("second delete: %v, want success", err)
			}
			_, err = AllocateIP(ctx, gdb, l3.UUID, "nic1", AllocateOptions{})
			wantCode(t, err, errcode.ResourceNotFound)
		})
	}
}

func TestDeleteIpRange(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, r := newL3(t, gdb, "10.0.0.0/29")
			if err := DeleteIpRange(ctx, gdb, r.UUID); err != nil {
				t.Fatal(err)
			}
			if err := DeleteIpRange(ctx, gdb, r.UUID); err != nil {
				t.Errorf("second delete: %v", err)
			}
			_, err := AllocateIP(ctx, gdb, l3.UUID, "nic1", AllocateOptions{})
			wantCode(t, err, errcode.CapacityExhausted)
		})
	}
}

// TestMigrateAddsTheL2Key: a database whose l3_networks was made before
// its foreign key to l2_networks (with networks, ranges and used IPs
// referring to it) gets the key, its rows intact.
func TestMigrateAddsTheL2Key(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb, err := db.Open(ctx, b.DSN(t), db.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close(gdb) })
			// The tables as they were: l3_networks without the key (one
			// model at a time, as the kinds migrate).
			for _, m := range []any{&l2Schema{}, &vniRangeSchema{}, &l2RefSchema{}, &L3NetworkVO{}, &ipRangeSchema{}, &usedIPSchema{}} {
				if err := gdb.AutoMigrate(m); err != nil {
					t.Fatal(err)
				}
			}
			if gdb.Migrator().HasConstraint(&l3Schema{}, "L2Network") {
				t.Fatal("the old table has the key already")
			}
			l2 := newL2(t, gdb)
			l3, r := newL3(t, gdb, "10.9.0.0/24")
			if _, err := AllocateIP(ctx, gdb, l3.UUID, "nic1", AllocateOptions{}); err != nil {
				t.Fatal(err)
			}
			// A row on a missing L2 network stops the migration, named.
			missing := uid.New()
			orphan := L3NetworkVO{Base: resource.NewBase(uid.New(), "orphan", ""), ZoneUUID: "zone1", L2NetworkUUID: &missing,
				Type: L3BasicNetwork, State: L3StateEnabled, Category: L3CategoryPrivate, IPVersion: IPv4}
			if err := gdb.Omit(clause.Associations).Create(&orphan).Error; err != nil {
				t.Fatal(err)
			}
			if err := Migrate(ctx, gdb); err == nil || !strings.Contains(err.Error(), "1 l3 network(s) name an l2 network that does not exist, e.g. "+orphan.UUID) {
				t.Fatalf("Migrate with an orphan: %v", err)
			}
			if err := gdb.Delete(&L3NetworkVO{}, "uuid = ?", orphan.UUID).Error; err != nil {
				t.Fatal(err)
			}
			if err := Migrate(ctx, gdb); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			if !gdb.Migrator().HasConstraint(&l3Schema{}, "L2Network") {
				t.Fatal("no foreign key to l2_networks after Migrate")
			}
			got, err := GetL3Network(ctx, gdb, l3.UUID)
			if err != nil || len(got.IPRanges) != 1 || got.IPRanges[0].UUID != r.UUID || got.Category != L3CategoryPrivate || got.IPVersion != IPv4 {
				t.Fatalf("the network after Migrate: %+v, %v", got, err)
			}
			if c := capacity(t, gdb, l3.UUID); c.Used != 1 {
				t.Fatalf("used IPs after Migrate: %+v", c)
			}
			if err := gdb.Exec("DELETE FROM l2_networks WHERE uuid = ?", *l3.L2NetworkUUID).Error; err == nil {
				t.Fatal("an l2 network with an l3 network was deleted")
			}
			if err := gdb.Exec("DELETE FROM l2_networks WHERE uuid = ?", l2).Error; err != nil {
				t.Fatalf("an l2 network without l3 networks: %v", err)
			}
			if err := Migrate(ctx, gdb); err != nil {
				t.Fatalf("Migrate again: %v", err)
			}
		})
	}
}
