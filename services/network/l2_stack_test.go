package network_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/network"
	"mplane/services/vm"
	"mplane/uid"
)

// TestL2NetworkAPI runs every L2 network path over REST on one embedded
// cloud, with ZStack's shapes: the creates of each type, the queries and
// their views, VNI ranges and the VNIs of VXLAN networks, updates, attach
// and detach (refused across zones, and while a VM uses the network),
// L3 networks on L2 networks, and the delete rules.
func TestL2NetworkAPI(t *testing.T) {
	st := servertest.Start(t, servertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, ctx context.Context, st *servertest.Stack)
	}{
		{"defaults", testL2Defaults},
		{"no-vlan and vlan", testNoVlanAndVlan},
		{"vxlan pools, ranges and networks", testVxlan},
		{"attach and detach", testAttachDetach},
		{"l3 on l2", testL3OnL2},
		{"delete", testL2Delete},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, ctx, st) })
	}
}

// testL2Defaults: the embedded cloud's default L2 network is an
// L2NoVlanNetwork on eth0 attached to the default cluster, and the default
// L3 network is on it.
func testL2Defaults(t *testing.T, ctx context.Context, st *servertest.Stack) {
	l2 := getL2(t, ctx, st, "l2-networks", st.Defaults["l2"])
	if l2.Type != network.L2NoVlanNetwork || l2.PhysicalInterface != "eth0" || l2.ZoneUUID != st.Defaults["zone"] ||
		!reflect.DeepEqual(l2.AttachedClusterUUIDs, []string{st.Defaults["cluster"]}) {
		t.Fatalf("default l2 network %+v", l2)
	}
	l3, err := client.GetAs[network.L3NetworkVO](ctx, st.Client, "l3-networks", st.Defaults["l3"])
	if err != nil || l3.L2NetworkUUID == nil || *l3.L2NetworkUUID != l2.UUID {
		t.Fatalf("default l3 network %+v, %v: want it on %s", l3, err, l2.UUID)
	}
}

