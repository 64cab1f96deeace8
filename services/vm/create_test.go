package vm_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/conf"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
	"mplane/server/servertest"
	"mplane/services/network"
	"mplane/services/vm"
	"mplane/uid"
)

// ipRange is the one IP range of an L3 network, read through the API.
func (c *cloud) ipRange(l3 string) network.IpRangeVO {
	c.t.Helper()
	rs, _, err := client.QueryAs[network.IpRangeVO](c.ctx, c.Client, "l3-networks/ip-ranges",
		client.Query{Q: []string{client.Where("l3NetworkUuid", client.OpEq, l3)}})
	if err != nil || len(rs) != 1 {
		c.t.Fatalf("IP ranges of L3 %s: %d, %v; want 1", l3, len(rs), err)
	}
	return rs[0]
}

// testCreateVM: a created VM is Running on a host of the zone, holds
// exactly its offering's capacity there and nowhere else, has a NIC with an
// IP of the L3 network's range that the network service counts as used,
// runs on the host's agent, and its inventory says all that.
func testCreateVM(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{}, kvm.Options{})
	const cpu, mem = 3, int64(3) << 30 // not the default offering's sizing
	off := c.offering("medium", cpu, mem)
	before := c.hosts()
	rng := c.ipRange(c.Defaults["l3"])

	v := c.mustCreate("web-1", map[string]any{"instanceOfferingUuid": off, "description": "the first one"})

	h, ok := before[v.HostUUID]
	if !ok || !c.isMine(v.HostUUID) || v.ClusterUUID != c.cluster {
		t.Fatalf("VM on host %q of cluster %q, want one of the test's hosts %v of cluster %s", v.HostUUID, v.ClusterUUID, c.mine, c.cluster)
	}
	if v.LastHostUUID != v.HostUUID {
		t.Errorf("lastHostUuid %q, want the host %q", v.LastHostUUID, v.HostUUID)
	}
	after := c.hosts()
	for uuid, b := range before {
		a := after[uuid]
		wantCPU, wantMem := b.AvailableCPUCapacity, b.AvailableMemoryCapacity
		if uuid == h.UUID {
			wantCPU, wantMem = wantCPU-cpu, wantMem-mem
		}
		if a.AvailableCPUCapacity != wantCPU || a.AvailableMemoryCapacity != wantMem {
			t.Errorf("host %s available %d vCPUs %d bytes, want %d %d", uuid, a.AvailableCPUCapacity, a.AvailableMemoryCapacity, wantCPU, wantMem)
		}
		if a.TotalCPUCapacity != b.TotalCPUCapacity || a.TotalMemoryCapacity != b.TotalMemoryCapacity {
			t.Errorf("host %s total capacity changed", uuid)
		}
	}
	r, ok := c.reservation(v.UUID)
	if !ok || r.HostUUID != v.HostUUID || r.CPU != cpu || r.Memory != mem {
		t.Errorf("reservation %+v (found %v), want %d vCPUs %d bytes on %s", r, ok, cpu, mem, v.HostUUID)
	}

	// The inventory.
	checks := []struct {
		field, got, want string
	}{
		{"name", v.Name, "web-1"},
		{"description", v.Description, "the first one"},
		{"instanceOfferingUuid", v.InstanceOfferingUUID, off},
		{"imageUuid", v.ImageUUID, c.Defaults["image"]},
		{"defaultL3NetworkUuid", v.DefaultL3NetworkUUID, c.Defaults["l3"]},
		{"type", v.Type, "UserVm"},
		{"hypervisorType", v.HypervisorType, "KVM"},
		{"platform", v.Platform, "Linux"}, // the default image's
		{"cpuNum", fmt.Sprint(v.CPUNum), fmt.Sprint(cpu)},
		{"memorySize", fmt.Sprint(v.MemorySize), fmt.Sprint(mem)},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %q, want %q", ck.field, ck.got, ck.want)
		}
	}
	if v.CreateDate.IsZero() || v.LastOpDate.Before(v.CreateDate) {
		t.Errorf("createDate %v lastOpDate %v", v.CreateDate, v.LastOpDate)
	}
	if len(v.VMNics) != 1 {
		t.Fatalf("%d NICs, want 1: %+v", len(v.VMNics), v.VMNics)
	}
	nic := v.VMNics[0]
	if nic.L3NetworkUUID != c.Defaults["l3"] || nic.VMInstanceUUID != v.UUID || nic.DeviceID != 0 {
		t.Errorf("NIC %+v: want device 0 of VM %s on L3 %s", nic, v.UUID, c.Defaults["l3"])
	}
	if !inRange(t, nic.IP, rng.StartIP, rng.EndIP) || nic.Netmask != rng.Netmask || nic.Gateway != rng.Gateway {
		t.Errorf("NIC %s/%s gw %s, want an IP of %s-%s/%s gw %s", nic.IP, nic.Netmask, nic.Gateway, rng.StartIP, rng.EndIP, rng.Netmask, rng.Gateway)
	}
	if !macRE.MatchString(nic.Mac) {
		t.Errorf("MAC %q", nic.Mac)
	}
	var used network.UsedIpVO
	if err := c.DB().First(&used, "uuid = ?", nic.UsedIPUUID).Error; err != nil || used.IP != nic.IP || used.VMNicUUID != nic.UUID {
		t.Errorf("used IP %s: %+v, %v; want %s owned by NIC %s", nic.UsedIPUUID, used, err, nic.IP, nic.UUID)
	}

	// The read side agrees, and the agent runs it.
	got := c.mustGet(v.UUID)
	if got.State != vm.StateRunning || got.HostUUID != v.HostUUID || len(got.VMNics) != 1 || got.VMNics[0].IP != nic.IP {
		t.Errorf("GET answers %+v, want what create answered %+v", got, v)
	}
	if st := c.agentVM(v.HostUUID, v.UUID); st != protocol.VMStateRunning {
		t.Errorf("the agent has the VM %q, want %s", st, protocol.VMStateRunning)
	}

	// A second VM gets another IP.
	w := c.mustCreate("web-2", nil)
	if w.VMNics[0].IP == nic.IP {
		t.Errorf("two VMs got IP %s", nic.IP)
	}
}

