package network

import (
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"mplane/services/cluster"
	"mplane/services/resource"
)

// L2 network types (ZStack's), the virtual switch, and the ranges of VLAN
// IDs and VXLAN network identifiers (VNIs).
const (
	L2NoVlanNetwork  = "L2NoVlanNetwork"
	L2VlanNetwork    = "L2VlanNetwork"
	VxlanNetworkPool = "VxlanNetworkPool"
	VxlanNetwork     = "VxlanNetwork"

	// VSwitchLinuxBridge is the only virtual switch so far, the default.
	VSwitchLinuxBridge = "LinuxBridge"

	MinVlan = 1
	MaxVlan = 4094
	MinVNI  = 1
	MaxVNI  = 16777214

	// VNIPool names the cluster's ID pool of VNIs (MinVNI to MaxVNI): one
	// for the whole cluster, so a VNI is unique among every pool's VXLAN
	// networks (see VNIAllocator).
	VNIPool = "vxlan-vni"

	maxPhysicalInterfaceLen = 128
)

// L2NetworkVO is a row of l2_networks: an L2 network of any type. Its JSON
// form is ZStack's inventory of its type: L2NetworkInventory for an
// L2NoVlanNetwork, with "vlan" for an L2VlanNetwork (L2VlanNetworkInventory),
// "vni" and "poolUuid" for a VxlanNetwork (L2VxlanNetworkInventory) and
// "attachedVniRanges" for a VxlanNetworkPool
// (L2VxlanNetworkPoolInventory); every one has "attachedClusterUuids".
//
// Vlan, Vni and PoolUUID are NULL but for the types that have them, so
// that the unique index (zone_uuid, physical_interface, vlan) holds only
// VLAN networks (NULLs never collide) and the unique index on vni only
// VXLAN networks: the database decides between two racing creates.
// VirtualNetworkID is ZStack's: the VLAN ID or the VNI, 0 for the others.
type L2NetworkVO struct {
	resource.Base
	ZoneUUID          string `gorm:"column:zone_uuid;size:32;not null;index;uniqueIndex:uk_l2_networks_vlan,priority:1" json:"zoneUuid"`
	PhysicalInterface string `gorm:"column:physical_interface;size:128;not null;uniqueIndex:uk_l2_networks_vlan,priority:2" json:"physicalInterface"`
	Type              string `gorm:"column:type;size:32;not null;index" json:"type"`
	VSwitchType       string `gorm:"column:v_switch_type;size:32;not null" json:"vSwitchType"`
	VirtualNetworkID  int    `gorm:"column:virtual_network_id;not null" json:"virtualNetworkId"`
	// Vlan is an L2VlanNetwork's VLAN ID.
	Vlan *int `gorm:"column:vlan;uniqueIndex:uk_l2_networks_vlan,priority:3" json:"vlan,omitempty"`
	// Vni and PoolUUID are a VxlanNetwork's VNI and pool.
	Vni      *int    `gorm:"column:vni;uniqueIndex:uk_l2_networks_vni" json:"vni,omitempty"`
	PoolUUID *string `gorm:"column:pool_uuid;size:32;index" json:"poolUuid,omitempty"`

	// ClusterRefs are the attachments (preloaded by the query, else read
	// by AfterFind); AttachedClusterUUIDs are their clusters, as ZStack's
	// inventory shows them. A VxlanNetwork has none of its own: it reaches
	// the clusters its pool is attached to, PoolClusterRefs (read as
	// ClusterRefs), and those are its AttachedClusterUUIDs.
	ClusterRefs          []L2NetworkClusterRefVO `gorm:"foreignKey:L2NetworkUUID;references:UUID;-:migration" json:"-"`
	PoolClusterRefs      []L2NetworkClusterRefVO `gorm:"foreignKey:L2NetworkUUID;references:PoolUUID;-:migration" json:"-"`
	AttachedClusterUUIDs []string                `gorm:"-" json:"attachedClusterUuids"`
	// VniRanges are a pool's VNI ranges, lowest first (as ClusterRefs).
	VniRanges []VniRangeVO `gorm:"foreignKey:L2NetworkUUID;references:UUID;-:migration" json:"attachedVniRanges,omitempty"`
}

// TableName is l2_networks.
func (L2NetworkVO) TableName() string { return "l2_networks" }

