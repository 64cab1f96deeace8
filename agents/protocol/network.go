package protocol

// The bridge commands of kvmagent's network plugin: before a VM's NIC can
// be plugged into an L2 network on a host, the host needs the Linux bridge
// of that network (ZStack "realizes" the L2 network on the host). All three
// are asynchronous, as in kvmagent, and idempotent: creating a bridge the
// host has succeeds.
const (
	// PathCreateNoVlanBridge is async: CreateBridgeCmd -> CreateBridgeRsp.
	// The bridge enslaves the physical interface itself.
	PathCreateNoVlanBridge = "/network/l2novlan/createbridge"
	// PathCreateVlanBridge is async: CreateVlanBridgeCmd ->
	// CreateBridgeRsp. The bridge enslaves the VLAN device
	// <physicalInterfaceName>.<vlan>, made if missing; vlan 0 makes a
	// no-VLAN bridge, as kvmagent does.
	PathCreateVlanBridge = "/network/l2vlan/createbridge"
	// PathCreateVxlanBridge is async: CreateVxlanBridgeCmd ->
	// CreateBridgeRsp. The bridge enslaves the VXLAN device vxlan<vni>,
	// bound to vtepIp, with the peers' forwarding entries.
	PathCreateVxlanBridge = "/network/l2vxlan/createbridge"
)

// VxlanDefaultPort is the UDP port of ZStack's VXLAN tunnels (Linux's
// default, not IANA's 4789): VxlanNetworkPoolConstant.VXLAN_PORT.
const VxlanDefaultPort = 8472

// CreateBridgeCmd is the body of /network/l2novlan/createbridge, ZStack's
// CreateBridgeCmd. MTU is the L2 network's (ZStack's default 1500); the
// agent keeps the interface's MTU when that is larger. DisableIptables is
// ZStack's bridge.disable.iptables (false: bridged traffic goes through
// iptables, for security groups).
type CreateBridgeCmd struct {
	PhysicalInterfaceName string `json:"physicalInterfaceName"`
	BridgeName            string `json:"bridgeName"`
	L2NetworkUUID         string `json:"l2NetworkUuid"`
	DisableIptables       bool   `json:"disableIptables"`
	MTU                   int    `json:"mtu,omitempty"`
}

// CreateVlanBridgeCmd is the body of /network/l2vlan/createbridge,
// ZStack's CreateVlanBridgeCmd: a CreateBridgeCmd and the VLAN ID.
type CreateVlanBridgeCmd struct {
	CreateBridgeCmd
	Vlan int `json:"vlan"`
}

// CreateVxlanBridgeCmd is the body of /network/l2vxlan/createbridge,
// ZStack's CreateVxlanBridgeCmd (vxlan plugin). VtepIP is the host's
// tunnel end point, Peers the other hosts' (never null: [] for none),
// Dstport the UDP port (VxlanDefaultPort). MTU defaults to 1450 in ZStack
// (the 50 bytes of VXLAN encapsulation).
type CreateVxlanBridgeCmd struct {
	BridgeName    string   `json:"bridgeName"`
	L2NetworkUUID string   `json:"l2NetworkUuid"`
	VtepIP        string   `json:"vtepIp"`
	Vni           int      `json:"vni"`
	Dstport       int      `json:"dstport,omitempty"`
	Peers         []string `json:"peers"`
	MTU           int      `json:"mtu,omitempty"`
}

// CreateBridgeRsp answers the three commands (kvmagent's
// CreateBridgeResponse, CreateVlanBridgeResponse and
// CreateVxlanBridgeResponse carry nothing more).
type CreateBridgeRsp struct {
	Response
}

// The bridge commands, as the management node sends them (host.Run).
var (
	CreateNoVlanBridge = Command[CreateBridgeCmd, CreateBridgeRsp]{PathCreateNoVlanBridge}
	CreateVlanBridge   = Command[CreateVlanBridgeCmd, CreateBridgeRsp]{PathCreateVlanBridge}
	CreateVxlanBridge  = Command[CreateVxlanBridgeCmd, CreateBridgeRsp]{PathCreateVxlanBridge}
)
