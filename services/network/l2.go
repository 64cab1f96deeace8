package network

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/db"
	"mplane/errcode"
	"mplane/services/resource"
	"mplane/services/zone"
)

// L2Params are the parameters every L2 network create has, named as in
// ZStack's APICreateL2NetworkMsg. Each create path makes one type: Type,
// if given, must be it.
type L2Params struct {
	resource.Params
	ZoneUUID          string `json:"zoneUuid,omitempty"`
	PhysicalInterface string `json:"physicalInterface,omitempty"`
	Type              string `json:"type,omitempty"`
	// VSwitchType is LinuxBridge, the default when empty.
	VSwitchType string `json:"vSwitchType,omitempty"`
}

// problems lists what is wrong with p for a network of type typ; for a
// VXLAN network the zone and the interface are the pool's, so they may be
// left out.
func (p *L2Params) problems(typ string) []string {
	problems := p.Problems()
	inherited := typ == VxlanNetwork
	if strings.TrimSpace(p.ZoneUUID) == "" && !inherited {
		problems = append(problems, "zoneUuid is required")
	}
	switch iface := p.PhysicalInterface; {
	case strings.TrimSpace(iface) == "" && !inherited:
		problems = append(problems, "physicalInterface is required (the hosts' interface the network is on, e.g. eth0)")
	case len(iface) > maxPhysicalInterfaceLen:
		problems = append(problems, fmt.Sprintf("physicalInterface is longer than %d characters", maxPhysicalInterfaceLen))
	case strings.IndexFunc(iface, func(r rune) bool { return unicode.IsSpace(r) || r == '/' }) >= 0:
		problems = append(problems, fmt.Sprintf("physicalInterface %q must not contain spaces or '/'", iface))
	}
	if p.Type != "" && p.Type != typ {
		problems = append(problems, fmt.Sprintf("type %q does not match the path: it creates an %s", p.Type, typ))
	}
	switch p.VSwitchType {
	case "":
		p.VSwitchType = VSwitchLinuxBridge
	case VSwitchLinuxBridge:
	default:
		problems = append(problems, fmt.Sprintf("vSwitchType %q is not supported; the only one is %s", p.VSwitchType, VSwitchLinuxBridge))
	}
	return problems
}

// check verifies that the zone exists.
func (p *L2Params) check(ctx context.Context, gdb *gorm.DB) error {
	return resource.MustExist(ctx, gdb, &zone.ZoneVO{}, "zoneUuid", p.ZoneUUID)
}

// row is the new network's row, its type's columns left to the caller.
func (p L2Params) row(uuid, typ string) L2NetworkVO {
	b := resource.NewBase(uuid, p.Name, p.Description)
	return L2NetworkVO{Base: b, ZoneUUID: p.ZoneUUID, PhysicalInterface: p.PhysicalInterface, Type: typ,
		VSwitchType: p.VSwitchType, AttachedClusterUUIDs: []string{}}
}

// L2NoVlanParams create an L2NoVlanNetwork: POST /v1/l2-networks/no-vlan.
type L2NoVlanParams struct{ L2Params }

// Validate checks the parameters' shape.
func (p *L2NoVlanParams) Validate() error { return resource.Invalid(p.problems(L2NoVlanNetwork)) }

// Check verifies the references: the zone exists.
func (p *L2NoVlanParams) Check(ctx context.Context, gdb *gorm.DB) error { return p.check(ctx, gdb) }

// L2VlanParams create an L2VlanNetwork: POST /v1/l2-networks/vlan.
type L2VlanParams struct {
	L2Params
	// Vlan is the VLAN ID, 1 to 4094, unique per zone and physical
	// interface.
	Vlan int `json:"vlan"`
}

// Validate checks the parameters' shape.
func (p *L2VlanParams) Validate() error {
	problems := p.problems(L2VlanNetwork)
	switch {
	case p.Vlan == 0:
		problems = append(problems, fmt.Sprintf("vlan is required (%d to %d)", MinVlan, MaxVlan))
	case p.Vlan < MinVlan || p.Vlan > MaxVlan:
		problems = append(problems, fmt.Sprintf("vlan %d is out of range %d-%d", p.Vlan, MinVlan, MaxVlan))
	}
	return resource.Invalid(problems)
}