func testNoVlanAndVlan(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c, zone := st.Client, st.Defaults["zone"]
	other := createZone(t, ctx, st, "l2-other-zone")

	novlan := createRaw(t, ctx, st, "l2-networks/no-vlan", map[string]any{"name": "flat", "description": "no vlan",
		"zoneUuid": zone, "physicalInterface": "eth9"})
	wantKeys(t, novlan, []string{"uuid", "name", "description", "zoneUuid", "physicalInterface", "type", "vSwitchType",
		"virtualNetworkId", "createDate", "lastOpDate", "attachedClusterUuids"})
	if novlan["type"] != network.L2NoVlanNetwork || novlan["vSwitchType"] != "LinuxBridge" || novlan["virtualNetworkId"] != 0.0 ||
		novlan["physicalInterface"] != "eth9" || !reflect.DeepEqual(novlan["attachedClusterUuids"], []any{}) {
		t.Fatalf("no-vlan inventory %v", novlan)
	}

	vlan := createRaw(t, ctx, st, "l2-networks/vlan", map[string]any{"name": "v100", "zoneUuid": zone, "physicalInterface": "eth1", "vlan": 100})
	wantKeys(t, vlan, []string{"uuid", "name", "zoneUuid", "physicalInterface", "type", "vSwitchType", "virtualNetworkId",
		"createDate", "lastOpDate", "attachedClusterUuids", "vlan"})
	if vlan["type"] != network.L2VlanNetwork || vlan["vlan"] != 100.0 || vlan["virtualNetworkId"] != 100.0 {
		t.Fatalf("vlan inventory %v", vlan)
	}
	vlanUUID := vlan["uuid"].(string)

	// The VLAN is taken on eth1 in this zone; not on another interface or
	// in another zone.
	_, err := c.Create(ctx, "l2-networks/vlan", map[string]any{"name": "dup", "zoneUuid": zone, "physicalInterface": "eth1", "vlan": 100})
	wantAPIError(t, err, http.StatusConflict, errcode.InvalidState, "vlan 100 on physical interface eth1", "in use by l2 network "+vlanUUID, "(v100)")
	createRaw(t, ctx, st, "l2-networks/vlan", map[string]any{"name": "v100-eth2", "zoneUuid": zone, "physicalInterface": "eth2", "vlan": 100})
	createRaw(t, ctx, st, "l2-networks/vlan", map[string]any{"name": "v100-z2", "zoneUuid": other, "physicalInterface": "eth1", "vlan": 100})

	t.Run("refused at the edge", func(t *testing.T) {
		missing := uid.New()
		for _, tc := range []struct {
			name, path string
			params     map[string]any
			detail     []string
		}{
			{"no name", "no-vlan", map[string]any{"zoneUuid": zone, "physicalInterface": "eth0"}, []string{"name is required"}},
			{"no zone", "no-vlan", map[string]any{"name": "n", "physicalInterface": "eth0"}, []string{"zoneUuid is required"}},
			{"unknown zone", "no-vlan", map[string]any{"name": "n", "zoneUuid": missing, "physicalInterface": "eth0"},
				[]string{"zoneUuid " + missing + " does not exist"}},
			{"no interface", "vlan", map[string]any{"name": "n", "zoneUuid": zone, "vlan": 5}, []string{"physicalInterface is required"}},
			{"interface with a space", "no-vlan", map[string]any{"name": "n", "zoneUuid": zone, "physicalInterface": "eth 0"},
				[]string{`physicalInterface "eth 0" must not contain spaces`}},
			{"no vlan", "vlan", map[string]any{"name": "n", "zoneUuid": zone, "physicalInterface": "eth1"}, []string{"vlan is required (1 to 4094)"}},
			{"vlan 4095", "vlan", map[string]any{"name": "n", "zoneUuid": zone, "physicalInterface": "eth1", "vlan": 4095},
				[]string{"vlan 4095 is out of range 1-4094"}},
			{"vlan on no-vlan", "no-vlan", map[string]any{"name": "n", "zoneUuid": zone, "physicalInterface": "eth1", "vlan": 5},
				[]string{"vlan"}},
			{"another type", "vlan", map[string]any{"name": "n", "zoneUuid": zone, "physicalInterface": "eth1", "vlan": 5, "type": "L2NoVlanNetwork"},
				[]string{`type "L2NoVlanNetwork" does not match the path: it creates an L2VlanNetwork`}},
			{"another vswitch", "no-vlan", map[string]any{"name": "n", "zoneUuid": zone, "physicalInterface": "eth1", "vSwitchType": "OvsDpdk"},
				[]string{`vSwitchType "OvsDpdk" is not supported; the only one is LinuxBridge`}},
			{"problems listed together", "vlan", map[string]any{"zoneUuid": zone, "vlan": -1},
				[]string{"name is required", "physicalInterface is required", "vlan -1 is out of range"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Create(ctx, "l2-networks/"+tc.path, tc.params)
				wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, tc.detail...)
			})
		}
	})

	t.Run("queries", func(t *testing.T) {
		all := queryL2(t, ctx, st, "l2-networks", "zoneUuid="+zone, "physicalInterface?=eth1,eth2,eth9")
		if got := names(all); !reflect.DeepEqual(got, []string{"flat", "v100", "v100-eth2"}) {
			t.Fatalf("l2-networks of the zone on eth1, eth2, eth9: %v", got)
		}
		vlans := queryL2(t, ctx, st, "l2-networks/vlan", "vlan=100")
		if got := names(vlans); !reflect.DeepEqual(got, []string{"v100", "v100-eth2", "v100-z2"}) {
			t.Fatalf("l2-networks/vlan with vlan=100: %v", got)
		}
		for _, v := range queryL2(t, ctx, st, "l2-networks/vlan") {
			if v.Type != network.L2VlanNetwork {
				t.Fatalf("l2-networks/vlan answered a %s", v.Type)
			}
		}
		if got := queryL2(t, ctx, st, "l2-networks", "vlan is null", "physicalInterface=eth9"); len(got) != 1 || got[0].Name != "flat" {
			t.Fatalf("vlan is null on eth9: %v", names(got))
		}
		if got := getL2(t, ctx, st, "l2-networks/vlan", vlanUUID); got.Vlan == nil || *got.Vlan != 100 {
			t.Fatalf("get vlan: %+v", got)
		}
		// A network of another type is not found under a type's path.
		_, err := c.Get(ctx, "l2-networks/vlan", novlan["uuid"].(string))
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
		_, err = c.Get(ctx, "l2-networks", uid.New())
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	})

	t.Run("update", func(t *testing.T) {
		got, err := client.ActionAndWait[network.L2NetworkVO](ctx, c, "l2-networks", vlanUUID, "updateL2Network",
			map[string]any{"name": "v100-renamed", "description": "d"})
		if err != nil || got.Name != "v100-renamed" || got.Description != "d" || got.Vlan == nil || *got.Vlan != 100 {
			t.Fatalf("updateL2Network: %+v, %v", got, err)
		}
		_, err = c.Action(ctx, "l2-networks", vlanUUID, "updateL2Network", map[string]any{"vlan": 5})
		wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "vlan")
	})
}

