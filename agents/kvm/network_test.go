package kvm

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"mplane/agents/protocol"
	"mplane/errcode"
)

// netHost is an agent driven over HTTP by a management node.
type netHost struct {
	t *testing.T
	m *mgmt
	a *testAgent
}

func newNetHost(t *testing.T, opts Options) *netHost {
	t.Helper()
	return &netHost{t: t, m: newMgmt(t), a: startAgent(t, opts)}
}

func (h *netHost) call(p string, cmd any) error {
	h.t.Helper()
	var rsp protocol.Response
	err := h.m.client.Call(h.t.Context(), h.a.url, p, cmd, &rsp)
	if err == nil && !rsp.Success {
		h.t.Fatalf("%s: no error but answer %+v", p, rsp)
	}
	return err
}

func (h *netHost) must(p string, cmd any) {
	h.t.Helper()
	if err := h.call(p, cmd); err != nil {
		h.t.Fatalf("%s: %v", p, err)
	}
}

func (h *netHost) refused(p string, cmd any, want ...string) {
	h.t.Helper()
	err := h.call(p, cmd)
	if !errcode.Has(err, errcode.AgentError) {
		h.t.Fatalf("%s: %v, want an error result", p, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			h.t.Errorf("%s: %v\nwant it to say %q", p, err, w)
		}
	}
}

// names lists the host's bridges as name=device, oldest first.
func (h *netHost) names() []string {
	var out []string
	for _, b := range h.a.Bridges() {
		out = append(out, b.Name+"="+b.Device)
	}
	return out
}

func noVlan(iface, bridge string) protocol.CreateBridgeCmd {
	return protocol.CreateBridgeCmd{PhysicalInterfaceName: iface, BridgeName: bridge, L2NetworkUUID: "l2-" + bridge, MTU: 1500}
}

func vlanCmd(iface, bridge string, vlan int) protocol.CreateVlanBridgeCmd {
	return protocol.CreateVlanBridgeCmd{CreateBridgeCmd: noVlan(iface, bridge), Vlan: vlan}
}

func vxlanCmd(bridge string, vni int) protocol.CreateVxlanBridgeCmd {
	return protocol.CreateVxlanBridgeCmd{BridgeName: bridge, L2NetworkUUID: "l2-" + bridge, VtepIP: "10.0.0.1", Vni: vni,
		Dstport: protocol.VxlanDefaultPort, Peers: []string{"10.0.0.2", "10.0.0.3"}, MTU: 1450}
}

// TestCreateBridges: each kind of bridge is made once; a second create of
// the same bridge succeeds and makes nothing more.
func TestCreateBridges(t *testing.T) {
	h := newNetHost(t, Options{})
	h.must(protocol.PathCreateNoVlanBridge, noVlan("eth0", "br_eth0"))
	h.must(protocol.PathCreateVlanBridge, vlanCmd("eth1", "br_eth1_100", 100))
	h.must(protocol.PathCreateVlanBridge, vlanCmd("eth2", "br_eth2", 0)) // vlan 0: no VLAN, as kvmagent
	h.must(protocol.PathCreateVxlanBridge, vxlanCmd("br_vx_5000", 5000))
	want := []string{"br_eth0=eth0", "br_eth1_100=eth1.100", "br_eth2=eth2", "br_vx_5000=vxlan5000"}
	if got := h.names(); !reflect.DeepEqual(got, want) {
		t.Fatalf("bridges %v, want %v", got, want)
	}
	vx := h.a.Bridges()[3]
	if vx.Vni != 5000 || vx.VtepIP != "10.0.0.1" || !reflect.DeepEqual(vx.Peers, []string{"10.0.0.2", "10.0.0.3"}) || vx.MTU != 1450 {
		t.Errorf("vxlan bridge %+v", vx)
	}
	vx.Peers[0] = "changed by the caller"
	if got := h.a.Bridges()[3].Peers[0]; got != "10.0.0.2" {
		t.Errorf("Bridges shares its peers with the caller: %q", got)
	}
	if b := h.a.Bridges()[1]; b.Vlan != 100 || b.PhysicalInterface != "eth1" || b.L2NetworkUUID != "l2-br_eth1_100" {
		t.Errorf("vlan bridge %+v", b)
	}

	// Again: idempotent, what changed is recorded.
	h.must(protocol.PathCreateNoVlanBridge, noVlan("eth0", "br_eth0"))
	h.must(protocol.PathCreateVlanBridge, vlanCmd("eth1", "br_eth1_100", 100))
	again := vxlanCmd("br_vx_5000", 5000)
	again.Peers = []string{}
	h.must(protocol.PathCreateVxlanBridge, again)
	if got := h.names(); !reflect.DeepEqual(got, want) {
		t.Fatalf("bridges after creating them again %v, want %v", got, want)
	}
	if vx := h.a.Bridges()[3]; len(vx.Peers) != 0 {
		t.Errorf("peers after a create with none: %v", vx.Peers)
	}
}