// Check verifies the references (the zone exists) and answers at once a
// VLAN already in use on the interface in the zone (InvalidState); the
// create's insert decides a race (the unique index).
func (p *L2VlanParams) Check(ctx context.Context, gdb *gorm.DB) error {
	if err := p.check(ctx, gdb); err != nil {
		return err
	}
	return vlanInUse(ctx, gdb, p.ZoneUUID, p.PhysicalInterface, p.Vlan, "")
}

// vlanInUse is InvalidState naming the L2 network (other than except) that
// has vlan on iface in zoneUUID, if there is one.
func vlanInUse(ctx context.Context, gdb *gorm.DB, zoneUUID, iface string, vlan int, except string) error {
	var rows []L2NetworkVO
	err := gdb.WithContext(ctx).Omit(clause.Associations).Select("uuid", "name").
		Where("zone_uuid = ? AND physical_interface = ? AND vlan = ?", zoneUUID, iface, vlan).Limit(1).Find(&rows).Error
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up vlan %d on %s", vlan, iface)
	}
	if len(rows) == 0 || rows[0].UUID == except {
		return nil
	}
	return errcode.New(errcode.InvalidState, "vlan %d on physical interface %s of zone %s is in use by l2 network %s (%s)",
		vlan, iface, zoneUUID, rows[0].UUID, rows[0].Name)
}

// L2VxlanPoolParams create a VxlanNetworkPool: POST
// /v1/l2-networks/vxlan-pool. Its VXLAN networks take their VNIs from its
// VNI ranges (POST /v1/l2-networks/vxlan-pool/vni-range).
type L2VxlanPoolParams struct{ L2Params }

// Validate checks the parameters' shape.
func (p *L2VxlanPoolParams) Validate() error { return resource.Invalid(p.problems(VxlanNetworkPool)) }

// Check verifies the references: the zone exists.
func (p *L2VxlanPoolParams) Check(ctx context.Context, gdb *gorm.DB) error { return p.check(ctx, gdb) }

// createNoVlan inserts an L2NoVlanNetwork.
func createNoVlan(ctx context.Context, gdb *gorm.DB, uuid string, p L2NoVlanParams) (L2NetworkVO, error) {
	return insertL2(ctx, gdb, p.row(uuid, L2NoVlanNetwork))
}

// createVlan inserts an L2VlanNetwork. Of two creates of one VLAN on one
// interface in one zone, racing on any nodes, the unique index lets one
// in; the other fails with InvalidState naming the winner.
func createVlan(ctx context.Context, gdb *gorm.DB, uuid string, p L2VlanParams) (L2NetworkVO, error) {
	row := p.row(uuid, L2VlanNetwork)
	vlan := p.Vlan
	row.Vlan, row.VirtualNetworkID = &vlan, vlan
	out, err := insertL2(ctx, gdb, row)
	if errcode.Has(err, errcode.Conflict) {
		if inUse := vlanInUse(ctx, gdb, p.ZoneUUID, p.PhysicalInterface, vlan, uuid); inUse != nil {
			return L2NetworkVO{}, inUse
		}
	}
	return out, err
}

// createPool inserts a VxlanNetworkPool.
func createPool(ctx context.Context, gdb *gorm.DB, uuid string, p L2VxlanPoolParams) (L2NetworkVO, error) {
	return insertL2(ctx, gdb, p.row(uuid, VxlanNetworkPool))
}

