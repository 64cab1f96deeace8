package network

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/services/host"
	"mplane/thread"
)

// A NIC on an L2 network is plugged into that network's Linux bridge on
// its host, which the host must have before the VM starts: ZStack
// "realizes" the L2 network on the host, with the createbridge command of
// its type (protocol.CreateNoVlanBridge, CreateVlanBridge,
// CreateVxlanBridge). Bridges does it once per host and L2 network,
// records it in l2_network_host_refs, and does it again for every recorded
// L2 network when the host reconnects (it may have rebooted and lost its
// bridges).

// Bridge defaults, ZStack's: the L2 networks' MTU (its global
// configurations defaultDhcpMtu.l2NoVlanNetwork, .l2VlanNetwork and
// .l2VxlanNetwork) and its bridge.disable.iptables property.
const (
	DefaultBridgeMTU      = 1500
	DefaultVxlanBridgeMTU = 1450
	bridgeDisableIptables = false
)

// linuxIfNameMax is the longest Linux interface name (IFNAMSIZ - 1), ZStack's
// L2NetworkConstant.LINUX_IF_NAME_MAX_SIZE.
const linuxIfNameMax = 15

// BridgeName is the bridge of l2 on its hosts, named as ZStack names them:
// br_<interface> for an L2NoVlanNetwork, br_<interface>_<vlan> for an
// L2VlanNetwork, br_vx_<vni> for a VxlanNetwork. An interface too long for
// the 15 characters of a Linux interface name is replaced by as many
// leading hex digits of its MD5 sum as fit (KVMHostUtils.
// getNormalizedBridgeName). A VxlanNetworkPool, which carries no NIC, and
// an unknown type have none: "".
func BridgeName(l2 *L2NetworkVO) string {
	switch l2.Type {
	case L2NoVlanNetwork:
		return bridgeOf("br_", l2.PhysicalInterface, "")
	case L2VlanNetwork:
		return bridgeOf("br_", l2.PhysicalInterface, "_"+strconv.Itoa(vlanOf(l2)))
	case VxlanNetwork:
		return "br_vx_" + strconv.Itoa(vniOf(l2))
	}
	return ""
}

func bridgeOf(prefix, iface, suffix string) string {
	if room := linuxIfNameMax - len(prefix) - len(suffix); len(iface) > room {
		sum := md5.Sum([]byte(iface))
		iface = hex.EncodeToString(sum[:])[:max(room, 1)]
	}
	return prefix + iface + suffix
}

func vlanOf(l2 *L2NetworkVO) int {
	if l2.Vlan != nil {
		return *l2.Vlan
	}
	return l2.VirtualNetworkID
}

func vniOf(l2 *L2NetworkVO) int {
	if l2.Vni != nil {
		return *l2.Vni
	}
	return l2.VirtualNetworkID
}

// L2NetworkHostRefVO is a row of l2_network_host_refs: L2 network
// L2NetworkUUID is realized on host HostUUID (the host has its bridge). It
// goes with its L2 network (ON DELETE CASCADE).
type L2NetworkHostRefVO struct {
	L2NetworkUUID string    `gorm:"column:l2_network_uuid;primaryKey;size:32" json:"l2NetworkUuid"`
	HostUUID      string    `gorm:"column:host_uuid;primaryKey;size:32;index" json:"hostUuid"`
	CreateDate    time.Time `gorm:"column:create_date;not null" json:"createDate"`
}

// TableName is l2_network_host_refs.
func (L2NetworkHostRefVO) TableName() string { return "l2_network_host_refs" }

// l2HostRefSchema carries the foreign key, for migration only (see
// ipRangeSchema). None to hosts: their table comes after the network
// tables; a deleted host's rows are never read again (a host added again
// has a new UUID).
type l2HostRefSchema struct {
	L2NetworkHostRefVO
	L2Network *L2NetworkVO `gorm:"foreignKey:L2NetworkUUID;references:UUID;constraint:OnDelete:CASCADE"`
}

func (l2HostRefSchema) TableName() string { return "l2_network_host_refs" }

// BridgeBusService is the bus service of Bridges: each node consumes
// "l2bridge.<nodeUUID>".
const BridgeBusService = "l2bridge"

