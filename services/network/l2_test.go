package network

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/db"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/services/cluster"
	"mplane/services/resource"
	"mplane/services/zone"
	"mplane/thread"
	"mplane/uid"
)

// openL2 opens dsn with the tables of the zone, cluster, L2 and L3 kinds
// (as cmd/mplane migrates them) and a zone; it returns the zone's UUID.
func openL2(t *testing.T, dsn string) (*gorm.DB, string) {
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
	return gdb, newZone(t, gdb)
}

func newZone(t *testing.T, gdb *gorm.DB) string {
	t.Helper()
	z := zone.ZoneVO{Base: resource.NewBase(uid.New(), "z", ""), State: "Enabled", Type: "zstack"}
	if err := gdb.Create(&z).Error; err != nil {
		t.Fatal(err)
	}
	return z.UUID
}

func l2Params(name, zoneUUID, iface string) L2Params {
	return L2Params{Params: resource.Params{Name: name}, ZoneUUID: zoneUUID, PhysicalInterface: iface}
}

// TestL2ParamsValidate: each shape error of the L2 params, with its
// message; the defaults Validate fills.
func TestL2ParamsValidate(t *testing.T) {
	zoneUUID := uid.New()
	ok := l2Params("n", zoneUUID, "eth0")
	tests := []struct {
		name   string
		params interface{ Validate() error }
		detail string // empty: valid
	}{
		{"no-vlan", &L2NoVlanParams{ok}, ""},
		{"no name", &L2NoVlanParams{l2Params(" ", zoneUUID, "eth0")}, "name is required"},
		{"long name", &L2NoVlanParams{l2Params(strings.Repeat("n", 256), zoneUUID, "eth0")}, "name must be at most 255 characters"},
		{"no zone", &L2NoVlanParams{l2Params("n", "", "eth0")}, "zoneUuid is required"},
		{"no interface", &L2VxlanPoolParams{l2Params("n", zoneUUID, "")}, "physicalInterface is required"},
		{"long interface", &L2NoVlanParams{l2Params("n", zoneUUID, strings.Repeat("e", 129))}, "physicalInterface is longer than 128 characters"},
		{"interface with a slash", &L2NoVlanParams{l2Params("n", zoneUUID, "eth0/1")}, `physicalInterface "eth0/1" must not contain spaces or '/'`},
		{"type of another path", &L2NoVlanParams{L2Params{Params: resource.Params{Name: "n"}, ZoneUUID: zoneUUID, PhysicalInterface: "eth0",
			Type: VxlanNetworkPool}}, `type "VxlanNetworkPool" does not match the path: it creates an L2NoVlanNetwork`},
		{"vswitch", &L2NoVlanParams{L2Params{Params: resource.Params{Name: "n"}, ZoneUUID: zoneUUID, PhysicalInterface: "eth0",
			VSwitchType: "MacVlan"}}, `vSwitchType "MacVlan" is not supported; the only one is LinuxBridge`},
		{"vlan", &L2VlanParams{ok, 4094}, ""},
		{"vlan missing", &L2VlanParams{ok, 0}, "vlan is required (1 to 4094)"},
		{"vlan too high", &L2VlanParams{ok, 4095}, "vlan 4095 is out of range 1-4094"},
		{"vlan negative", &L2VlanParams{ok, -3}, "vlan -3 is out of range 1-4094"},
		{"vxlan: zone and interface from the pool", &L2VxlanParams{L2Params: l2Params("n", "", ""), PoolUUID: uid.New()}, ""},
		{"vxlan without a pool", &L2VxlanParams{L2Params: ok}, "poolUuid is required"},
		{"vxlan vni too high", &L2VxlanParams{L2Params: ok, PoolUUID: uid.New(), Vni: MaxVNI + 1}, "vni 16777215 is out of range 1-16777214"},
		{"vxlan vni negative", &L2VxlanParams{L2Params: ok, PoolUUID: uid.New(), Vni: -1}, "vni -1 is out of range 1-16777214"},
		{"range", &VniRangeParams{Params: resource.Params{Name: "r"}, L2NetworkUUID: "p", StartVni: 1, EndVni: MaxVNI}, ""},
		{"range without a name", &VniRangeParams{L2NetworkUUID: "p", StartVni: 1, EndVni: 2}, "name is required"},
		{"range without a pool", &VniRangeParams{Params: resource.Params{Name: "r"}, StartVni: 1, EndVni: 2}, "l2NetworkUuid is required (the vxlan pool)"},
		{"range start 0", &VniRangeParams{Params: resource.Params{Name: "r"}, L2NetworkUUID: "p", StartVni: 0, EndVni: 2}, "startVni 0 is out of range 1-16777214"},
		{"range end too high", &VniRangeParams{Params: resource.Params{Name: "r"}, L2NetworkUUID: "p", StartVni: 1, EndVni: MaxVNI + 1},
			"endVni 16777215 is out of range 1-16777214"},
		{"range reversed", &VniRangeParams{Params: resource.Params{Name: "r"}, L2NetworkUUID: "p", StartVni: 9, EndVni: 8}, "startVni 9 is after endVni 8"},
		{"cluster ref", &ClusterRefParams{L2NetworkUUID: "a", ClusterUUID: "b"}, ""},
		{"cluster ref without a cluster", &ClusterRefParams{L2NetworkUUID: "a"}, "clusterUuid is required"},
		{"l3 on an l2 without a zone", &L3Params{Name: "n", L2NetworkUUID: uid.New()}, ""},
		{"l3 without an l2", &L3Params{Name: "n"}, "l2NetworkUuid is required: an L3 network is on an L2 network"},
		{"l3 in a zone only", &L3Params{Name: "n", ZoneUUID: uid.New()}, "l2NetworkUuid is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.params.Validate()
			if tc.detail == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantCode(t, err, errcode.InvalidArgument)
			if !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("error %q does not say %q", err, tc.detail)
			}
		})
	}
	// Every problem at once, and the default virtual switch.
	p := &L2VlanParams{L2Params: l2Params("", "", ""), Vlan: 5000}
	err := p.Validate()
	for _, d := range []string{"name is required", "zoneUuid is required", "physicalInterface is required", "vlan 5000 is out of range"} {
		if err == nil || !strings.Contains(err.Error(), d) {
			t.Errorf("all problems: %v, want %q among them", err, d)
		}
	}
	p = &L2VlanParams{L2Params: ok, Vlan: 5}
	if err := p.Validate(); err != nil || p.VSwitchType != VSwitchLinuxBridge {
		t.Errorf("vSwitchType defaults to %q (%v), want LinuxBridge", p.VSwitchType, err)
	}
}