// insertL2 inserts row. If a row of its UUID exists (a create redelivered
// while the first ran) it answers that one; another unique key taken is
// Conflict, for the caller to name.
func insertL2(ctx context.Context, gdb *gorm.DB, row L2NetworkVO) (L2NetworkVO, error) {
	err := gdb.WithContext(ctx).Omit(clause.Associations).Create(&row).Error
	if err == nil {
		return row, nil
	}
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		if existing, lerr := GetL2Network(ctx, gdb, row.UUID); lerr == nil {
			return existing, nil
		}
		return L2NetworkVO{}, errcode.Wrap(errcode.Conflict, err, "create l2 network %s", row.UUID)
	}
	if errors.Is(err, gorm.ErrForeignKeyViolated) && row.PoolUUID != nil {
		return L2NetworkVO{}, errcode.New(errcode.InvalidArgument, "poolUuid %s does not exist", *row.PoolUUID)
	}
	return L2NetworkVO{}, errcode.Wrap(errcode.Internal, err, "create l2 network %s", row.UUID)
}

// GetL2Network reads an L2 network with its attachments (and a pool's VNI
// ranges); a missing one is ResourceNotFound.
func GetL2Network(ctx context.Context, gdb *gorm.DB, uuid string) (L2NetworkVO, error) {
	row, err := resource.Load[L2NetworkVO](ctx, gdb, "l2 network", uuid)
	if err != nil {
		return L2NetworkVO{}, err
	}
	return *row, nil
}

// lockL2 reads an L2 network and locks its row until the transaction ends
// (SQLite: the transaction holds the database's write lock already).
// Whatever is created under an L2 network (an L3 network, a VXLAN network
// of a pool, a VNI range) locks it first, and so does its delete, so a
// delete never misses what is made meanwhile.
func lockL2(tx *gorm.DB, uuid string) (L2NetworkVO, error) {
	var row L2NetworkVO
	err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Where("uuid = ?", uuid).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return L2NetworkVO{}, errcode.New(errcode.ResourceNotFound, "l2 network %s not found", uuid)
	}
	if err != nil {
		return L2NetworkVO{}, errcode.Wrap(errcode.Internal, err, "lock l2 network %s", uuid)
	}
	return row, nil
}

// DeleteEnforcing is the delete mode that takes dependents along.
const DeleteEnforcing = "Enforcing"

// deleteL2 deletes an L2 network of any type, with its attachments and a
// pool's VNI ranges; a VXLAN network's VNI is released after its row is
// gone. Permissive (the default) refuses (InvalidState) while the network
// has L3 networks, a pool VXLAN networks, or the network attached
// clusters. Enforcing takes them along: a pool's VXLAN networks, then the
// L3 networks, then the attachments; it refuses only while an IP address
// of one of those L3 networks is in use (a VM's NIC holds one). Deleting a
// missing network succeeds.
func deleteL2(ctx context.Context, gdb *gorm.DB, vni VNIAllocator, req resource.DeleteReq) error {
	row, err := GetL2Network(ctx, gdb, req.UUID)
	if errcode.Has(err, errcode.ResourceNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if row.Type == VxlanNetwork && vni == nil {
		return errcode.New(errcode.Internal, "no VNI allocator: cannot delete vxlan network %s", row.UUID)
	}
	gdb = gdb.WithContext(ctx)
	if req.Mode == DeleteEnforcing {
		if err := deleteDependents(ctx, gdb, vni, row); err != nil {
			return err
		}
	} else if err := refuseDependents(ctx, gdb, row, true); err != nil {
		return err
	}
	err = db.Transaction(ctx, gdb, func(tx *gorm.DB) error {
		if _, err := lockL2(tx, row.UUID); err != nil {
			return err
		}
		// Created meanwhile (they lock the row too): refused, even when
		// Enforcing, rather than deleted unseen. The attachments and a
		// pool's ranges go with the row (the foreign keys cascade).
		if err := refuseDependents(ctx, tx, row, req.Mode != DeleteEnforcing); err != nil {
			return err
		}
		return tx.Where("uuid = ?", row.UUID).Delete(&L2NetworkVO{}).Error
	})
	switch {
	case errcode.Has(err, errcode.ResourceNotFound):
		return nil // deleted meanwhile
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return errcode.New(errcode.InvalidState, "l2 network %s got a dependent while it was deleted; try again", row.UUID)
	case err != nil:
		return errcode.OrInternal(err, "delete l2 network %s", row.UUID)
	}
	if row.Type == VxlanNetwork && row.Vni != nil {
		if err := releaseVNI(ctx, vni, *row.Vni, row.UUID); err != nil {
			return errcode.Wrap(errcode.Internal, err, "vxlan network %s is deleted but its vni %d was not released", row.UUID, *row.Vni)
		}
	}
	return nil
}

// refuseDependents is InvalidState while anything depends on l2: its L3
// networks, a pool's VXLAN networks, and if attachments, its attached
// clusters.
func refuseDependents(ctx context.Context, tx *gorm.DB, l2 L2NetworkVO, attachments bool) error {
	var deps []resource.Dependent
	if l2.Type == VxlanNetworkPool {
		deps = append(deps, resource.Dependent{Table: "l2_networks", Column: "pool_uuid", What: "vxlan networks"})
	}
	deps = append(deps, resource.Dependent{Table: "l3_networks", Column: "l2_network_uuid", What: "L3 networks"})
	if err := resource.RefuseIfUsed(ctx, tx, "l2 network", l2.UUID, deps...); err != nil {
		return err
	}
	if !attachments {
		return nil
	}
	var n int64
	if err := tx.Model(&L2NetworkClusterRefVO{}).Where("l2_network_uuid = ?", l2.UUID).Count(&n).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "count the clusters of l2 network %s", l2.UUID)
	}
	if n > 0 {
		return errcode.New(errcode.InvalidState, "l2 network %s is attached to %d cluster(s); detach it first, or delete it with deleteMode Enforcing", l2.UUID, n)
	}
	return nil
}

