package network

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/db"
	"mplane/errcode"
)

// TestAllocateConcurrentNodes: 4 *gorm.DB handles stand for 4 management
// nodes allocating on one /24 at once. No address may be handed out twice
// nor fall outside the range, and when the network fills the losers get
// CapacityExhausted.
func TestAllocateConcurrentNodes(t *testing.T) {
	const (
		nodes       = 4
		firstWave   = 200 // allocations, spread over the nodes
		secondWave  = 80  // more than the 53 addresses left
		allocatable = 253 // 10.0.0.2 - 10.0.0.254
	)
	for _, b := range backends {
		for _, strategy := range []Strategy{LowestFirst, Random} {
			t.Run(b.Name+"/"+string(strategy), func(t *testing.T) {
				ctx := context.Background()
				dsn := b.DSN(t)
				l3, r := newL3(t, openDB(t, dsn), "10.0.0.0/24")
				handles := make([]*gorm.DB, nodes)
				for i := range handles {
					handles[i] = openDB(t, dsn)
				}

				type result struct {
					owner string
					used  UsedIpVO
					err   error
				}
				wave := func(name string, n int) []result {
					results := make([]result, n)
					var wg sync.WaitGroup
					for i := range n {
						wg.Go(func() {
							owner := fmt.Sprintf("%s-nic-%03d", name, i)
							u, err := AllocateIP(ctx, handles[i%nodes], l3.UUID, owner, AllocateOptions{Strategy: strategy})
							results[i] = result{owner, u, err}
						})
					}
					wg.Wait()
					return results
				}

				seen := make(map[int64]string)
				check := func(res result) {
					t.Helper()
					u := res.used
					if u.IPInLong < r.StartIPLong || u.IPInLong > r.EndIPLong {
						t.Errorf("%s got %s, outside the range %s-%s", res.owner, u.IP, r.StartIP, r.EndIP)
					}
					if u.IP != formatIPv4(uint32(u.IPInLong)) || u.Gateway != "10.0.0.1" || u.Netmask != "255.255.255.0" ||
						u.VMNicUUID != res.owner || u.L3NetworkUUID != l3.UUID || u.IPRangeUUID != r.UUID {
						t.Errorf("used ip row %+v for %s", u, res.owner)
					}
					if prev, dup := seen[u.IPInLong]; dup {
						t.Errorf("%s handed out twice: to %s and %s", u.IP, prev, res.owner)
					}
					seen[u.IPInLong] = res.owner
				}

				for _, res := range wave("a", firstWave) {
					if res.err != nil {
						t.Fatalf("%s: %v", res.owner, res.err)
					}
					check(res)
				}
				if c := capacity(t, handles[0], l3.UUID); c != (IPCapacity{Total: allocatable, Used: firstWave, Available: allocatable - firstWave}) {
					t.Fatalf("capacity after the first wave %+v", c)
				}

				exhausted := 0
				for _, res := range wave("b", secondWave) {
					switch {
					case res.err == nil:
						check(res)
					case errcode.CodeOf(res.err) == errcode.CapacityExhausted:
						exhausted++
						if !strings.Contains(res.err.Error(), l3.UUID) {
							t.Errorf("exhaustion error does not name the network: %v", res.err)
						}
					default:
						t.Errorf("%s: %v", res.owner, res.err)
					}
				}
				if len(seen) != allocatable || exhausted != firstWave+secondWave-allocatable {
					t.Fatalf("%d addresses allocated, %d exhausted; want %d and %d", len(seen), exhausted, allocatable, firstWave+secondWave-allocatable)
				}

				// The database agrees with what the callers were told.
				var rows []UsedIpVO
				if err := handles[1].Where("l3_network_uuid = ?", l3.UUID).Find(&rows).Error; err != nil {
					t.Fatal(err)
				}
				if len(rows) != allocatable {
					t.Fatalf("%d used_ips rows, want %d", len(rows), allocatable)
				}
				for _, row := range rows {
					if seen[row.IPInLong] != row.VMNicUUID {
						t.Errorf("row %s owned by %s, but %q was told it has it", row.IP, row.VMNicUUID, seen[row.IPInLong])
					}
				}
				if c := capacity(t, handles[2], l3.UUID); c.Available != 0 || c.Used != allocatable {
					t.Errorf("capacity when full %+v", c)
				}
			})
		}
	}
}

