package network_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/server/servertest"
	"mplane/services/network"
	"mplane/services/resource"
	"mplane/services/vm"
	"mplane/uid"
)

// TestL3AndVxlanClustersAPI runs, over REST on one embedded cloud, ZStack's
// L3 network fields and DNS calls, the VXLAN networks' clusters (their
// pool's), and the attach rules for one physical interface.
func TestL3AndVxlanClustersAPI(t *testing.T) {
	st := servertest.Start(t, servertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, ctx context.Context, st *servertest.Stack)
	}{
		{"l3 fields", testL3Fields},
		{"dns", testL3DNS},
		{"vxlan clusters", testVxlanClusters},
		{"one untagged network per interface", testInterfacePerCluster},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, ctx, st) })
	}
}

// testL3Fields: the inventory has ZStack's members, with their defaults;
// the SDK's create fields are accepted and checked; ipRanges shows the
// ranges, in the query too.
func testL3Fields(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c, zone, l2 := st.Client, st.Defaults["zone"], st.Defaults["l2"]
	l3 := createRaw(t, ctx, st, "l3-networks", map[string]any{"name": "fields", "l2NetworkUuid": l2})
	wantKeys(t, l3, []string{"uuid", "name", "type", "zoneUuid", "l2NetworkUuid", "state", "category", "system", "ipVersion",
		"enableIPAM", "dns", "ipRanges", "createDate", "lastOpDate"})
	want := map[string]any{"type": network.L3BasicNetwork, "zoneUuid": zone, "l2NetworkUuid": l2, "state": network.L3StateEnabled,
		"category": network.L3CategoryPrivate, "system": false, "ipVersion": 4.0, "enableIPAM": true}
	for k, v := range want {
		if l3[k] != v {
			t.Fatalf("inventory %s = %v, want %v (%v)", k, l3[k], v, l3)
		}
	}
	if !reflect.DeepEqual(l3["dns"], []any{}) || !reflect.DeepEqual(l3["ipRanges"], []any{}) {
		t.Fatalf("a new network's dns %v and ipRanges %v, want []", l3["dns"], l3["ipRanges"])
	}

	// What the Java SDK's CreateL3NetworkAction sends (its defaults), and
	// the zone given as the L2 network's.
	sdk := createRaw(t, ctx, st, "l3-networks", map[string]any{"name": "sdk", "l2NetworkUuid": l2, "type": network.L3BasicNetwork,
		"category": "public", "system": false, "enableIPAM": true, "ipVersion": 4, "dnsDomain": "corp.example.org", "zoneUuid": zone})
	if sdk["category"] != network.L3CategoryPublic || sdk["dnsDomain"] != "corp.example.org" || sdk["zoneUuid"] != zone {
		t.Fatalf("created with the sdk's fields: %v", sdk)
	}
	system := createRaw(t, ctx, st, "l3-networks", map[string]any{"name": "sys", "l2NetworkUuid": l2, "system": true, "category": "System"})
	if system["system"] != true || system["category"] != network.L3CategorySystem {
		t.Fatalf("a system network: %v", system)
	}
	other := createZone(t, ctx, st, "fields-other-zone")
	pool := createRaw(t, ctx, st, "l2-networks/vxlan-pool", map[string]any{"name": "fields-pool", "zoneUuid": zone, "physicalInterface": "eth10"})
	missing := uid.New()
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail []string
	}{
		{"no l2", map[string]any{"name": "x"}, []string{"l2NetworkUuid is required"}},
		{"a zone instead of an l2", map[string]any{"name": "x", "zoneUuid": zone}, []string{"l2NetworkUuid is required"}},
		{"unknown l2", map[string]any{"name": "x", "l2NetworkUuid": missing}, []string{"l2NetworkUuid " + missing + " does not exist"}},
		{"a pool", map[string]any{"name": "x", "l2NetworkUuid": pool["uuid"]}, []string{"is a VxlanNetworkPool: an L3 network is on one of its vxlan networks"}},
		{"another zone", map[string]any{"name": "x", "l2NetworkUuid": l2, "zoneUuid": other},
			[]string{"zoneUuid " + other + " is not the zone " + zone + " of l2 network " + l2, "zoneUuid is not a parameter of ZStack's CreateL3Network"}},
		{"category", map[string]any{"name": "x", "l2NetworkUuid": l2, "category": "Guest"}, []string{`category "Guest" is not one of Public, Private, System`}},
		{"system and category", map[string]any{"name": "x", "l2NetworkUuid": l2, "system": true}, []string{"does not go with system true"}},
		{"ipv6", map[string]any{"name": "x", "l2NetworkUuid": l2, "ipVersion": 6}, []string{"ipVersion 6 is not supported"}},
		{"no ipam", map[string]any{"name": "x", "l2NetworkUuid": l2, "enableIPAM": false}, []string{"IPAM cannot be disabled"}},
		{"dns domain", map[string]any{"name": "x", "l2NetworkUuid": l2, "dnsDomain": "-bad-.org"}, []string{`dnsDomain "-bad-.org" is not a valid domain name`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, "l3-networks", tc.params)
			wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, tc.detail...)
		})
	}

	// The ranges, lowest first, in the get, the query and the answers of
	// the calls.
	id := l3["uuid"].(string)
	hi := addRange(t, ctx, st, id, map[string]any{"startIp": "10.81.0.100", "endIp": "10.81.0.110", "netmask": "255.255.255.0", "gateway": "10.81.0.1"})
	lo := addRange(t, ctx, st, id, map[string]any{"startIp": "10.81.0.10", "endIp": "10.81.0.20", "netmask": "255.255.255.0", "gateway": "10.81.0.1"})
	got, err := client.GetAs[network.L3NetworkVO](ctx, c, "l3-networks", id)
	if err != nil || len(got.IPRanges) != 2 || got.IPRanges[0].UUID != lo.UUID || got.IPRanges[1].UUID != hi.UUID {
		t.Fatalf("get: ipRanges %+v, %v; want %s then %s", got.IPRanges, err, lo.UUID, hi.UUID)
	}
	rows, _, err := client.QueryAs[network.L3NetworkVO](ctx, c, "l3-networks", client.Query{Q: []string{"l2NetworkUuid=" + l2, "category=Private"}, Sort: "+name"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if r.Category != network.L3CategoryPrivate {
			t.Fatalf("category=Private answered %+v", r)
		}
		if r.UUID == id {
			found = true
			if len(r.IPRanges) != 2 || r.IPRanges[0].StartIP != "10.81.0.10" {
				t.Fatalf("query: ipRanges %+v", r.IPRanges)
			}
		}
	}
	if !found {
		t.Fatalf("query by l2NetworkUuid and category did not find %s", id)
	}
	if rows, _, err := client.QueryAs[network.L3NetworkVO](ctx, c, "l3-networks", client.Query{Q: []string{"system=true"}}); err != nil ||
		len(rows) != 1 || rows[0].UUID != system["uuid"] {
		t.Fatalf("query system=true: %+v, %v", rows, err)
	}
	upd, err := client.ActionAndWait[network.L3NetworkVO](ctx, c, "l3-networks", id, "updateL3Network", map[string]any{"description": "with ranges"})
	if err != nil || len(upd.IPRanges) != 2 || upd.Category != network.L3CategoryPrivate || upd.IPVersion != 4 {
		t.Fatalf("updateL3Network's answer: %+v, %v", upd, err)
	}
}

