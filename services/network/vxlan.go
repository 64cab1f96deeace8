package network

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/db"
	"mplane/errcode"
	"mplane/services/resource"
)

// VNIAllocator hands out VNIs, unique in the whole cluster: the cluster's
// totally ordered ID pool VNIPool (managementnode.IDPool, the same on
// every node) satisfies it.
//
// AllocateIn takes id, or with id 0 the lowest free ID within [lo, hi],
// for holder; a retry with the same submission ID sub gets the first
// outcome. An ID in use is InvalidState, a full [lo, hi]
// CapacityExhausted. Release frees an ID held by holder (ResourceNotFound
// if it is not). Holder is who holds an ID, as this node last applied.
type VNIAllocator interface {
	AllocateIn(ctx context.Context, sub string, lo, hi, id int, holder string) (int, error)
	Release(ctx context.Context, id int, holder string) error
	Holder(id int) (string, bool)
}

// L2VxlanParams create a VxlanNetwork in a pool: POST
// /v1/l2-networks/vxlan. Its zone and physical interface are the pool's:
// given, they must be the same.
type L2VxlanParams struct {
	L2Params
	PoolUUID string `json:"poolUuid"`
	// Vni, if given, is the network's VNI: it must be in one of the pool's
	// VNI ranges and free. Without it the network takes the lowest free
	// VNI of the pool's ranges, trying them in order.
	Vni int `json:"vni,omitempty"`
}

// Validate checks the parameters' shape.
func (p *L2VxlanParams) Validate() error {
	problems := p.problems(VxlanNetwork)
	if strings.TrimSpace(p.PoolUUID) == "" {
		problems = append(problems, "poolUuid is required")
	}
	if p.Vni != 0 && (p.Vni < MinVNI || p.Vni > MaxVNI) {
		problems = append(problems, fmt.Sprintf("vni %d is out of range %d-%d", p.Vni, MinVNI, MaxVNI))
	}
	return resource.Invalid(problems)
}

// Check verifies the pool (it exists and is a VxlanNetworkPool), takes
// the zone and the interface from it, and checks a given VNI: in one of
// the pool's ranges (InvalidArgument) and not some other network's
// (InvalidState, at once; the allocation decides a race).
func (p *L2VxlanParams) Check(ctx context.Context, gdb *gorm.DB) error {
	pool, err := loadPool(ctx, gdb, "poolUuid", p.PoolUUID, false)
	if err != nil {
		return err
	}
	if p.ZoneUUID != "" && p.ZoneUUID != pool.ZoneUUID {
		return errcode.New(errcode.InvalidArgument, "zoneUuid %s is not the zone %s of vxlan pool %s; leave it out, or give the pool's",
			p.ZoneUUID, pool.ZoneUUID, pool.UUID)
	}
	if p.PhysicalInterface != "" && p.PhysicalInterface != pool.PhysicalInterface {
		return errcode.New(errcode.InvalidArgument, "physicalInterface %s is not the interface %s of vxlan pool %s; leave it out, or give the pool's",
			p.PhysicalInterface, pool.PhysicalInterface, pool.UUID)
	}
	p.ZoneUUID, p.PhysicalInterface = pool.ZoneUUID, pool.PhysicalInterface
	if p.Vni == 0 {
		return nil
	}
	if _, ok := rangeOf(pool.VniRanges, p.Vni); !ok {
		return errcode.New(errcode.InvalidArgument, "vni %d is not in a VNI range of vxlan pool %s (ranges: %s)", p.Vni, pool.UUID, describeRanges(pool.VniRanges))
	}
	var holders []L2NetworkVO
	if err := gdb.WithContext(ctx).Omit(clause.Associations).Select("uuid", "name").Where("vni = ?", p.Vni).Limit(1).Find(&holders).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up vni %d", p.Vni)
	}
	if len(holders) > 0 {
		return errcode.New(errcode.InvalidState, "vni %d is in use by vxlan network %s (%s)", p.Vni, holders[0].UUID, holders[0].Name)
	}
	return nil
}