// TestVlanUnique: the unique index decides between creates of one VLAN on
// one interface in one zone: of two, the second is refused naming the
// first; of 20 racing ones, exactly one succeeds and every other is
// refused naming it. Another interface, another zone and the NULL VLAN of
// other types do not collide.
func TestVlanUnique(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb, z := openL2(t, b.DSN(t))
			first, err := createVlan(ctx, gdb, uid.New(), L2VlanParams{l2Params("first", z, "eth1"), 10})
			if err != nil {
				t.Fatal(err)
			}
			if first.Vlan == nil || *first.Vlan != 10 || first.VirtualNetworkID != 10 || first.Type != L2VlanNetwork {
				t.Fatalf("created %+v", first)
			}
			_, err = createVlan(ctx, gdb, uid.New(), L2VlanParams{l2Params("second", z, "eth1"), 10})
			wantCode(t, err, errcode.InvalidState)
			if want := "vlan 10 on physical interface eth1 of zone " + z + " is in use by l2 network " + first.UUID + " (first)"; !strings.Contains(err.Error(), want) {
				t.Fatalf("refusal %q, want it to say %q", err, want)
			}
			// The edge's check says the same at once.
			err = (&L2VlanParams{l2Params("second", z, "eth1"), 10}).Check(ctx, gdb)
			wantCode(t, err, errcode.InvalidState)
			for _, p := range []L2VlanParams{{l2Params("other interface", z, "eth2"), 10}, {l2Params("other zone", newZone(t, gdb), "eth1"), 10}} {
				if _, err := createVlan(ctx, gdb, uid.New(), p); err != nil {
					t.Fatalf("%s: %v", p.Name, err)
				}
			}
			for i := 0; i < 2; i++ { // NULL vlans never collide
				if _, err := createNoVlan(ctx, gdb, uid.New(), L2NoVlanParams{l2Params("flat", z, "eth1")}); err != nil {
					t.Fatal(err)
				}
				if _, err := createPool(ctx, gdb, uid.New(), L2VxlanPoolParams{l2Params("pool", z, "eth1")}); err != nil {
					t.Fatal(err)
				}
			}

			var wg sync.WaitGroup
			errs := make([]error, 20)
			rows := make([]L2NetworkVO, 20)
			for i := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rows[i], errs[i] = createVlan(ctx, gdb, uid.New(), L2VlanParams{l2Params(fmt.Sprintf("racer%d", i), z, "eth3"), 42})
				}()
			}
			wg.Wait()
			var winner string
			for i, err := range errs {
				if err == nil {
					if winner != "" {
						t.Fatalf("two racing creates of vlan 42 succeeded: %s and %s", winner, rows[i].UUID)
					}
					winner = rows[i].UUID
				}
			}
			if winner == "" {
				t.Fatalf("no racing create succeeded: %v", errs)
			}
			for _, err := range errs {
				if err != nil && (!errcode.Has(err, errcode.InvalidState) || !strings.Contains(err.Error(), "in use by l2 network "+winner)) {
					t.Errorf("a losing create: %v; want InvalidState naming %s", err, winner)
				}
			}
			var n int64
			gdb.Model(&L2NetworkVO{}).Where("vlan = 42").Count(&n)
			if n != 1 {
				t.Fatalf("%d rows with vlan 42, want 1", n)
			}
		})
	}
}

