package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
)

// l2Inventory is an L2 network as the API answers it.
type l2Inventory struct {
	UUID     string `json:"uuid"`
	Type     string `json:"type"`
	ZoneUUID string `json:"zoneUuid"`
	Vlan     int    `json:"vlan"`
	Vni      int    `json:"vni"`
	PoolUUID string `json:"poolUuid"`
}

// TestClusterL2Allocation: three `mplane server` processes. 50 VXLAN
// networks created at once through the three nodes in a pool of 40 VNIs
// (two ranges): exactly 40 get a VNI, each in a range and none twice; the
// other 10 fail with CapacityExhausted naming the pool. A VNI freed by a
// delete is taken by the next create. 20 racing creates of one VLAN on one
// interface of a zone: one succeeds, the others are refused (InvalidState,
// at once or as the job's error) saying which network has it.
func TestClusterL2Allocation(t *testing.T) {
	e := newClusterEnv(t)
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret"}
	servers := []*server{e.startServer("A"), e.startServer("B"), e.startServer("C")}
	converged(t, 30*time.Second, servers...)
	var clients []*client.Client
	for _, s := range servers {
		clients = append(clients, login(t, s.url, "e2e-secret"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mk := func(c *client.Client, path string, params any) (l2Inventory, error) {
		return client.CreateAndWait[l2Inventory](ctx, c, path, params)
	}
	must := func(inv l2Inventory, err error) l2Inventory {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return inv
	}
	zone := must(mk(clients[0], "zones", map[string]any{"name": "z1"})).UUID
	pool := must(mk(clients[1], "l2-networks/vxlan-pool", map[string]any{"name": "pool", "zoneUuid": zone, "physicalInterface": "eth0"}))
	ranges := [][2]int{{100, 119}, {200, 219}}
	for i, r := range ranges {
		if _, err := client.CreateAndWait[map[string]any](ctx, clients[i], "l2-networks/vxlan-pool/"+pool.UUID+"/vni-ranges",
			map[string]any{"name": fmt.Sprintf("r%d", i), "startVni": r[0], "endVni": r[1]}); err != nil {
			t.Fatalf("vni range %v: %v", r, err)
		}
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	var made []l2Inventory
	full := 0
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inv, err := mk(clients[i%3], "l2-networks/vxlan", map[string]any{"name": fmt.Sprintf("vx%d", i), "poolUuid": pool.UUID, "zoneUuid": zone})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				made = append(made, inv)
			case errcode.Has(err, errcode.CapacityExhausted) && strings.Contains(err.Error(), pool.UUID):
				full++
			default:
				t.Errorf("create vx%d: %v (neither a VNI nor CapacityExhausted naming the pool)", i, err)
			}
		}()
	}
	wg.Wait()
	inRange := func(v int) bool {
		for _, r := range ranges {
			if v >= r[0] && v <= r[1] {
				return true
			}
		}
		return false
	}
	seen := map[int]string{}
	for _, inv := range made {
		if other, dup := seen[inv.Vni]; dup {
			t.Errorf("VNI %d given to %s and %s", inv.Vni, other, inv.UUID)
		}
		seen[inv.Vni] = inv.UUID
		if !inRange(inv.Vni) || inv.PoolUUID != pool.UUID || inv.Type != "VxlanNetwork" {
			t.Errorf("network %+v: want a VxlanNetwork of pool %s with a VNI in %v", inv, pool.UUID, ranges)
		}
	}
	t.Logf("50 racing VXLAN creates on 3 nodes: %d got a VNI, %d refused (pool full)", len(made), full)
	if len(made) != 40 || full != 10 {
		t.Fatalf("%d created and %d refused, want 40 and 10", len(made), full)
	}

	// Freed VNIs are taken again.
	sort.Slice(made, func(i, j int) bool { return made[i].Vni < made[j].Vni })
	var freed []int
	for _, inv := range made[:5] {
		j, err := clients[2].Delete(ctx, "l2-networks", inv.UUID, "")
		if err == nil {
			_, err = j.Wait(ctx, nil)
		}
		if err != nil {
			t.Fatalf("delete %s: %v", inv.UUID, err)
		}
		freed = append(freed, inv.Vni)
	}
	var again []int
	for i := range 5 {
		inv := must(mk(clients[i%3], "l2-networks/vxlan", map[string]any{"name": fmt.Sprintf("again%d", i), "poolUuid": pool.UUID, "zoneUuid": zone}))
		again = append(again, inv.Vni)
	}
	sort.Ints(again)
	if fmt.Sprint(again) != fmt.Sprint(freed) {
		t.Errorf("creates after deleting VNIs %v got %v, want the freed ones", freed, again)
	}

	// One VLAN on one interface of a zone, 20 racing creates.
	var vlans []l2Inventory
	var refusals []error
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inv, err := mk(clients[i%3], "l2-networks/vlan", map[string]any{"name": fmt.Sprintf("vlan%d", i), "zoneUuid": zone,
				"physicalInterface": "eth1", "vlan": 42})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				vlans = append(vlans, inv)
			} else {
				refusals = append(refusals, err)
			}
		}()
	}
	wg.Wait()
	if len(vlans) != 1 {
		t.Fatalf("%d of 20 racing creates of VLAN 42 on eth1 succeeded, want 1", len(vlans))
	}
	for _, err := range refusals {
		if !errcode.Has(err, errcode.InvalidState) || !strings.Contains(err.Error(), vlans[0].UUID) {
			t.Errorf("a refused create of VLAN 42: %v; want %s naming %s, which has it", err, errcode.InvalidState, vlans[0].UUID)
		}
	}
}