// testL3DNS: AddDnsToL3Network and RemoveDnsFromL3Network answer the
// network, its DNS servers in the order added; adding one it has, or
// removing one it has not, is a no-op; a bad address is refused; the
// servers go with the network.
func testL3DNS(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c := st.Client
	l3 := createL3(t, ctx, st, "dns", "")
	add := func(uuid, dns string) (network.L3NetworkVO, error) {
		return client.CreateAndWait[network.L3NetworkVO](ctx, c, "l3-networks/"+uuid+"/dns", map[string]any{"dns": dns})
	}
	remove := func(uuid, dns string) (network.L3NetworkVO, error) {
		j, err := c.Delete(ctx, "l3-networks/"+uuid+"/dns", dns, "")
		if err != nil {
			return network.L3NetworkVO{}, err
		}
		raw, err := j.Wait(ctx, nil)
		if err != nil {
			return network.L3NetworkVO{}, err
		}
		var out network.L3NetworkVO
		err = json.Unmarshal(raw, &out)
		return out, err
	}
	var got network.L3NetworkVO
	var err error
	for _, d := range []string{"8.8.8.8", "1.1.1.1", "2001:DB8::53", "8.8.8.8"} {
		if got, err = add(l3.UUID, d); err != nil {
			t.Fatalf("add dns %s: %v", d, err)
		}
	}
	if want := []string{"8.8.8.8", "1.1.1.1", "2001:db8::53"}; got.UUID != l3.UUID || !reflect.DeepEqual(got.DNS, want) {
		t.Fatalf("after the adds: %+v, want dns %v", got, want)
	}
	if !got.LastOpDate.After(l3.LastOpDate) {
		t.Fatalf("lastOpDate %v not after %v", got.LastOpDate, l3.LastOpDate)
	}
	if read, err := client.GetAs[network.L3NetworkVO](ctx, c, "l3-networks", l3.UUID); err != nil || !reflect.DeepEqual(read.DNS, got.DNS) {
		t.Fatalf("get: dns %v, %v", read.DNS, err)
	}
	// ZStack's body names the network too; it must be the path's.
	if _, err := client.CreateAndWait[network.L3NetworkVO](ctx, c, "l3-networks/"+l3.UUID+"/dns",
		map[string]any{"dns": "9.9.9.9", "l3NetworkUuid": l3.UUID}); err != nil {
		t.Fatalf("add with l3NetworkUuid in the body: %v", err)
	}
	if got, err = remove(l3.UUID, "1.1.1.1"); err != nil || !reflect.DeepEqual(got.DNS, []string{"8.8.8.8", "2001:db8::53", "9.9.9.9"}) {
		t.Fatalf("remove 1.1.1.1: %v, %v", got.DNS, err)
	}
	for _, d := range []string{"1.1.1.1", "2001:db8:0::53"} { // absent, and the canonical form of one present
		if got, err = remove(l3.UUID, d); err != nil {
			t.Fatalf("remove %s: %v", d, err)
		}
	}
	if !reflect.DeepEqual(got.DNS, []string{"8.8.8.8", "9.9.9.9"}) {
		t.Fatalf("after the removes: %v", got.DNS)
	}
	// dns is in fields=, not in q=.
	rows, _, err := client.QueryAs[map[string]any](ctx, c, "l3-networks", client.Query{Q: []string{"uuid=" + l3.UUID}, Fields: []string{"uuid", "dns"}})
	if err != nil || len(rows) != 1 || len(rows[0]) != 2 || !reflect.DeepEqual(rows[0]["dns"], []any{"8.8.8.8", "9.9.9.9"}) {
		t.Fatalf("query fields=uuid,dns: %v, %v", rows, err)
	}
	_, _, err = client.QueryAs[map[string]any](ctx, c, "l3-networks", client.Query{Q: []string{"dns=8.8.8.8"}})
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "dns")
	missing := uid.New()
	_, err = c.Create(ctx, "l3-networks/"+l3.UUID+"/dns", map[string]any{"dns": "8.8.8.300"})
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, `dns "8.8.8.300" is not an IP address`)
	_, err = c.Create(ctx, "l3-networks/"+l3.UUID+"/dns", map[string]any{})
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "dns is required")
	_, err = c.Delete(ctx, "l3-networks/"+l3.UUID+"/dns", "dns.example.org", "")
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, `dns "dns.example.org" is not an IP address`)
	_, err = c.Create(ctx, "l3-networks/"+missing+"/dns", map[string]any{"dns": "8.8.8.8"})
	wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound, "l3 network "+missing+" not found")
	_, err = c.Delete(ctx, "l3-networks/"+missing+"/dns", "8.8.8.8", "")
	wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)

	// The servers go with the network.
	if err := deleteAndWait(ctx, c, "l3-networks", l3.UUID); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := st.DB().Model(&network.L3NetworkDNSVO{}).Where("l3_network_uuid = ?", l3.UUID).Count(&n).Error; err != nil || n != 0 {
		t.Fatalf("%d dns rows left after the network's delete (%v)", n, err)
	}
}

