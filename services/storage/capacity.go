package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	mdb "mplane/db"
	"mplane/errcode"
)

// ErrNoCapacity is returned by Reserve when the storage (or the host's
// directory of a LocalStorage) has not enough available capacity, or the
// storage is not Enabled and Connected.
var ErrNoCapacity = errors.New("primary storage has not enough available capacity, or is not Enabled and Connected")

// Reserve takes size bytes of primary storage ps for owner (a volume, a
// snapshot or a cached image) with conditional updates: on the storage's
// row, and for a LocalStorage on host's directory too, each only while
// enough is available, so concurrent reservations on any number of nodes
// never overcommit. An owner that already holds a reservation on the same
// storage and host keeps it (idempotent); elsewhere, it is an error.
func Reserve(ctx context.Context, db *gorm.DB, owner, ps, host string, size int64) error {
	if size < 0 {
		return errcode.New(errcode.InvalidArgument, "cannot reserve a negative size (%d bytes)", size)
	}
	err := mdb.Transaction(ctx, db, func(tx *gorm.DB) error {
		var existing StorageReservationVO
		err := tx.Take(&existing, "owner_uuid = ?", owner).Error
		if err == nil {
			if existing.PrimaryStorageUUID == ps && existing.HostUUID == host {
				return nil
			}
			return errcode.New(errcode.InvalidState, "%s already holds capacity on primary storage %s", owner, existing.PrimaryStorageUUID)
		}
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			return err
		}
		if host != "" {
			res := tx.Model(&LocalStorageHostRefVO{}).
				Where("primary_storage_uuid = ? AND host_uuid = ? AND available_capacity >= ?", ps, host, size).
				Update("available_capacity", gorm.Expr("available_capacity - ?", size))
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected == 0 {
				return ErrNoCapacity
			}
		}
		res := tx.Model(&PrimaryStorageVO{}).
			Where("uuid = ? AND state = ? AND status = ? AND available_capacity >= ?", ps, StateEnabled, StatusConnected, size).
			Update("available_capacity", gorm.Expr("available_capacity - ?", size))
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNoCapacity // rolls back the host's part
		}
		return tx.Create(&StorageReservationVO{OwnerUUID: owner, PrimaryStorageUUID: ps, HostUUID: host, Size: size,
			CreateDate: time.Now().UTC()}).Error
	})
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		// The same owner reserved at once elsewhere (two creates caching
		// one image): this transaction was rolled back; the other's
		// reservation is the owner's, if at the same place.
		if r, found, rerr := Reservation(ctx, db, owner); rerr == nil && found && r.PrimaryStorageUUID == ps && r.HostUUID == host {
			return nil
		}
	}
	return err
}

// Resize changes the size owner holds (a volume that grows), with the same
// conditions as Reserve for the difference.
func Resize(ctx context.Context, db *gorm.DB, owner string, size int64) error {
	return mdb.Transaction(ctx, db, func(tx *gorm.DB) error {
		// Locked: of two resizes of one owner, the second computes its
		// change from the first's size, not from the one both read.
		var r StorageReservationVO
		if err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Take(&r, "owner_uuid = ?", owner).Error; err != nil {
			return err
		}
		delta := size - r.Size
		if delta == 0 {
			return nil
		}
		if r.HostUUID != "" {
			res := tx.Model(&LocalStorageHostRefVO{}).
				Where("primary_storage_uuid = ? AND host_uuid = ? AND available_capacity >= ?", r.PrimaryStorageUUID, r.HostUUID, delta).
				Update("available_capacity", gorm.Expr("available_capacity - ?", delta))
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected == 0 {
				return ErrNoCapacity
			}
		}
		res := tx.Model(&PrimaryStorageVO{}).Where("uuid = ? AND available_capacity >= ?", r.PrimaryStorageUUID, delta).
			Update("available_capacity", gorm.Expr("available_capacity - ?", delta))
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNoCapacity
		}
		return tx.Model(&StorageReservationVO{}).Where("owner_uuid = ?", owner).Update("size", size).Error
	})
}

// Release gives back what owner holds, if anything. It is idempotent.
func Release(ctx context.Context, db *gorm.DB, owner string) error {
	return mdb.Transaction(ctx, db, func(tx *gorm.DB) error {
		var r StorageReservationVO
		err := tx.Take(&r, "owner_uuid = ?", owner).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		res := tx.Delete(&StorageReservationVO{}, "owner_uuid = ?", owner)
		if res.Error != nil || res.RowsAffected == 0 {
			return res.Error // released meanwhile
		}
		if r.HostUUID != "" {
			if err := tx.Model(&LocalStorageHostRefVO{}).Where("primary_storage_uuid = ? AND host_uuid = ?", r.PrimaryStorageUUID, r.HostUUID).
				Update("available_capacity", gorm.Expr("available_capacity + ?", r.Size)).Error; err != nil {
				return err
			}
		}
		return tx.Model(&PrimaryStorageVO{}).Where("uuid = ?", r.PrimaryStorageUUID).
			Update("available_capacity", gorm.Expr("available_capacity + ?", r.Size)).Error
	})
}