// testCreateVMTwoNICs: one NIC per L3 network, in order, each with an IP
// of its network; the default L3 network is the one asked for.
func testCreateVMTwoNICs(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	second := c.l3("second", "192.168.7.10", "192.168.7.20")
	v := c.mustCreate("two-nics", map[string]any{"l3NetworkUuids": []string{c.Defaults["l3"], second}, "defaultL3NetworkUuid": second})
	if v.DefaultL3NetworkUUID != second {
		t.Errorf("defaultL3NetworkUuid %s, want %s", v.DefaultL3NetworkUUID, second)
	}
	if len(v.VMNics) != 2 {
		t.Fatalf("%d NICs, want 2", len(v.VMNics))
	}
	byDevice := map[int]vm.VmNicVO{}
	for _, n := range v.VMNics {
		byDevice[n.DeviceID] = n
	}
	first := c.ipRange(c.Defaults["l3"])
	for dev, want := range []struct{ l3, start, end string }{{c.Defaults["l3"], first.StartIP, first.EndIP}, {second, "192.168.7.10", "192.168.7.20"}} {
		n, ok := byDevice[dev]
		if !ok || n.L3NetworkUUID != want.l3 || !inRange(t, n.IP, want.start, want.end) {
			t.Errorf("device %d: %+v, want an IP of %s-%s on L3 %s", dev, n, want.start, want.end, want.l3)
		}
		if c.usedIPsOwnedBy(n.UUID) != 1 {
			t.Errorf("NIC %s holds %d used IPs, want 1", n.UUID, c.usedIPsOwnedBy(n.UUID))
		}
	}
	if byDevice[0].Mac == byDevice[1].Mac {
		t.Errorf("both NICs have MAC %s", byDevice[0].Mac)
	}
}

