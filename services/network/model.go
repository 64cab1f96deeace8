package network

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"mplane/db"
	"mplane/services/resource"
)

// L3 network types, states, categories and IP versions.
const (
	// L3BasicNetwork is the only L3 network type so far.
	L3BasicNetwork = "L3BasicNetwork"

	L3StateEnabled  = "Enabled"
	L3StateDisabled = "Disabled"

	// ZStack's categories: a Public or Private network is not a system
	// one; a System network (system true) is System.
	L3CategoryPublic  = "Public"
	L3CategoryPrivate = "Private"
	L3CategorySystem  = "System"

	IPv4 = 4
)

// L3NetworkVO is a row of l3_networks. Its JSON form is ZStack's
// L3NetworkInventory (the fields mplane has): with "dns", the network's
// DNS servers in the order they were added, "ipRanges", its IP ranges
// lowest first, and "enableIPAM", always true (mplane allocates every
// address).
//
// The columns added with ZStack's fields have database defaults (Private,
// false, 4), the values of the rows made before them; a create writes
// every one.
type L3NetworkVO struct {
	resource.Base
	ZoneUUID string `gorm:"column:zone_uuid;size:64;not null;index" json:"zoneUuid"`
	// L2NetworkUUID is the L2 network the L3 network is on (a foreign key
	// that keeps the L2 network while it has L3 networks). Every create
	// gives one; it is NULL only for a row made before L2 networks.
	L2NetworkUUID *string `gorm:"column:l2_network_uuid;size:32;index" json:"l2NetworkUuid,omitempty"`
	Type          string  `gorm:"column:type;size:64;not null" json:"type"`
	State         string  `gorm:"column:state;size:16;not null" json:"state"`
	Category      string  `gorm:"column:category;size:16;not null;default:Private" json:"category"`
	System        bool    `gorm:"column:system;not null;default:false" json:"system"`
	IPVersion     int     `gorm:"column:ip_version;not null;default:4" json:"ipVersion"`
	// DNSDomain is the network's DNS domain, NULL when not given.
	DNSDomain *string `gorm:"column:dns_domain;size:255" json:"dnsDomain,omitempty"`

	// DNSRefs are the network's DNS servers (preloaded by the query, else
	// read by AfterFind), DNS their addresses as the inventory shows them.
	DNSRefs []L3NetworkDNSVO `gorm:"foreignKey:L3NetworkUUID;references:UUID;-:migration" json:"-"`
	DNS     []string         `gorm:"-" json:"dns"`
	// IPRanges are the network's IP ranges, lowest first (as DNSRefs).
	IPRanges []IpRangeVO `gorm:"foreignKey:L3NetworkUUID;references:UUID;-:migration" json:"ipRanges"`
}

// TableName is l3_networks.
func (L3NetworkVO) TableName() string { return "l3_networks" }

// AfterFind fills DNS and IPRanges, from the preloads (GORM runs it after
// them) or, for a row read without them, by reading them in the same
// transaction. The IP allocator reads its rows without hooks (getL3).
func (n *L3NetworkVO) AfterFind(tx *gorm.DB) error {
	if n.DNSRefs == nil {
		if err := tx.Session(&gorm.Session{NewDB: true}).Where("l3_network_uuid = ?", n.UUID).Order("id").Find(&n.DNSRefs).Error; err != nil {
			return fmt.Errorf("read the dns of l3 network %s: %w", n.UUID, err)
		}
	}
	n.DNS = make([]string, 0, len(n.DNSRefs))
	for _, d := range n.DNSRefs {
		n.DNS = append(n.DNS, d.DNS)
	}
	if n.IPRanges == nil {
		if err := tx.Session(&gorm.Session{NewDB: true}).Where("l3_network_uuid = ?", n.UUID).Order("start_ip_long").Find(&n.IPRanges).Error; err != nil {
			return fmt.Errorf("read the ip ranges of l3 network %s: %w", n.UUID, err)
		}
	}
	return nil
}

// MarshalJSON writes the inventory: an empty dns or ipRanges is [], and
// enableIPAM is true (IPAM cannot be disabled).
func (n L3NetworkVO) MarshalJSON() ([]byte, error) {
	type row L3NetworkVO // the fields, not this method
	out := struct {
		row
		DNS        []string    `json:"dns"`
		IPRanges   []IpRangeVO `json:"ipRanges"`
		EnableIPAM bool        `json:"enableIPAM"`
	}{row: row(n), DNS: n.DNS, IPRanges: n.IPRanges, EnableIPAM: true}
	if out.DNS == nil {
		out.DNS = []string{}
	}
	if out.IPRanges == nil {
		out.IPRanges = []IpRangeVO{}
	}
	return json.Marshal(out)
}

