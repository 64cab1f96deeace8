package network

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"mplane/errcode"
)

func TestCreateL3NetworkAndInventoryJSON(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, err := CreateL3Network(ctx, gdb, L3Params{Name: "pub", Description: "public", ZoneUUID: "zone1"})
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
			if _, err := CreateL3Network(ctx, gdb, L3Params{UUID: l3.UUID, Name: "again", ZoneUUID: "zone1"}); !errcode.Has(err, errcode.InvalidArgument) {
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
			l3, err := CreateL3Network(ctx, gdb, L3Params{Name: "n", ZoneUUID: "z"})
			if err != nil {
				t.Fatal(err)
			}
			other, err := CreateL3Network(ctx, gdb, L3Params{Name: "other", ZoneUUID: "z"})
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