// testCreateValidation: every mistake in a create is refused at the API
// edge with 400 SYS.1007 naming the field, and nothing is created.
func testCreateValidation(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	noRange := c.l3("no-range", "", "")
	missing := uid.New()
	before := c.snapshot()
	tests := []struct {
		name  string
		extra map[string]any
		says  []string
	}{
		{"missing name", map[string]any{"name": nil}, []string{"name"}},
		{"blank name", map[string]any{"name": "   "}, []string{"name is required"}},
		{"missing offering", map[string]any{"instanceOfferingUuid": nil}, []string{"instanceOfferingUuid"}},
		{"unknown offering", map[string]any{"instanceOfferingUuid": missing}, []string{"instanceOfferingUuid", missing, "does not exist"}},
		{"missing image", map[string]any{"imageUuid": nil}, []string{"imageUuid"}},
		{"unknown image", map[string]any{"imageUuid": missing}, []string{"imageUuid", missing, "does not exist"}},
		{"no l3", map[string]any{"l3NetworkUuids": []string{}}, []string{"l3NetworkUuids"}},
		{"empty l3 uuid", map[string]any{"l3NetworkUuids": []string{""}}, []string{"l3NetworkUuids", "empty"}},
		{"unknown l3", map[string]any{"l3NetworkUuids": []string{missing}}, []string{"l3NetworkUuids", missing, "does not exist"}},
		{"l3 without IP range", map[string]any{"l3NetworkUuids": []string{noRange}}, []string{"l3NetworkUuids", noRange, "no IP range"}},
		{"duplicate l3", map[string]any{"l3NetworkUuids": []string{c.Defaults["l3"], c.Defaults["l3"]}}, []string{"l3NetworkUuids", "twice"}},
		{"default l3 not among l3s", map[string]any{"defaultL3NetworkUuid": missing}, []string{"defaultL3NetworkUuid"}},
		{"unknown host", map[string]any{"hostUuid": missing}, []string{"hostUuid", missing, "does not exist"}},
		{"unknown field", map[string]any{"colour": "red"}, []string{"colour"}},
		{"wrong type", map[string]any{"l3NetworkUuids": c.Defaults["l3"]}, []string{"l3NetworkUuids"}},
		{"several mistakes", map[string]any{"name": "", "imageUuid": ""}, []string{"name is required", "imageUuid is required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Client.Create(c.ctx, "vm-instances", c.params("bad", tc.extra))
			wantErr(t, err, http.StatusBadRequest, errcode.InvalidArgument, tc.says...)
		})
	}
	c.requireUnchanged(before, "refused creates")
}

// testCreateNoCapacity: a VM no host can take fails with SYS.1015 naming
// the allocation step and the scope asked for, and leaves nothing behind:
// no VM row, no reservation, no used IP; its flow is rolled back.
func testCreateNoCapacity(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{}, kvm.Options{})
	var maxCPU int64
	for _, h := range c.hosts() {
		maxCPU = max(maxCPU, h.TotalCPUCapacity)
	}
	someHost := c.mine[0]
	huge := c.offering("huge", int(maxCPU)+1, 1<<30)
	tests := []struct {
		name  string
		extra map[string]any
		says  []string
	}{
		{"anywhere", map[string]any{"clusterUuid": nil}, []string{"allocate-host", fmt.Sprint(maxCPU + 1)}},
		{"on a host", map[string]any{"clusterUuid": nil, "hostUuid": someHost}, []string{"allocate-host", "host " + someHost}},
		{"in a cluster", nil, []string{"cluster " + c.cluster}},
		{"in a zone", map[string]any{"clusterUuid": nil, "zoneUuid": c.Defaults["zone"]}, []string{"zone " + c.Defaults["zone"]}},
	}
	records := func() map[flow.State]int {
		var recs []flow.RecordVO
		if err := c.DB().Where("chain = ?", "create-vm").Find(&recs).Error; err != nil {
			t.Fatal(err)
		}
		n := map[flow.State]int{}
		for _, r := range recs {
			n[flow.State(r.State)]++
		}
		return n
	}
	recsBefore := records()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := c.snapshot()
			extra := map[string]any{"instanceOfferingUuid": huge}
			for k, v := range tc.extra {
				extra[k] = v
			}
			_, err := c.create("too-big", extra)
			wantErr(t, err, jobFailed, errcode.CapacityExhausted, tc.says...)
			c.requireUnchanged(before, "a create without capacity")
		})
	}
	// One more create flow per case, rolled back; none left unfinished.
	want := recsBefore
	want[flow.RolledBack] += len(tests)
	if got := records(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("create flow records by state: %v, want %v", got, want)
	}
}