// bridgesReq names a host and, for a realize, the L3 networks of the NICs
// to plug in there.
type bridgesReq struct {
	HostUUID       string   `json:"hostUuid"`
	L3NetworkUUIDs []string `json:"l3NetworkUuids,omitempty"`
	// Again sends the createbridge of every L2 network, recorded or not.
	Again bool `json:"again,omitempty"`
}

// ResourceUUID is the host: the work runs on its owner.
func (r bridgesReq) ResourceUUID() string { return r.HostUUID }

// bridgesRep maps each L3 network to its bridge on the host.
type bridgesRep struct {
	Bridges map[string]string `json:"bridges,omitempty"`
}

var (
	msgRealizeBridges = managementnode.NewOwnedMsg[bridgesReq, bridgesRep](BridgeBusService, "network.RealizeBridges")
	msgResendBridges  = managementnode.NewOwnedMsg[bridgesReq, cloudbus.Empty](BridgeBusService, "network.ResendBridges")
)

// BridgesOptions configure Bridges. DB, Node and Scheduler are required.
type BridgesOptions struct {
	DB        *gorm.DB
	Node      *managementnode.Node
	Scheduler *thread.Scheduler
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Bridges makes the bridges of L2 networks on hosts.
//
// Guarantees:
//   - The createbridge of an L2 network reaches a host once, however many
//     VMs on it start there at once and whichever nodes own them: the
//     work runs on the host's owner (an owned message keyed by the host),
//     one task at a time per host (chain "bridges-<host>"), and an L2
//     network recorded for the host is not sent again. A row is recorded
//     only after the agent succeeded.
//   - After a host reconnects, every L2 network recorded for it is sent
//     again, in the same chain, so a Realize queued behind the resend
//     waits for it. One whose resend fails is forgotten: the next VM start
//     on it sends it again.
//   - Not covered: a VM start that reaches the chain between the host's
//     reconnect and the resend's submission trusts the record; if the host
//     lost its bridges, that start fails (the agent says which bridge is
//     missing) and the retry after the resend succeeds.
type Bridges struct {
	db    *gorm.DB
	node  *managementnode.Node
	sched *thread.Scheduler
	log   *slog.Logger
}

// NewBridges builds Bridges; Start serves its bus messages.
func NewBridges(opts BridgesOptions) (*Bridges, error) {
	if opts.DB == nil || opts.Node == nil || opts.Scheduler == nil {
		return nil, errors.New("network: BridgesOptions.DB, Node and Scheduler are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Bridges{db: opts.DB, node: opts.Node, sched: opts.Scheduler, log: opts.Logger.With("component", "bridges")}, nil
}

// Start serves "l2bridge.<node>". The tables exist (Migrate).
func (b *Bridges) Start(context.Context) error {
	return b.node.ServeOwned(BridgeBusService, func(mux *cloudbus.Mux) {
		managementnode.Handle(mux, msgRealizeBridges, b.realize)
		managementnode.Handle(mux, msgResendBridges, b.resend)
	})
}

// Stop does nothing: Bridges runs no goroutine of its own (its work runs
// in bus handlers and scheduler tasks, which their owners stop).
func (b *Bridges) Stop(context.Context) error { return nil }

// Realize makes sure host hostUUID has the bridge of the L2 network of
// each of the L3 networks l3UUIDs, before a VM with NICs on them starts
// there, and answers each L3 network's bridge (the NIC's bridgeName). An
// L3 network without an L2 network (a row from before L2 networks) has no
// bridge to make: "". An L3 network on a VxlanNetworkPool is refused
// (InvalidArgument), and so is a missing one. A createbridge that fails
// fails the call, naming the L2 network, its bridge and the host, and
// records nothing. The request goes to the host's owner, again while that
// owner is briefly gone (it is idempotent).
func (b *Bridges) Realize(ctx context.Context, hostUUID string, l3UUIDs []string) (map[string]string, error) {
	return b.realizeOn(ctx, bridgesReq{HostUUID: hostUUID, L3NetworkUUIDs: l3UUIDs})
}

// RealizeAgain is Realize sending the createbridge of each L2 network
// whether or not it is recorded for the host: the host's agent said one of
// them is missing (it restarted and lost its bridges, and the host's next
// ping, which sends them all again, has not come yet). createbridge is
// idempotent on the agent.
func (b *Bridges) RealizeAgain(ctx context.Context, hostUUID string, l3UUIDs []string) (map[string]string, error) {
	return b.realizeOn(ctx, bridgesReq{HostUUID: hostUUID, L3NetworkUUIDs: l3UUIDs, Again: true})
}

func (b *Bridges) realizeOn(ctx context.Context, req bridgesReq) (map[string]string, error) {
	hostUUID, l3UUIDs := req.HostUUID, req.L3NetworkUUIDs
	if hostUUID == "" {
		return nil, errcode.New(errcode.InvalidArgument, "realize bridges: no host given")
	}
	if len(l3UUIDs) == 0 {
		return map[string]string{}, nil
	}
	rep, err := managementnode.CallOwnerAgain(ctx, b.node, msgRealizeBridges, req)
	if err != nil {
		return nil, err
	}
	if rep.Bridges == nil {
		rep.Bridges = map[string]string{}
	}
	return rep.Bridges, nil
}

// Reconnected sends the bridges of every L2 network realized on host
// hostUUID again; it runs after the host connects (host.Service.
// OnConnected). Failures are logged: the L2 networks concerned are
// forgotten, and made again by the next VM start on them.
func (b *Bridges) Reconnected(ctx context.Context, hostUUID string) {
	if _, err := managementnode.CallOwnerAgain(ctx, b.node, msgResendBridges, bridgesReq{HostUUID: hostUUID}); err != nil {
		b.log.Warn("bridges not sent again after the host connected", "host_uuid", hostUUID, "err", err)
	}
}

// HostDeleted forgets the bridges made on a host that is being deleted,
// in the transaction that deletes it (host.Service.OnDelete).
func HostDeleted(tx *gorm.DB, hostUUID string) error {
	if err := tx.Where("host_uuid = ?", hostUUID).Delete(&L2NetworkHostRefVO{}).Error; err != nil {
		return fmt.Errorf("forget the bridges of host %s: %w", hostUUID, err)
	}
	return nil
}

func chainOfBridges(hostUUID string) string { return "bridges-" + hostUUID }

// realize runs on the host's owner: it reads the networks, then in the
// host's chain sends the createbridge of each L2 network not recorded for
// the host, and records it.
func (b *Bridges) realize(ctx context.Context, req bridgesReq) (bridgesRep, error) {
	names, l2s, err := b.networksOf(ctx, req.L3NetworkUUIDs)
	if err != nil {
		return bridgesRep{}, err
	}
	if len(l2s) == 0 {
		return bridgesRep{Bridges: names}, nil
	}
	err = b.sched.Do(ctx, thread.Task{Signature: chainOfBridges(req.HostUUID), Name: "realize-bridges"}, func(ctx context.Context) error {
		ids := make([]string, len(l2s))
		for i := range l2s {
			ids[i] = l2s[i].UUID
		}
		var done []string
		if err := b.db.WithContext(ctx).Model(&L2NetworkHostRefVO{}).Where("host_uuid = ? AND l2_network_uuid IN ?", req.HostUUID, ids).
			Pluck("l2_network_uuid", &done).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "read the L2 networks realized on host %s", req.HostUUID)
		}
		for i := range l2s {
			l2 := &l2s[i]
			if !req.Again && slices.Contains(done, l2.UUID) {
				continue
			}
			if err := b.createBridge(ctx, req.HostUUID, l2); err != nil {
				return err
			}
			ref := L2NetworkHostRefVO{L2NetworkUUID: l2.UUID, HostUUID: req.HostUUID, CreateDate: now()}
			if err := b.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&ref).Error; err != nil {
				return errcode.Wrap(errcode.Internal, err, "record bridge %s of l2 network %s on host %s (the L2 network may have been deleted meanwhile)",
					BridgeName(l2), l2.UUID, req.HostUUID)
			}
			b.log.Info("bridge realized", "host_uuid", req.HostUUID, "l2_network_uuid", l2.UUID, "bridge", BridgeName(l2))
		}
		return nil
	})
	if err != nil {
		return bridgesRep{}, err
	}
	return bridgesRep{Bridges: names}, nil
}