// Reservation answers what owner holds (found false: nothing).
func Reservation(ctx context.Context, db *gorm.DB, owner string) (r StorageReservationVO, found bool, err error) {
	err = db.WithContext(ctx).Take(&r, "owner_uuid = ?", owner).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return r, false, nil
	}
	return r, err == nil, err
}

// setMeasured records what an agent measured of a storage (or of one
// host's directory of a LocalStorage): the physical capacities, and the
// total that may be reserved; the available capacity is recomputed as the
// total minus the reservations (see lockForRecompute), so a reservation
// made meanwhile is never lost.
func setMeasured(ctx context.Context, db *gorm.DB, ps, host string, total, avail int64) error {
	now := time.Now().UTC()
	return mdb.Transaction(ctx, db, func(tx *gorm.DB) error {
		if host != "" {
			ref := LocalStorageHostRefVO{PrimaryStorageUUID: ps, HostUUID: host, CreateDate: now, LastOpDate: now}
			if err := tx.Where("primary_storage_uuid = ? AND host_uuid = ?", ps, host).FirstOrCreate(&ref).Error; err != nil {
				return err
			}
			if err := lockForRecompute(tx, &LocalStorageHostRefVO{}, "primary_storage_uuid = ? AND host_uuid = ?", ps, host); err != nil {
				return err
			}
			reserved := tx.Model(&StorageReservationVO{}).Select("COALESCE(SUM(size), 0)").
				Where("primary_storage_uuid = ? AND host_uuid = ?", ps, host)
			if err := tx.Model(&LocalStorageHostRefVO{}).Where("primary_storage_uuid = ? AND host_uuid = ?", ps, host).
				Updates(map[string]any{"total_capacity": total, "total_physical_capacity": total, "available_physical_capacity": avail,
					"available_capacity": gorm.Expr("? - (?)", total, reserved), "last_op_date": now}).Error; err != nil {
				return err
			}
			return sumHosts(tx, ps, now)
		}
		if err := lockForRecompute(tx, &PrimaryStorageVO{}, "uuid = ?", ps); err != nil {
			return err
		}
		reserved := tx.Model(&StorageReservationVO{}).Select("COALESCE(SUM(size), 0)").Where("primary_storage_uuid = ?", ps)
		return tx.Model(&PrimaryStorageVO{}).Where("uuid = ?", ps).
			Updates(map[string]any{"total_capacity": total, "total_physical_capacity": total, "available_physical_capacity": avail,
				"available_capacity": gorm.Expr("? - (?)", total, reserved), "last_op_date": now}).Error
	})
}

// forgetHost deletes the directories of a host that is being deleted
// from its LocalStorages, in the transaction that deletes the host
// (host.Service.OnDelete), with the image caches on them: each storage's
// capacities become the sums over its remaining hosts. A host that still
// holds volumes is refused (InvalidState).
func forgetHost(tx *gorm.DB, hostUUID string) error {
	// Volumes on the host's directories hold data only that host has:
	// the host goes once they are gone (a destroyed VM's root volume goes
	// when the VM is expunged).
	if tx.Migrator().HasTable("volumes") {
		var vols int64
		if err := tx.Table("volumes").Where("host_uuid = ?", hostUUID).Count(&vols).Error; err != nil {
			return fmt.Errorf("count the volumes on host %s: %w", hostUUID, err)
		}
		if vols > 0 {
			return errcode.New(errcode.InvalidState,
				"host %s still holds %d volumes on its local storage; expunge the VMs they belong to (destroyed VMs keep their root volume until expunged) or delete them first",
				hostUUID, vols)
		}
	}
	// The image caches on its directories go with it, and what they hold.
	var caches []string
	if err := tx.Model(&ImageCacheVO{}).Where("host_uuid = ?", hostUUID).Pluck("uuid", &caches).Error; err != nil {
		return fmt.Errorf("read the image caches of host %s: %w", hostUUID, err)
	}
	if len(caches) > 0 {
		if err := tx.Where("owner_uuid IN ?", caches).Delete(&StorageReservationVO{}).Error; err != nil {
			return fmt.Errorf("release the image caches of host %s: %w", hostUUID, err)
		}
		if err := tx.Where("host_uuid = ?", hostUUID).Delete(&ImageCacheVO{}).Error; err != nil {
			return fmt.Errorf("forget the image caches of host %s: %w", hostUUID, err)
		}
	}
	var pss []string
	if err := tx.Model(&LocalStorageHostRefVO{}).Where("host_uuid = ?", hostUUID).Pluck("primary_storage_uuid", &pss).Error; err != nil {
		return fmt.Errorf("read the local storage directories of host %s: %w", hostUUID, err)
	}
	if len(pss) == 0 {
		return nil
	}
	if err := tx.Where("host_uuid = ?", hostUUID).Delete(&LocalStorageHostRefVO{}).Error; err != nil {
		return fmt.Errorf("delete the local storage directories of host %s: %w", hostUUID, err)
	}
	now := time.Now().UTC()
	for _, ps := range pss {
		if err := sumHosts(tx, ps, now); err != nil {
			return fmt.Errorf("sum local storage %s without host %s: %w", ps, hostUUID, err)
		}
	}
	return nil
}