func testVxlan(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c, zone := st.Client, st.Defaults["zone"]
	pool := createRaw(t, ctx, st, "l2-networks/vxlan-pool", map[string]any{"name": "pool", "zoneUuid": zone, "physicalInterface": "eth3"})
	wantKeys(t, pool, []string{"uuid", "name", "zoneUuid", "physicalInterface", "type", "vSwitchType", "virtualNetworkId",
		"createDate", "lastOpDate", "attachedClusterUuids", "attachedVniRanges"})
	if pool["type"] != network.VxlanNetworkPool || !reflect.DeepEqual(pool["attachedVniRanges"], []any{}) {
		t.Fatalf("pool inventory %v", pool)
	}
	poolUUID := pool["uuid"].(string)

	// VNI ranges under the pool's path (ZStack's, and the plural).
	r1 := createRange(t, ctx, st, "l2-networks/vxlan-pool/"+poolUUID+"/vni-range", map[string]any{"name": "r1", "startVni": 100, "endVni": 102})
	if r1.L2NetworkUUID != poolUUID || r1.StartVni != 100 || r1.EndVni != 102 || r1.Name != "r1" {
		t.Fatalf("vni range %+v", r1)
	}
	r2 := createRange(t, ctx, st, "l2-networks/vxlan-pool/"+poolUUID+"/vni-ranges", map[string]any{"name": "r2", "startVni": 200, "endVni": 200})
	novlan := createRaw(t, ctx, st, "l2-networks/no-vlan", map[string]any{"name": "not-a-pool", "zoneUuid": zone, "physicalInterface": "eth4"})
	missing := uid.New()
	for _, tc := range []struct {
		name, pool string
		params     map[string]any
		status     int
		code       errcode.Code
		detail     []string
	}{
		{"overlap", poolUUID, map[string]any{"name": "x", "startVni": 102, "endVni": 150}, 400, errcode.InvalidArgument,
			[]string{"vni range 102-150 overlaps vni range " + r1.UUID + " (100-102)"}},
		{"start after end", poolUUID, map[string]any{"name": "x", "startVni": 300, "endVni": 299}, 400, errcode.InvalidArgument,
			[]string{"startVni 300 is after endVni 299"}},
		{"out of range", poolUUID, map[string]any{"name": "x", "startVni": 0, "endVni": 16777215}, 400, errcode.InvalidArgument,
			[]string{"startVni 0 is out of range 1-16777214", "endVni 16777215 is out of range"}},
		{"no name", poolUUID, map[string]any{"startVni": 300, "endVni": 310}, 400, errcode.InvalidArgument, []string{"name is required"}},
		{"not a pool", novlan["uuid"].(string), map[string]any{"name": "x", "startVni": 300, "endVni": 310}, 400, errcode.InvalidArgument,
			[]string{"is an L2NoVlanNetwork, not a VxlanNetworkPool"}},
		{"no such pool", missing, map[string]any{"name": "x", "startVni": 300, "endVni": 310}, 404, errcode.ResourceNotFound,
			[]string{"vxlan pool " + missing + " not found"}},
	} {
		t.Run("range "+tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "l2-networks/vxlan-pool/"+tc.pool+"/vni-range", tc.params)
			wantAPIError(t, err, tc.status, tc.code, tc.detail...)
		})
	}
	got := getL2(t, ctx, st, "l2-networks/vxlan-pool", poolUUID)
	if len(got.VniRanges) != 2 || got.VniRanges[0].UUID != r1.UUID || got.VniRanges[1].UUID != r2.UUID {
		t.Fatalf("pool's attachedVniRanges %+v, want r1 and r2", got.VniRanges)
	}
	for _, path := range []string{"l2-networks/vxlan-pool/vni-range", "l2-networks/vxlan-pool/vni-ranges"} {
		rs, _, err := client.QueryAs[network.VniRangeVO](ctx, c, path, client.Query{Q: []string{"l2NetworkUuid=" + poolUUID}, Sort: "+startVni"})
		if err != nil || len(rs) != 2 || rs[0].UUID != r1.UUID || rs[1].UUID != r2.UUID {
			t.Fatalf("query %s: %+v, %v", path, rs, err)
		}
	}
	renamed, err := client.ActionAndWait[network.VniRangeVO](ctx, c, "l2-networks/vxlan-pool/vni-range", r2.UUID, "updateVniRange", map[string]any{"name": "r2b"})
	if err != nil || renamed.Name != "r2b" || renamed.StartVni != 200 {
		t.Fatalf("updateVniRange: %+v, %v", renamed, err)
	}

	// VXLAN networks: the lowest free VNI of the ranges in order, or the one
	// asked for.
	vx := func(name string, extra map[string]any) (map[string]any, error) {
		p := map[string]any{"name": name, "poolUuid": poolUUID}
		for k, v := range extra {
			p[k] = v
		}
		return client.CreateAndWait[map[string]any](ctx, c, "l2-networks/vxlan", p)
	}
	first, err := vx("vx-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantKeys(t, first, []string{"uuid", "name", "zoneUuid", "physicalInterface", "type", "vSwitchType", "virtualNetworkId",
		"createDate", "lastOpDate", "attachedClusterUuids", "vni", "poolUuid"})
	if first["type"] != network.VxlanNetwork || first["vni"] != 100.0 || first["virtualNetworkId"] != 100.0 || first["poolUuid"] != poolUUID ||
		first["zoneUuid"] != zone || first["physicalInterface"] != "eth3" {
		t.Fatalf("vxlan inventory %v", first)
	}
	asked, err := vx("vx-200", map[string]any{"vni": 200, "zoneUuid": zone})
	if err != nil || asked["vni"] != 200.0 {
		t.Fatalf("vxlan with vni 200: %v, %v", asked, err)
	}
	_, err = c.Create(ctx, "l2-networks/vxlan", map[string]any{"name": "x", "poolUuid": poolUUID, "vni": 200})
	wantAPIError(t, err, http.StatusConflict, errcode.InvalidState, "vni 200 is in use by vxlan network "+asked["uuid"].(string), "(vx-200)")
	other := createZone(t, ctx, st, "vxlan-other-zone")
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail []string
	}{
		{"vni outside the ranges", map[string]any{"name": "x", "poolUuid": poolUUID, "vni": 150},
			[]string{"vni 150 is not in a VNI range of vxlan pool " + poolUUID + " (ranges: 100-102, 200-200)"}},
		{"vni out of range", map[string]any{"name": "x", "poolUuid": poolUUID, "vni": 16777215}, []string{"vni 16777215 is out of range 1-16777214"}},
		{"another zone", map[string]any{"name": "x", "poolUuid": poolUUID, "zoneUuid": other},
			[]string{"zoneUuid " + other + " is not the zone " + zone + " of vxlan pool " + poolUUID}},
		{"another interface", map[string]any{"name": "x", "poolUuid": poolUUID, "physicalInterface": "eth0"},
			[]string{"physicalInterface eth0 is not the interface eth3 of vxlan pool"}},
		{"no pool", map[string]any{"name": "x"}, []string{"poolUuid is required"}},
		{"pool of another type", map[string]any{"name": "x", "poolUuid": novlan["uuid"]}, []string{"is an L2NoVlanNetwork, not a VxlanNetworkPool"}},
		{"unknown pool", map[string]any{"name": "x", "poolUuid": missing}, []string{"poolUuid " + missing + " does not exist"}},
	} {
		t.Run("vxlan "+tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "l2-networks/vxlan", tc.params)
			wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, tc.detail...)
		})
	}
	b, err := vx("vx-b", nil)
	if err != nil || b["vni"] != 101.0 {
		t.Fatalf("vx-b: %v, %v; want vni 101", b, err)
	}
	cc, err := vx("vx-c", nil)
	if err != nil || cc["vni"] != 102.0 {
		t.Fatalf("vx-c: %v, %v; want vni 102", cc, err)
	}
	// Full: the job fails with CapacityExhausted naming the pool.
	_, err = vx("vx-full", nil)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.CapacityExhausted, "vxlan pool "+poolUUID+" (pool) has no free VNI", "100-102, 200-200")
	if inUse := vnisOf(t, st, poolUUID); !reflect.DeepEqual(inUse, []int{100, 101, 102, 200}) {
		t.Fatalf("VNIs of the pool's networks %v", inUse)
	}
	pool1 := st.Server.VNIs().InUse()
	for _, v := range []map[string]any{first, asked, b, cc} {
		if h := pool1[int(v["vni"].(float64))]; h != v["uuid"] {
			t.Fatalf("the VNI pool has %d held by %q, want %s", int(v["vni"].(float64)), h, v["uuid"])
		}
	}

	// Queries of VXLAN networks.
	nets := queryL2(t, ctx, st, "l2-networks/vxlan", "poolUuid="+poolUUID)
	if got := names(nets); !reflect.DeepEqual(got, []string{"vx-200", "vx-a", "vx-b", "vx-c"}) {
		t.Fatalf("l2-networks/vxlan of the pool: %v", got)
	}
	if got := queryL2(t, ctx, st, "l2-networks/vxlan", "vni>=101", "vni<200"); !reflect.DeepEqual(names(got), []string{"vx-b", "vx-c"}) {
		t.Fatalf("vxlan with 101 <= vni < 200: %v", names(got))
	}
	if got := queryL2(t, ctx, st, "l2-networks/vxlan-pool", "uuid="+poolUUID); len(got) != 1 {
		t.Fatalf("l2-networks/vxlan-pool: %v", names(got))
	}

	// A range with networks in it cannot go; one without can.
	err = deleteAndWait(ctx, c, "l2-networks/vxlan-pool/vni-range", r1.UUID)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "vni range "+r1.UUID+" (100-102) has 3 vxlan network(s)")

	// A delete releases the VNI: the next create takes it.
	if err := deleteAndWait(ctx, c, "l2-networks", b["uuid"].(string)); err != nil {
		t.Fatal(err)
	}
	if _, held := st.Server.VNIs().InUse()[101]; held {
		t.Fatal("vni 101 still held after its network's delete")
	}
	again, err := vx("vx-again", nil)
	if err != nil || again["vni"] != 101.0 {
		t.Fatalf("create after the delete: %v, %v; want vni 101", again, err)
	}
}

