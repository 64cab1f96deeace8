package kvm

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// The bridges of the simulated host, as kvmagent's network plugin makes
// them: /network/l2novlan/createbridge, /network/l2vlan/createbridge and
// /network/l2vxlan/createbridge (async; latency and failure injection
// apply) create a Linux bridge enslaving a device (the physical interface,
// its VLAN device <interface>.<vlan>, or the VXLAN device vxlan<vni>).
// Creating a bridge the host has succeeds and changes nothing but the
// L2 network, MTU and VXLAN end points it records. A device belongs to one
// bridge: enslaving it to another is kvmagent's error ("has been occupied
// by bridge"). A /vm/start whose NIC names a bridge the host does not have
// fails, as libvirt does on a real host; a NIC without a bridgeName is not
// checked (older callers), nor is the start of a running VM.
//
// Bridges are not in the state file: a restarted agent has none until the
// management node sends them again (it does at every reconnect), as after
// a reboot of a real host. Their arrivals are in /debug/arrivals with the
// other commands, so the order of createbridge and /vm/start shows there;
// Agent.Bridges lists them.

// Bridge is a Linux bridge the simulated host has.
type Bridge struct {
	Name string `json:"name"`
	// Device is the device the bridge enslaves: the physical interface
	// (eth0), its VLAN device (eth0.100) or a VXLAN device (vxlan100).
	Device            string `json:"device"`
	PhysicalInterface string `json:"physicalInterfaceName,omitempty"`
	Vlan              int    `json:"vlan,omitempty"`
	Vni               int    `json:"vni,omitempty"`
	VtepIP            string `json:"vtepIp,omitempty"`
	// Peers are the other VXLAN tunnel end points, as the last create
	// gave them.
	Peers []string `json:"peers,omitempty"`
	// L2NetworkUUID is the L2 network of the last create (kvmagent
	// aliases the device with it).
	L2NetworkUUID string    `json:"l2NetworkUuid,omitempty"`
	MTU           int       `json:"mtu,omitempty"`
	Created       time.Time `json:"created"`
}

// ifNameMax is the longest Linux interface name (IFNAMSIZ - 1).
const ifNameMax = 15

// maxVni is the largest VXLAN network identifier (24 bits).
const maxVni = 1<<24 - 1

// netState is the host's bridges by name. Its lock is a leaf.
type netState struct {
	mu      sync.Mutex
	bridges map[string]*Bridge
}

// add creates bridge b, or updates the one of that name enslaving the
// same device.
func (n *netState) add(b Bridge) error {
	if err := checkIfName("bridge", b.Name); err != nil {
		return err
	}
	if err := checkIfName("device", b.Device); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.bridges[b.Device]; ok {
		return fmt.Errorf("interface %s is bridge", b.Device)
	}
	for _, other := range n.bridges {
		if other.Name != b.Name && other.Device == b.Device {
			return fmt.Errorf("failed to create bridge[%s], physical interface[%s] has been occupied by bridge[%s]", b.Name, b.Device, other.Name)
		}
	}
	if cur, ok := n.bridges[b.Name]; ok {
		if cur.Device != b.Device {
			return fmt.Errorf("bridge %s exists on this host with device %s, not %s", b.Name, cur.Device, b.Device)
		}
		cur.L2NetworkUUID, cur.MTU, cur.VtepIP, cur.Peers = b.L2NetworkUUID, b.MTU, b.VtepIP, b.Peers
		return nil
	}
	if n.bridges == nil {
		n.bridges = map[string]*Bridge{}
	}
	b.Created = time.Now()
	n.bridges[b.Name] = &b
	return nil
}

func (n *netState) has(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.bridges[name]
	return ok
}

// checkIfName refuses what Linux refuses as an interface name.
func checkIfName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s name is empty", what)
	case len(name) > ifNameMax:
		return fmt.Errorf("%s name %q is longer than %d characters, the limit of Linux interface names", what, name, ifNameMax)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("%s name %q is not a valid Linux interface name", what, name)
	}
	return nil
}

