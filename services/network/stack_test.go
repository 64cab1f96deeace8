package network_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/server/servertest"
	"mplane/services/network"
	"mplane/services/resource"
	"mplane/uid"
)

// TestNetworkAPI runs the L3 network and IP range kinds over REST on one
// embedded cloud, with IPs allocated by AllocateIP on its database.
func TestNetworkAPI(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, ctx context.Context, st *servertest.Stack)
	}{
		{"l3 networks", testL3Networks},
		{"redelivered create", testRedeliveredCreate},
		{"ip ranges", testIPRanges},
		{"delete refused while used", testDeleteWhileUsed},
		{"capacity", testCapacity},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, ctx, st) })
	}
}

// testL3Networks: create, query, get, update and delete, and the errors
// the edge answers at once.
func testL3Networks(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c := st.Client
	zone, l2 := st.Defaults["zone"], st.Defaults["l2"]
	l3 := createL3(t, ctx, st, "public", "the public network")
	if len(l3.UUID) != 32 || l3.Name != "public" || l3.Description != "the public network" || l3.ZoneUUID != zone ||
		l3.Type != network.L3BasicNetwork || l3.State != network.L3StateEnabled || l3.CreateDate.IsZero() {
		t.Fatalf("created %+v", l3)
	}

	t.Run("query and get", func(t *testing.T) {
		rows, total, err := client.QueryAs[network.L3NetworkVO](ctx, c, "l3-networks", client.Query{Q: []string{"name=public"}, ReplyWithCount: true})
		if err != nil || total != 1 || len(rows) != 1 || rows[0].UUID != l3.UUID {
			t.Fatalf("query name=public: %d rows (total %d), %v", len(rows), total, err)
		}
		rows, _, err = client.QueryAs[network.L3NetworkVO](ctx, c, "l3-networks", client.Query{Q: []string{"zoneUuid=" + zone}})
		if err != nil || len(rows) < 2 {
			t.Fatalf("query by zone: %d rows, %v; want the default network and this one", len(rows), err)
		}
		got, err := client.GetAs[network.L3NetworkVO](ctx, c, "l3-networks", l3.UUID)
		if err != nil || got.UUID != l3.UUID || got.Name != "public" || !got.CreateDate.Equal(l3.CreateDate) {
			t.Fatalf("get: %+v, %v", got, err)
		}
		_, err = c.Get(ctx, "l3-networks", uid.New())
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	})

	t.Run("create refused at the edge", func(t *testing.T) {
		missing := uid.New()
		tests := []struct {
			name   string
			params map[string]any
			detail string
		}{
			{"missing name", map[string]any{"l2NetworkUuid": l2}, "name is required"},
			{"blank name", map[string]any{"name": "  ", "l2NetworkUuid": l2}, "name is required"},
			{"long name", map[string]any{"name": strings.Repeat("n", 256), "l2NetworkUuid": l2}, "name is longer than 255"},
			{"missing l2", map[string]any{"name": "n"}, "l2NetworkUuid is required"},
			{"a zone, no l2", map[string]any{"name": "n", "zoneUuid": zone}, "l2NetworkUuid is required"},
			{"unknown l2", map[string]any{"name": "n", "l2NetworkUuid": missing}, "l2NetworkUuid " + missing + " does not exist"},
			{"unknown type", map[string]any{"name": "n", "l2NetworkUuid": l2, "type": "L3VpcNetwork"}, "L3VpcNetwork"},
			{"unknown field", map[string]any{"name": "n", "l2NetworkUuid": l2, "vlan": 5}, "vlan"},
			{"name of the wrong type", map[string]any{"name": 5, "l2NetworkUuid": l2}, "name"},
		}
		var before int64
		st.DB().Model(&network.L3NetworkVO{}).Count(&before)
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Create(ctx, "l3-networks", tc.params)
				wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, tc.detail)
			})
		}
		var after int64
		st.DB().Model(&network.L3NetworkVO{}).Count(&after)
		if after != before {
			t.Fatalf("refused creates left %d rows", after-before)
		}
	})

	t.Run("update", func(t *testing.T) {
		got, err := client.ActionAndWait[network.L3NetworkVO](ctx, c, "l3-networks", l3.UUID, "updateL3Network",
			map[string]any{"name": "public-2", "description": "renamed"})
		if err != nil || got.Name != "public-2" || got.Description != "renamed" || got.ZoneUUID != zone || !got.LastOpDate.After(l3.LastOpDate) {
			t.Fatalf("updateL3Network: %+v, %v", got, err)
		}
		// Only the fields given change.
		got, err = client.ActionAndWait[network.L3NetworkVO](ctx, c, "l3-networks", l3.UUID, "updateL3Network", map[string]any{"description": "again"})
		if err != nil || got.Name != "public-2" || got.Description != "again" {
			t.Fatalf("update of the description only: %+v, %v", got, err)
		}
		if read, err := network.GetL3Network(ctx, st.DB(), l3.UUID); err != nil || read.Name != "public-2" || read.Description != "again" {
			t.Fatalf("row after the updates: %+v, %v", read, err)
		}
		_, err = c.Action(ctx, "l3-networks", l3.UUID, "updateL3Network", map[string]any{"name": ""})
		wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, "name is required")
		_, err = c.Action(ctx, "l3-networks", uid.New(), "updateL3Network", map[string]any{"name": "x"})
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	})

	t.Run("delete", func(t *testing.T) {
		doomed := createL3(t, ctx, st, "doomed", "")
		addRange(t, ctx, st, doomed.UUID, map[string]any{"networkCidr": "10.99.0.0/24"})
		if err := deleteAndWait(ctx, c, "l3-networks", doomed.UUID); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err := c.Get(ctx, "l3-networks", doomed.UUID)
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
		if rs, err := network.ListIpRanges(ctx, st.DB(), doomed.UUID); err != nil || len(rs) != 0 {
			t.Fatalf("the deleted network's ranges: %d, %v; want none", len(rs), err)
		}
		// Deleting what does not exist (any more) succeeds.
		for _, id := range []string{doomed.UUID, uid.New()} {
			if err := deleteAndWait(ctx, c, "l3-networks", id); err != nil {
				t.Fatalf("delete of missing %s: %v", id, err)
			}
		}
	})
}