func testAttachDetach(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c, zone, cluster := st.Client, st.Defaults["zone"], st.Defaults["cluster"]
	l2 := createRaw(t, ctx, st, "l2-networks/no-vlan", map[string]any{"name": "att", "zoneUuid": zone, "physicalInterface": "eth5"})
	l2UUID := l2["uuid"].(string)
	attach := func(l2, cluster string) (network.L2NetworkVO, error) {
		return client.CreateAndWait[network.L2NetworkVO](ctx, c, "l2-networks/"+l2+"/clusters/"+cluster, nil)
	}
	detach := func(l2, cluster string) (network.L2NetworkVO, error) {
		j, err := c.Delete(ctx, "l2-networks/"+l2+"/clusters", cluster, "")
		if err != nil {
			return network.L2NetworkVO{}, err
		}
		raw, err := j.Wait(ctx, nil)
		if err != nil {
			return network.L2NetworkVO{}, err
		}
		var out network.L2NetworkVO
		err = json.Unmarshal(raw, &out)
		return out, err
	}
	for i := 0; i < 2; i++ { // attaching again is a no-op
		got, err := attach(l2UUID, cluster)
		if err != nil || !reflect.DeepEqual(got.AttachedClusterUUIDs, []string{cluster}) {
			t.Fatalf("attach #%d: %+v, %v", i+1, got, err)
		}
	}
	if got := getL2(t, ctx, st, "l2-networks", l2UUID); !reflect.DeepEqual(got.AttachedClusterUUIDs, []string{cluster}) {
		t.Fatalf("attachedClusterUuids after the attach: %v", got.AttachedClusterUUIDs)
	}
	if got := queryL2(t, ctx, st, "l2-networks", "uuid="+l2UUID); len(got) != 1 || !reflect.DeepEqual(got[0].AttachedClusterUUIDs, []string{cluster}) {
		t.Fatalf("query after the attach: %+v", got)
	}
	// The update's answer shows the attachments too.
	upd, err := client.ActionAndWait[network.L2NetworkVO](ctx, c, "l2-networks", l2UUID, "updateL2Network", map[string]any{"description": "attached"})
	if err != nil || !reflect.DeepEqual(upd.AttachedClusterUUIDs, []string{cluster}) {
		t.Fatalf("updateL2Network of an attached network: %+v, %v", upd, err)
	}

	other := createZone(t, ctx, st, "attach-other-zone")
	foreign, err := client.CreateAndWait[map[string]any](ctx, c, "clusters", map[string]any{"name": "foreign", "zoneUuid": other})
	if err != nil {
		t.Fatal(err)
	}
	missing := uid.New()
	_, err = c.Create(ctx, "l2-networks/"+l2UUID+"/clusters/"+foreign["uuid"].(string), nil)
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "cluster "+foreign["uuid"].(string)+" is in zone "+other,
		"l2 network "+l2UUID+" in zone "+zone)
	_, err = c.Create(ctx, "l2-networks/"+l2UUID+"/clusters/"+missing, nil)
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "clusterUuid "+missing+" does not exist")
	_, err = c.Create(ctx, "l2-networks/"+missing+"/clusters/"+cluster, nil)
	wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound, "l2 network "+missing+" not found")

	// A VM of the cluster with a NIC on an L3 network of the L2 network
	// keeps it attached.
	l3 := createL3On(t, ctx, st, "att-l3", l2UUID)
	addRange(t, ctx, st, l3.UUID, map[string]any{"networkCidr": "10.55.0.0/24"})
	v, err := client.CreateAndWait[vm.VmInstanceVO](ctx, c, "vm-instances", map[string]any{"name": "att-vm",
		"instanceOfferingUuid": st.Defaults["offering"], "imageUuid": st.Defaults["image"], "l3NetworkUuids": []string{l3.UUID}})
	if err != nil {
		t.Fatal(err)
	}
	if v.ClusterUUID != cluster {
		t.Fatalf("VM in cluster %s, want %s", v.ClusterUUID, cluster)
	}
	_, err = detach(l2UUID, cluster)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "1 VM(s) of cluster "+cluster+" have NICs on l2 network "+l2UUID,
		"VM "+v.UUID+" (att-vm) on L3 network "+l3.UUID)
	if got := getL2(t, ctx, st, "l2-networks", l2UUID); len(got.AttachedClusterUUIDs) != 1 {
		t.Fatalf("refused detach detached: %v", got.AttachedClusterUUIDs)
	}
	if err := deleteAndWait(ctx, c, "vm-instances", v.UUID); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // detaching what is not attached is a no-op
		got, err := detach(l2UUID, cluster)
		if err != nil || got.UUID != l2UUID || len(got.AttachedClusterUUIDs) != 0 {
			t.Fatalf("detach #%d after the VM's destroy: %+v, %v", i+1, got, err)
		}
	}

	// A cluster's delete takes its attachments along.
	doomed, err := client.CreateAndWait[map[string]any](ctx, c, "clusters", map[string]any{"name": "doomed", "zoneUuid": zone})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := attach(l2UUID, doomed["uuid"].(string)); err != nil || len(got.AttachedClusterUUIDs) != 1 {
		t.Fatalf("attach to the doomed cluster: %+v, %v", got, err)
	}
	if err := deleteAndWait(ctx, c, "clusters", doomed["uuid"].(string)); err != nil {
		t.Fatal(err)
	}
	if got := getL2(t, ctx, st, "l2-networks", l2UUID); len(got.AttachedClusterUUIDs) != 0 {
		t.Fatalf("attachedClusterUuids after the cluster's delete: %v", got.AttachedClusterUUIDs)
	}
}