// testCreateIPExhausted: when an L3 network has no free IP, the create
// fails with SYS.1015 naming the network and rolls back the capacity it
// reserved and the IPs it took on the other networks.
func testCreateIPExhausted(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	tiny := c.l3("tiny", "192.168.9.5", "192.168.9.5")
	first := c.mustCreate("takes-the-ip", map[string]any{"l3NetworkUuids": []string{tiny}})
	if ip := first.VMNics[0].IP; ip != "192.168.9.5" {
		t.Fatalf("IP %s, want the only one of the range", ip)
	}
	for _, tc := range []struct {
		name string
		l3s  []string
	}{
		{"only NIC", []string{tiny}},
		{"second NIC", []string{c.Defaults["l3"], tiny}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.snapshot()
			_, err := c.create("no-ip", map[string]any{"l3NetworkUuids": tc.l3s})
			wantErr(t, err, jobFailed, errcode.CapacityExhausted, "allocate-ip", tiny, "no free IP")
			c.requireUnchanged(before, "a create without a free IP")
		})
	}
	if got := c.mustGet(first.UUID); got.State != vm.StateRunning || got.VMNics[0].IP != "192.168.9.5" {
		t.Errorf("the first VM is now %+v", got)
	}
}

// testCreateAgentFailure: the host's agent fails to start the VM; the
// create fails with the agent's error naming the step, the VM is destroyed
// on the agent again and nothing is left behind.
func testCreateAgentFailure(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	healthy := c.mine[0]
	a, h := c.addAgent("broken", kvm.Options{FailRate: 1, FaultPaths: []string{protocol.PathStartVM}})
	before := c.snapshot()
	_, err := c.create("doomed", map[string]any{"hostUuid": h.UUID})
	wantErr(t, err, jobFailed, errcode.AgentError, "start-on-hypervisor", "injected")
	c.requireUnchanged(before, "a create the agent failed")
	st := a.Stats()
	if st.InjectedFailures != 1 || st.Commands[protocol.PathDestroyVM] != 1 || len(a.VMs()) != 0 {
		t.Errorf("agent: %d injected failures, %d destroys, VMs %v; want 1 failed start rolled back by 1 destroy, no VM",
			st.InjectedFailures, st.Commands[protocol.PathDestroyVM], a.VMs())
	}
	// The healthy host still takes VMs.
	if v := c.mustCreate("fine", map[string]any{"hostUuid": healthy}); v.HostUUID != healthy {
		t.Errorf("VM on %s, want %s", v.HostUUID, healthy)
	}
}