// TestLowestFreeIP checks the gap search: with some addresses of a range
// taken, the lowest free one is allocated.
func TestLowestFreeIP(t *testing.T) {
	// Range of 10.0.0.0/28: 10.0.0.2 - 10.0.0.14.
	tests := []struct {
		name string
		used []string
		want string // empty: CapacityExhausted
	}{
		{"empty range", nil, "10.0.0.2"},
		{"first taken", []string{"10.0.0.2"}, "10.0.0.3"},
		{"gap after a run", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6"}, "10.0.0.5"},
		{"first free, others taken", []string{"10.0.0.3", "10.0.0.4"}, "10.0.0.2"},
		{"only the last free", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7",
			"10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13"}, "10.0.0.14"},
		{"full", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7",
			"10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"}, ""},
	}
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					l3, _ := newL3(t, gdb, "10.0.0.0/28")
					for _, ip := range tc.used {
						if _, err := AllocateSpecificIP(ctx, gdb, l3.UUID, "pre", ip); err != nil {
							t.Fatalf("AllocateSpecificIP(%s): %v", ip, err)
						}
					}
					u, err := AllocateIP(ctx, gdb, l3.UUID, "nic", AllocateOptions{})
					if tc.want == "" {
						wantCode(t, err, errcode.CapacityExhausted)
						return
					}
					if err != nil || u.IP != tc.want {
						t.Fatalf("AllocateIP = %s, %v; want %s", u.IP, err, tc.want)
					}
				})
			}
		})
	}
}

func TestAllocateAcrossRanges(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, err := CreateL3Network(ctx, gdb, L3Params{Name: "n", L2NetworkUUID: newL2(t, gdb)})
			if err != nil {
				t.Fatal(err)
			}
			add := func(start, end string) IpRangeVO {
				r, err := AddIpRange(ctx, gdb, IPRangeParams{L3NetworkUUID: l3.UUID, Name: start,
					StartIP: start, EndIP: end, Netmask: "255.255.255.0", Gateway: "192.168.0.1"})
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			// Added high first: allocation still goes lowest range first.
			high := add("192.168.0.100", "192.168.0.101")
			low := add("192.168.0.10", "192.168.0.11")

			u, err := AllocateIP(ctx, gdb, l3.UUID, "x", AllocateOptions{IpRangeUUID: high.UUID})
			if err != nil || u.IP != "192.168.0.100" || u.IPRangeUUID != high.UUID {
				t.Fatalf("allocation restricted to the high range: %+v, %v", u, err)
			}
			var got []string
			for i := range 3 {
				u, err := AllocateIP(ctx, gdb, l3.UUID, fmt.Sprint("nic", i), AllocateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, u.IP)
			}
			if want := []string{"192.168.0.10", "192.168.0.11", "192.168.0.101"}; !slices.Equal(got, want) {
				t.Errorf("allocated %q, want %q", got, want)
			}
			_, err = AllocateIP(ctx, gdb, l3.UUID, "y", AllocateOptions{IpRangeUUID: low.UUID})
			wantCode(t, err, errcode.CapacityExhausted)
			_, err = AllocateIP(ctx, gdb, l3.UUID, "y", AllocateOptions{Strategy: Random})
			wantCode(t, err, errcode.CapacityExhausted)
			if c := capacity(t, gdb, l3.UUID); c != (IPCapacity{Total: 4, Used: 4, Available: 0}) {
				t.Errorf("capacity %+v", c)
			}
		})
	}
}

func TestRandomStrategyCoversTheRange(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, r := newL3(t, gdb, "10.9.0.0/28") // 13 addresses
			seen := make(map[string]bool)
			for i := range r.Size() {
				u, err := AllocateIP(ctx, gdb, l3.UUID, fmt.Sprint("nic", i), AllocateOptions{Strategy: Random})
				if err != nil {
					t.Fatalf("allocation %d: %v", i, err)
				}
				if seen[u.IP] || u.IPInLong < r.StartIPLong || u.IPInLong > r.EndIPLong {
					t.Fatalf("allocation %d got %s (seen before: %v)", i, u.IP, seen[u.IP])
				}
				seen[u.IP] = true
			}
			_, err := AllocateIP(ctx, gdb, l3.UUID, "one-more", AllocateOptions{Strategy: Random})
			wantCode(t, err, errcode.CapacityExhausted)
		})
	}
}

