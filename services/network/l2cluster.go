package network

import (
	"context"
	"errors"
	"slices"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/errcode"
	"mplane/services/cluster"
	"mplane/services/resource"
)

// ClusterRefParams name an L2 network and a cluster: the path variables
// of POST and DELETE /v1/l2-networks/{l2NetworkUuid}/clusters/{clusterUuid}
// (ZStack's AttachL2NetworkToCluster and DetachL2NetworkFromCluster).
type ClusterRefParams struct {
	L2NetworkUUID string `json:"l2NetworkUuid"`
	ClusterUUID   string `json:"clusterUuid"`
}

// Validate checks that both are given.
func (p *ClusterRefParams) Validate() error {
	var problems []string
	if strings.TrimSpace(p.L2NetworkUUID) == "" {
		problems = append(problems, "l2NetworkUuid is required")
	}
	if strings.TrimSpace(p.ClusterUUID) == "" {
		problems = append(problems, "clusterUuid is required")
	}
	return resource.Invalid(problems)
}

// checkAttach verifies an attach at the edge (attach checks again, in the
// network's chain): see checkAttachTo.
func checkAttach(ctx context.Context, gdb *gorm.DB, l2 *L2NetworkVO, p *ClusterRefParams) error {
	if attachedTo(l2, p.ClusterUUID) {
		return nil
	}
	return checkAttachTo(ctx, gdb.WithContext(ctx), l2, p.ClusterUUID, false)
}

// checkDetach refuses at the edge to detach a VXLAN network.
func checkDetach(_ context.Context, _ *gorm.DB, l2 *L2NetworkVO, _ *ClusterRefParams) error {
	return refuseVxlan(l2, "detach")
}

// refuseVxlan is InvalidArgument for a VXLAN network, which follows its
// pool's clusters (ZStack refuses the same: attach or detach its pool).
func refuseVxlan(l2 *L2NetworkVO, op string) error {
	if l2.Type != VxlanNetwork {
		return nil
	}
	pool := ""
	if l2.PoolUUID != nil {
		pool = " " + *l2.PoolUUID
	}
	return errcode.New(errcode.InvalidArgument, "l2 network %s is a VxlanNetwork: it reaches the clusters its pool is attached to; %s its pool%s instead",
		l2.UUID, op, pool)
}

func attachedTo(l2 *L2NetworkVO, clusterUUID string) bool {
	return l2.Type != VxlanNetwork && slices.Contains(l2.AttachedClusterUUIDs, clusterUUID)
}

// checkAttachTo verifies that l2 may be attached to the cluster
// (InvalidArgument otherwise): l2 is not a VXLAN network, the cluster
// exists and is in the network's zone, and no other L2 network attached to
// it is on the same physical interface, as ZStack refuses: another
// L2NoVlanNetwork for an L2NoVlanNetwork, another L2VlanNetwork of the same
// VLAN for an L2VlanNetwork (which cannot be in mplane: a VLAN is unique
// per zone and interface already). With lock, the cluster's row is locked
// until tx ends, so that of two attaches to one cluster (in the chains of
// two networks) the second sees the first.
func checkAttachTo(ctx context.Context, tx *gorm.DB, l2 *L2NetworkVO, clusterUUID string, lock bool) error {
	if err := refuseVxlan(l2, "attach"); err != nil {
		return err
	}
	q := tx
	if lock {
		q = q.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate})
	}
	var c cluster.ClusterVO
	err := q.Take(&c, "uuid = ?", clusterUUID).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return errcode.New(errcode.InvalidArgument, "clusterUuid %s does not exist", clusterUUID)
	}
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up cluster %s", clusterUUID)
	}
	if c.ZoneUUID != l2.ZoneUUID {
		return errcode.New(errcode.InvalidArgument, "cluster %s is in zone %s, l2 network %s in zone %s: attach it to a cluster of its zone",
			c.UUID, c.ZoneUUID, l2.UUID, l2.ZoneUUID)
	}
	return interfaceTaken(ctx, tx, l2, clusterUUID, lock)
}

// interfaceTaken is InvalidArgument naming the other L2 network attached to
// the cluster that is on l2's physical interface as l2 would be: the same
// type, L2NoVlanNetwork or L2VlanNetwork, and for a VLAN the same VLAN ID.
// With lock the cluster's attachments are read with a locking read, which
// sees the latest ones (InnoDB's plain reads see the transaction's
// snapshot, older than the cluster's lock); the networks' type, interface
// and VLAN never change, so a plain read of them will do.
func interfaceTaken(ctx context.Context, tx *gorm.DB, l2 *L2NetworkVO, clusterUUID string, lock bool) error {
	if l2.Type != L2NoVlanNetwork && (l2.Type != L2VlanNetwork || l2.Vlan == nil) {
		return nil
	}
	db := func() *gorm.DB { return tx.Session(&gorm.Session{NewDB: true}).WithContext(ctx) }
	refs := db().Model(&L2NetworkClusterRefVO{}).Where("cluster_uuid = ? AND l2_network_uuid <> ?", clusterUUID, l2.UUID)
	if lock {
		refs = refs.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate})
	}
	var attached []string
	if err := refs.Pluck("l2_network_uuid", &attached).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "read the l2 networks of cluster %s", clusterUUID)
	}
	if len(attached) == 0 {
		return nil
	}
	q := db().Table("l2_networks").Select("uuid", "name").
		Where("uuid IN ? AND type = ? AND physical_interface = ?", attached, l2.Type, l2.PhysicalInterface)
	if l2.Type == L2VlanNetwork {
		q = q.Where("vlan = ?", *l2.Vlan)
	}
	var others []struct {
		UUID string `gorm:"column:uuid"`
		Name string `gorm:"column:name"`
	}
	if err := q.Order("uuid").Limit(1).Scan(&others).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up the l2 networks of cluster %s on %s", clusterUUID, l2.PhysicalInterface)
	}
	if len(others) == 0 {
		return nil
	}
	o := others[0]
	if l2.Type == L2VlanNetwork {
		return errcode.New(errcode.InvalidArgument, "l2 network %s (%s) attached to cluster %s has vlan %d on physical interface %s already: l2 network %s cannot be attached to it",
			o.UUID, o.Name, clusterUUID, *l2.Vlan, l2.PhysicalInterface, l2.UUID)
	}
	return errcode.New(errcode.InvalidArgument, "l2 network %s (%s), an %s on physical interface %s, is attached to cluster %s already: l2 network %s cannot be attached to it (one untagged network per interface)",
		o.UUID, o.Name, L2NoVlanNetwork, l2.PhysicalInterface, clusterUUID, l2.UUID)
}