// TestCreateBridgeRefused: what kvmagent or Linux would refuse is an error
// result saying why, and makes no bridge.
func TestCreateBridgeRefused(t *testing.T) {
	h := newNetHost(t, Options{})
	h.must(protocol.PathCreateNoVlanBridge, noVlan("eth0", "br_eth0"))
	for _, tc := range []struct {
		name string
		path string
		cmd  any
		want []string
	}{
		{"no interface", protocol.PathCreateNoVlanBridge, noVlan("", "br_x"), []string{"physicalInterfaceName is required"}},
		{"no bridge name", protocol.PathCreateNoVlanBridge, noVlan("eth5", ""), []string{"bridgeName is required"}},
		{"neither", protocol.PathCreateVlanBridge, vlanCmd("", "", 5), []string{"physicalInterfaceName and bridgeName are required"}},
		{"empty body", protocol.PathCreateNoVlanBridge, struct{}{}, []string{"physicalInterfaceName and bridgeName are required"}},
		{"long bridge name", protocol.PathCreateNoVlanBridge, noVlan("eth5", "br_0123456789abc"),
			[]string{"unable to create bridge[br_0123456789abc] from device[eth5]", "longer than 15 characters"}},
		{"bad bridge name", protocol.PathCreateNoVlanBridge, noVlan("eth5", "br/x"), []string{`"br/x" is not a valid Linux interface name`}},
		{"long vlan device", protocol.PathCreateVlanBridge, vlanCmd("enp175s0f0np0", "br_x_1000", 1000),
			[]string{"unable to create vlan bridge[name:br_x_1000, vlan:1000] from device[enp175s0f0np0]", `device name "enp175s0f0np0.1000" is longer than 15`}},
		{"no vlan", protocol.PathCreateVlanBridge, noVlan("eth5", "br_eth5_1"), []string{"vlan is required"}},
		{"vlan 4095", protocol.PathCreateVlanBridge, vlanCmd("eth5", "br_eth5_4095", 4095), []string{"vlan 4095 is out of range 0-4094"}},
		{"negative vlan", protocol.PathCreateVlanBridge, vlanCmd("eth5", "br_eth5", -1), []string{"vlan -1 is out of range"}},
		{"interface taken", protocol.PathCreateNoVlanBridge, noVlan("eth0", "br_other"),
			[]string{"physical interface[eth0] has been occupied by bridge[br_eth0]"}},
		{"bridge on another device", protocol.PathCreateVlanBridge, vlanCmd("eth0", "br_eth0", 7),
			[]string{"bridge br_eth0 exists on this host with device eth0, not eth0.7"}},
		{"bridge as interface", protocol.PathCreateNoVlanBridge, noVlan("br_eth0", "br_br"), []string{"interface br_eth0 is bridge"}},
		{"no vni", protocol.PathCreateVxlanBridge, vxlanCmd("br_vx_0", 0), []string{"vni or vtepip is none"}},
		{"vni too large", protocol.PathCreateVxlanBridge, vxlanCmd("br_vx_big", 1<<24), []string{"vni 16777216 is out of range 1-16777215"}},
		{"no vtep", protocol.PathCreateVxlanBridge, protocol.CreateVxlanBridgeCmd{BridgeName: "br_vx_1", Vni: 1}, []string{"vni or vtepip is none"}},
		{"vtep not an ip", protocol.PathCreateVxlanBridge, func() any { c := vxlanCmd("br_vx_1", 1); c.VtepIP = "host-1"; return c }(),
			[]string{`vxlan end point "host-1" is not an IP address`}},
		{"vxlan without bridge name", protocol.PathCreateVxlanBridge, vxlanCmd("", 1), []string{"bridgeName is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			h.refused(tc.path, tc.cmd, tc.want...)
			if got := h.names(); !reflect.DeepEqual(got, []string{"br_eth0=eth0"}) {
				t.Errorf("bridges after a refused create: %v", got)
			}
		})
	}
}