// LoseBridges drops every bridge of the host, as its reboot does: the
// management nodes' records of the bridges they made on it are then wrong
// until they make them again.
func (a *Agent) LoseBridges() {
	a.net.mu.Lock()
	a.net.bridges = nil
	a.net.mu.Unlock()
}

// Bridges lists the bridges the host has, oldest first.
func (a *Agent) Bridges() []Bridge {
	a.net.mu.Lock()
	out := make([]Bridge, 0, len(a.net.bridges))
	for _, b := range a.net.bridges {
		c := *b
		c.Peers = slices.Clone(b.Peers)
		out = append(out, c)
	}
	a.net.mu.Unlock()
	slices.SortFunc(out, func(x, y Bridge) int {
		if c := x.Created.Compare(y.Created); c != 0 {
			return c
		}
		return strings.Compare(x.Name, y.Name)
	})
	return out
}

func (a *Agent) registerNetwork(s *agentserver.Server) {
	agentserver.HandleAsync(s, protocol.PathCreateNoVlanBridge, a.createBridge)
	agentserver.HandleAsync(s, protocol.PathCreateVlanBridge, a.createVlanBridge)
	agentserver.HandleAsync(s, protocol.PathCreateVxlanBridge, a.createVxlanBridge)
}

func requireBridgeFields(cmd protocol.CreateBridgeCmd) error {
	switch {
	case cmd.PhysicalInterfaceName == "" && cmd.BridgeName == "":
		return fmt.Errorf("physicalInterfaceName and bridgeName are required")
	case cmd.PhysicalInterfaceName == "":
		return fmt.Errorf("physicalInterfaceName is required")
	case cmd.BridgeName == "":
		return fmt.Errorf("bridgeName is required")
	}
	return nil
}

func (a *Agent) createBridge(ctx context.Context, req *agentserver.Request, cmd protocol.CreateBridgeCmd) (protocol.CreateBridgeRsp, error) {
	if err := requireBridgeFields(cmd); err != nil {
		return protocol.CreateBridgeRsp{}, err
	}
	if err := a.simulate(ctx, req); err != nil {
		return protocol.CreateBridgeRsp{}, err
	}
	if err := a.net.add(noVlanBridge(cmd)); err != nil {
		return protocol.CreateBridgeRsp{}, fmt.Errorf("unable to create bridge[%s] from device[%s], because %w", cmd.BridgeName, cmd.PhysicalInterfaceName, err)
	}
	a.log.Info("bridge created", "bridge", cmd.BridgeName, "device", cmd.PhysicalInterfaceName, "l2_network_uuid", cmd.L2NetworkUUID)
	return protocol.CreateBridgeRsp{}, nil
}

func noVlanBridge(cmd protocol.CreateBridgeCmd) Bridge {
	return Bridge{Name: cmd.BridgeName, Device: cmd.PhysicalInterfaceName, PhysicalInterface: cmd.PhysicalInterfaceName,
		L2NetworkUUID: cmd.L2NetworkUUID, MTU: cmd.MTU}
}

// vlanBridgeCmd is protocol.CreateVlanBridgeCmd with the VLAN optional, to
// tell a missing one (kvmagent fails) from 0 (a no-VLAN bridge).
type vlanBridgeCmd struct {
	protocol.CreateBridgeCmd
	Vlan *int `json:"vlan"`
}