// startVNIPool starts a management node on gdb (in-process bus) with the
// cluster's VNI pool, as a server does.
func startVNIPool(t *testing.T, gdb *gorm.DB) *managementnode.IDPool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := managementnode.Migrate(ctx, gdb); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	bus, err := cloudbus.New(cloudbus.Options{URL: "memory://", Broker: cloudbus.NewBroker(), NodeUUID: uid.New(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sched := thread.New(thread.Options{Logger: quiet})
	n, err := managementnode.New(managementnode.Options{DB: gdb, Bus: bus, Scheduler: sched, Logger: quiet, Host: "127.0.0.1", APIPort: 1,
		HeartbeatInterval: time.Hour, ResyncInterval: time.Hour, DrainTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := managementnode.NewIDPool(n, VNIPool, MinVNI, MaxVNI)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
		_ = sched.Stop(ctx)
		_ = bus.Stop(ctx)
	})
	return pool
}

// newPool creates a VXLAN pool in z with the VNI ranges given as pairs.
func newPool(t *testing.T, gdb *gorm.DB, z string, ranges ...[2]int) L2NetworkVO {
	t.Helper()
	ctx := context.Background()
	pool, err := createPool(ctx, gdb, uid.New(), L2VxlanPoolParams{l2Params("pool-"+uid.New()[:6], z, "eth9")})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range ranges {
		if _, err := createVniRange(ctx, gdb, uid.New(), VniRangeParams{Params: resource.Params{Name: fmt.Sprint("r", i)},
			L2NetworkUUID: pool.UUID, StartVni: r[0], EndVni: r[1]}); err != nil {
			t.Fatal(err)
		}
	}
	return pool
}

func vxlanParams(name, pool string, vni int) L2VxlanParams {
	return L2VxlanParams{L2Params: L2Params{Params: resource.Params{Name: name}, VSwitchType: VSwitchLinuxBridge}, PoolUUID: pool, Vni: vni}
}

// inDB is the VNIs of VXLAN networks in the database, with their networks.
func inDB(t *testing.T, gdb *gorm.DB) map[int]string {
	t.Helper()
	var rows []L2NetworkVO
	if err := gdb.Where("type = ?", VxlanNetwork).Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, r := range rows {
		out[*r.Vni] = r.UUID
	}
	return out
}

// TestVNIAllocation: VXLAN networks take VNIs of their pool's ranges from
// the cluster's ID pool: the lowest free, range by range; a given one if
// it is in a range and free; CapacityExhausted naming the pool when full.
// A delete releases the VNI, and so does a create that fails after the
// allocation; a redelivered create gets the VNI its first attempt took.
func TestVNIAllocation(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb, z := openL2(t, b.DSN(t))
			vnis := startVNIPool(t, gdb)
			pool := newPool(t, gdb, z, [2]int{10, 12}, [2]int{20, 21})
			create := func(name string, vni int) (L2NetworkVO, error) {
				return createVxlan(ctx, gdb, vnis, uid.New(), vxlanParams(name, pool.UUID, vni))
			}
			mustVNI := func(name string, vni, want int) L2NetworkVO {
				t.Helper()
				n, err := create(name, vni)
				if err != nil {
					t.Fatalf("create %s: %v", name, err)
				}
				if n.Vni == nil || *n.Vni != want || n.VirtualNetworkID != want || n.PoolUUID == nil || *n.PoolUUID != pool.UUID ||
					n.ZoneUUID != z || n.PhysicalInterface != "eth9" || n.Type != VxlanNetwork {
					t.Fatalf("create %s: %+v, want vni %d in pool %s", name, n, want, pool.UUID)
				}
				return n
			}
			a := mustVNI("a", 0, 10)
			mustVNI("b", 0, 11)
			mustVNI("given", 21, 21)
			mustVNI("c", 0, 12)
			mustVNI("d", 0, 20) // the first range is full: the next one

			_, err := create("taken", 21)
			wantCode(t, err, errcode.InvalidState)
			if !strings.Contains(err.Error(), "vni 21 of vxlan pool "+pool.UUID+" is not free") {
				t.Fatalf("a taken vni: %v", err)
			}
			_, err = create("outside", 15)
			wantCode(t, err, errcode.InvalidArgument)
			if !strings.Contains(err.Error(), "vni 15 is not in a VNI range of vxlan pool "+pool.UUID+" (ranges: 10-12, 20-21)") {
				t.Fatalf("a vni outside the ranges: %v", err)
			}
			_, err = create("full", 0)
			wantCode(t, err, errcode.CapacityExhausted)
			if !strings.Contains(err.Error(), "vxlan pool "+pool.UUID+" ("+pool.Name+") has no free VNI in its ranges (10-12, 20-21)") {
				t.Fatalf("a full pool: %v", err)
			}
			if got, want := vnis.InUse(), inDB(t, gdb); !maps.Equal(got, want) {
				t.Fatalf("the VNI pool holds %v, the database has %v", got, want)
			}

			// The delete releases the VNI; the next create takes it.
			if err := deleteL2(ctx, gdb, vnis, resource.DeleteReq{UUID: a.UUID}); err != nil {
				t.Fatal(err)
			}
			if h, held := vnis.Holder(10); held {
				t.Fatalf("vni 10 still held by %s after the delete", h)
			}
			if err := deleteL2(ctx, gdb, vnis, resource.DeleteReq{UUID: a.UUID}); err != nil {
				t.Fatalf("a second delete: %v", err)
			}
			mustVNI("e", 0, 10)

			// A create that fails after the allocation releases the VNI:
			// here its range goes between the allocation and the insert.
			e := newPool(t, gdb, z, [2]int{30, 39})
			racy := &dropRange{VNIAllocator: vnis, gdb: gdb, pool: e.UUID}
			id := uid.New()
			_, err = createVxlan(ctx, gdb, racy, id, vxlanParams("racy", e.UUID, 0))
			wantCode(t, err, errcode.InvalidState)
			if !strings.Contains(err.Error(), "the VNI range of vni 30 of vxlan pool "+e.UUID+" was deleted meanwhile") {
				t.Fatalf("a create whose range went: %v", err)
			}
			if h, held := vnis.Holder(30); held {
				t.Fatalf("vni 30 held by %s after a failed create (%s)", h, id)
			}
			if _, err := GetL2Network(ctx, gdb, id); !errcode.Has(err, errcode.ResourceNotFound) {
				t.Fatalf("the failed create left a row: %v", err)
			}

			// A create redelivered after its first attempt allocated (and
			// died before the insert) gets that VNI.
			f := newPool(t, gdb, z, [2]int{40, 49})
			fp, err := GetL2Network(ctx, gdb, f.UUID)
			if err != nil {
				t.Fatal(err)
			}
			id = uid.New()
			got, err := allocateVNI(ctx, vnis, id, fp, 0)
			if err != nil || got != 40 {
				t.Fatalf("the first attempt: %d, %v", got, err)
			}
			n, err := createVxlan(ctx, gdb, vnis, id, vxlanParams("again", f.UUID, 0))
			if err != nil || *n.Vni != 40 {
				t.Fatalf("the redelivered create: %+v, %v; want vni 40", n, err)
			}
			if h, _ := vnis.Holder(40); h != id {
				t.Fatalf("vni 40 held by %q, want %s", h, id)
			}
			// One redelivered after the network's delete is refused: its
			// allocation was released.
			if err := deleteL2(ctx, gdb, vnis, resource.DeleteReq{UUID: id}); err != nil {
				t.Fatal(err)
			}
			_, err = createVxlan(ctx, gdb, vnis, id, vxlanParams("stale", f.UUID, 0))
			wantCode(t, err, errcode.InvalidState)
			if !strings.Contains(err.Error(), "was created and deleted already") {
				t.Fatalf("a stale redelivery: %v", err)
			}

			// A pool without ranges has no VNI to give.
			empty := newPool(t, gdb, z)
			_, err = createVxlan(ctx, gdb, vnis, uid.New(), vxlanParams("none", empty.UUID, 0))
			wantCode(t, err, errcode.CapacityExhausted)
			if !strings.Contains(err.Error(), "(none)") {
				t.Fatalf("a pool without ranges: %v", err)
			}
			if got, want := vnis.InUse(), inDB(t, gdb); !maps.Equal(got, want) {
				t.Fatalf("at the end the VNI pool holds %v, the database has %v", got, want)
			}
			// Without an allocator, no VXLAN network.
			_, err = createVxlan(ctx, gdb, nil, uid.New(), vxlanParams("x", pool.UUID, 0))
			wantCode(t, err, errcode.Internal)
		})
	}
}