// TestStartNeedsItsBridges: a VM start whose NIC names a bridge the host
// does not have fails as on a real host; once the bridge is made it
// starts, and the record of arrivals shows the bridge came first. NICs
// without a bridge name are not checked.
func TestStartNeedsItsBridges(t *testing.T) {
	h := newNetHost(t, Options{})
	nic := protocol.NicTO{UUID: "nic1", Mac: "fa:16:3e:00:00:01", L3NetworkUUID: "l3a", BridgeName: "br_eth0", DeviceID: 0}
	cmd := protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1"), DataVolumes: []protocol.VolumeTO{},
		Nics: []protocol.NicTO{nic, {UUID: "nic2", Mac: "fa:16:3e:00:00:02", L3NetworkUUID: "l3b", DeviceID: 1}}}
	h.refused(protocol.PathStartVM, cmd, "unable to start vm[uuid:v1]", "nic nic1", "bridge br_eth0 does not exist on this host")
	if s := h.a.vmState("v1"); s != "" {
		t.Fatalf("vm state %q after a refused start", s)
	}

	h.must(protocol.PathCreateNoVlanBridge, noVlan("eth0", "br_eth0"))
	h.must(protocol.PathStartVM, cmd)
	if s := h.a.vmState("v1"); s != protocol.VMStateRunning {
		t.Fatalf("vm state %q, want Running", s)
	}
	var paths []string
	for _, ar := range h.a.Arrivals() {
		paths = append(paths, ar.Path)
	}
	want := []string{protocol.PathStartVM, protocol.PathCreateNoVlanBridge, protocol.PathStartVM}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("arrivals %v, want %v", paths, want)
	}

	// A running VM starts again (changing nothing) whatever its NICs say.
	again := cmd
	again.Nics = []protocol.NicTO{{UUID: "nic1", Mac: nic.Mac, L3NetworkUUID: "l3a", BridgeName: "br_gone"}}
	h.must(protocol.PathStartVM, again)
	// NICs without bridges are the old callers'.
	plain := protocol.StartVMCmd{VMInstanceUUID: "v2", RootVolume: testRoot("v2"), DataVolumes: []protocol.VolumeTO{},
		Nics: []protocol.NicTO{{UUID: "nic3", Mac: "fa:16:3e:00:00:03", L3NetworkUUID: "l3a"}}}
	h.must(protocol.PathStartVM, plain)
}

// TestCreateBridgeFailureInjection: injected failures apply to the bridge
// commands, and a failed create makes nothing.
func TestCreateBridgeFailureInjection(t *testing.T) {
	h := newNetHost(t, Options{FailRate: 1, FaultPaths: []string{protocol.PathCreateVlanBridge}})
	h.refused(protocol.PathCreateVlanBridge, vlanCmd("eth0", "br_eth0_9", 9), "injected failure")
	h.must(protocol.PathCreateNoVlanBridge, noVlan("eth0", "br_eth0"))
	if got := h.names(); !slices.Equal(got, []string{"br_eth0=eth0"}) {
		t.Errorf("bridges %v", got)
	}
}