func testL3OnL2(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c, zone := st.Client, st.Defaults["zone"]
	l2 := createRaw(t, ctx, st, "l2-networks/no-vlan", map[string]any{"name": "l3-parent", "zoneUuid": zone, "physicalInterface": "eth6"})
	l2UUID := l2["uuid"].(string)
	// The zone comes from the L2 network; given too, it must be the same.
	for _, params := range []map[string]any{
		{"name": "on-l2", "l2NetworkUuid": l2UUID},
		{"name": "on-l2-with-zone", "l2NetworkUuid": l2UUID, "zoneUuid": zone},
	} {
		l3, err := client.CreateAndWait[network.L3NetworkVO](ctx, c, "l3-networks", params)
		if err != nil || l3.ZoneUUID != zone || l3.L2NetworkUUID == nil || *l3.L2NetworkUUID != l2UUID {
			t.Fatalf("create %v: %+v, %v", params, l3, err)
		}
	}
	rows, _, err := client.QueryAs[network.L3NetworkVO](ctx, c, "l3-networks", client.Query{Q: []string{"l2NetworkUuid=" + l2UUID}})
	if err != nil || len(rows) != 2 {
		t.Fatalf("l3 networks by l2NetworkUuid: %d, %v", len(rows), err)
	}
	other := createZone(t, ctx, st, "l3-other-zone")
	pool := createRaw(t, ctx, st, "l2-networks/vxlan-pool", map[string]any{"name": "l3-pool", "zoneUuid": zone, "physicalInterface": "eth7"})
	missing := uid.New()
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail string
	}{
		{"zones differ", map[string]any{"name": "x", "l2NetworkUuid": l2UUID, "zoneUuid": other},
			"zoneUuid " + other + " is not the zone " + zone + " of l2 network " + l2UUID},
		{"unknown l2", map[string]any{"name": "x", "l2NetworkUuid": missing}, "l2NetworkUuid " + missing + " does not exist"},
		{"on a pool", map[string]any{"name": "x", "l2NetworkUuid": pool["uuid"]}, "is a VxlanNetworkPool: an L3 network is on one of its vxlan networks"},
		{"a zone, no l2", map[string]any{"name": "x", "zoneUuid": zone}, "l2NetworkUuid is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "l3-networks", tc.params)
			wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, tc.detail)
		})
	}
}

