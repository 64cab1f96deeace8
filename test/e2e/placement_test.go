package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/internal/testenv"
	hostsvc "mplane/services/host"
	"mplane/services/vm"
)

// agentArrivals are the commands an agent got, oldest first.
func agentArrivals(t *testing.T, agentURL string) []kvm.Arrival {
	t.Helper()
	var arrivals []kvm.Arrival
	if code, err := getJSON(context.Background(), agentURL+protocol.PathDebugArrivals, &arrivals); err != nil || code != http.StatusOK {
		t.Fatalf("arrivals of %s: %d %v", agentURL, code, err)
	}
	return arrivals
}

// agentPaths are the paths of the commands an agent got, oldest first.
func agentPaths(t *testing.T, agentURL string) []string {
	t.Helper()
	arrivals := agentArrivals(t, agentURL)
	out := make([]string, len(arrivals))
	for i, a := range arrivals {
		out[i] = a.Path
	}
	return out
}

// countPath is how many of paths are path, and the index of the first.
func countPath(paths []string, path string) (n, first int) {
	first = -1
	for i, p := range paths {
		if p == path {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	return n, first
}

// TestClusterPlacementAndNics: two `mplane server` processes, three agent
// processes in two zones (zone 1: clusters c1 and c2, one host each; zone
// 2: cluster c3, one host). Zone 1's L2 network is attached to c1 only.
//   - VMs on zone 1's L3 network land on c1's host only, VMs on zone 2's
//     on c3's; pinned to a host outside the zone or in a cluster without
//     the L2 network, the job fails naming the filter.
//   - The bridge of an L2 network reaches a host once, before the first
//     VM on it starts there, and again after the host reconnects (the
//     agent's record of arrivals).
//   - A NIC on a VLAN L3 network attached to a running VM: its bridge
//     first, then the NIC; a static IP honoured, refused when taken; the
//     IP released on detach and on destroy.
func TestClusterPlacementAndNics(t *testing.T) {
	e := newClusterEnv(t)
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret"}
	servers := []*server{e.startServer("A"), e.startServer("B")}
	converged(t, 30*time.Second, servers...)
	ca, cb := login(t, servers[0].url, "e2e-secret"), login(t, servers[1].url, "e2e-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	type inv struct {
		UUID string `json:"uuid"`
	}
	mk := func(c *client.Client, path string, params any) string {
		t.Helper()
		r, err := client.CreateAndWait[inv](ctx, c, path, params)
		if err != nil {
			t.Fatalf("create %s %v: %v", path, params, err)
		}
		return r.UUID
	}
	cl := setupCloud(t, ca, 1, 256<<20)
	c2 := mk(cb, "clusters", map[string]any{"name": "c2", "zoneUuid": cl.zone, "hypervisorType": "KVM"})
	mk(ca, "clusters/"+c2+"/primary-storage/"+cl.localPS, map[string]any{})
	zone2 := mk(cb, "zones", map[string]any{"name": "z2"})
	c3 := mk(ca, "clusters", map[string]any{"name": "c3", "zoneUuid": zone2, "hypervisorType": "KVM"})
	ps2 := mk(cb, "primary-storage/local-storage", map[string]any{"name": "local2", "url": localStorageURL, "zoneUuid": zone2})
	mk(ca, "clusters/"+c3+"/primary-storage/"+ps2, map[string]any{})

	dir := t.TempDir()
	var agents []*agentProc
	var hosts []hostsvc.HostVO
	for i, clu := range []string{cl.cluster, c2, c3} {
		ag := startAgent(t, fmt.Sprintf("agent%d", i+1), freePort(t), filepath.Join(dir, fmt.Sprintf("agent%d.json", i+1)))
		agents = append(agents, ag)
		hosts = append(hosts, addHost(t, ca, cloud{cluster: clu}, fmt.Sprintf("h%d", i+1), ag.port))
	}

	l2a := mk(ca, "l2-networks/no-vlan", map[string]any{"name": "flat-a", "zoneUuid": cl.zone, "physicalInterface": "eth1"})
	mk(cb, "l2-networks/"+l2a+"/clusters/"+cl.cluster, map[string]any{})
	l3a := mk(ca, "l3-networks", map[string]any{"name": "net-a", "l2NetworkUuid": l2a})
	mk(cb, "l3-networks/"+l3a+"/ip-ranges", map[string]any{"name": "ra", "startIp": "10.60.0.10", "endIp": "10.60.0.250",
		"netmask": "255.255.255.0", "gateway": "10.60.0.1"})
	l2z := mk(cb, "l2-networks/no-vlan", map[string]any{"name": "flat-z", "zoneUuid": zone2, "physicalInterface": "eth1"})
	mk(ca, "l2-networks/"+l2z+"/clusters/"+c3, map[string]any{})
	l3z := mk(cb, "l3-networks", map[string]any{"name": "net-z", "l2NetworkUuid": l2z})
	mk(ca, "l3-networks/"+l3z+"/ip-ranges", map[string]any{"name": "rz", "startIp": "10.61.0.10", "endIp": "10.61.0.250",
		"netmask": "255.255.255.0", "gateway": "10.61.0.1"})
	clients := []*client.Client{ca, cb}
	on := func(l3s ...string) map[string]any { return map[string]any{"l3NetworkUuids": l3s} }

	// Placement.
	var onA []vm.VmInstanceVO
	for i := range 6 {
		v, err := createVM(ctx, clients[i%2], cl, fmt.Sprintf("a%d", i), on(l3a))
		if err != nil {
			t.Fatal(err)
		}
		if v.HostUUID != hosts[0].UUID {
			t.Errorf("VM %s on L3 network %s runs on %s, want %s (the only host whose cluster has its L2 network)", v.Name, l3a, v.HostUUID, hosts[0].UUID)
		}
		onA = append(onA, v)
	}
	for i := range 4 {
		v, err := createVM(ctx, clients[i%2], cl, fmt.Sprintf("z%d", i), on(l3z))
		if err != nil {
			t.Fatal(err)
		}
		if v.HostUUID != hosts[2].UUID || v.ZoneUUID != zone2 {
			t.Errorf("VM %s on zone 2's L3 network runs on %s in zone %s, want %s", v.Name, v.HostUUID, v.ZoneUUID, hosts[2].UUID)
		}
	}
	for _, tc := range []struct {
		host, filter string
	}{{hosts[1].UUID, "l2-network"}, {hosts[2].UUID, "l3-zone"}} {
		_, err := createVM(ctx, cb, cl, "pinned", map[string]any{"l3NetworkUuids": []string{l3a}, "hostUuid": tc.host})
		if !errcode.Has(err, errcode.CapacityExhausted) || !strings.Contains(err.Error(), "the "+tc.filter+" filter removed the last candidates") {
			t.Errorf("a VM on %s pinned to host %s: %v, want the %s filter named", l3a, tc.host, err, tc.filter)
		}
	}

	// Bridges: once per host and L2 network, before the first start.
	for i, want := range []int{1, 0, 1} {
		paths := agentPaths(t, agents[i].url)
		n, bridge := countPath(paths, protocol.PathCreateNoVlanBridge)
		_, start := countPath(paths, protocol.PathStartVM)
		if n != want || (n > 0 && start < bridge) {
			t.Errorf("agent %d: %d %s (first at %d, first /vm/start at %d), want %d before the first start",
				i+1, n, protocol.PathCreateNoVlanBridge, bridge, start, want)
		}
	}

	// A VLAN network's NIC on a running VM, with a static IP.
	l2v := mk(ca, "l2-networks/vlan", map[string]any{"name": "vlan-a", "zoneUuid": cl.zone, "physicalInterface": "eth1", "vlan": 42})
	mk(cb, "l2-networks/"+l2v+"/clusters/"+cl.cluster, map[string]any{})
	l3v := mk(ca, "l3-networks", map[string]any{"name": "net-v", "l2NetworkUuid": l2v})
	mk(cb, "l3-networks/"+l3v+"/ip-ranges", map[string]any{"name": "rv", "startIp": "10.62.0.10", "endIp": "10.62.0.20",
		"netmask": "255.255.255.0", "gateway": "10.62.0.1"})
	attach := func(c *client.Client, vmUUID, ip string) (vm.VmInstanceVO, error) {
		return client.CreateAndWait[vm.VmInstanceVO](ctx, c, "vm-instances/"+vmUUID+"/l3-networks/"+l3v, map[string]any{"staticIp": ip})
	}
	nicOf := func(v vm.VmInstanceVO) *vm.VmNicVO {
		for i := range v.VMNics {
			if v.VMNics[i].L3NetworkUUID == l3v {
				return &v.VMNics[i]
			}
		}
		return nil
	}
	v, err := attach(cb, onA[0].UUID, "10.62.0.15")
	if err != nil {
		t.Fatal(err)
	}
	if nic := nicOf(v); nic == nil || nic.IP != "10.62.0.15" {
		t.Fatalf("after attach: NICs %+v, want one on %s with 10.62.0.15", v.VMNics, l3v)
	}
	paths := agentPaths(t, agents[0].url)
	nv, vb := countPath(paths, protocol.PathCreateVlanBridge)
	_, plug := countPath(paths, protocol.PathAttachNic)
	if nv != 1 || plug < vb {
		t.Errorf("agent 1: %d VLAN bridges (first at %d), NIC plugged at %d; want one bridge, before the NIC", nv, vb, plug)
	}
	if _, err := attach(ca, onA[1].UUID, "10.62.0.15"); !errcode.Has(err, errcode.InvalidState) || !strings.Contains(err.Error(), "10.62.0.15") {
		t.Errorf("a taken static IP: %v, want InvalidState naming it", err)
	}
	nics, _, err := client.QueryAs[vm.VmNicVO](ctx, ca, "vm-instances/nics", client.Query{Q: []string{"l3NetworkUuid=" + l3v}})
	if err != nil || len(nics) != 1 || len(nics[0].UsedIPs) != 1 || nics[0].UsedIPs[0].IP != "10.62.0.15" {
		t.Fatalf("NICs on %s: %+v (%v), want one with its used IP 10.62.0.15", l3v, nics, err)
	}
	j, err := ca.Delete(ctx, "vm-instances/nics", nics[0].UUID, "")
	if err == nil {
		_, err = j.Wait(ctx, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := countPath(agentPaths(t, agents[0].url), protocol.PathDetachNic); n != 1 {
		t.Errorf("agent 1 got %d %s, want 1", n, protocol.PathDetachNic)
	}
	// Released: another VM takes the address; its destroy releases it.
	v, err = attach(ca, onA[1].UUID, "10.62.0.15")
	if err != nil {
		t.Fatalf("the detached NIC's address: %v", err)
	}
	if err := destroyVM(ctx, cb, v.UUID); err != nil {
		t.Fatal(err)
	}
	if _, err := attach(cb, onA[2].UUID, "10.62.0.15"); err != nil {
		t.Errorf("the destroyed VM's address: %v", err)
	}

	// A reconnect sends both of host 1's bridges again.
	if _, err := client.ActionAndWait[hostsvc.HostVO](ctx, cb, "hosts", hosts[0].UUID, "reconnectHost", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		paths := agentPaths(t, agents[0].url)
		n, _ := countPath(paths, protocol.PathCreateNoVlanBridge)
		m, _ := countPath(paths, protocol.PathCreateVlanBridge)
		return n == 2 && m == 2
	}, "host 1's bridges sent again after its reconnect")
	if _, err := createVM(ctx, ca, cl, "after-reconnect", on(l3a, l3v)); err != nil {
		t.Fatal(err)
	}
	paths = agentPaths(t, agents[0].url)
	if n, _ := countPath(paths, protocol.PathCreateNoVlanBridge); n != 2 {
		t.Errorf("a VM after the reconnect sent a bridge again: %d no-VLAN bridges", n)
	}
}