// loadPool reads the VxlanNetworkPool of the params field field, with its
// ranges: another type is InvalidArgument, and so is a missing one named
// in the body; one named in the path (inPath) is ResourceNotFound.
func loadPool(ctx context.Context, gdb *gorm.DB, field, uuid string, inPath bool) (L2NetworkVO, error) {
	pool, err := GetL2Network(ctx, gdb, uuid)
	if errcode.Has(err, errcode.ResourceNotFound) {
		if inPath {
			return L2NetworkVO{}, errcode.New(errcode.ResourceNotFound, "vxlan pool %s not found", uuid)
		}
		return L2NetworkVO{}, errcode.New(errcode.InvalidArgument, "%s %s does not exist", field, uuid)
	}
	if err != nil {
		return L2NetworkVO{}, err
	}
	if pool.Type != VxlanNetworkPool {
		return L2NetworkVO{}, errcode.New(errcode.InvalidArgument, "%s %s is an %s, not a %s", field, uuid, pool.Type, VxlanNetworkPool)
	}
	return pool, nil
}

func rangeOf(ranges []VniRangeVO, vni int) (VniRangeVO, bool) {
	for _, r := range ranges {
		if r.StartVni <= vni && vni <= r.EndVni {
			return r, true
		}
	}
	return VniRangeVO{}, false
}

func describeRanges(ranges []VniRangeVO) string {
	if len(ranges) == 0 {
		return "none"
	}
	parts := make([]string, len(ranges))
	for i, r := range ranges {
		parts[i] = fmt.Sprintf("%d-%d", r.StartVni, r.EndVni)
	}
	return strings.Join(parts, ", ")
}

// vniSubmission is the submission ID of the allocation of a VXLAN
// network's VNI: one per network, so a redelivered create gets the VNI the
// first attempt allocated.
func vniSubmission(networkUUID string) string { return "l2-vni-" + networkUUID }

// createVxlan creates a VXLAN network: it allocates the VNI for the
// network (its holder) through vni, then inserts the row, in a transaction
// that locks the pool and checks the VNI is still in one of its ranges.
// Whatever fails after the allocation releases the VNI.
func createVxlan(ctx context.Context, gdb *gorm.DB, vni VNIAllocator, uuid string, p L2VxlanParams) (L2NetworkVO, error) {
	if vni == nil {
		return L2NetworkVO{}, errcode.New(errcode.Internal, "no VNI allocator: cannot create vxlan network %s", uuid)
	}
	pool, err := loadPool(ctx, gdb, "poolUuid", p.PoolUUID, false)
	if err != nil {
		return L2NetworkVO{}, err
	}
	id, err := allocateVNI(ctx, vni, uuid, pool, p.Vni)
	if err != nil {
		return L2NetworkVO{}, err
	}
	p.ZoneUUID, p.PhysicalInterface = pool.ZoneUUID, pool.PhysicalInterface // the pool's (Check refused others)
	row := p.row(uuid, VxlanNetwork)
	poolUUID := pool.UUID
	row.Vni, row.PoolUUID, row.VirtualNetworkID = &id, &poolUUID, id
	err = db.Transaction(ctx, gdb.WithContext(ctx), func(tx *gorm.DB) error {
		locked, err := lockL2(tx, pool.UUID)
		if err != nil {
			return errcode.New(errcode.InvalidArgument, "poolUuid %s does not exist", pool.UUID)
		}
		var ranges []VniRangeVO
		if err := tx.Where("l2_network_uuid = ?", locked.UUID).Order("start_vni").Find(&ranges).Error; err != nil {
			return err
		}
		if _, ok := rangeOf(ranges, id); !ok {
			return errcode.New(errcode.InvalidState, "the VNI range of vni %d of vxlan pool %s was deleted meanwhile", id, pool.UUID)
		}
		out, err := insertL2(ctx, tx, row)
		row = out
		return err
	})
	if err == nil {
		return row, nil
	}
	if existing, lerr := GetL2Network(ctx, gdb, uuid); lerr == nil && existing.Vni != nil && *existing.Vni == id {
		return existing, nil // made by a create of the same network meanwhile: it holds the VNI
	}
	if rerr := releaseVNI(ctx, vni, id, uuid); rerr != nil {
		err = errors.Join(err, fmt.Errorf("release vni %d: %w", id, rerr))
	}
	if errcode.Has(err, errcode.Conflict) {
		return L2NetworkVO{}, errcode.Wrap(errcode.Conflict, err, "vni %d is in use by another vxlan network", id)
	}
	return L2NetworkVO{}, errcode.OrInternal(err, "create vxlan network %s", uuid)
}

