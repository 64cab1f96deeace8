package host

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
)

// ReservationVO records the capacity one VM holds on one host. Reserve
// and Release change it in the same transaction as the host's available
// capacity, so a release is idempotent and a crash can never count a
// reservation twice.
type ReservationVO struct {
	VMUUID     string    `gorm:"column:vm_uuid;primaryKey;size:32"`
	HostUUID   string    `gorm:"column:host_uuid;size:32;not null;index"`
	CPU        int64     `gorm:"column:cpu;not null"`
	Memory     int64     `gorm:"column:memory;not null"`
	CreateDate time.Time `gorm:"column:create_date;not null"`
}

// TableName is host_reservations.
func (ReservationVO) TableName() string { return "host_reservations" }

// ErrNoCapacity is returned by Reserve when the host lacks free capacity,
// is not Connected or not Enabled (another allocation may have won).
var ErrNoCapacity = errors.New("host has not enough free capacity, or is not Connected and Enabled")

// Reserve takes cpu vCPUs and memory bytes of host for vm with one
// conditional update: it succeeds only while the host is Connected,
// Enabled and has the capacity free, so concurrent reservations on any
// number of nodes can never overcommit it. A vm that already holds a
// reservation on this host keeps it (idempotent); on another host, it is an
// error.
func Reserve(ctx context.Context, db *gorm.DB, hostUUID, vmUUID string, cpu, memory int64) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var existing ReservationVO
		err := tx.First(&existing, "vm_uuid = ?", vmUUID).Error
		if err == nil {
			if existing.HostUUID == hostUUID {
				return nil
			}
			return errcode.New(errcode.InvalidState, "vm %s already holds capacity on host %s", vmUUID, existing.HostUUID)
		}
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			return err
		}
		res := tx.Model(&HostVO{}).
			Where("uuid = ? AND status = ? AND state = ? AND available_cpu >= ? AND available_memory >= ?",
				hostUUID, StatusConnected, StateEnabled, cpu, memory).
			Updates(map[string]any{
				"available_cpu":    gorm.Expr("available_cpu - ?", cpu),
				"available_memory": gorm.Expr("available_memory - ?", memory),
			})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNoCapacity
		}
		return tx.Create(&ReservationVO{VMUUID: vmUUID, HostUUID: hostUUID, CPU: cpu, Memory: memory, CreateDate: time.Now().UTC()}).Error
	})
}

// Release gives back the capacity vm holds, if any. It is idempotent.
func Release(ctx context.Context, db *gorm.DB, vmUUID string) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r ReservationVO
		err := tx.First(&r, "vm_uuid = ?", vmUUID).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		res := tx.Delete(&ReservationVO{}, "vm_uuid = ?", vmUUID)
		if res.Error != nil || res.RowsAffected == 0 {
			return res.Error // someone else released it meanwhile
		}
		return tx.Model(&HostVO{}).Where("uuid = ?", r.HostUUID).Updates(map[string]any{
			"available_cpu":    gorm.Expr("available_cpu + ?", r.CPU),
			"available_memory": gorm.Expr("available_memory + ?", r.Memory),
		}).Error
	})
}