// attach attaches l2 to the cluster (in the network's chain, tx its
// transaction). Attaching again is a no-op.
func attach(ctx context.Context, tx *gorm.DB, l2 *L2NetworkVO, p ClusterRefParams) error {
	if attachedTo(l2, p.ClusterUUID) {
		return nil
	}
	if err := checkAttachTo(ctx, tx, l2, p.ClusterUUID, true); err != nil {
		return err
	}
	err := tx.Create(&L2NetworkClusterRefVO{L2NetworkUUID: l2.UUID, ClusterUUID: p.ClusterUUID, CreateDate: now()}).Error
	switch {
	case err == nil, errors.Is(err, gorm.ErrDuplicatedKey):
		return nil
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return errcode.New(errcode.InvalidArgument, "clusterUuid %s does not exist", p.ClusterUUID)
	}
	return errcode.Wrap(errcode.Internal, err, "attach l2 network %s to cluster %s", l2.UUID, p.ClusterUUID)
}

// detach detaches l2 from the cluster, refused (InvalidState) while a VM
// of the cluster has a NIC on one of its L3 networks (for a pool, of its
// VXLAN networks'). Detaching what is not attached is a no-op; detaching a
// VXLAN network is refused (InvalidArgument): detach its pool.
func detach(ctx context.Context, tx *gorm.DB, l2 *L2NetworkVO, clusterUUID string) error {
	if err := refuseVxlan(l2, "detach"); err != nil {
		return err
	}
	if !attachedTo(l2, clusterUUID) {
		return nil
	}
	if err := refuseIfVMsUse(ctx, tx, l2.UUID, clusterUUID); err != nil {
		return err
	}
	err := tx.Where("l2_network_uuid = ? AND cluster_uuid = ?", l2.UUID, clusterUUID).Delete(&L2NetworkClusterRefVO{}).Error
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "detach l2 network %s from cluster %s", l2.UUID, clusterUUID)
	}
	return nil
}

// refuseIfVMsUse is InvalidState while a VM of the cluster has a NIC on an
// L3 network of the L2 network, or for a pool on an L3 network of one of
// its VXLAN networks (the L2 networks whose COALESCE(pool_uuid, uuid) is
// it, as placement reads them). The VM service's tables: vm_nics links a
// NIC to its VM and its L3 network, vm_instances a VM to its cluster; a
// build without them has no VMs.
func refuseIfVMsUse(ctx context.Context, tx *gorm.DB, l2UUID, clusterUUID string) error {
	m := tx.WithContext(ctx).Migrator()
	if !m.HasTable("vm_nics") || !m.HasTable("vm_instances") {
		return nil
	}
	nics := func() *gorm.DB {
		return tx.Session(&gorm.Session{NewDB: true}).WithContext(ctx).Table("vm_nics").
			Joins("JOIN vm_instances ON vm_instances.uuid = vm_nics.vm_instance_uuid").
			Joins("JOIN l3_networks ON l3_networks.uuid = vm_nics.l3_network_uuid").
			Joins("JOIN l2_networks ON l2_networks.uuid = l3_networks.l2_network_uuid").
			Where("COALESCE(l2_networks.pool_uuid, l2_networks.uuid) = ? AND vm_instances.cluster_uuid = ?", l2UUID, clusterUUID)
	}
	var uses []struct {
		VMUUID string `gorm:"column:vm_uuid"`
		VMName string `gorm:"column:vm_name"`
		L3UUID string `gorm:"column:l3_uuid"`
	}
	err := nics().Select("vm_instances.uuid AS vm_uuid, vm_instances.name AS vm_name, vm_nics.l3_network_uuid AS l3_uuid").
		Order("vm_instances.uuid").Limit(1).Scan(&uses).Error
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up the VMs of cluster %s on l2 network %s", clusterUUID, l2UUID)
	}
	if len(uses) == 0 {
		return nil
	}
	var n int64
	if err := nics().Distinct("vm_instances.uuid").Count(&n).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "count the VMs of cluster %s on l2 network %s", clusterUUID, l2UUID)
	}
	u := uses[0]
	return errcode.New(errcode.InvalidState, "%d VM(s) of cluster %s have NICs on l2 network %s, e.g. VM %s (%s) on L3 network %s; delete them or their NICs first",
		n, clusterUUID, l2UUID, u.VMUUID, u.VMName, u.L3UUID)
}