// testVxlanClusters: a VXLAN network's attachedClusterUuids are its
// pool's, without rows of its own; attaching or detaching it is refused;
// the pool's detach is refused while a VM of the cluster has a NIC on an
// L3 network of one of its VXLAN networks.
func testVxlanClusters(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c, zone, cluster := st.Client, st.Defaults["zone"], st.Defaults["cluster"]
	pool := createRaw(t, ctx, st, "l2-networks/vxlan-pool", map[string]any{"name": "cl-pool", "zoneUuid": zone, "physicalInterface": "eth11"})["uuid"].(string)
	createRange(t, ctx, st, "l2-networks/vxlan-pool/"+pool+"/vni-range", map[string]any{"name": "r", "startVni": 7000, "endVni": 7009})
	vx := createRaw(t, ctx, st, "l2-networks/vxlan", map[string]any{"name": "cl-vx", "poolUuid": pool})
	vxUUID := vx["uuid"].(string)
	if !reflect.DeepEqual(vx["attachedClusterUuids"], []any{}) {
		t.Fatalf("a vxlan network of a detached pool: attachedClusterUuids %v", vx["attachedClusterUuids"])
	}
	if _, err := client.CreateAndWait[network.L2NetworkVO](ctx, c, "l2-networks/"+pool+"/clusters/"+cluster, nil); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"l2-networks", "l2-networks/vxlan"} {
		if got := getL2(t, ctx, st, path, vxUUID); !reflect.DeepEqual(got.AttachedClusterUUIDs, []string{cluster}) {
			t.Fatalf("get %s: attachedClusterUuids %v, want the pool's [%s]", path, got.AttachedClusterUUIDs, cluster)
		}
	}
	if got := queryL2(t, ctx, st, "l2-networks", "poolUuid="+pool); len(got) != 1 || !reflect.DeepEqual(got[0].AttachedClusterUUIDs, []string{cluster}) {
		t.Fatalf("query of the pool's networks: %+v", got)
	}
	var own int64
	st.DB().Model(&network.L2NetworkClusterRefVO{}).Where("l2_network_uuid = ?", vxUUID).Count(&own)
	if own != 0 {
		t.Fatalf("the vxlan network has %d attachments of its own", own)
	}
	_, err := c.Create(ctx, "l2-networks/"+vxUUID+"/clusters/"+cluster, nil)
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "l2 network "+vxUUID+" is a VxlanNetwork", "attach its pool "+pool+" instead")
	_, err = c.Delete(ctx, "l2-networks/"+vxUUID+"/clusters", cluster, "")
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "detach its pool "+pool+" instead")

	// A VM on an L3 network of the VXLAN network keeps the pool attached.
	l3 := createL3On(t, ctx, st, "cl-l3", vxUUID)
	addRange(t, ctx, st, l3.UUID, map[string]any{"networkCidr": "10.82.0.0/24"})
	v, err := client.CreateAndWait[vm.VmInstanceVO](ctx, c, "vm-instances", map[string]any{"name": "cl-vm",
		"instanceOfferingUuid": st.Defaults["offering"], "imageUuid": st.Defaults["image"], "l3NetworkUuids": []string{l3.UUID}})
	if err != nil {
		t.Fatalf("a VM on the vxlan network's L3 network: %v", err)
	}
	err = detachWait(ctx, c, pool, cluster)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "have NICs on l2 network "+pool, "VM "+v.UUID+" (cl-vm) on L3 network "+l3.UUID)
	if err := deleteAndWait(ctx, c, "vm-instances", v.UUID); err != nil {
		t.Fatal(err)
	}
	if err := detachWait(ctx, c, pool, cluster); err != nil {
		t.Fatalf("detach the pool once the VM is gone: %v", err)
	}
	if got := getL2(t, ctx, st, "l2-networks", vxUUID); len(got.AttachedClusterUUIDs) != 0 {
		t.Fatalf("the vxlan network after its pool's detach: %v", got.AttachedClusterUUIDs)
	}
}

