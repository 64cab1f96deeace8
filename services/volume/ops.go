package volume

import (
	"context"
	"errors"
	"time"

	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/services/storage"
)

// handleDelete marks a data volume Deleted (ZStack's delete: the file and
// its capacity stay until expungeDataVolume; recoverDataVolume undoes it).
// A root volume goes with its VM; an attached volume is refused.
//
// With deleteMode Enforcing an attached data volume is detached first,
// outside the volume's chain (the detach takes the VM's chain, then the
// volume's: the lock order).
func (s *Service) handleDelete(ctx context.Context, ref Ref) (cloudbus.Empty, error) {
	if ref.Mode == "Enforcing" && s.opts.DetachFromVM != nil {
		if v, err := Load(ctx, s.db, ref.UUID); err == nil && v.Type == TypeData && v.VMInstanceUUID != "" {
			if err := s.opts.DetachFromVM(ctx, v.UUID, v.VMInstanceUUID); err != nil {
				return cloudbus.Empty{}, errcode.Wrap(errcode.From(err).Code, err, "detach volume %s from VM %s before deleting it", v.UUID, v.VMInstanceUUID)
			}
		}
	}
	return inChain(ctx, s, ref.UUID, "delete", func(ctx context.Context) (cloudbus.Empty, error) {
		v, err := Load(ctx, s.db, ref.UUID)
		if errcode.Has(err, errcode.ResourceNotFound) {
			return cloudbus.Empty{}, nil
		}
		if err != nil {
			return cloudbus.Empty{}, err
		}
		if err := deletable(v); err != nil {
			return cloudbus.Empty{}, err
		}
		if v.Status == StatusDeleted {
			return cloudbus.Empty{}, nil
		}
		// An Error volume goes at once: nothing in it is worth keeping.
		if v.Status == StatusError {
			return cloudbus.Empty{}, s.expunge(ctx, v)
		}
		// Only while still detached: an attach is a conditional update too.
		res := s.db.WithContext(ctx).Model(&VolumeVO{}).Where("uuid = ? AND vm_instance_uuid = ?", v.UUID, "").
			Updates(map[string]any{"status": StatusDeleted, "last_op_date": time.Now().UTC()})
		if res.Error != nil {
			return cloudbus.Empty{}, errcode.Wrap(errcode.Internal, res.Error, "delete volume %s", v.UUID)
		}
		if res.RowsAffected == 0 {
			return cloudbus.Empty{}, errcode.New(errcode.Conflict, "volume %s was attached while it was being deleted", v.UUID)
		}
		return cloudbus.Empty{}, nil
	})
}

func deletable(v *VolumeVO) error {
	switch {
	case v.Type == TypeRoot && v.Status != StatusError:
		return errcode.New(errcode.InvalidState, "volume %s is the root volume of VM %s: it goes when the VM is expunged", v.UUID, v.VMInstanceUUID)
	case v.VMInstanceUUID != "":
		return errcode.New(errcode.InvalidState, "volume %s is attached to VM %s: detach it first, or delete it with deleteMode Enforcing", v.UUID, v.VMInstanceUUID)
	case v.Status == StatusCreating:
		return errcode.New(errcode.InvalidState, "volume %s is being created", v.UUID)
	}
	return nil
}

func (s *Service) handleRecover(ctx context.Context, ref Ref) (VolumeVO, error) {
	return inChain(ctx, s, ref.UUID, "recover", func(ctx context.Context) (VolumeVO, error) {
		v, err := Load(ctx, s.db, ref.UUID)
		if err != nil {
			return VolumeVO{}, err
		}
		if v.Status != StatusDeleted {
			return VolumeVO{}, errcode.New(errcode.InvalidState, "volume %s is %s: only a Deleted volume can be recovered", v.UUID, v.Status)
		}
		if err := s.setStatus(ctx, v.UUID, StatusReady, nil); err != nil {
			return VolumeVO{}, err
		}
		v.Status = StatusReady
		return *v, nil
	})
}

// handleExpunge removes a Deleted data volume for good: its snapshots'
// and its own files, their capacity, their rows. Each part is idempotent,
// so an expunge cut short is finished by the next one.
func (s *Service) handleExpunge(ctx context.Context, ref Ref) (cloudbus.Empty, error) {
	return inChain(ctx, s, ref.UUID, "expunge", func(ctx context.Context) (cloudbus.Empty, error) {
		v, err := Load(ctx, s.db, ref.UUID)
		if errcode.Has(err, errcode.ResourceNotFound) {
			return cloudbus.Empty{}, nil
		}
		if err != nil {
			return cloudbus.Empty{}, err
		}
		if v.Status != StatusDeleted {
			return cloudbus.Empty{}, errcode.New(errcode.InvalidState, "volume %s is %s: delete it before expunging it", v.UUID, v.Status)
		}
		return cloudbus.Empty{}, s.expunge(ctx, v)
	})
}