// resend runs on the host's owner, in the host's chain: the createbridge
// of every L2 network recorded for the host, oldest first. A pending
// resend is superseded by a newer one (the host reconnected again).
func (b *Bridges) resend(ctx context.Context, req bridgesReq) (cloudbus.Empty, error) {
	err := b.sched.Do(ctx, thread.Task{Signature: chainOfBridges(req.HostUUID), Name: "resend-bridges", DedupKey: "resend"}, func(ctx context.Context) error {
		var l2s []L2NetworkVO
		err := b.db.WithContext(ctx).Session(&gorm.Session{SkipHooks: true}).Omit(clause.Associations).
			Joins("JOIN l2_network_host_refs r ON r.l2_network_uuid = l2_networks.uuid").
			Where("r.host_uuid = ?", req.HostUUID).Order("r.create_date, l2_networks.uuid").Find(&l2s).Error
		if err != nil {
			return errcode.Wrap(errcode.Internal, err, "read the L2 networks realized on host %s", req.HostUUID)
		}
		var failed []error
		for i := range l2s {
			l2 := &l2s[i]
			err := b.createBridge(ctx, req.HostUUID, l2)
			if err == nil {
				continue
			}
			// The host may lack the bridge: forget it, so that the next
			// VM start on the L2 network sends it again.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			derr := b.db.WithContext(dctx).Where("l2_network_uuid = ? AND host_uuid = ?", l2.UUID, req.HostUUID).Delete(&L2NetworkHostRefVO{}).Error
			cancel()
			if derr != nil {
				err = errors.Join(err, fmt.Errorf("forget l2 network %s on host %s: %w", l2.UUID, req.HostUUID, derr))
			}
			failed = append(failed, err)
		}
		if len(l2s) > 0 {
			b.log.Info("bridges sent again", "host_uuid", req.HostUUID, "l2_networks", len(l2s), "failed", len(failed))
		}
		return errors.Join(failed...)
	})
	if errors.Is(err, thread.ErrSuperseded) {
		err = nil // the newer resend does it
	}
	return cloudbus.Empty{}, err
}