// testCreateThroughBus: the create message, sent to the VM's owner
// without the sizing the API node passes, reads the offering itself; sent
// again with the same UUID (a redelivery) it answers the VM that exists
// and takes nothing more.
func testCreateThroughBus(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	off := c.offering("two", 2, 2<<30)
	p := vm.CreateParams{Name: "by-bus", InstanceOfferingUUID: off, ImageUUID: c.Defaults["image"], L3NetworkUUIDs: []string{c.Defaults["l3"]},
		ClusterUUID: c.cluster}
	req := vm.CreateReq{UUID: uid.New(), Params: p}
	v, err := managementnode.CallOwner(c.ctx, c.Node(), vm.MsgCreate, req)
	if err != nil {
		t.Fatal(err)
	}
	if v.UUID != req.UUID || v.State != vm.StateRunning || v.CPUNum != 2 || v.MemorySize != 2<<30 || v.Platform != "Linux" {
		t.Fatalf("created %+v, want Running with the offering's 2 vCPUs and 2 GiB and the image's platform", v)
	}
	before := c.snapshot()
	again, err := managementnode.CallOwner(c.ctx, c.Node(), vm.MsgCreate, req)
	if err != nil {
		t.Fatal(err)
	}
	if again.UUID != v.UUID || again.HostUUID != v.HostUUID || len(again.VMNics) != 1 || again.VMNics[0].IP != v.VMNics[0].IP {
		t.Errorf("redelivered create answered %+v, want the VM %+v", again, v)
	}
	c.requireUnchanged(before, "a redelivered create")

	missing := uid.New()
	for _, tc := range []struct {
		name string
		edit func(*vm.CreateParams)
		says string
	}{
		{"unknown offering", func(p *vm.CreateParams) { p.InstanceOfferingUUID = missing }, "instanceOfferingUuid " + missing},
		{"unknown image", func(p *vm.CreateParams) { p.ImageUUID = missing }, "imageUuid " + missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := p
			tc.edit(&bad)
			_, err := managementnode.CallOwner(c.ctx, c.Node(), vm.MsgCreate, vm.CreateReq{UUID: uid.New(), Params: bad})
			if err == nil || errcode.CodeOf(err) != errcode.InvalidArgument || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("got %v, want SYS.1007 saying %q", err, tc.says)
			}
			c.requireUnchanged(before, "a create with a bad reference")
		})
	}
}

// testPlacementSpreads: VMs go to the least used host first: with VMs that
// take half a host each, the first ones land on distinct hosts, the next
// ones fill every host to exactly its capacity, concurrent creates
// included, and one more finds no capacity.
func testPlacementSpreads(t *testing.T, c *cloud) {
	const hosts = 3
	c = c.in(t, make([]kvm.Options, hosts)...)
	all := c.hosts()
	total := [2]int64{all[c.mine[0]].TotalCPUCapacity, all[c.mine[0]].TotalMemoryCapacity}
	half := c.offering("half", int(total[0]/2), total[1]/2)
	seen := map[string]bool{}
	for i := range hosts {
		v := c.mustCreate(fmt.Sprintf("spread-%d", i), map[string]any{"instanceOfferingUuid": half})
		if seen[v.HostUUID] || !c.isMine(v.HostUUID) {
			t.Fatalf("VM %d placed on host %s, which already has one, while %d hosts are empty", i, v.HostUUID, hosts-i)
		}
		seen[v.HostUUID] = true
	}
	// The second half of every host, all at once.
	var wg sync.WaitGroup
	errs := make([]error, hosts)
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.create(fmt.Sprintf("fill-%d", i), map[string]any{"instanceOfferingUuid": half})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent create %d: %v", i, err)
		}
	}
	var vms []vm.VmInstanceVO
	if err := c.DB().Where("cluster_uuid = ?", c.cluster).Find(&vms).Error; err != nil {
		t.Fatal(err)
	}
	perHost := map[string]int{}
	for _, v := range vms {
		perHost[v.HostUUID]++
	}
	all = c.hosts()
	for _, uuid := range c.mine {
		h := all[uuid]
		if perHost[uuid] != 2 || h.AvailableCPUCapacity != total[0]-2*(total[0]/2) || h.AvailableMemoryCapacity != total[1]-2*(total[1]/2) {
			t.Errorf("host %s: %d VMs, %d vCPUs %d bytes free; want 2 VMs and the host full", uuid, perHost[uuid], h.AvailableCPUCapacity, h.AvailableMemoryCapacity)
		}
	}
	_, err := c.create("one-too-many", map[string]any{"instanceOfferingUuid": half})
	wantErr(t, err, jobFailed, errcode.CapacityExhausted)
}