func (s *Service) expunge(ctx context.Context, v *VolumeVO) error {
	var snaps []VolumeSnapshotVO
	if err := s.db.WithContext(ctx).Where("volume_uuid = ?", v.UUID).Find(&snaps).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "list the snapshots of volume %s", v.UUID)
	}
	psUUID, hostUUID := v.PrimaryStorageUUID, v.HostUUID
	if psUUID == "" {
		// An Error volume: where its file may be is in its reservation.
		if r, found, err := storage.Reservation(ctx, s.db, v.UUID); err != nil {
			return errcode.Wrap(errcode.Internal, err, "load the reservation of volume %s", v.UUID)
		} else if found {
			psUUID, hostUUID = r.PrimaryStorageUUID, r.HostUUID
		}
	}
	if psUUID != "" {
		p, err := storage.LoadPrimary(ctx, s.db, psUUID)
		if err != nil {
			return err
		}
		for i := range snaps {
			if err := s.removeSnapshot(ctx, p, v, &snaps[i]); err != nil {
				return err
			}
		}
		if err := s.deleteFile(ctx, p, hostUUID, v.InstallPath); err != nil {
			return errcode.Wrap(errcode.AgentError, err, "expunge volume %s", v.UUID)
		}
	}
	if err := storage.Release(ctx, s.db, v.UUID); err != nil {
		return errcode.Wrap(errcode.Internal, err, "release the capacity of volume %s", v.UUID)
	}
	if err := s.db.WithContext(ctx).Delete(&VolumeVO{}, "uuid = ?", v.UUID).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "delete volume %s", v.UUID)
	}
	s.log.Info("volume expunged", "volume_uuid", v.UUID)
	return nil
}

// handleResize grows a volume: the extra capacity is reserved first (a
// conditional update), then the agent grows the file; if it cannot, the
// reservation shrinks back.
func (s *Service) handleResize(ctx context.Context, req ResizeReq) (VolumeVO, error) {
	return inChain(ctx, s, req.UUID, "resize", func(ctx context.Context) (VolumeVO, error) {
		v, err := Load(ctx, s.db, req.UUID)
		if err != nil {
			return VolumeVO{}, err
		}
		if v.Status != StatusReady {
			return VolumeVO{}, errcode.New(errcode.InvalidState, "volume %s is %s, not Ready", v.UUID, v.Status)
		}
		if req.Size < v.Size {
			return VolumeVO{}, errcode.New(errcode.InvalidArgument, "size %d is smaller than the volume's %d bytes: volumes only grow", req.Size, v.Size)
		}
		if req.Size == v.Size {
			return *v, nil
		}
		p, err := storage.LoadPrimary(ctx, s.db, v.PrimaryStorageUUID)
		if err != nil {
			return VolumeVO{}, err
		}
		if err := storage.Resize(ctx, s.db, v.UUID, req.Size); err != nil {
			if errors.Is(err, storage.ErrNoCapacity) {
				return VolumeVO{}, errcode.New(errcode.CapacityExhausted, "primary storage %s has not %d more bytes available for volume %s",
					p.UUID, req.Size-v.Size, v.UUID)
			}
			return VolumeVO{}, errcode.Wrap(errcode.Internal, err, "reserve for volume %s", v.UUID)
		}
		h, err := s.hostFor(ctx, p, v.HostUUID)
		var rsp protocol.VolumeRsp
		if err == nil {
			rsp, err = storage.Run(ctx, s.store, p, h, protocol.ResizeVolume,
				protocol.ResizeVolumeCmd{VolumeUUID: v.UUID, InstallPath: v.InstallPath, Format: v.Format, Size: req.Size})
		}
		if err != nil {
			if rerr := storage.Resize(context.WithoutCancel(ctx), s.db, v.UUID, v.Size); rerr != nil {
				s.log.Error("give back the capacity of a failed resize", "volume_uuid", v.UUID, "err", rerr)
			}
			return VolumeVO{}, errcode.Wrap(errcode.AgentError, err, "resize volume %s", v.UUID)
		}
		v.Size, v.ActualSize = rsp.Size, rsp.ActualSize
		if err := s.setStatus(ctx, v.UUID, StatusReady, map[string]any{"size": v.Size, "actual_size": v.ActualSize}); err != nil {
			return VolumeVO{}, err
		}
		return *v, nil
	})
}

func (s *Service) handleUpdate(ctx context.Context, req UpdateReq) (VolumeVO, error) {
	return inChain(ctx, s, req.UUID, "update", func(ctx context.Context) (VolumeVO, error) {
		v, err := Load(ctx, s.db, req.UUID)
		if err != nil {
			return VolumeVO{}, err
		}
		upd := map[string]any{}
		if req.Name != nil {
			upd["name"], v.Name = *req.Name, *req.Name
		}
		if req.Description != nil {
			upd["description"], v.Description = *req.Description, *req.Description
		}
		if err := s.setStatus(ctx, v.UUID, v.Status, upd); err != nil {
			return VolumeVO{}, err
		}
		return *v, nil
	})
}