func TestReleaseMakesIPAllocatableAgain(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, _ := newL3(t, gdb, "10.0.0.0/29") // 10.0.0.2 - 10.0.0.6
			var used []UsedIpVO
			for i := range 5 {
				u, err := AllocateIP(ctx, gdb, l3.UUID, fmt.Sprint("nic", i), AllocateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				used = append(used, u)
			}
			_, err := AllocateIP(ctx, gdb, l3.UUID, "late", AllocateOptions{})
			wantCode(t, err, errcode.CapacityExhausted)

			if err := ReleaseIP(ctx, gdb, used[2].UUID); err != nil {
				t.Fatal(err)
			}
			if err := ReleaseIP(ctx, gdb, used[2].UUID); err != nil {
				t.Errorf("second release: %v, want success", err)
			}
			u, err := AllocateIP(ctx, gdb, l3.UUID, "late", AllocateOptions{})
			if err != nil || u.IP != used[2].IP {
				t.Fatalf("after releasing %s, AllocateIP = %s, %v", used[2].IP, u.IP, err)
			}

			// By owner: every address of the owner, then nothing.
			if _, err := AllocateSpecificIP(ctx, gdb, l3.UUID, "x", "10.0.0.2"); !errcode.Has(err, errcode.InvalidState) {
				t.Fatalf("taking a used address: %v, want InvalidState", err)
			}
			n, err := ReleaseByOwner(ctx, gdb, "nic0")
			if err != nil || n != 1 {
				t.Fatalf("ReleaseByOwner = %d, %v; want 1", n, err)
			}
			if n, err := ReleaseByOwner(ctx, gdb, "nic0"); err != nil || n != 0 {
				t.Fatalf("second ReleaseByOwner = %d, %v; want 0", n, err)
			}
			if _, err := ReleaseByOwner(ctx, gdb, ""); !errcode.Has(err, errcode.InvalidArgument) {
				t.Errorf("ReleaseByOwner without owner: %v, want InvalidArgument", err)
			}
			u, err = AllocateSpecificIP(ctx, gdb, l3.UUID, "x", "10.0.0.2")
			if err != nil || u.IP != "10.0.0.2" || u.VMNicUUID != "x" {
				t.Fatalf("AllocateSpecificIP of the released 10.0.0.2: %+v, %v", u, err)
			}
		})
	}
}

func TestCapacityBackToStartAfterAllocateAndRelease(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, _ := newL3(t, gdb, "172.16.0.0/24")
			start := capacity(t, gdb, l3.UUID)
			if start != (IPCapacity{Total: 253, Used: 0, Available: 253}) {
				t.Fatalf("start capacity %+v", start)
			}
			var uuids []string
			for i := range 10 {
				u, err := AllocateIP(ctx, gdb, l3.UUID, fmt.Sprint("nic", i), AllocateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				uuids = append(uuids, u.UUID)
			}
			for i, ip := range []string{"172.16.0.100", "172.16.0.254"} {
				if _, err := AllocateSpecificIP(ctx, gdb, l3.UUID, "vm-static", ip); err != nil {
					t.Fatalf("static %d: %v", i, err)
				}
			}
			if c := capacity(t, gdb, l3.UUID); c != (IPCapacity{Total: 253, Used: 12, Available: 241}) {
				t.Fatalf("capacity in use %+v", c)
			}
			for _, id := range uuids {
				if err := ReleaseIP(ctx, gdb, id); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := ReleaseByOwner(ctx, gdb, "vm-static"); err != nil || n != 2 {
				t.Fatalf("ReleaseByOwner = %d, %v", n, err)
			}
			if c := capacity(t, gdb, l3.UUID); c != start {
				t.Errorf("capacity after release %+v, want %+v", c, start)
			}
			_, err := Capacity(ctx, gdb, "nope")
			wantCode(t, err, errcode.ResourceNotFound)
		})
	}
}

func TestAllocateErrors(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, _ := newL3(t, gdb, "10.0.0.0/24")
			disabled, _ := newL3(t, gdb, "10.0.1.0/24")
			if err := gdb.Model(&L3NetworkVO{}).Where("uuid = ?", disabled.UUID).Update("state", L3StateDisabled).Error; err != nil {
				t.Fatal(err)
			}
			bare, err := CreateL3Network(ctx, gdb, L3Params{Name: "bare", L2NetworkUUID: newL2(t, gdb)})
			if err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name   string
				do     func() error
				code   errcode.Code
				detail string
			}{
				{"unknown network", func() error { _, err := AllocateIP(ctx, gdb, "nope", "nic", AllocateOptions{}); return err },
					errcode.ResourceNotFound, "l3 network nope not found"},
				{"disabled network", func() error { _, err := AllocateIP(ctx, gdb, disabled.UUID, "nic", AllocateOptions{}); return err },
					errcode.InvalidState, "is Disabled"},
				{"network without range", func() error { _, err := AllocateIP(ctx, gdb, bare.UUID, "nic", AllocateOptions{}); return err },
					errcode.CapacityExhausted, "has no ip range"},
				{"no owner", func() error { _, err := AllocateIP(ctx, gdb, l3.UUID, "", AllocateOptions{}); return err },
					errcode.InvalidArgument, "owner uuid"},
				{"unknown strategy", func() error {
					_, err := AllocateIP(ctx, gdb, l3.UUID, "nic", AllocateOptions{Strategy: "Best"})
					return err
				}, errcode.InvalidArgument, `strategy "Best"`},
				{"unknown range", func() error {
					_, err := AllocateIP(ctx, gdb, l3.UUID, "nic", AllocateOptions{IpRangeUUID: "nope"})
					return err
				}, errcode.ResourceNotFound, "ip range nope"},
				{"specific: the gateway", func() error { _, err := AllocateSpecificIP(ctx, gdb, l3.UUID, "nic", "10.0.0.1"); return err },
					errcode.InvalidArgument, "not in any ip range"},
				{"specific: broadcast", func() error { _, err := AllocateSpecificIP(ctx, gdb, l3.UUID, "nic", "10.0.0.255"); return err },
					errcode.InvalidArgument, "not in any ip range"},
				{"specific: not an address", func() error { _, err := AllocateSpecificIP(ctx, gdb, l3.UUID, "nic", "10.0.0"); return err },
					errcode.InvalidArgument, "not an IPv4 address"},
				{"specific: disabled network", func() error {
					_, err := AllocateSpecificIP(ctx, gdb, disabled.UUID, "nic", "10.0.1.5")
					return err
				}, errcode.InvalidState, "is Disabled"},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					err := tc.do()
					wantCode(t, err, tc.code)
					if !strings.Contains(err.Error(), tc.detail) {
						t.Errorf("error %q, want it to contain %q", err, tc.detail)
					}
				})
			}
			if c := capacity(t, gdb, l3.UUID); c.Used != 0 {
				t.Errorf("failed allocations left %d used addresses", c.Used)
			}
		})
	}
}