// dropRange deletes the pool's VNI ranges after each allocation, as a
// racing range delete would.
type dropRange struct {
	VNIAllocator
	gdb  *gorm.DB
	pool string
}

func (d *dropRange) AllocateIn(ctx context.Context, sub string, lo, hi, id int, holder string) (int, error) {
	got, err := d.VNIAllocator.AllocateIn(ctx, sub, lo, hi, id, holder)
	if err == nil {
		err = d.gdb.Where("l2_network_uuid = ?", d.pool).Delete(&VniRangeVO{}).Error
	}
	return got, err
}

// TestVniRanges: ranges of one pool never overlap, even added racing;
// another pool's may; a range with networks in it cannot be deleted.
func TestVniRanges(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb, z := openL2(t, b.DSN(t))
			pool := newPool(t, gdb, z, [2]int{100, 199})
			rng := func(pool string, lo, hi int) VniRangeParams {
				return VniRangeParams{Params: resource.Params{Name: "r"}, L2NetworkUUID: pool, StartVni: lo, EndVni: hi}
			}
			p := rng(pool.UUID, 150, 250)
			err := p.Check(ctx, gdb)
			wantCode(t, err, errcode.InvalidArgument)
			if !strings.Contains(err.Error(), "vni range 150-250 overlaps vni range") {
				t.Fatalf("overlap: %v", err)
			}
			if _, err := createVniRange(ctx, gdb, uid.New(), p); !errcode.Has(err, errcode.InvalidArgument) {
				t.Fatalf("create of an overlapping range: %v", err)
			}
			other := newPool(t, gdb, z)
			if _, err := createVniRange(ctx, gdb, uid.New(), rng(other.UUID, 150, 250)); err != nil {
				t.Fatalf("the same VNIs in another pool: %v", err)
			}
			flat, err := createNoVlan(ctx, gdb, uid.New(), L2NoVlanParams{l2Params("flat", z, "eth0")})
			if err != nil {
				t.Fatal(err)
			}
			_, err = createVniRange(ctx, gdb, uid.New(), rng(flat.UUID, 1, 2))
			wantCode(t, err, errcode.InvalidArgument)

			// 10 racing overlapping ranges (each of 300-309 with one
			// start): exactly one gets in.
			var wg sync.WaitGroup
			var mu sync.Mutex
			won := 0
			for i := range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := createVniRange(ctx, gdb, uid.New(), rng(pool.UUID, 300+i, 309))
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						won++
					case !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), "overlaps"):
						t.Errorf("a losing range: %v", err)
					}
				}()
			}
			wg.Wait()
			if won != 1 {
				t.Fatalf("%d of 10 overlapping ranges were added, want 1", won)
			}

			// A range with a network in it stays; without, it goes.
			vnis := startVNIPool(t, gdb)
			n, err := createVxlan(ctx, gdb, vnis, uid.New(), vxlanParams("in", pool.UUID, 120))
			if err != nil {
				t.Fatal(err)
			}
			p0, _ := GetL2Network(ctx, gdb, pool.UUID)
			first := p0.VniRanges[0]
			err = deleteVniRange(ctx, gdb, first.UUID)
			wantCode(t, err, errcode.InvalidState)
			if !strings.Contains(err.Error(), "vni range "+first.UUID+" (100-199) has 1 vxlan network(s), e.g. "+n.UUID+" with vni 120") {
				t.Fatalf("delete of a used range: %v", err)
			}
			if err := deleteL2(ctx, gdb, vnis, resource.DeleteReq{UUID: n.UUID}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				if err := deleteVniRange(ctx, gdb, first.UUID); err != nil {
					t.Fatalf("delete #%d of the range: %v", i+1, err)
				}
			}
		})
	}
}