// testRedeliveredCreate: the bus delivers a create twice with one UUID
// (at-least-once): the second answers the row the first made.
func testRedeliveredCreate(t *testing.T, ctx context.Context, st *servertest.Stack) {
	id := uid.New()
	req := resource.CreateReq[network.L3Params]{UUID: id, Params: network.L3Params{Name: "redelivered", L2NetworkUUID: st.Defaults["l2"]}}
	first, err := managementnode.CallOwner(ctx, st.Node(), network.L3Kind.MsgCreate, req)
	if err != nil {
		t.Fatal(err)
	}
	req.Params.Name = "changed meanwhile"
	second, err := managementnode.CallOwner(ctx, st.Node(), network.L3Kind.MsgCreate, req)
	if err != nil {
		t.Fatalf("redelivered create: %v", err)
	}
	if first.UUID != id || second.UUID != id || second.Name != "redelivered" || !second.CreateDate.Equal(first.CreateDate) {
		t.Fatalf("creates answered %+v and %+v", first, second)
	}
	var n int64
	st.DB().Model(&network.L3NetworkVO{}).Where("uuid = ? OR name IN ?", id, []string{"redelivered", "changed meanwhile"}).Count(&n)
	if n != 1 {
		t.Fatalf("%d rows after a redelivered create, want 1", n)
	}
	// The same for a range, created by the kind's own Create.
	rreq := resource.CreateReq[network.IPRangeParams]{UUID: uid.New(), Params: network.IPRangeParams{L3NetworkUUID: id, NetworkCIDR: "10.98.0.0/24"}}
	r1, err := managementnode.CallOwner(ctx, st.Node(), network.IPRangeKind.MsgCreate, rreq)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := managementnode.CallOwner(ctx, st.Node(), network.IPRangeKind.MsgCreate, rreq)
	if err != nil {
		t.Fatalf("redelivered range create: %v", err)
	}
	if r1.UUID != rreq.UUID || r2.UUID != r1.UUID || r2.StartIP != "10.98.0.2" {
		t.Fatalf("range creates answered %+v and %+v", r1, r2)
	}
	if rs, err := network.ListIpRanges(ctx, st.DB(), id); err != nil || len(rs) != 1 {
		t.Fatalf("%d ranges after a redelivered create, %v; want 1", len(rs), err)
	}
	// The owner checks the L2 network again: a create that reaches it with
	// its L2 network gone fails there.
	_, err = managementnode.CallOwner(ctx, st.Node(), network.L3Kind.MsgCreate,
		resource.CreateReq[network.L3Params]{UUID: uid.New(), Params: network.L3Params{Name: "orphan", L2NetworkUUID: uid.New()}})
	wantCode(t, err, errcode.InvalidArgument, "does not exist")
}