func testL2Delete(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c, zone, cluster := st.Client, st.Defaults["zone"], st.Defaults["cluster"]

	// Permissive: refused while it has L3 networks, then while attached.
	l2 := createRaw(t, ctx, st, "l2-networks/vlan", map[string]any{"name": "del", "zoneUuid": zone, "physicalInterface": "eth8", "vlan": 7})
	l2UUID := l2["uuid"].(string)
	l3 := createL3On(t, ctx, st, "del-l3", l2UUID)
	if _, err := client.CreateAndWait[network.L2NetworkVO](ctx, c, "l2-networks/"+l2UUID+"/clusters/"+cluster, nil); err != nil {
		t.Fatal(err)
	}
	err := deleteAndWait(ctx, c, "l2-networks", l2UUID)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "l2 network "+l2UUID+" still has 1 L3 networks")
	if err := deleteAndWait(ctx, c, "l3-networks", l3.UUID); err != nil {
		t.Fatal(err)
	}
	err = deleteAndWait(ctx, c, "l2-networks", l2UUID)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "is attached to 1 cluster(s); detach it first, or delete it with deleteMode Enforcing")

	// Enforcing: refused while an IP of its L3 networks is in use, then
	// takes the L3 networks and the attachments along.
	busy := createL3On(t, ctx, st, "del-busy", l2UUID)
	addRange(t, ctx, st, busy.UUID, map[string]any{"networkCidr": "10.56.0.0/24"})
	if _, err := client.CreateAndWait[network.L3NetworkVO](ctx, c, "l3-networks/"+busy.UUID+"/dns", map[string]any{"dns": "10.56.0.53"}); err != nil {
		t.Fatal(err)
	}
	ip, err := network.AllocateIP(ctx, st.DB(), busy.UUID, "nic-del", network.AllocateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = deleteEnforcing(ctx, c, "l2-networks", l2UUID)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "l2 network "+l2UUID+" has 1 IP address(es) in use on its L3 networks")
	if err := network.ReleaseIP(ctx, st.DB(), ip.UUID); err != nil {
		t.Fatal(err)
	}
	if err := deleteEnforcing(ctx, c, "l2-networks", l2UUID); err != nil {
		t.Fatalf("enforcing delete: %v", err)
	}
	for _, p := range []struct{ path, uuid string }{{"l2-networks", l2UUID}, {"l3-networks", busy.UUID}} {
		_, err := c.Get(ctx, p.path, p.uuid)
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	}
	var refs, ranges, dns int64
	st.DB().Model(&network.L2NetworkClusterRefVO{}).Where("l2_network_uuid = ?", l2UUID).Count(&refs)
	st.DB().Model(&network.IpRangeVO{}).Where("l3_network_uuid = ?", busy.UUID).Count(&ranges)
	st.DB().Model(&network.L3NetworkDNSVO{}).Where("l3_network_uuid = ?", busy.UUID).Count(&dns)
	if refs != 0 || ranges != 0 || dns != 0 {
		t.Fatalf("%d attachments, %d ip ranges and %d dns servers left after the enforcing delete", refs, ranges, dns)
	}
	// The VLAN is free again.
	createRaw(t, ctx, st, "l2-networks/vlan", map[string]any{"name": "del-again", "zoneUuid": zone, "physicalInterface": "eth8", "vlan": 7})

	// A pool: refused while it has VXLAN networks; Enforcing deletes them,
	// releasing their VNIs, and its ranges.
	pool := createRaw(t, ctx, st, "l2-networks/vxlan-pool", map[string]any{"name": "del-pool", "zoneUuid": zone, "physicalInterface": "eth8"})
	poolUUID := pool["uuid"].(string)
	r := createRange(t, ctx, st, "l2-networks/vxlan-pool/"+poolUUID+"/vni-range", map[string]any{"name": "r", "startVni": 5000, "endVni": 5009})
	var vxlans []string
	for _, name := range []string{"del-vx1", "del-vx2"} {
		v, err := client.CreateAndWait[network.L2NetworkVO](ctx, c, "l2-networks/vxlan", map[string]any{"name": name, "poolUuid": poolUUID})
		if err != nil {
			t.Fatal(err)
		}
		vxlans = append(vxlans, v.UUID)
	}
	createL3On(t, ctx, st, "del-vx-l3", vxlans[0])
	err = deleteAndWait(ctx, c, "l2-networks", poolUUID)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "l2 network "+poolUUID+" still has 2 vxlan networks")
	if err := deleteEnforcing(ctx, c, "l2-networks", poolUUID); err != nil {
		t.Fatalf("enforcing delete of the pool: %v", err)
	}
	for _, v := range append([]string{poolUUID}, vxlans...) {
		_, err := c.Get(ctx, "l2-networks", v)
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	}
	_, err = c.Get(ctx, "l2-networks/vxlan-pool/vni-range", r.UUID)
	wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	for vni := 5000; vni <= 5009; vni++ {
		if h, held := st.Server.VNIs().InUse()[vni]; held {
			t.Fatalf("vni %d still held by %s after the pool's delete", vni, h)
		}
	}

	// Deleting what does not exist succeeds; a zone with L2 networks
	// cannot go.
	if err := deleteAndWait(ctx, c, "l2-networks", uid.New()); err != nil {
		t.Fatal(err)
	}
	z := createZone(t, ctx, st, "del-zone")
	createRaw(t, ctx, st, "l2-networks/no-vlan", map[string]any{"name": "in-del-zone", "zoneUuid": z, "physicalInterface": "eth0"})
	err = deleteAndWait(ctx, c, "zones", z)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "zone "+z+" still has 1 L2 networks")
}

