package vm_test

import (
	"testing"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/server/servertest"
	"mplane/services/host"
	"mplane/services/vm"
	"mplane/uid"
)

// TestBridges: the bridge of an L2 network reaches a host once, before the
// first VM on that L2 network starts there (or gets a NIC on it), in the
// agent's own record of what arrived; a host that reconnects gets every
// bridge it had again; later VMs send none.
func TestBridges(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{}).in(t, kvm.Options{})
	hostUUID := c.mine[0]
	agent := c.agents[hostUUID]
	_, flat := c.network("br-flat", "10.50.0")
	vlanL2 := c.createResource("l2-networks/vlan", map[string]any{"name": "br-vlan-" + uid.New()[:6], "zoneUuid": c.Defaults["zone"],
		"physicalInterface": "eth-br" + uid.New()[:4], "vlan": 120})
	c.attachL2(vlanL2, c.cluster)
	vlan := c.createResource("l3-networks", map[string]any{"name": "br-vlan", "l2NetworkUuid": vlanL2})
	c.createResource("l3-networks/"+vlan+"/ip-ranges", map[string]any{"name": "br-vlan-range",
		"startIp": "10.51.0.10", "endIp": "10.51.0.200", "netmask": "255.255.255.0", "gateway": "10.51.0.1"})

	// count is how many of the agent's arrivals have path; first the index
	// of the first one (-1: none).
	count := func(path string) (n, first int) {
		first = -1
		for i, a := range agent.Arrivals() {
			if a.Path == path {
				if first < 0 {
					first = i
				}
				n++
			}
		}
		return n, first
	}
	want := func(what string, novlan, vlans int) {
		t.Helper()
		if n, _ := count(protocol.PathCreateNoVlanBridge); n != novlan {
			t.Errorf("%s: %d %s commands, want %d", what, n, protocol.PathCreateNoVlanBridge, novlan)
		}
		if n, _ := count(protocol.PathCreateVlanBridge); n != vlans {
			t.Errorf("%s: %d %s commands, want %d", what, n, protocol.PathCreateVlanBridge, vlans)
		}
	}
	want("before any VM", 0, 0)

	first := c.mustCreate("br-1", map[string]any{"l3NetworkUuids": []string{flat}})
	want("after the first VM", 1, 0)
	_, bridge := count(protocol.PathCreateNoVlanBridge)
	if _, start := count(protocol.PathStartVM); start < bridge {
		t.Errorf("the first /vm/start (arrival %d) came before the bridge (arrival %d)", start, bridge)
	}
	c.mustCreate("br-2", map[string]any{"l3NetworkUuids": []string{flat}})
	want("after the second VM on the same L2 network", 1, 0)

	// A NIC on the VLAN network: its bridge first, then the NIC.
	if _, err := c.attachL3(first.UUID, vlan, ""); err != nil {
		t.Fatal(err)
	}
	want("after a NIC on the VLAN network", 1, 1)
	_, vb := count(protocol.PathCreateVlanBridge)
	if _, plug := count(protocol.PathAttachNic); plug < vb {
		t.Errorf("the NIC (arrival %d) was plugged before its bridge was made (arrival %d)", plug, vb)
	}
	names := map[string]bool{}
	for _, b := range agent.Bridges() {
		names[b.Name] = true
	}
	if len(names) != 2 {
		t.Errorf("the agent has bridges %v, want the two L2 networks'", agent.Bridges())
	}

	// A reconnect sends both again; then a VM sends none.
	if _, err := client.ActionAndWait[host.HostVO](c.ctx, c.Client, "hosts", hostUUID, "reconnectHost", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		n, _ := count(protocol.PathCreateNoVlanBridge)
		m, _ := count(protocol.PathCreateVlanBridge)
		return n == 2 && m == 2
	}, "both bridges sent again after the reconnect")
	c.mustCreate("br-3", map[string]any{"l3NetworkUuids": []string{flat, vlan}})
	want("after a VM following the reconnect", 2, 2)
}

// TestStartOnAHostThatLostItsBridges: a host that lost its bridges (its
// agent restarted, the host rebooted) before its next ping still has them
// in the records of what was made there; the start it refuses for a
// missing bridge makes the bridges again and starts the VM.
func TestStartOnAHostThatLostItsBridges(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{}).in(t, kvm.Options{})
	_, flat := c.network("lost-flat", "10.52.0")
	v := c.mustCreate("lost-1", map[string]any{"l3NetworkUuids": []string{flat}})
	c.mustAct(v.UUID, "stopVmInstance", nil)
	for _, a := range c.agents {
		a.LoseBridges()
	}
	s := c.mustAct(v.UUID, "startVmInstance", nil)
	if s.State != vm.StateRunning {
		t.Fatalf("VM %s after its start on a host that lost its bridges, want Running", s.State)
	}
	agent := c.agents[s.HostUUID]
	if len(agent.Bridges()) != 1 {
		t.Errorf("host %s has bridges %v after the start, want its NIC's", s.HostUUID, agent.Bridges())
	}
	if got := c.agentVM(s.HostUUID, v.UUID); got != "Running" {
		t.Errorf("the agent has the VM %q, want Running", got)
	}
}