// testIPRanges: ranges added under their network's path, by addresses or by
// CIDR, the rules checked at the edge, queries by network, get, update and
// delete.
func testIPRanges(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c := st.Client
	l3 := createL3(t, ctx, st, "ranges", "")
	other := createL3(t, ctx, st, "ranges-other", "")

	r1 := addRange(t, ctx, st, l3.UUID, map[string]any{"name": "r1", "startIp": "192.168.10.10", "endIp": "192.168.10.20",
		"netmask": "255.255.255.0", "gateway": "192.168.10.1"})
	if len(r1.UUID) != 32 || r1.Name != "r1" || r1.L3NetworkUUID != l3.UUID || r1.StartIP != "192.168.10.10" || r1.EndIP != "192.168.10.20" ||
		r1.Gateway != "192.168.10.1" || r1.Netmask != "255.255.255.0" || r1.NetworkCIDR != "192.168.10.0/24" || r1.PrefixLen != 24 || r1.IPVersion != 4 {
		t.Fatalf("added %+v", r1)
	}
	// Another range of the same subnet and gateway; its name defaults.
	r2 := addRange(t, ctx, st, l3.UUID, map[string]any{"startIp": "192.168.10.30", "endIp": "192.168.10.40",
		"netmask": "255.255.255.0", "gateway": "192.168.10.1"})
	if r2.Name != "192.168.10.30-192.168.10.40" {
		t.Fatalf("default name %q", r2.Name)
	}
	byCIDR := addRange(t, ctx, st, other.UUID, map[string]any{"networkCidr": "172.16.5.0/29"})
	if byCIDR.StartIP != "172.16.5.2" || byCIDR.EndIP != "172.16.5.6" || byCIDR.Gateway != "172.16.5.1" ||
		byCIDR.Netmask != "255.255.255.248" || byCIDR.NetworkCIDR != "172.16.5.0/29" || byCIDR.L3NetworkUUID != other.UUID {
		t.Fatalf("added by CIDR %+v", byCIDR)
	}

	t.Run("refused", func(t *testing.T) {
		explicit := func(start, end, gateway string) map[string]any {
			return map[string]any{"startIp": start, "endIp": end, "netmask": "255.255.255.0", "gateway": gateway}
		}
		withL3 := explicit("192.168.10.50", "192.168.10.60", "192.168.10.1")
		withL3["l3NetworkUuid"] = other.UUID
		missing := uid.New()
		tests := []struct {
			name   string
			l3     string
			params map[string]any
			status int
			code   errcode.Code
			detail []string
		}{
			{"overlap", l3.UUID, explicit("192.168.10.15", "192.168.10.25", "192.168.10.1"), 400, errcode.InvalidArgument,
				[]string{"overlaps ip range " + r1.UUID}},
			{"overlap by CIDR", other.UUID, map[string]any{"networkCidr": "172.16.5.0/28"}, 400, errcode.InvalidArgument,
				[]string{"overlaps ip range " + byCIDR.UUID}},
			{"other gateway", l3.UUID, explicit("192.168.10.50", "192.168.10.60", "192.168.10.254"), 400, errcode.InvalidArgument,
				[]string{"must have gateway 192.168.10.1 and netmask 255.255.255.0"}},
			{"other subnet", l3.UUID, explicit("192.168.11.50", "192.168.11.60", "192.168.11.1"), 400, errcode.InvalidArgument,
				[]string{"must have gateway 192.168.10.1"}},
			{"body names another network", l3.UUID, withL3, 400, errcode.InvalidArgument,
				[]string{"the body names parent " + other.UUID, "the path names " + l3.UUID}},
			{"unknown network in the path", missing, explicit("10.1.0.10", "10.1.0.20", "10.1.0.1"), 404, errcode.ResourceNotFound,
				[]string{"l3 network " + missing + " not found"}},
			{"bad address", l3.UUID, explicit("192.168.10.300", "192.168.10.60", "192.168.10.1"), 400, errcode.InvalidArgument,
				[]string{"startIp", "not an IPv4 address"}},
			{"gateway inside", l3.UUID, explicit("192.168.10.50", "192.168.10.60", "192.168.10.55"), 400, errcode.InvalidArgument,
				[]string{"must not be inside the range"}},
			{"start after end", l3.UUID, explicit("192.168.10.60", "192.168.10.50", "192.168.10.1"), 400, errcode.InvalidArgument,
				[]string{"is after endIp"}},
			{"no endIp", l3.UUID, map[string]any{"startIp": "192.168.10.50", "netmask": "255.255.255.0", "gateway": "192.168.10.1"}, 400,
				errcode.InvalidArgument, []string{"endIp is required"}},
			{"CIDR and addresses", l3.UUID, map[string]any{"networkCidr": "10.2.0.0/24", "gateway": "10.2.0.1"}, 400, errcode.InvalidArgument,
				[]string{"either networkCidr or startIp"}},
			{"CIDR not a network address", other.UUID, map[string]any{"networkCidr": "10.3.0.5/24"}, 400, errcode.InvalidArgument,
				[]string{"did you mean 10.3.0.0/24"}},
			{"unknown field", l3.UUID, map[string]any{"networkCidr": "10.4.0.0/24", "vlan": 3}, 400, errcode.InvalidArgument,
				[]string{"vlan"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Create(ctx, "l3-networks/"+tc.l3+"/ip-ranges", tc.params)
				wantAPIError(t, err, tc.status, tc.code, tc.detail...)
			})
		}
		for _, net := range []struct {
			uuid string
			want int
		}{{l3.UUID, 2}, {other.UUID, 1}} {
			if rs, err := network.ListIpRanges(ctx, st.DB(), net.uuid); err != nil || len(rs) != net.want {
				t.Fatalf("network %s has %d ranges after the refused adds, %v; want %d", net.uuid, len(rs), err, net.want)
			}
		}
	})

	t.Run("query and get", func(t *testing.T) {
		rows, total, err := client.QueryAs[network.IpRangeVO](ctx, c, "l3-networks/ip-ranges",
			client.Query{Q: []string{"l3NetworkUuid=" + l3.UUID}, Sort: "+startIp", ReplyWithCount: true})
		if err != nil || total != 2 || len(rows) != 2 || rows[0].UUID != r1.UUID || rows[1].UUID != r2.UUID {
			t.Fatalf("query by l3NetworkUuid: %+v (total %d), %v; want r1 and r2", rows, total, err)
		}
		rows, _, err = client.QueryAs[network.IpRangeVO](ctx, c, "l3-networks/ip-ranges", client.Query{Q: []string{"l3NetworkUuid=" + other.UUID}})
		if err != nil || len(rows) != 1 || rows[0].UUID != byCIDR.UUID {
			t.Fatalf("query the other network's ranges: %+v, %v", rows, err)
		}
		got, err := client.GetAs[network.IpRangeVO](ctx, c, "l3-networks/ip-ranges", r1.UUID)
		if err != nil || got.UUID != r1.UUID || got.StartIP != r1.StartIP || got.L3NetworkUUID != l3.UUID {
			t.Fatalf("get: %+v, %v", got, err)
		}
		_, err = c.Get(ctx, "l3-networks/ip-ranges", uid.New())
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	})

	t.Run("update", func(t *testing.T) {
		got, err := client.ActionAndWait[network.IpRangeVO](ctx, c, "l3-networks/ip-ranges", r2.UUID, "updateIpRange", map[string]any{"name": "r2"})
		if err != nil || got.Name != "r2" || got.StartIP != r2.StartIP || got.EndIP != r2.EndIP {
			t.Fatalf("updateIpRange: %+v, %v", got, err)
		}
		// The hidden columns the allocator uses survive the save.
		if rs, err := network.ListIpRanges(ctx, st.DB(), l3.UUID); err != nil || len(rs) != 2 || rs[1].Name != "r2" || rs[1].Size() != 11 {
			t.Fatalf("ranges after the update: %+v, %v", rs, err)
		}
		_, err = c.Action(ctx, "l3-networks/ip-ranges", uid.New(), "updateIpRange", map[string]any{"name": "x"})
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	})

	t.Run("delete", func(t *testing.T) {
		if err := deleteAndWait(ctx, c, "l3-networks/ip-ranges", byCIDR.UUID); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err := c.Get(ctx, "l3-networks/ip-ranges", byCIDR.UUID)
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
		if err := deleteAndWait(ctx, c, "l3-networks/ip-ranges", byCIDR.UUID); err != nil {
			t.Fatalf("delete of a missing range: %v", err)
		}
		// Its addresses can be added again.
		addRange(t, ctx, st, other.UUID, map[string]any{"networkCidr": "172.16.5.0/28"})
	})
}