// L3NetworkDNSVO is a row of l3_network_dns: one DNS server of an L3
// network (ZStack's L3NetworkDnsVO); ID orders them as they were added.
// An address is kept in its canonical form, at most once per network.
type L3NetworkDNSVO struct {
	ID            int64     `gorm:"column:id;primaryKey;autoIncrement" json:"-"`
	L3NetworkUUID string    `gorm:"column:l3_network_uuid;size:32;not null;uniqueIndex:uk_l3_network_dns,priority:1" json:"l3NetworkUuid"`
	DNS           string    `gorm:"column:dns;size:64;not null;uniqueIndex:uk_l3_network_dns,priority:2" json:"dns"`
	CreateDate    time.Time `gorm:"column:create_date;not null" json:"createDate"`
}

// TableName is l3_network_dns.
func (L3NetworkDNSVO) TableName() string { return "l3_network_dns" }

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
// Every foreign key of the IP ranges and used IPs restricts deletes: a
// range or L3 network with used IPs cannot disappear under an allocation,
// whatever the interleaving. An L2 network cannot go while it has L3
// networks (RESTRICT; the column stays nullable for the rows made before
// L2 networks); an L3 network's DNS servers go with it (CASCADE).
type l3Schema struct {
	L3NetworkVO
	L2Network *L2NetworkVO `gorm:"foreignKey:L2NetworkUUID;references:UUID;constraint:OnDelete:RESTRICT"`
}

func (l3Schema) TableName() string { return "l3_networks" }

type l3DNSSchema struct {
	L3NetworkDNSVO
	L3Network *L3NetworkVO `gorm:"foreignKey:L3NetworkUUID;references:UUID;constraint:OnDelete:CASCADE"`
}

func (l3DNSSchema) TableName() string { return "l3_network_dns" }

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
// after the clusters' table), then the L3 networks' (l3_networks,
// l3_network_dns, ip_ranges, used_ips).
func Migrate(ctx context.Context, gdb *gorm.DB) error {
	gdb = gdb.WithContext(ctx)
	if err := gdb.AutoMigrate(&l2Schema{}, &vniRangeSchema{}, &l2RefSchema{}, &l2HostRefSchema{}); err != nil {
		return fmt.Errorf("migrate network tables: %w", err)
	}
	if err := addL3ToL2Key(gdb); err != nil {
		return fmt.Errorf("migrate network tables: %w", err)
	}
	if err := gdb.AutoMigrate(&l3Schema{}, &l3DNSSchema{}, &ipRangeSchema{}, &usedIPSchema{}); err != nil {
		return fmt.Errorf("migrate network tables: %w", err)
	}
	return nil
}

// addL3ToL2Key adds l3_networks' foreign key to l2_networks to a table made
// before it had one, once no row names a missing L2 network (an error
// naming one otherwise). SQLite adds a constraint by copying the table and
// dropping the old one, which the foreign keys of ip_ranges and used_ips
// refuse while they refer to its rows: the copy runs on one connection
// with the foreign keys off.
func addL3ToL2Key(gdb *gorm.DB) error {
	m := gdb.Migrator()
	if !m.HasTable(&l3Schema{}) || m.HasConstraint(&l3Schema{}, "L2Network") {
		return nil
	}
	var orphans []string
	err := gdb.Table("l3_networks").Where("l2_network_uuid IS NOT NULL AND l2_network_uuid NOT IN (?)", gdb.Table("l2_networks").Select("uuid")).
		Order("uuid").Pluck("uuid", &orphans).Error
	if err != nil {
		return fmt.Errorf("look up the l3 networks on missing l2 networks: %w", err)
	}
	if len(orphans) > 0 {
		return fmt.Errorf("cannot add the foreign key of l3_networks to l2_networks: %d l3 network(s) name an l2 network that does not exist, e.g. %s",
			len(orphans), orphans[0])
	}
	if db.Dialect(gdb) != "sqlite" {
		err := m.CreateConstraint(&l3Schema{}, "L2Network")
		if err != nil && m.HasConstraint(&l3Schema{}, "L2Network") {
			return nil // another node starting at once added it
		}
		return err
	}
	return gdb.Connection(func(conn *gorm.DB) (err error) {
		if err := conn.Exec("PRAGMA foreign_keys = OFF").Error; err != nil {
			return err
		}
		defer func() {
			// The connection goes back to the pool: with its foreign keys.
			if on := conn.Exec("PRAGMA foreign_keys = ON").Error; on != nil && err == nil {
				err = fmt.Errorf("turn the foreign keys back on: %w", on)
			}
		}()
		if err := conn.Migrator().CreateConstraint(&l3Schema{}, "L2Network"); err != nil {
			return fmt.Errorf("add the foreign key of l3_networks to l2_networks: %w", err)
		}
		return nil
	})
}