// TestAllocateOnLargeNetwork fills the start of a /16 and checks that the
// gap search finds a hole deep inside the used block and then the first
// address after it.
func TestAllocateOnLargeNetwork(t *testing.T) {
	const usedBlock, holeAt = 5000, 3700
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb := openDB(t, b.DSN(t))
			l3, r := newL3(t, gdb, "10.20.0.0/16")
			fillUsed(t, gdb, r, usedBlock, holeAt)
			if c := capacity(t, gdb, l3.UUID); c != (IPCapacity{Total: 65533, Used: usedBlock - 1, Available: 65533 - usedBlock + 1}) {
				t.Fatalf("capacity after the fill %+v", c)
			}
			for _, want := range []int64{r.StartIPLong + holeAt, r.StartIPLong + usedBlock, r.StartIPLong + usedBlock + 1} {
				u, err := AllocateIP(ctx, gdb, l3.UUID, "nic", AllocateOptions{})
				if err != nil || u.IPInLong != want {
					t.Fatalf("AllocateIP = %s, %v; want %s", u.IP, err, formatIPv4(uint32(want)))
				}
			}
		})
	}
}

// BenchmarkAllocateIP allocates on a /16 whose first 20000 addresses are
// used, so each allocation's gap search walks them.
func BenchmarkAllocateIP(b *testing.B) {
	for _, be := range backends {
		b.Run(be.Name, func(b *testing.B) {
			gdb := openDB(b, be.DSN(b))
			l3, r := newL3(b, gdb, "10.20.0.0/16")
			fillUsed(b, gdb, r, 20000, -1)
			ctx := context.Background()
			for b.Loop() {
				if _, err := AllocateIP(ctx, gdb, l3.UUID, "nic", AllocateOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// fillUsed marks the first n addresses of r used, except the one at offset
// hole, in one INSERT ... SELECT (row by row is slow on SQLite under -race).
func fillUsed(t testing.TB, gdb *gorm.DB, r IpRangeVO, n, hole int) {
	t.Helper()
	digits := len(fmt.Sprint(n - 1))
	var from, num []string
	for i := range digits {
		from = append(from, fmt.Sprintf("d d%d", i))
		num = append(num, fmt.Sprintf("d%d.x * %d", i, int(math.Pow10(i))))
	}
	uuid := "'bulk' || printf('%028d', n)"
	if db.Dialect(gdb) == "mysql" {
		uuid = "CONCAT('bulk', LPAD(n, 28, '0'))"
	}
	now := time.Now().UTC()
	err := gdb.Exec(`INSERT INTO used_ips (uuid, l3_network_uuid, ip_range_uuid, ip, ip_in_long, netmask, gateway,
			ip_version, vm_nic_uuid, create_date, last_op_date)
		WITH d(x) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
			UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9),
		seq(n) AS (SELECT `+strings.Join(num, " + ")+` FROM `+strings.Join(from, ", ")+`)
		SELECT `+uuid+`, ?, ?, '', ? + n, ?, ?, 4, 'bulk', ?, ? FROM seq WHERE n < ? AND n <> ?`,
		r.L3NetworkUUID, r.UUID, r.StartIPLong, r.Netmask, r.Gateway, now, now, n, hole).Error
	if err != nil {
		t.Fatalf("fill %d used addresses: %v", n, err)
	}
}