// testDeleteWhileUsed: a network or range with an IP in use cannot be
// deleted (the job fails with InvalidState); once the IP is released, it
// can.
func testDeleteWhileUsed(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c := st.Client
	l3 := createL3(t, ctx, st, "busy", "")
	r := addRange(t, ctx, st, l3.UUID, map[string]any{"networkCidr": "10.77.0.0/24"})
	ip, err := network.AllocateIP(ctx, st.DB(), l3.UUID, "nic-1", network.AllocateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip.IP != "10.77.0.2" || ip.IPRangeUUID != r.UUID || ip.Gateway != "10.77.0.1" {
		t.Fatalf("allocated %+v", ip)
	}

	err = deleteAndWait(ctx, c, "l3-networks/ip-ranges", r.UUID)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "ip range "+r.UUID, "1 IP address(es) in use")
	err = deleteAndWait(ctx, c, "l3-networks", l3.UUID)
	wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, "l3 network "+l3.UUID, "1 IP address(es) in use")
	if _, err := client.GetAs[network.IpRangeVO](ctx, c, "l3-networks/ip-ranges", r.UUID); err != nil {
		t.Fatalf("the range after the refused deletes: %v", err)
	}
	if _, err := client.GetAs[network.L3NetworkVO](ctx, c, "l3-networks", l3.UUID); err != nil {
		t.Fatalf("the network after the refused deletes: %v", err)
	}

	if err := network.ReleaseIP(ctx, st.DB(), ip.UUID); err != nil {
		t.Fatal(err)
	}
	if err := deleteAndWait(ctx, c, "l3-networks/ip-ranges", r.UUID); err != nil {
		t.Fatalf("delete the range after the release: %v", err)
	}
	if err := deleteAndWait(ctx, c, "l3-networks", l3.UUID); err != nil {
		t.Fatalf("delete the network after the release: %v", err)
	}
	_, err = c.Get(ctx, "l3-networks", l3.UUID)
	wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
}