// networksOf reads the L3 networks l3UUIDs and their L2 networks: each L3
// network's bridge name ("" without an L2 network), and the distinct L2
// networks in the order of the L3 networks.
func (b *Bridges) networksOf(ctx context.Context, l3UUIDs []string) (map[string]string, []L2NetworkVO, error) {
	var l3s []struct {
		UUID          string  `gorm:"column:uuid"`
		L2NetworkUUID *string `gorm:"column:l2_network_uuid"`
	}
	if err := b.db.WithContext(ctx).Model(&L3NetworkVO{}).Select("uuid", "l2_network_uuid").Where("uuid IN ?", l3UUIDs).
		Scan(&l3s).Error; err != nil {
		return nil, nil, errcode.Wrap(errcode.Internal, err, "read L3 networks %s", strings.Join(l3UUIDs, ", "))
	}
	l2Of := make(map[string]string, len(l3s))
	var l2IDs []string
	for _, l3 := range l3s {
		if l3.L2NetworkUUID != nil && *l3.L2NetworkUUID != "" {
			l2Of[l3.UUID] = *l3.L2NetworkUUID
			l2IDs = append(l2IDs, *l3.L2NetworkUUID)
		} else {
			l2Of[l3.UUID] = ""
		}
	}
	var rows []L2NetworkVO
	if len(l2IDs) > 0 {
		if err := b.db.WithContext(ctx).Session(&gorm.Session{SkipHooks: true}).Omit(clause.Associations).
			Where("uuid IN ?", l2IDs).Find(&rows).Error; err != nil {
			return nil, nil, errcode.Wrap(errcode.Internal, err, "read L2 networks %s", strings.Join(l2IDs, ", "))
		}
	}
	byUUID := make(map[string]*L2NetworkVO, len(rows))
	for i := range rows {
		byUUID[rows[i].UUID] = &rows[i]
	}
	names := make(map[string]string, len(l3UUIDs))
	var l2s []L2NetworkVO
	for _, l3 := range l3UUIDs {
		l2UUID, ok := l2Of[l3]
		switch {
		case !ok:
			return nil, nil, errcode.New(errcode.InvalidArgument, "L3 network %s does not exist", l3)
		case l2UUID == "":
			names[l3] = ""
			continue
		}
		l2 := byUUID[l2UUID]
		switch {
		case l2 == nil:
			return nil, nil, errcode.New(errcode.InvalidState, "L3 network %s is on L2 network %s, which does not exist", l3, l2UUID)
		case l2.Type == VxlanNetworkPool:
			return nil, nil, errcode.New(errcode.InvalidArgument,
				"L3 network %s is on vxlan pool %s (%s), which carries no NIC: put the L3 network on a VXLAN network of the pool", l3, l2.UUID, l2.Name)
		case BridgeName(l2) == "":
			return nil, nil, errcode.New(errcode.InvalidArgument, "L3 network %s is on L2 network %s of type %s, which has no bridge", l3, l2.UUID, l2.Type)
		}
		names[l3] = BridgeName(l2)
		if !slices.ContainsFunc(l2s, func(x L2NetworkVO) bool { return x.UUID == l2.UUID }) {
			l2s = append(l2s, *l2)
		}
	}
	return names, l2s, nil
}