// allocateVNI allocates want (0: the lowest free VNI of the pool's ranges,
// in order) for network uuid.
func allocateVNI(ctx context.Context, vni VNIAllocator, uuid string, pool L2NetworkVO, want int) (int, error) {
	sub := vniSubmission(uuid)
	var id int
	if want != 0 {
		r, ok := rangeOf(pool.VniRanges, want)
		if !ok {
			return 0, errcode.New(errcode.InvalidArgument, "vni %d is not in a VNI range of vxlan pool %s (ranges: %s)", want, pool.UUID, describeRanges(pool.VniRanges))
		}
		got, err := vni.AllocateIn(ctx, sub, r.StartVni, r.EndVni, want, uuid)
		if errcode.Has(err, errcode.InvalidState) {
			return 0, errcode.Wrap(errcode.InvalidState, err, "vni %d of vxlan pool %s is not free", want, pool.UUID)
		}
		if err != nil {
			return 0, fmt.Errorf("allocate vni %d for vxlan network %s: %w", want, uuid, err)
		}
		id = got
	} else {
		for _, r := range pool.VniRanges {
			got, err := vni.AllocateIn(ctx, sub, r.StartVni, r.EndVni, 0, uuid)
			if errcode.Has(err, errcode.CapacityExhausted) {
				continue // a rejection is not recorded: the same submission may try the next range
			}
			if err != nil {
				return 0, fmt.Errorf("allocate a vni for vxlan network %s: %w", uuid, err)
			}
			id = got
			break
		}
		if id == 0 {
			return 0, errcode.New(errcode.CapacityExhausted, "vxlan pool %s (%s) has no free VNI in its ranges (%s)", pool.UUID, pool.Name, describeRanges(pool.VniRanges))
		}
	}
	// A submission answered from the log whose VNI was released since
	// (the network was created, deleted, and its create redelivered).
	if h, ok := vni.Holder(id); !ok || h != uuid {
		return 0, errcode.New(errcode.InvalidState, "vxlan network %s was created and deleted already (its vni %d is released); create it again with another UUID", uuid, id)
	}
	return id, nil
}

// releaseVNI releases a VXLAN network's VNI, whether or not the caller's
// context is still live (a rollback must run); one not held (released
// already) counts as released.
func releaseVNI(ctx context.Context, vni VNIAllocator, id int, holder string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := vni.Release(ctx, id, holder)
	if errcode.Has(err, errcode.ResourceNotFound) {
		return nil
	}
	return err
}

// VniRangeParams create a VNI range of a VXLAN network pool, named as in
// ZStack's APICreateVniRangeMsg: POST
// /v1/l2-networks/vxlan-pool/{l2NetworkUuid}/vni-range.
type VniRangeParams struct {
	resource.Params
	L2NetworkUUID string `json:"l2NetworkUuid"`
	StartVni      int    `json:"startVni"`
	EndVni        int    `json:"endVni"`
}

// Validate checks the parameters' shape: startVni and endVni within
// 1-16777214, start <= end.
func (p *VniRangeParams) Validate() error {
	problems := p.Problems()
	if strings.TrimSpace(p.L2NetworkUUID) == "" {
		problems = append(problems, "l2NetworkUuid is required (the vxlan pool)")
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"startVni", p.StartVni}, {"endVni", p.EndVni}} {
		if f.v < MinVNI || f.v > MaxVNI {
			problems = append(problems, fmt.Sprintf("%s %d is out of range %d-%d", f.name, f.v, MinVNI, MaxVNI))
		}
	}
	if p.StartVni > p.EndVni {
		problems = append(problems, fmt.Sprintf("startVni %d is after endVni %d", p.StartVni, p.EndVni))
	}
	return resource.Invalid(problems)
}

// Check verifies the pool and that the range overlaps none of its ranges
// (InvalidArgument); the create checks again with the pool locked.
func (p *VniRangeParams) Check(ctx context.Context, gdb *gorm.DB) error {
	pool, err := loadPool(ctx, gdb, "l2NetworkUuid", p.L2NetworkUUID, true)
	if err != nil {
		return err
	}
	return p.fits(pool.VniRanges)
}