// createRaw creates over REST and answers the inventory as JSON members.
func createRaw(t *testing.T, ctx context.Context, st *servertest.Stack, path string, params map[string]any) map[string]any {
	t.Helper()
	inv, err := client.CreateAndWait[map[string]any](ctx, st.Client, path, params)
	if err != nil {
		t.Fatalf("create %s %v: %v", path, params, err)
	}
	return inv
}

func createRange(t *testing.T, ctx context.Context, st *servertest.Stack, path string, params map[string]any) network.VniRangeVO {
	t.Helper()
	r, err := client.CreateAndWait[network.VniRangeVO](ctx, st.Client, path, params)
	if err != nil {
		t.Fatalf("create vni range %v at %s: %v", params, path, err)
	}
	return r
}

func createZone(t *testing.T, ctx context.Context, st *servertest.Stack, name string) string {
	t.Helper()
	z, err := client.CreateAndWait[map[string]any](ctx, st.Client, "zones", map[string]any{"name": name})
	if err != nil {
		t.Fatal(err)
	}
	return z["uuid"].(string)
}

func createL3On(t *testing.T, ctx context.Context, st *servertest.Stack, name, l2 string) network.L3NetworkVO {
	t.Helper()
	l3, err := client.CreateAndWait[network.L3NetworkVO](ctx, st.Client, "l3-networks", map[string]any{"name": name, "l2NetworkUuid": l2})
	if err != nil {
		t.Fatalf("create l3 network %s on %s: %v", name, l2, err)
	}
	return l3
}