// lockForRecompute locks the row (of model, found by where) whose
// capacities the transaction tx is about to recompute from other rows (the
// reservations, the hosts' directories), until tx ends. Reserve, Resize and
// Release change the same row, relative to its value, in their own
// transactions: one that changed it already has committed before the lock
// is granted, so the recomputing statement that follows (at READ
// COMMITTED, a fresh snapshot per statement) counts its reservation rows;
// one that changes it later applies its change to the recomputed value,
// which did not count them. Either way nothing is counted twice or lost,
// whatever the order in which the database evaluates the recomputing
// statement's subqueries and takes its locks.
func lockForRecompute(tx *gorm.DB, model any, where string, args ...any) error {
	var n int64
	if err := tx.Model(model).Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Where(where, args...).Count(&n).Error; err != nil {
		return fmt.Errorf("lock the capacity row to recompute: %w", err)
	}
	return nil
}

// sumHosts makes a LocalStorage's capacities the sums over its hosts'
// directories; its available capacity is its total minus its
// reservations (see lockForRecompute), so a reservation or release
// committed meanwhile is never lost.
func sumHosts(tx *gorm.DB, ps string, now time.Time) error {
	if err := lockForRecompute(tx, &PrimaryStorageVO{}, "uuid = ?", ps); err != nil {
		return err
	}
	refs := func(col string) *gorm.DB {
		return tx.Model(&LocalStorageHostRefVO{}).Select("COALESCE(SUM("+col+"),0)").Where("primary_storage_uuid = ?", ps)
	}
	reserved := tx.Model(&StorageReservationVO{}).Select("COALESCE(SUM(size),0)").Where("primary_storage_uuid = ?", ps)
	return tx.Model(&PrimaryStorageVO{}).Where("uuid = ?", ps).Updates(map[string]any{
		"total_capacity": gorm.Expr("(?)", refs("total_capacity")), "available_capacity": gorm.Expr("(?) - (?)", refs("total_capacity"), reserved),
		"total_physical_capacity":     gorm.Expr("(?)", refs("total_physical_capacity")),
		"available_physical_capacity": gorm.Expr("(?)", refs("available_physical_capacity")), "last_op_date": now}).Error
}

// Drift is a storage whose available capacity is not its total minus its
// reservations.
type Drift struct {
	PrimaryStorageUUID string `json:"primaryStorageUuid"`
	HostUUID           string `json:"hostUuid,omitempty"`
	Total              int64  `json:"totalCapacity"`
	Available          int64  `json:"availableCapacity"`
	Reserved           int64  `json:"reserved"`
	// Drift is available - (total - reserved): positive, capacity that
	// would be given twice; negative, capacity lost.
	Drift int64 `json:"drift"`
}

func (d Drift) String() string {
	where := "primary storage " + d.PrimaryStorageUUID
	if d.HostUUID != "" {
		where += " on host " + d.HostUUID
	}
	return fmt.Sprintf("%s: available %d, total %d - reserved %d: drift %+d bytes", where, d.Available, d.Total, d.Reserved, d.Drift)
}

// CapacityDrift checks every primary storage (and every host directory of
// a LocalStorage): available must equal total minus the reservations.
// It answers the ones that differ; none is the normal case.
func CapacityDrift(ctx context.Context, db *gorm.DB) ([]Drift, error) {
	db = db.WithContext(ctx)
	type sum struct {
		PS, Host string
		Size     int64
	}
	var sums []sum
	if err := db.Model(&StorageReservationVO{}).Select("primary_storage_uuid AS ps, host_uuid AS host, SUM(size) AS size").
		Group("primary_storage_uuid, host_uuid").Scan(&sums).Error; err != nil {
		return nil, err
	}
	byPS, byHost := map[string]int64{}, map[[2]string]int64{}
	for _, s := range sums {
		byPS[s.PS] += s.Size
		if s.Host != "" {
			byHost[[2]string{s.PS, s.Host}] += s.Size
		}
	}
	var out []Drift
	var pss []PrimaryStorageVO
	if err := db.Find(&pss).Error; err != nil {
		return nil, err
	}
	for _, p := range pss {
		if d := p.AvailableCapacity - (p.TotalCapacity - byPS[p.UUID]); d != 0 {
			out = append(out, Drift{PrimaryStorageUUID: p.UUID, Total: p.TotalCapacity, Available: p.AvailableCapacity, Reserved: byPS[p.UUID], Drift: d})
		}
	}
	var refs []LocalStorageHostRefVO
	if err := db.Find(&refs).Error; err != nil {
		return nil, err
	}
	for _, r := range refs {
		k := [2]string{r.PrimaryStorageUUID, r.HostUUID}
		if d := r.AvailableCapacity - (r.TotalCapacity - byHost[k]); d != 0 {
			out = append(out, Drift{PrimaryStorageUUID: r.PrimaryStorageUUID, HostUUID: r.HostUUID, Total: r.TotalCapacity,
				Available: r.AvailableCapacity, Reserved: byHost[k], Drift: d})
		}
	}
	return out, nil
}
