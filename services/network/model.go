package network

import (
	"context"
	"fmt"
	"mplane/services/resource"
	"time"

	"gorm.io/gorm"
)

// L3 network types, states and IP versions.
const (
	// L3BasicNetwork is the only L3 network type so far.
	L3BasicNetwork = "L3BasicNetwork"

	L3StateEnabled  = "Enabled"
	L3StateDisabled = "Disabled"

	IPv4 = 4
)

// L3NetworkVO is a row of l3_networks. Its JSON form is ZStack's
// L3NetworkInventory (the fields mplane has).
type L3NetworkVO struct {
	resource.Base
	ZoneUUID string `gorm:"column:zone_uuid;size:64;not null;index" json:"zoneUuid"`
	// L2NetworkUUID is the L2 network the L3 network is on; NULL for one
	// made without (optional so far).
	L2NetworkUUID *string `gorm:"column:l2_network_uuid;size:32;index" json:"l2NetworkUuid,omitempty"`
	Type          string  `gorm:"column:type;size:64;not null" json:"type"`
	State         string  `gorm:"column:state;size:16;not null" json:"state"`
}

// TableName is l3_networks.
func (L3NetworkVO) TableName() string { return "l3_networks" }

// IpRangeVO is a row of ip_ranges: one IPv4 range of allocatable addresses
// of an L3 network. Its JSON form is ZStack's IpRangeInventory.
type IpRangeVO struct {
	resource.Base
	L3NetworkUUID string `gorm:"column:l3_network_uuid;size:32;not null;index" json:"l3NetworkUuid"`
	StartIP       string `gorm:"column:start_ip;size:64;not null" json:"startIp"`
	EndIP         string `gorm:"column:end_ip;size:64;not null" json:"endIp"`
	Netmask       string `gorm:"column:netmask;size:64;not null" json:"netmask"`
	Gateway       string `gorm:"column:gateway;size:64;not null" json:"gateway"`
	NetworkCIDR   string `gorm:"column:network_cidr;size:64;not null" json:"networkCidr"`
	PrefixLen     int    `gorm:"column:prefix_len;not null" json:"prefixLen"`
	IPVersion     int    `gorm:"column:ip_version;not null" json:"ipVersion"`
	// StartIPLong and EndIPLong are StartIP and EndIP as numbers, for
	// range queries.
	StartIPLong int64 `gorm:"column:start_ip_long;not null" json:"-"`
	EndIPLong   int64 `gorm:"column:end_ip_long;not null" json:"-"`
}

// TableName is ip_ranges.
func (IpRangeVO) TableName() string { return "ip_ranges" }

// Size is the number of addresses in the range.
func (r IpRangeVO) Size() int64 { return r.EndIPLong - r.StartIPLong + 1 }

// UsedIpVO is a row of used_ips: one allocated address. The unique index
// on (l3_network_uuid, ip_in_long) is what makes allocation safe across
// nodes. Its JSON form is ZStack's UsedIpInventory.
type UsedIpVO struct {
	UUID          string `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	L3NetworkUUID string `gorm:"column:l3_network_uuid;size:32;not null;uniqueIndex:uk_used_ips_l3_ip,priority:1" json:"l3NetworkUuid"`
	IPRangeUUID   string `gorm:"column:ip_range_uuid;size:32;not null;index" json:"ipRangeUuid"`
	IP            string `gorm:"column:ip;size:64;not null" json:"ip"`
	IPInLong      int64  `gorm:"column:ip_in_long;not null;uniqueIndex:uk_used_ips_l3_ip,priority:2" json:"ipInLong"`
	Netmask       string `gorm:"column:netmask;size:64;not null" json:"netmask"`
	Gateway       string `gorm:"column:gateway;size:64;not null" json:"gateway"`
	IPVersion     int    `gorm:"column:ip_version;not null" json:"ipVersion"`
	// VMNicUUID is the owner of the address: a VM NIC, or any resource that
	// holds it. ReleaseByOwner releases by this column.
	VMNicUUID  string    `gorm:"column:vm_nic_uuid;size:64;not null;index" json:"vmNicUuid"`
	CreateDate time.Time `gorm:"column:create_date;not null;autoCreateTime" json:"createDate"`
	LastOpDate time.Time `gorm:"column:last_op_date;not null;autoUpdateTime" json:"lastOpDate"`
}

// TableName is used_ips.
func (UsedIpVO) TableName() string { return "used_ips" }

// The schema types add the foreign keys to the tables at migration only, so
// the VOs stay plain rows that never drag associations into a Create.
// Every foreign key restricts deletes: a range or L3 network with used IPs
// cannot disappear under an allocation, whatever the interleaving.
type ipRangeSchema struct {
	IpRangeVO
	L3Network *L3NetworkVO `gorm:"foreignKey:L3NetworkUUID;references:UUID;constraint:OnDelete:RESTRICT"`
}

func (ipRangeSchema) TableName() string { return "ip_ranges" }

type usedIPSchema struct {
	UsedIpVO
	L3Network *L3NetworkVO `gorm:"foreignKey:L3NetworkUUID;references:UUID;constraint:OnDelete:RESTRICT"`
	IPRange   *IpRangeVO   `gorm:"foreignKey:IPRangeUUID;references:UUID;constraint:OnDelete:RESTRICT"`
}

func (usedIPSchema) TableName() string { return "used_ips" }

// Migrate creates the network tables, indexes and foreign keys: the L2
// networks' (l2_networks, vni_ranges, l2_network_cluster_refs; the
// attachments' foreign key to clusters comes with the L2 kinds' models,
// after the clusters' table), then the L3 networks'.
func Migrate(ctx context.Context, gdb *gorm.DB) error {
	if err := gdb.WithContext(ctx).AutoMigrate(&l2Schema{}, &vniRangeSchema{}, &l2RefSchema{},
		&L3NetworkVO{}, &ipRangeSchema{}, &usedIPSchema{}); err != nil {
		return fmt.Errorf("migrate network tables: %w", err)
	}
	return nil
}