// TestL3OnL2: an L3 network takes its zone from its L2 network; other
// zones, pools and missing networks are refused; the L2 network's delete
// sees it.
func TestL3OnL2(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb, z := openL2(t, b.DSN(t))
			l2, err := createNoVlan(ctx, gdb, uid.New(), L2NoVlanParams{l2Params("flat", z, "eth0")})
			if err != nil {
				t.Fatal(err)
			}
			p := L3Params{Name: "l3", L2NetworkUUID: l2.UUID}
			if err := p.Check(ctx, gdb); err != nil || p.ZoneUUID != z {
				t.Fatalf("Check: %v, zone %q; want %s", err, p.ZoneUUID, z)
			}
			l3, err := CreateL3Network(ctx, gdb, p)
			if err != nil || l3.ZoneUUID != z || l3.L2NetworkUUID == nil || *l3.L2NetworkUUID != l2.UUID {
				t.Fatalf("CreateL3Network: %+v, %v", l3, err)
			}
			other := newZone(t, gdb)
			pool, err := createPool(ctx, gdb, uid.New(), L2VxlanPoolParams{l2Params("pool", z, "eth1")})
			if err != nil {
				t.Fatal(err)
			}
			missing := uid.New()
			for _, tc := range []struct {
				p      L3Params
				detail string
			}{
				{L3Params{Name: "x", L2NetworkUUID: l2.UUID, ZoneUUID: other}, "zoneUuid " + other + " is not the zone " + z + " of l2 network " + l2.UUID},
				{L3Params{Name: "x", L2NetworkUUID: pool.UUID}, "l2NetworkUuid " + pool.UUID + " is a VxlanNetworkPool"},
				{L3Params{Name: "x", L2NetworkUUID: missing}, "l2NetworkUuid " + missing + " does not exist"},
			} {
				err := tc.p.Check(ctx, gdb)
				wantCode(t, err, errcode.InvalidArgument)
				if !strings.Contains(err.Error(), tc.detail) {
					t.Errorf("Check %+v: %v, want %q", tc.p, err, tc.detail)
				}
			}
			// Created without Check, the L2 network is checked under its
			// lock.
			_, err = CreateL3Network(ctx, gdb, L3Params{Name: "x", L2NetworkUUID: missing})
			wantCode(t, err, errcode.ResourceNotFound)
			err = deleteL2(ctx, gdb, nil, resource.DeleteReq{UUID: l2.UUID})
			wantCode(t, err, errcode.InvalidState)
			if !strings.Contains(err.Error(), "l2 network "+l2.UUID+" still has 1 L3 networks") {
				t.Fatalf("delete of an L2 network with an L3 network: %v", err)
			}
		})
	}
}