// testCapacity: the capacity of a network with ranges added over REST
// follows the allocations and releases, lowest addresses first.
func testCapacity(t *testing.T, ctx context.Context, st *servertest.Stack) {
	l3 := createL3(t, ctx, st, "counted", "")
	addRange(t, ctx, st, l3.UUID, map[string]any{"startIp": "10.66.0.10", "endIp": "10.66.0.19", "netmask": "255.255.255.0", "gateway": "10.66.0.1"})
	second := addRange(t, ctx, st, l3.UUID, map[string]any{"startIp": "10.66.0.100", "endIp": "10.66.0.104", "netmask": "255.255.255.0", "gateway": "10.66.0.1"})
	if got := capacityOf(t, ctx, st, l3.UUID); got != (network.IPCapacity{Total: 15, Used: 0, Available: 15}) {
		t.Fatalf("capacity of a new network: %+v", got)
	}
	var used []network.UsedIpVO
	for i := 0; i < 12; i++ {
		ip, err := network.AllocateIP(ctx, st.DB(), l3.UUID, "nic-"+uid.New(), network.AllocateOptions{})
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		used = append(used, ip)
	}
	if used[0].IP != "10.66.0.10" || used[9].IP != "10.66.0.19" || used[10].IP != "10.66.0.100" || used[10].IPRangeUUID != second.UUID {
		t.Fatalf("allocated %s, %s, %s: want the lowest addresses, the first range first", used[0].IP, used[9].IP, used[10].IP)
	}
	if got := capacityOf(t, ctx, st, l3.UUID); got != (network.IPCapacity{Total: 15, Used: 12, Available: 3}) {
		t.Fatalf("capacity after 12 allocations: %+v", got)
	}
	// Releases give the addresses back, and the lowest is taken again.
	for _, ip := range used[:2] {
		if err := network.ReleaseIP(ctx, st.DB(), ip.UUID); err != nil {
			t.Fatal(err)
		}
	}
	if got := capacityOf(t, ctx, st, l3.UUID); got != (network.IPCapacity{Total: 15, Used: 10, Available: 5}) {
		t.Fatalf("capacity after 2 releases: %+v", got)
	}
	again, err := network.AllocateIP(ctx, st.DB(), l3.UUID, "nic-again", network.AllocateOptions{})
	if err != nil || again.IP != "10.66.0.10" {
		t.Fatalf("allocation after the release: %+v, %v", again, err)
	}
	// Full: the last addresses, then CapacityExhausted naming the network.
	for i := 0; i < 4; i++ {
		if _, err := network.AllocateIP(ctx, st.DB(), l3.UUID, "nic-fill", network.AllocateOptions{}); err != nil {
			t.Fatalf("fill %d: %v", i, err)
		}
	}
	_, err = network.AllocateIP(ctx, st.DB(), l3.UUID, "nic-late", network.AllocateOptions{})
	wantCode(t, err, errcode.CapacityExhausted, l3.UUID, "counted")
	if got := capacityOf(t, ctx, st, l3.UUID); got != (network.IPCapacity{Total: 15, Used: 15, Available: 0}) {
		t.Fatalf("capacity when full: %+v", got)
	}
	// A disabled network is refused (ZStack's state; set in the database as
	// no API changes it yet).
	if err := st.DB().Model(&network.L3NetworkVO{}).Where("uuid = ?", l3.UUID).Update("state", network.L3StateDisabled).Error; err != nil {
		t.Fatal(err)
	}
	_, err = network.AllocateIP(ctx, st.DB(), l3.UUID, "nic-x", network.AllocateOptions{})
	wantCode(t, err, errcode.InvalidState, "Disabled")
	if _, err := network.Capacity(ctx, st.DB(), uid.New()); !errcode.Has(err, errcode.ResourceNotFound) {
		t.Fatalf("capacity of a missing network: %v", err)
	}
}