// deleteDependents deletes what depends on l2 (an Enforcing delete): a
// pool's VXLAN networks and the L3 networks, after checking that no IP
// address of its L3 networks, or of its VXLAN networks' L3 networks, is in
// use (so no VM of an attached cluster uses it): with one in use nothing
// is deleted. The attachments go with the row.
func deleteDependents(ctx context.Context, gdb *gorm.DB, vni VNIAllocator, l2 L2NetworkVO) error {
	under := gdb.Model(&L2NetworkVO{}).Select("uuid").Where("uuid = ? OR pool_uuid = ?", l2.UUID, l2.UUID)
	var used int64
	err := gdb.Model(&UsedIpVO{}).Where("l3_network_uuid IN (?)", gdb.Model(&L3NetworkVO{}).Select("uuid").Where("l2_network_uuid IN (?)", under)).
		Count(&used).Error
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "count the IP addresses in use on l2 network %s", l2.UUID)
	}
	if used > 0 {
		return errcode.New(errcode.InvalidState, "l2 network %s has %d IP address(es) in use on its L3 networks; release them (delete the VMs) first", l2.UUID, used)
	}
	if l2.Type == VxlanNetworkPool {
		var vxlans []string
		if err := gdb.Model(&L2NetworkVO{}).Where("pool_uuid = ?", l2.UUID).Order("uuid").Pluck("uuid", &vxlans).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "list the vxlan networks of pool %s", l2.UUID)
		}
		for _, v := range vxlans {
			if err := deleteL2(ctx, gdb, vni, resource.DeleteReq{UUID: v, Mode: DeleteEnforcing}); err != nil {
				return fmt.Errorf("delete vxlan network %s of pool %s: %w", v, l2.UUID, err)
			}
		}
	}
	var l3s []string
	if err := gdb.Model(&L3NetworkVO{}).Where("l2_network_uuid = ?", l2.UUID).Order("uuid").Pluck("uuid", &l3s).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "list the L3 networks of l2 network %s", l2.UUID)
	}
	for _, l3 := range l3s {
		if err := DeleteL3Network(ctx, gdb, l3); err != nil {
			return fmt.Errorf("delete L3 network %s of l2 network %s: %w", l3, l2.UUID, err)
		}
	}
	return nil
}

// now is the time of new rows: whole milliseconds, what the database
// keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
