package volume

import (
	"context"
	"time"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/services/storage"
)

// Snapshot types: inside the volume's qcow2 file, or a file of its own.
const (
	SnapshotInternal = "Hypervisor"
	SnapshotFile     = "Storage"
)

type snapshotData struct {
	Volume   VolumeVO         `json:"volume"`
	Snapshot VolumeSnapshotVO `json:"snapshot"`
}

func snapshotFilePath(v *VolumeVO, snapUUID string) string {
	return "snapshots/vol-" + v.UUID + "/" + snapUUID
}

// snapshotChain: record and reserve -> take it on the agent -> Ready.
// The first step's rollback deletes whatever the agent made, gives the
// capacity back and removes the row, so a create cut anywhere leaves
// nothing behind.
func (s *Service) snapshotChain() (*flow.Chain[snapshotData], error) {
	return flow.New("create-volume-snapshot", []flow.Step[snapshotData]{
		{Name: "record-and-reserve", Run: s.stepSnapRecord, Rollback: s.undoSnapRecord},
		{Name: "take-snapshot", Run: s.stepSnapTake},
		{Name: "set-ready", Run: s.stepSnapReady},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

func (s *Service) handleCreateSnapshot(ctx context.Context, req SnapshotReq) (VolumeSnapshotVO, error) {
	return inChain(ctx, s, req.VolumeUUID, "snapshot", func(ctx context.Context) (VolumeSnapshotVO, error) {
		var existing VolumeSnapshotVO
		if s.db.WithContext(ctx).Take(&existing, "uuid = ?", req.SnapshotUUID).Error == nil {
			return existing, nil // a redelivered create
		}
		v, err := Load(ctx, s.db, req.VolumeUUID)
		if err != nil {
			return VolumeSnapshotVO{}, err
		}
		if v.Status != StatusReady {
			return VolumeSnapshotVO{}, errcode.New(errcode.InvalidState, "volume %s is %s, not Ready", v.UUID, v.Status)
		}
		var parent VolumeSnapshotVO
		_ = s.db.WithContext(ctx).Where("volume_uuid = ? AND latest = ?", v.UUID, true).Take(&parent).Error
		now := time.Now().UTC()
		d := &snapshotData{Volume: *v, Snapshot: VolumeSnapshotVO{UUID: req.SnapshotUUID, Name: req.Name, Description: req.Description,
			VolumeUUID: v.UUID, VolumeType: v.Type, PrimaryStorageUUID: v.PrimaryStorageUUID, TreeUUID: v.UUID, ParentUUID: parent.UUID,
			Size: v.Size, State: StateEnabled, Status: StatusCreating, CreateDate: now, LastOpDate: now}}
		if err := s.snapF.Run(ctx, d, flow.RunOptions{Resource: v.UUID}); err != nil {
			return VolumeSnapshotVO{}, err
		}
		return d.Snapshot, nil
	})
}

func (s *Service) stepSnapRecord(ctx context.Context, d *snapshotData) error {
	// The whole virtual size is reserved while the agent works: a file
	// snapshot may take that much; the actual size is kept after.
	if err := storage.Reserve(ctx, s.db, d.Snapshot.UUID, d.Volume.PrimaryStorageUUID, d.Volume.HostUUID, d.Volume.Size); err != nil {
		if err == storage.ErrNoCapacity {
			return errcode.New(errcode.CapacityExhausted, "primary storage %s has not %d bytes available for a snapshot of volume %s",
				d.Volume.PrimaryStorageUUID, d.Volume.Size, d.Volume.UUID)
		}
		return errcode.Wrap(errcode.Internal, err, "reserve for snapshot %s", d.Snapshot.UUID)
	}
	if err := s.db.WithContext(ctx).Create(&d.Snapshot).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "write snapshot %s", d.Snapshot.UUID)
	}
	return nil
}

func (s *Service) undoSnapRecord(ctx context.Context, d *snapshotData) error {
	p, err := storage.LoadPrimary(ctx, s.db, d.Volume.PrimaryStorageUUID)
	if err != nil {
		return err
	}
	h, err := s.hostFor(ctx, p, d.Volume.HostUUID)
	if err != nil {
		return err
	}
	// Both names it may have: a file of its own, or, in a qcow2 volume,
	// inside the volume (a raw volume has no internal snapshots: the agent
	// refuses to look).
	paths := []string{snapshotFilePath(&d.Volume, d.Snapshot.UUID)}
	if d.Volume.Format != protocol.FormatRaw {
		paths = append(paths, d.Volume.InstallPath+"@"+d.Snapshot.UUID)
	}
	for _, path := range paths {
		if _, err := storage.Run(ctx, s.store, p, h, protocol.DeleteSnapshot, protocol.DeleteCmd{UUID: d.Snapshot.UUID, InstallPath: path}); err != nil {
			return err
		}
	}
	if err := storage.Release(ctx, s.db, d.Snapshot.UUID); err != nil {
		return err
	}
	return s.db.WithContext(ctx).Delete(&VolumeSnapshotVO{}, "uuid = ?", d.Snapshot.UUID).Error
}

func (s *Service) stepSnapTake(ctx context.Context, d *snapshotData) error {
	p, err := storage.LoadPrimary(ctx, s.db, d.Volume.PrimaryStorageUUID)
	if err != nil {
		return err
	}
	h, err := s.hostFor(ctx, p, d.Volume.HostUUID)
	if err != nil {
		return err
	}
	rsp, err := storage.Run(ctx, s.store, p, h, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{VolumeUUID: d.Volume.UUID,
		SnapshotUUID: d.Snapshot.UUID, VolumeInstallPath: d.Volume.InstallPath, Format: d.Volume.Format,
		InstallPath: snapshotFilePath(&d.Volume, d.Snapshot.UUID)})
	if err != nil {
		return errcode.Wrap(errcode.AgentError, err, "snapshot volume %s", d.Volume.UUID)
	}
	sp := &d.Snapshot
	sp.PrimaryStorageInstallPath, sp.Format, sp.Type = rsp.InstallPath, rsp.Format, SnapshotFile
	held := rsp.ActualSize
	if rsp.Internal {
		// Inside the volume's file, which its own reservation covers.
		sp.Type, held = SnapshotInternal, 0
	}
	return storage.Resize(ctx, s.db, sp.UUID, held)
}

func (s *Service) stepSnapReady(ctx context.Context, d *snapshotData) error {
	sp := &d.Snapshot
	sp.Status, sp.Latest = StatusReady, true
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&VolumeSnapshotVO{}).Where("volume_uuid = ? AND uuid <> ?", sp.VolumeUUID, sp.UUID).Update("latest", false).Error; err != nil {
			return err
		}
		return tx.Model(&VolumeSnapshotVO{}).Where("uuid = ?", sp.UUID).Updates(map[string]any{"status": StatusReady, "latest": true,
			"primary_storage_install_path": sp.PrimaryStorageInstallPath, "format": sp.Format, "type": sp.Type,
			"last_op_date": time.Now().UTC()}).Error
	})
}