// testPinnedPlacement: a VM asked on a host runs there; one asked in a
// cluster or zone runs on a host of it, and the inventory keeps the
// cluster or zone; a cluster without hosts has no capacity. The VM's L3
// networks decide too (two zones): a VM never runs outside its L3
// networks' zone, nor in a cluster that lacks one of their L2 networks;
// with no such host the job fails naming the filter that removed the last
// candidates, and nothing stays behind.
func testPinnedPlacement(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{}, kvm.Options{})
	zone := c.createResource("zones", map[string]any{"name": "zone-" + uid.New()[:8]})
	zonePS := c.localStorage(zone)
	// Zone B: clusters 0 and 1 with a host each; its L2 network is
	// attached to cluster 0 only.
	var zoneHosts, zoneClusters []string
	for i := range 2 {
		cl := c.createResource("clusters", map[string]any{"name": fmt.Sprintf("zone-cluster-%d", i), "zoneUuid": zone, "hypervisorType": "KVM"})
		c.attachStorage(cl, zonePS)
		_, h := c.addAgentTo(fmt.Sprintf("zone-host-%d", i), cl, kvm.Options{})
		zoneHosts, zoneClusters = append(zoneHosts, h.UUID), append(zoneClusters, cl)
	}
	l2b := c.createResource("l2-networks/no-vlan", map[string]any{"name": "l2-b-" + uid.New()[:8], "zoneUuid": zone, "physicalInterface": "eth1"})
	c.attachL2(l2b, zoneClusters[0])
	l3b := c.createResource("l3-networks", map[string]any{"name": "l3-b", "l2NetworkUuid": l2b})
	c.createResource("l3-networks/"+l3b+"/ip-ranges", map[string]any{"name": "l3-b-range",
		"startIp": "10.20.0.10", "endIp": "10.20.0.200", "netmask": "255.255.255.0", "gateway": "10.20.0.1"})
	onB := func(extra map[string]any) map[string]any {
		out := map[string]any{"clusterUuid": nil, "l3NetworkUuids": []string{l3b}}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	empty := c.in(t)

	for _, uuid := range append(c.mine, zoneHosts[0]) {
		t.Run("host "+uuid, func(t *testing.T) {
			extra := map[string]any{"clusterUuid": nil, "hostUuid": uuid}
			if uuid == zoneHosts[0] {
				extra = onB(map[string]any{"hostUuid": uuid})
			}
			for i := range 2 {
				v := c.mustCreate(fmt.Sprintf("on-%s-%d", uuid, i), extra)
				if v.HostUUID != uuid {
					t.Errorf("VM pinned to %s runs on %s", uuid, v.HostUUID)
				}
			}
		})
	}
	t.Run("cluster", func(t *testing.T) {
		for i := range 4 {
			v := c.mustCreate(fmt.Sprintf("in-cluster-%d", i), nil)
			if !c.isMine(v.HostUUID) || v.ClusterUUID != c.cluster {
				t.Errorf("VM in cluster %s runs on %s (cluster %q), want one of %v", c.cluster, v.HostUUID, v.ClusterUUID, c.mine)
			}
		}
	})
	t.Run("zone", func(t *testing.T) {
		for i := range 4 {
			v := c.mustCreate(fmt.Sprintf("in-zone-%d", i), onB(map[string]any{"zoneUuid": zone}))
			if v.ZoneUUID != zone || v.HostUUID != zoneHosts[0] {
				t.Errorf("VM in zone %s (%q) runs on %s, want %s (the only host whose cluster has l2 network %s)", zone, v.ZoneUUID, v.HostUUID, zoneHosts[0], l2b)
			}
		}
	})
	t.Run("L3 networks decide", func(t *testing.T) {
		// No zone, no cluster asked: an L3 network of the default zone
		// whose L2 network only this test's cluster has keeps VMs there,
		// zone B's L3 network keeps them on zone B's cluster 0.
		l2a := c.createResource("l2-networks/no-vlan", map[string]any{"name": "l2-a-" + uid.New()[:8], "zoneUuid": c.Defaults["zone"], "physicalInterface": "eth2"})
		c.attachL2(l2a, c.cluster)
		l3a := c.createResource("l3-networks", map[string]any{"name": "l3-a", "l2NetworkUuid": l2a})
		c.createResource("l3-networks/"+l3a+"/ip-ranges", map[string]any{"name": "l3-a-range",
			"startIp": "10.30.0.10", "endIp": "10.30.0.200", "netmask": "255.255.255.0", "gateway": "10.30.0.1"})
		for i := range 6 {
			v := c.mustCreate(fmt.Sprintf("l3-a-%d", i), map[string]any{"clusterUuid": nil, "l3NetworkUuids": []string{l3a}})
			if !c.isMine(v.HostUUID) || v.ClusterUUID != c.cluster || v.ZoneUUID != c.Defaults["zone"] {
				t.Errorf("VM on L3 network %s runs on host %s (cluster %s, zone %s), want one of %v (cluster %s)", l3a, v.HostUUID, v.ClusterUUID, v.ZoneUUID,
					c.mine, c.cluster)
			}
			v = c.mustCreate(fmt.Sprintf("l3-b-%d", i), onB(nil))
			if v.HostUUID != zoneHosts[0] || v.ClusterUUID != zoneClusters[0] || v.ZoneUUID != zone {
				t.Errorf("VM on L3 network %s runs on host %s (cluster %s, zone %s), want host %s of cluster %s", l3b, v.HostUUID, v.ClusterUUID, v.ZoneUUID,
					zoneHosts[0], zoneClusters[0])
			}
		}
	})
	t.Run("no host passes", func(t *testing.T) {
		before := c.snapshot()
		// A host of zone B for a VM on the default zone's L3 network.
		_, err := c.create("wrong-zone", map[string]any{"clusterUuid": nil, "hostUuid": zoneHosts[0]})
		wantErr(t, err, jobFailed, errcode.CapacityExhausted, "allocate-host", "the l3-zone filter removed the last candidates", "host "+zoneHosts[0])
		// Zone B's cluster 1 lacks the L2 network.
		_, err = c.create("no-l2", onB(map[string]any{"hostUuid": zoneHosts[1]}))
		wantErr(t, err, jobFailed, errcode.CapacityExhausted, "allocate-host", "the l2-network filter removed the last candidates", l2b)
		_, err = c.create("no-l2-cluster", onB(map[string]any{"clusterUuid": zoneClusters[1]}))
		wantErr(t, err, jobFailed, errcode.CapacityExhausted, "the l2-network filter removed the last candidates", "cluster "+zoneClusters[1])
		c.requireUnchanged(before, "creates that no host passes")
	})
	t.Run("refused at once", func(t *testing.T) {
		_, err := c.create("two-zones", map[string]any{"clusterUuid": nil, "l3NetworkUuids": []string{c.Defaults["l3"], l3b}})
		wantErr(t, err, http.StatusBadRequest, errcode.InvalidArgument, "one zone", l3b)
		_, err = c.create("other-zone", onB(map[string]any{"zoneUuid": c.Defaults["zone"]}))
		wantErr(t, err, http.StatusBadRequest, errcode.InvalidArgument, "zoneUuid", zone)
	})
	t.Run("cluster without hosts", func(t *testing.T) {
		before := c.snapshot()
		_, err := c.create("nowhere", map[string]any{"clusterUuid": empty.cluster})
		wantErr(t, err, jobFailed, errcode.CapacityExhausted, "cluster "+empty.cluster, "the cluster filter removed the last candidates")
		c.requireUnchanged(before, "a create in an empty cluster")
	})
	t.Run("start", func(t *testing.T) {
		// A stopped VM of zone B starts again only where its L2 network is.
		v := c.mustCreate("restart-b", onB(nil))
		c.mustAct(v.UUID, "stopVmInstance", map[string]any{})
		v = c.mustAct(v.UUID, "startVmInstance", map[string]any{})
		if v.HostUUID != zoneHosts[0] {
			t.Errorf("restarted VM on L3 network %s runs on %s, want %s", l3b, v.HostUUID, zoneHosts[0])
		}
	})
}