// createBridge sends the createbridge of l2 to the host and waits for the
// agent's result.
func (b *Bridges) createBridge(ctx context.Context, hostUUID string, l2 *L2NetworkVO) error {
	name := BridgeName(l2)
	base := protocol.CreateBridgeCmd{PhysicalInterfaceName: l2.PhysicalInterface, BridgeName: name, L2NetworkUUID: l2.UUID,
		DisableIptables: bridgeDisableIptables, MTU: DefaultBridgeMTU}
	var err error
	switch l2.Type {
	case L2NoVlanNetwork:
		_, err = host.Run(ctx, b.node, hostUUID, protocol.CreateNoVlanBridge, base)
	case L2VlanNetwork:
		_, err = host.Run(ctx, b.node, hostUUID, protocol.CreateVlanBridge, protocol.CreateVlanBridgeCmd{CreateBridgeCmd: base, Vlan: vlanOf(l2)})
	case VxlanNetwork:
		var cmd protocol.CreateVxlanBridgeCmd
		if cmd, err = b.vxlanCommand(ctx, hostUUID, l2, name); err == nil {
			_, err = host.Run(ctx, b.node, hostUUID, protocol.CreateVxlanBridge, cmd)
		}
	default:
		return errcode.New(errcode.InvalidArgument, "l2 network %s (%s) is a %s: it has no bridge", l2.UUID, l2.Name, l2.Type)
	}
	if err != nil {
		return errcode.Wrap(errcode.CodeOf(err), err, "create bridge %s of %s %s (%s) on host %s", name, l2.Type, l2.UUID, l2.Name, hostUUID)
	}
	return nil
}

// vxlanCommand builds the createbridge of VXLAN network l2 on a host.
// mplane keeps no VTEP records (ZStack's VtepVO, found by the pool's
// CIDR): a host's tunnel end point is its management IP, and its peers
// are the management IPs of the other hosts of the clusters the network's
// pool is attached to.
func (b *Bridges) vxlanCommand(ctx context.Context, hostUUID string, l2 *L2NetworkVO, name string) (protocol.CreateVxlanBridgeCmd, error) {
	var h host.HostVO
	err := b.db.WithContext(ctx).Select("uuid", "management_ip").Where("uuid = ?", hostUUID).Take(&h).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return protocol.CreateVxlanBridgeCmd{}, errcode.New(errcode.ResourceNotFound, "host %s not found", hostUUID)
	}
	if err != nil {
		return protocol.CreateVxlanBridgeCmd{}, errcode.Wrap(errcode.Internal, err, "read host %s", hostUUID)
	}
	peers := []string{}
	if l2.PoolUUID != nil {
		err := b.db.WithContext(ctx).Table(host.HostVO{}.TableName()+" AS h").Distinct("h.management_ip").
			Joins("JOIN l2_network_cluster_refs r ON r.cluster_uuid = h.cluster_uuid").
			Where("r.l2_network_uuid = ? AND h.uuid <> ? AND h.management_ip <> ?", *l2.PoolUUID, hostUUID, h.ManagementIP).
			Order("h.management_ip").Pluck("h.management_ip", &peers).Error
		if err != nil {
			return protocol.CreateVxlanBridgeCmd{}, errcode.Wrap(errcode.Internal, err, "read the vxlan peers of host %s in pool %s", hostUUID, *l2.PoolUUID)
		}
	}
	if peers == nil {
		peers = []string{} // never null: kvmagent reads it as a list
	}
	return protocol.CreateVxlanBridgeCmd{BridgeName: name, L2NetworkUUID: l2.UUID, VtepIP: h.ManagementIP, Vni: vniOf(l2),
		Dstport: protocol.VxlanDefaultPort, Peers: peers, MTU: DefaultVxlanBridgeMTU}, nil
}