// removeSnapshot deletes a snapshot's data on the agent, its capacity and
// its row; its children get its parent.
func (s *Service) removeSnapshot(ctx context.Context, p *storage.PrimaryStorageVO, v *VolumeVO, sp *VolumeSnapshotVO) error {
	h, err := s.hostFor(ctx, p, v.HostUUID)
	if err != nil {
		return err
	}
	if sp.PrimaryStorageInstallPath != "" {
		if _, err := storage.Run(ctx, s.store, p, h, protocol.DeleteSnapshot, protocol.DeleteCmd{UUID: sp.UUID, InstallPath: sp.PrimaryStorageInstallPath}); err != nil {
			return errcode.Wrap(errcode.AgentError, err, "delete snapshot %s", sp.UUID)
		}
	}
	if err := storage.Release(ctx, s.db, sp.UUID); err != nil {
		return errcode.Wrap(errcode.Internal, err, "release the capacity of snapshot %s", sp.UUID)
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&VolumeSnapshotVO{}).Where("parent_uuid = ?", sp.UUID).Update("parent_uuid", sp.ParentUUID).Error; err != nil {
			return err
		}
		if sp.Latest && sp.ParentUUID != "" {
			if err := tx.Model(&VolumeSnapshotVO{}).Where("uuid = ?", sp.ParentUUID).Update("latest", true).Error; err != nil {
				return err
			}
		}
		return tx.Delete(&VolumeSnapshotVO{}, "uuid = ?", sp.UUID).Error
	})
}