// TestCreate: creating VMs through POST /v1/vm-instances (and the create
// message on the bus), on one stack.
func TestCreate(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{})
	for _, tc := range []struct {
		name string
		test func(*testing.T, *cloud)
	}{
		{"VM", testCreateVM},
		{"TwoNICs", testCreateVMTwoNICs},
		{"Validation", testCreateValidation},
		{"NoCapacity", testCreateNoCapacity},
		{"IPExhausted", testCreateIPExhausted},
		{"AgentFailure", testCreateAgentFailure},
		{"ThroughBus", testCreateThroughBus},
		{"PlacementSpreads", testPlacementSpreads},
		{"PinnedPlacement", testPinnedPlacement},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, c) })
	}
}

// TestNewNeedsItsDependencies: a service without its database, bus, node,
// scheduler or IPAM is refused at construction.
func TestNewNeedsItsDependencies(t *testing.T) {
	_, err := vm.New(vm.Options{})
	if err == nil || !strings.Contains(err.Error(), "IPAM") {
		t.Fatalf("New without options: %v, want an error naming what is required", err)
	}
}

// TestCreateTriesTheNextHostWhenAnAgentIsDown: the host the allocator
// picks first has a dead agent (refused connections) but is still
// Connected in the database (no ping has failed yet): the create rolls
// back there and runs on the next host. Its flow records show both runs;
// the dead host holds nothing.
func TestCreateTriesTheNextHostWhenAnAgentIsDown(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{Configure: func(cfg *conf.Config) {
		cfg.HostPingInterval = time.Hour // the dead agent's host stays Connected
	}}).in(t, kvm.Options{CPUNum: 4, MemoryBytes: 8 << 30}, kvm.Options{CPUNum: 4, MemoryBytes: 8 << 30})
	dead, live := c.mine[0], c.mine[1]
	// The live host is busier, so the least-used allocator picks the dead one first.
	c.mustCreate("load", map[string]any{"hostUuid": live})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.agents[dead].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	v := c.mustCreate("rescheduled", nil)
	if v.State != vm.StateRunning || v.HostUUID != live {
		t.Fatalf("VM %s on %s, want Running on the live host %s", v.State, v.HostUUID, live)
	}
	var recs []flow.RecordVO
	if err := c.DB().Where("resource = ? AND chain = ?", v.UUID, "create-vm").Order("created_at").Find(&recs).Error; err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, r := range recs {
		states = append(states, r.State)
	}
	if len(recs) != 2 || recs[0].State != string(flow.RolledBack) || recs[1].State != string(flow.Done) {
		t.Errorf("create flow records %v, want a rolled-back run (the dead host) then a done one", states)
	}
	if _, ok := c.reservation(v.UUID); !ok {
		t.Error("the VM holds no capacity")
	}
	if h := c.hosts()[dead]; h.AvailableCPUCapacity != h.TotalCPUCapacity {
		t.Errorf("the dead host has %d of %d CPUs free, want all", h.AvailableCPUCapacity, h.TotalCPUCapacity)
	}
}