func (a *Agent) createVlanBridge(ctx context.Context, req *agentserver.Request, cmd vlanBridgeCmd) (protocol.CreateBridgeRsp, error) {
	if err := requireBridgeFields(cmd.CreateBridgeCmd); err != nil {
		return protocol.CreateBridgeRsp{}, err
	}
	switch {
	case cmd.Vlan == nil:
		return protocol.CreateBridgeRsp{}, fmt.Errorf("vlan is required (1 to 4094; 0 for no VLAN)")
	case *cmd.Vlan < 0 || *cmd.Vlan > 4094:
		return protocol.CreateBridgeRsp{}, fmt.Errorf("vlan %d is out of range 0-4094", *cmd.Vlan)
	}
	if err := a.simulate(ctx, req); err != nil {
		return protocol.CreateBridgeRsp{}, err
	}
	vlan := *cmd.Vlan
	b := noVlanBridge(cmd.CreateBridgeCmd)
	if vlan != 0 {
		b.Device, b.Vlan = cmd.PhysicalInterfaceName+"."+strconv.Itoa(vlan), vlan
	}
	if err := a.net.add(b); err != nil {
		return protocol.CreateBridgeRsp{}, fmt.Errorf("unable to create vlan bridge[name:%s, vlan:%d] from device[%s], because %w",
			cmd.BridgeName, vlan, cmd.PhysicalInterfaceName, err)
	}
	a.log.Info("bridge created", "bridge", cmd.BridgeName, "device", b.Device, "vlan", vlan, "l2_network_uuid", cmd.L2NetworkUUID)
	return protocol.CreateBridgeRsp{}, nil
}

func (a *Agent) createVxlanBridge(ctx context.Context, req *agentserver.Request, cmd protocol.CreateVxlanBridgeCmd) (protocol.CreateBridgeRsp, error) {
	switch {
	case cmd.Vni == 0 || cmd.VtepIP == "":
		return protocol.CreateBridgeRsp{}, fmt.Errorf("vni or vtepip is none") // kvmagent's words
	case cmd.BridgeName == "":
		return protocol.CreateBridgeRsp{}, fmt.Errorf("bridgeName is required")
	case cmd.Vni < 0 || cmd.Vni > maxVni:
		return protocol.CreateBridgeRsp{}, fmt.Errorf("vni %d is out of range 1-%d", cmd.Vni, maxVni)
	}
	for _, ip := range append([]string{cmd.VtepIP}, cmd.Peers...) {
		if _, err := netip.ParseAddr(ip); err != nil {
			return protocol.CreateBridgeRsp{}, fmt.Errorf("vxlan end point %q is not an IP address", ip)
		}
	}
	if err := a.simulate(ctx, req); err != nil {
		return protocol.CreateBridgeRsp{}, err
	}
	b := Bridge{Name: cmd.BridgeName, Device: "vxlan" + strconv.Itoa(cmd.Vni), Vni: cmd.Vni, VtepIP: cmd.VtepIP,
		Peers: slices.Clone(cmd.Peers), L2NetworkUUID: cmd.L2NetworkUUID, MTU: cmd.MTU}
	if err := a.net.add(b); err != nil {
		return protocol.CreateBridgeRsp{}, fmt.Errorf("unable to create vxlan bridge[%s] for vni %d, because %w", cmd.BridgeName, cmd.Vni, err)
	}
	a.log.Info("bridge created", "bridge", cmd.BridgeName, "device", b.Device, "vtep_ip", cmd.VtepIP, "l2_network_uuid", cmd.L2NetworkUUID)
	return protocol.CreateBridgeRsp{}, nil
}

// withBridges makes a VM start fail, as on a real host, when a NIC names a
// bridge the host does not have. A running VM is left to start, which
// changes nothing.
func (a *Agent) withBridges(start agentserver.Func[protocol.StartVMCmd, protocol.VMRsp]) agentserver.Func[protocol.StartVMCmd, protocol.VMRsp] {
	return func(ctx context.Context, req *agentserver.Request, cmd protocol.StartVMCmd) (protocol.VMRsp, error) {
		id := cmd.VMInstanceUUID
		if id == "" || a.running(id) {
			return start(ctx, req, cmd) // refused, or left as it is
		}
		for _, nic := range cmd.Nics {
			if nic.BridgeName != "" && !a.net.has(nic.BridgeName) {
				return protocol.VMRsp{VMState: protocol.VMStateShutdown}, fmt.Errorf(
					"unable to start vm[uuid:%s]: nic %s (mac %s, l3 network %s): bridge %s does not exist on this host",
					id, nic.UUID, nic.Mac, nic.L3NetworkUUID, nic.BridgeName)
			}
		}
		return start(ctx, req, cmd)
	}
}