func (s *Service) loadSnapshot(ctx context.Context, ref SnapshotRef) (*VolumeVO, *VolumeSnapshotVO, *storage.PrimaryStorageVO, error) {
	var sp VolumeSnapshotVO
	if err := s.db.WithContext(ctx).Take(&sp, "uuid = ? AND volume_uuid = ?", ref.SnapshotUUID, ref.VolumeUUID).Error; err != nil {
		return nil, nil, nil, errcode.New(errcode.ResourceNotFound, "snapshot %s of volume %s not found", ref.SnapshotUUID, ref.VolumeUUID)
	}
	v, err := Load(ctx, s.db, ref.VolumeUUID)
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := storage.LoadPrimary(ctx, s.db, v.PrimaryStorageUUID)
	if err != nil {
		return nil, nil, nil, err
	}
	return v, &sp, p, nil
}

func (s *Service) handleDeleteSnapshot(ctx context.Context, ref SnapshotRef) (cloudbus.Empty, error) {
	return inChain(ctx, s, ref.VolumeUUID, "delete-snapshot", func(ctx context.Context) (cloudbus.Empty, error) {
		v, sp, p, err := s.loadSnapshot(ctx, ref)
		if errcode.Has(err, errcode.ResourceNotFound) {
			return cloudbus.Empty{}, nil
		}
		if err != nil {
			return cloudbus.Empty{}, err
		}
		return cloudbus.Empty{}, s.removeSnapshot(ctx, p, v, sp)
	})
}

// handleRevert makes the volume's content the snapshot's.
func (s *Service) handleRevert(ctx context.Context, ref SnapshotRef) (VolumeVO, error) {
	return inChain(ctx, s, ref.VolumeUUID, "revert", func(ctx context.Context) (VolumeVO, error) {
		v, sp, p, err := s.loadSnapshot(ctx, ref)
		if err != nil {
			return VolumeVO{}, err
		}
		if v.Status != StatusReady || sp.Status != StatusReady {
			return VolumeVO{}, errcode.New(errcode.InvalidState, "volume %s is %s and snapshot %s %s: both must be Ready", v.UUID, v.Status, sp.UUID, sp.Status)
		}
		if err := revertable(ctx, s.db, v); err != nil {
			return VolumeVO{}, err
		}
		h, err := s.hostFor(ctx, p, v.HostUUID)
		if err != nil {
			return VolumeVO{}, err
		}
		rsp, err := storage.Run(ctx, s.store, p, h, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeUUID: v.UUID,
			VolumeInstallPath: v.InstallPath, Format: v.Format, SnapshotInstallPath: sp.PrimaryStorageInstallPath})
		if err != nil {
			return VolumeVO{}, errcode.Wrap(errcode.AgentError, err, "revert volume %s to snapshot %s", v.UUID, sp.UUID)
		}
		v.ActualSize = rsp.ActualSize
		if err := s.setStatus(ctx, v.UUID, StatusReady, map[string]any{"actual_size": v.ActualSize}); err != nil {
			return VolumeVO{}, err
		}
		return *v, nil
	})
}

// revertable refuses to revert a volume whose VM may be using it: a
// volume attached to a VM that is not Stopped (or Destroyed), as ZStack.
func revertable(ctx context.Context, db *gorm.DB, v *VolumeVO) error {
	if v.VMInstanceUUID == "" {
		return nil
	}
	var state string
	if err := db.WithContext(ctx).Table("vm_instances").Select("state").Where("uuid = ?", v.VMInstanceUUID).Scan(&state).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up VM %s", v.VMInstanceUUID)
	}
	if state != "" && state != "Stopped" && state != "Destroyed" {
		return errcode.New(errcode.InvalidState, "volume %s is attached to VM %s, which is %s: stop the VM before reverting its volume", v.UUID, v.VMInstanceUUID, state)
	}
	return nil
}