// createL3 creates an L3 network on the default L2 network.
func createL3(t *testing.T, ctx context.Context, st *servertest.Stack, name, description string) network.L3NetworkVO {
	t.Helper()
	l3, err := client.CreateAndWait[network.L3NetworkVO](ctx, st.Client, "l3-networks",
		map[string]any{"name": name, "description": description, "l2NetworkUuid": st.Defaults["l2"]})
	if err != nil {
		t.Fatalf("create l3 network %s: %v", name, err)
	}
	return l3
}

func addRange(t *testing.T, ctx context.Context, st *servertest.Stack, l3UUID string, params map[string]any) network.IpRangeVO {
	t.Helper()
	r, err := client.CreateAndWait[network.IpRangeVO](ctx, st.Client, "l3-networks/"+l3UUID+"/ip-ranges", params)
	if err != nil {
		t.Fatalf("add ip range %v to %s: %v", params, l3UUID, err)
	}
	return r
}

func capacityOf(t *testing.T, ctx context.Context, st *servertest.Stack, l3UUID string) network.IPCapacity {
	t.Helper()
	c, err := network.Capacity(ctx, st.DB(), l3UUID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func deleteAndWait(ctx context.Context, c *client.Client, path, uuid string) error {
	j, err := c.Delete(ctx, path, uuid, "")
	if err != nil {
		return err
	}
	_, err = j.Wait(ctx, nil)
	return err
}

// wantAPIError checks that err is an API answer with status and code whose
// message says every one of details.
func wantAPIError(t *testing.T, err error, status int, code errcode.Code, details ...string) {
	t.Helper()
	if got := client.StatusCode(err); got != status {
		t.Fatalf("HTTP %d (%v), want %d", got, err, status)
	}
	wantCode(t, err, code, details...)
}

func wantCode(t *testing.T, err error, code errcode.Code, details ...string) {
	t.Helper()
	if !errcode.Has(err, code) {
		t.Fatalf("error %v has code %s, want %s", err, errcode.CodeOf(err), code)
	}
	for _, d := range details {
		if !strings.Contains(err.Error(), d) {
			t.Fatalf("error %q does not say %q", err, d)
		}
	}
}