// AfterFind fills AttachedClusterUUIDs (a VXLAN network's are its
// pool's) and a pool's VniRanges, from the preloads (GORM runs it after
// them) or, for a row read without them, by reading them in the same
// transaction.
func (n *L2NetworkVO) AfterFind(tx *gorm.DB) error {
	refs, of := &n.ClusterRefs, n.UUID
	if n.Type == VxlanNetwork && n.PoolUUID != nil {
		refs, of = &n.PoolClusterRefs, *n.PoolUUID
	}
	if *refs == nil {
		if err := tx.Session(&gorm.Session{NewDB: true}).Where("l2_network_uuid = ?", of).
			Order("create_date, cluster_uuid").Find(refs).Error; err != nil {
			return fmt.Errorf("read the clusters of l2 network %s: %w", of, err)
		}
	}
	n.AttachedClusterUUIDs = make([]string, 0, len(*refs))
	for _, r := range *refs {
		n.AttachedClusterUUIDs = append(n.AttachedClusterUUIDs, r.ClusterUUID)
	}
	if n.Type == VxlanNetworkPool && n.VniRanges == nil {
		if err := tx.Session(&gorm.Session{NewDB: true}).Where("l2_network_uuid = ?", n.UUID).
			Order("start_vni").Find(&n.VniRanges).Error; err != nil {
			return fmt.Errorf("read the vni ranges of vxlan pool %s: %w", n.UUID, err)
		}
	}
	return nil
}

// MarshalJSON writes the inventory of the network's type: an empty
// attachedClusterUuids is [], and attachedVniRanges is a pool's only
// (ZStack's inventories differ by type).
func (n L2NetworkVO) MarshalJSON() ([]byte, error) {
	type row L2NetworkVO // the fields, not this method
	out := struct {
		row
		AttachedClusterUUIDs []string      `json:"attachedClusterUuids"`
		AttachedVniRanges    *[]VniRangeVO `json:"attachedVniRanges,omitempty"`
	}{row: row(n), AttachedClusterUUIDs: n.AttachedClusterUUIDs}
	if out.AttachedClusterUUIDs == nil {
		out.AttachedClusterUUIDs = []string{}
	}
	if n.Type == VxlanNetworkPool {
		ranges := n.VniRanges
		if ranges == nil {
			ranges = []VniRangeVO{}
		}
		out.AttachedVniRanges = &ranges
	}
	return json.Marshal(out)
}

// L2NetworkClusterRefVO is a row of l2_network_cluster_refs: an L2 network
// attached to a cluster (its hosts can reach it).
type L2NetworkClusterRefVO struct {
	L2NetworkUUID string    `gorm:"column:l2_network_uuid;primaryKey;size:32" json:"l2NetworkUuid"`
	ClusterUUID   string    `gorm:"column:cluster_uuid;primaryKey;size:32;index" json:"clusterUuid"`
	CreateDate    time.Time `gorm:"column:create_date;not null" json:"createDate"`
}

// TableName is l2_network_cluster_refs.
func (L2NetworkClusterRefVO) TableName() string { return "l2_network_cluster_refs" }

// VniRangeVO is a row of vni_ranges: VNIs StartVni to EndVni of a VXLAN
// network pool, from which its VXLAN networks take theirs. The ranges of
// one pool never overlap. Its JSON form is ZStack's VniRangeInventory.
type VniRangeVO struct {
	resource.Base
	L2NetworkUUID string `gorm:"column:l2_network_uuid;size:32;not null;index" json:"l2NetworkUuid"`
	StartVni      int    `gorm:"column:start_vni;not null" json:"startVni"`
	EndVni        int    `gorm:"column:end_vni;not null" json:"endVni"`
}

// TableName is vni_ranges.
func (VniRangeVO) TableName() string { return "vni_ranges" }

// The schema types carry the foreign keys, for migration only (see
// ipRangeSchema): a VXLAN network's pool cannot go while it has networks
// (RESTRICT); a pool's ranges and an L2 network's attachments go with it,
// and an attachment with its cluster (CASCADE).
type l2Schema struct {
	L2NetworkVO
	Pool *L2NetworkVO `gorm:"foreignKey:PoolUUID;references:UUID;constraint:OnDelete:RESTRICT"`
}

func (l2Schema) TableName() string { return "l2_networks" }

type vniRangeSchema struct {
	VniRangeVO
	Pool *L2NetworkVO `gorm:"foreignKey:L2NetworkUUID;references:UUID;constraint:OnDelete:CASCADE"`
}

func (vniRangeSchema) TableName() string { return "vni_ranges" }

// l2ClusterRefSchema has the foreign key to clusters, so it migrates with
// the L2 kind, after the cluster kind; Migrate makes the table without it
// for a database that has no clusters table.
type l2ClusterRefSchema struct {
	L2NetworkClusterRefVO
	L2Network *L2NetworkVO       `gorm:"foreignKey:L2NetworkUUID;references:UUID;constraint:OnDelete:CASCADE"`
	Cluster   *cluster.ClusterVO `gorm:"foreignKey:ClusterUUID;references:UUID;constraint:OnDelete:CASCADE"`
}

func (l2ClusterRefSchema) TableName() string { return "l2_network_cluster_refs" }

type l2RefSchema struct {
	L2NetworkClusterRefVO
	L2Network *L2NetworkVO `gorm:"foreignKey:L2NetworkUUID;references:UUID;constraint:OnDelete:CASCADE"`
}

func (l2RefSchema) TableName() string { return "l2_network_cluster_refs" }