func getL2(t *testing.T, ctx context.Context, st *servertest.Stack, path, uuid string) network.L2NetworkVO {
	t.Helper()
	l2, err := client.GetAs[network.L2NetworkVO](ctx, st.Client, path, uuid)
	if err != nil {
		t.Fatalf("get %s/%s: %v", path, uuid, err)
	}
	return l2
}

// queryL2 queries path with conditions q, by name.
func queryL2(t *testing.T, ctx context.Context, st *servertest.Stack, path string, q ...string) []network.L2NetworkVO {
	t.Helper()
	rows, _, err := client.QueryAs[network.L2NetworkVO](ctx, st.Client, path, client.Query{Q: q, Sort: "+name"})
	if err != nil {
		t.Fatalf("query %s %v: %v", path, q, err)
	}
	return rows
}

func names(rows []network.L2NetworkVO) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Name
	}
	return out
}

// vnisOf are the VNIs of the pool's networks, from the database.
func vnisOf(t *testing.T, st *servertest.Stack, pool string) []int {
	t.Helper()
	var vnis []int
	if err := st.DB().Model(&network.L2NetworkVO{}).Where("pool_uuid = ?", pool).Pluck("vni", &vnis).Error; err != nil {
		t.Fatal(err)
	}
	sort.Ints(vnis)
	return vnis
}

// wantKeys checks that inv has exactly the members keys.
func wantKeys(t *testing.T, inv map[string]any, keys []string) {
	t.Helper()
	var got []string
	for k := range inv {
		got = append(got, k)
	}
	sort.Strings(got)
	want := append([]string(nil), keys...)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("inventory members %v, want %v", got, strings.Join(want, ", "))
	}
}

func deleteEnforcing(ctx context.Context, c *client.Client, path, uuid string) error {
	j, err := c.Delete(ctx, path, uuid, client.DeleteEnforcing)
	if err != nil {
		return err
	}
	_, err = j.Wait(ctx, nil)
	return err
}
