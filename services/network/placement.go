package network

import (
	"context"
	"sort"
	"strings"

	"gorm.io/gorm"

	"mplane/errcode"
)

// Placement is where a VM with NICs on some L3 networks can run: a host of
// Zone (the L3 networks' zone) in one of Clusters, the clusters that have
// every one of L2s attached.
type Placement struct {
	Zone string `json:"zone,omitempty"`
	// L2s are the L2 networks that must be attached to the host's
	// cluster, distinct and sorted: each L3 network's L2 network, or for
	// a VXLAN network its pool (a VXLAN network reaches the clusters its
	// pool is attached to). An L3 network without an L2 network (a row
	// from before L2 networks) adds none.
	L2s []string `json:"l2s,omitempty"`
	// Clusters are the clusters that have every one of L2s attached,
	// sorted; empty when L2s is (no constraint) and when no cluster has
	// them all.
	Clusters []string `json:"clusters,omitempty"`
}

// PlacementOf reads where a VM on the L3 networks l3UUIDs can run. The L3
// networks must exist and be in one zone (InvalidArgument naming them
// otherwise).
func PlacementOf(ctx context.Context, gdb *gorm.DB, l3UUIDs []string) (Placement, error) {
	if len(l3UUIDs) == 0 {
		return Placement{}, nil
	}
	var rows []struct {
		UUID     string  `gorm:"column:uuid"`
		ZoneUUID string  `gorm:"column:zone_uuid"`
		L2UUID   *string `gorm:"column:l2_uuid"`
	}
	err := gdb.WithContext(ctx).Table("l3_networks").
		Select("l3_networks.uuid AS uuid, l3_networks.zone_uuid AS zone_uuid, COALESCE(l2_networks.pool_uuid, l2_networks.uuid) AS l2_uuid").
		Joins("LEFT JOIN l2_networks ON l2_networks.uuid = l3_networks.l2_network_uuid").
		Where("l3_networks.uuid IN ?", l3UUIDs).Scan(&rows).Error
	if err != nil {
		return Placement{}, errcode.Wrap(errcode.Internal, err, "read the zones and L2 networks of L3 networks %s", strings.Join(l3UUIDs, ", "))
	}
	found := map[string]bool{}
	for _, r := range rows {
		found[r.UUID] = true
	}
	for _, l3 := range l3UUIDs {
		if !found[l3] {
			return Placement{}, errcode.New(errcode.InvalidArgument, "l3NetworkUuids: L3 network %s does not exist", l3)
		}
	}
	var p Placement
	zoneOf := map[string]string{}
	l2s := map[string]bool{}
	for _, r := range rows {
		zoneOf[r.UUID] = r.ZoneUUID
		if r.L2UUID != nil && *r.L2UUID != "" {
			l2s[*r.L2UUID] = true
		}
	}
	first := l3UUIDs[0]
	p.Zone = zoneOf[first]
	for _, l3 := range l3UUIDs {
		if z := zoneOf[l3]; z != p.Zone {
			return Placement{}, errcode.New(errcode.InvalidArgument,
				"l3NetworkUuids: L3 network %s is in zone %s and L3 network %s in zone %s: a VM's L3 networks must all be in one zone",
				first, zoneOf[first], l3, z)
		}
	}
	for l2 := range l2s {
		p.L2s = append(p.L2s, l2)
	}
	sort.Strings(p.L2s)
	if len(p.L2s) == 0 {
		return p, nil
	}
	err = gdb.WithContext(ctx).Model(&L2NetworkClusterRefVO{}).
		Where("l2_network_uuid IN ?", p.L2s).Group("cluster_uuid").
		Having("COUNT(DISTINCT l2_network_uuid) = ?", len(p.L2s)).Order("cluster_uuid").
		Pluck("cluster_uuid", &p.Clusters).Error
	if err != nil {
		return Placement{}, errcode.Wrap(errcode.Internal, err, "read the clusters of L2 networks %s", strings.Join(p.L2s, ", "))
	}
	return p, nil
}