func (p *VniRangeParams) fits(ranges []VniRangeVO) error {
	for _, r := range ranges {
		if p.StartVni <= r.EndVni && r.StartVni <= p.EndVni {
			return errcode.New(errcode.InvalidArgument, "vni range %d-%d overlaps vni range %s (%d-%d) of vxlan pool %s",
				p.StartVni, p.EndVni, r.UUID, r.StartVni, r.EndVni, p.L2NetworkUUID)
		}
	}
	return nil
}

// createVniRange adds a VNI range to its pool. Ranges of one pool are added
// one at a time (the pool's row is locked), so two racing ones cannot
// overlap. Ranges of different pools may overlap: their networks share
// the cluster's VNIs anyway.
func createVniRange(ctx context.Context, gdb *gorm.DB, uuid string, p VniRangeParams) (VniRangeVO, error) {
	r := VniRangeVO{Base: resource.NewBase(uuid, p.Name, p.Description), L2NetworkUUID: p.L2NetworkUUID, StartVni: p.StartVni, EndVni: p.EndVni}
	err := db.Transaction(ctx, gdb.WithContext(ctx), func(tx *gorm.DB) error {
		pool, err := lockL2(tx, p.L2NetworkUUID)
		if errcode.Has(err, errcode.ResourceNotFound) {
			return errcode.New(errcode.ResourceNotFound, "vxlan pool %s not found", p.L2NetworkUUID)
		}
		if err != nil {
			return err
		}
		if pool.Type != VxlanNetworkPool {
			return errcode.New(errcode.InvalidArgument, "l2NetworkUuid %s is an %s, not a %s", pool.UUID, pool.Type, VxlanNetworkPool)
		}
		var ranges []VniRangeVO
		if err := tx.Where("l2_network_uuid = ?", pool.UUID).Find(&ranges).Error; err != nil {
			return err
		}
		if err := p.fits(ranges); err != nil {
			return err
		}
		return tx.Create(&r).Error
	})
	var ce *errcode.Error
	switch {
	case err == nil:
		return r, nil
	case errors.As(err, &ce):
		return VniRangeVO{}, err
	case errors.Is(err, gorm.ErrDuplicatedKey):
		if existing, lerr := resource.Load[VniRangeVO](ctx, gdb, "vni range", uuid); lerr == nil {
			return *existing, nil
		}
	}
	return VniRangeVO{}, errcode.Wrap(errcode.Internal, err, "create vni range %d-%d of vxlan pool %s", p.StartVni, p.EndVni, p.L2NetworkUUID)
}

// deleteVniRange deletes a VNI range, refused (InvalidState, whatever the
// mode) while a VXLAN network of its pool has a VNI in it: delete those
// first. Deleting a missing range succeeds.
func deleteVniRange(ctx context.Context, gdb *gorm.DB, uuid string) error {
	err := db.Transaction(ctx, gdb.WithContext(ctx), func(tx *gorm.DB) error {
		var r VniRangeVO
		err := tx.Where("uuid = ?", uuid).Take(&r).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		// A VXLAN network's create locks the pool and checks its VNI's
		// range in the same transaction as its insert.
		if _, err := lockL2(tx, r.L2NetworkUUID); err != nil && !errcode.Has(err, errcode.ResourceNotFound) {
			return err
		}
		var used []L2NetworkVO
		if err := tx.Omit(clause.Associations).Select("uuid", "vni").Where("pool_uuid = ? AND vni BETWEEN ? AND ?", r.L2NetworkUUID, r.StartVni, r.EndVni).
			Order("vni").Limit(1).Find(&used).Error; err != nil {
			return err
		}
		if len(used) > 0 {
			var n int64
			if err := tx.Model(&L2NetworkVO{}).Where("pool_uuid = ? AND vni BETWEEN ? AND ?", r.L2NetworkUUID, r.StartVni, r.EndVni).Count(&n).Error; err != nil {
				return err
			}
			return errcode.New(errcode.InvalidState, "vni range %s (%d-%d) has %d vxlan network(s), e.g. %s with vni %d; delete them first",
				r.UUID, r.StartVni, r.EndVni, n, used[0].UUID, *used[0].Vni)
		}
		return tx.Where("uuid = ?", uuid).Delete(&VniRangeVO{}).Error
	})
	return errcode.OrInternal(err, "delete vni range %s", uuid)
}
