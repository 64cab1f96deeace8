package network

import (
	"context"
	"errors"
	"strings"

	"gorm.io/gorm"

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

// checkAttach verifies that the cluster exists and is in the network's
// zone (InvalidArgument otherwise).
func checkAttach(ctx context.Context, gdb *gorm.DB, l2 *L2NetworkVO, p *ClusterRefParams) error {
	var c cluster.ClusterVO
	err := gdb.WithContext(ctx).Take(&c, "uuid = ?", p.ClusterUUID).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return errcode.New(errcode.InvalidArgument, "clusterUuid %s does not exist", p.ClusterUUID)
	}
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up cluster %s", p.ClusterUUID)
	}
	if c.ZoneUUID != l2.ZoneUUID {
		return errcode.New(errcode.InvalidArgument, "cluster %s is in zone %s, l2 network %s in zone %s: attach it to a cluster of its zone",
			c.UUID, c.ZoneUUID, l2.UUID, l2.ZoneUUID)
	}
	return nil
}

// attach attaches l2 to the cluster (in the network's chain, tx its
// transaction). Attaching again is a no-op.
func attach(ctx context.Context, tx *gorm.DB, l2 *L2NetworkVO, p ClusterRefParams) error {
	for _, c := range l2.AttachedClusterUUIDs {
		if c == p.ClusterUUID {
			return nil
		}
	}
	if err := checkAttach(ctx, tx, l2, &p); err != nil {
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
// of the cluster has a NIC on one of its L3 networks. Detaching what is
// not attached is a no-op.
func detach(ctx context.Context, tx *gorm.DB, l2 *L2NetworkVO, clusterUUID string) error {
	attached := false
	for _, c := range l2.AttachedClusterUUIDs {
		attached = attached || c == clusterUUID
	}
	if !attached {
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
// L3 network of the L2 network (the VM service's tables: vm_nics links a
// NIC to its VM and its L3 network, vm_instances a VM to its cluster; a
// build without them has no VMs).
func refuseIfVMsUse(ctx context.Context, tx *gorm.DB, l2UUID, clusterUUID string) error {
	m := tx.WithContext(ctx).Migrator()
	if !m.HasTable("vm_nics") || !m.HasTable("vm_instances") {
		return nil
	}
	nics := func() *gorm.DB {
		return tx.Session(&gorm.Session{NewDB: true}).WithContext(ctx).Table("vm_nics").
			Joins("JOIN vm_instances ON vm_instances.uuid = vm_nics.vm_instance_uuid").
			Joins("JOIN l3_networks ON l3_networks.uuid = vm_nics.l3_network_uuid").
			Where("l3_networks.l2_network_uuid = ? AND vm_instances.cluster_uuid = ?", l2UUID, clusterUUID)
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