// testInterfacePerCluster: two L2NoVlanNetworks on one interface cannot be
// attached to one cluster (the default L2 network is on eth0 in the
// default cluster); on another interface, in another cluster, or tagged,
// they can.
func testInterfacePerCluster(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c, zone, cluster, def := st.Client, st.Defaults["zone"], st.Defaults["cluster"], st.Defaults["l2"]
	second := createRaw(t, ctx, st, "l2-networks/no-vlan", map[string]any{"name": "eth0-again", "zoneUuid": zone, "physicalInterface": "eth0"})["uuid"].(string)
	_, err := c.Create(ctx, "l2-networks/"+second+"/clusters/"+cluster, nil)
	wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "l2 network "+def+" (default-l2), an L2NoVlanNetwork on physical interface eth0, is attached to cluster "+cluster)
	other, err := client.CreateAndWait[map[string]any](ctx, c, "clusters", map[string]any{"name": "eth0-other", "zoneUuid": zone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateAndWait[network.L2NetworkVO](ctx, c, "l2-networks/"+second+"/clusters/"+other["uuid"].(string), nil); err != nil {
		t.Fatalf("attach to another cluster: %v", err)
	}
	tagged := createRaw(t, ctx, st, "l2-networks/vlan", map[string]any{"name": "eth0-v9", "zoneUuid": zone, "physicalInterface": "eth0", "vlan": 9})["uuid"].(string)
	if _, err := client.CreateAndWait[network.L2NetworkVO](ctx, c, "l2-networks/"+tagged+"/clusters/"+cluster, nil); err != nil {
		t.Fatalf("attach a vlan on eth0: %v", err)
	}
	// The owner checks again, as for an attach that passed the edge while
	// another one was made.
	_, err = managementnode.CallOwner(ctx, st.Node(), st.Server.L2().Attach.Msg,
		resource.ActionReq[network.ClusterRefParams]{UUID: second, Params: network.ClusterRefParams{L2NetworkUUID: second, ClusterUUID: cluster}})
	wantCode(t, err, errcode.InvalidArgument, "l2 network "+def+" (default-l2)", "one untagged network per interface")
	if got := getL2(t, ctx, st, "l2-networks", second); !reflect.DeepEqual(got.AttachedClusterUUIDs, []string{other["uuid"].(string)}) {
		t.Fatalf("attachedClusterUuids of the second eth0 network: %v", got.AttachedClusterUUIDs)
	}
	if err := detachWait(ctx, c, tagged, cluster); err != nil {
		t.Fatal(err)
	}
}

// detachWait detaches an L2 network from a cluster and waits for the job.
func detachWait(ctx context.Context, c *client.Client, l2, cluster string) error {
	j, err := c.Delete(ctx, "l2-networks/"+l2+"/clusters", cluster, "")
	if err != nil {
		return err
	}
	_, err = j.Wait(ctx, nil)
	return err
}
