package image

import (
	"context"
	"time"

	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/services/storage"
)

// handleDelete deletes an image: its file on every backup storage
// (idempotent), then its refs and its row. A backup storage that is not
// Connected is skipped (its file is left, and logged), so an unreachable
// storage never keeps an image; a Connected one that fails to delete fails
// the delete, which can be sent again. Deleting a missing image succeeds.
func (s *Service) handleDelete(ctx context.Context, ref Ref) (cloudbus.Empty, error) {
	return inChain(ctx, s, ref.UUID, "delete", func(ctx context.Context) (cloudbus.Empty, error) {
		img, err := Load(ctx, s.db, ref.UUID)
		if errcode.Has(err, errcode.ResourceNotFound) {
			return cloudbus.Empty{}, nil
		}
		if err != nil {
			return cloudbus.Empty{}, err
		}
		for _, r := range img.BackupStorageRefs {
			b, err := storage.LoadBackup(ctx, s.db, r.BackupStorageUUID)
			switch {
			case errcode.Has(err, errcode.ResourceNotFound):
			case err != nil:
				return cloudbus.Empty{}, err
			case b.Status != storage.StatusConnected:
				s.log.Warn("image deleted while its backup storage is not Connected: its file is left there",
					"image_uuid", img.UUID, "bs_uuid", b.UUID, "status", b.Status, "path", r.InstallPath)
			default:
				if err := s.deleteFile(ctx, b.UUID, img.UUID, r.InstallPath); err != nil {
					return cloudbus.Empty{}, errcode.Wrap(errcode.AgentError, err,
						"delete image %s: its file %s on backup storage %s was not deleted; delete the image again", img.UUID, r.InstallPath, b.UUID)
				}
			}
			if err := s.db.WithContext(ctx).Delete(&ImageBackupStorageRefVO{}, "image_uuid = ? AND backup_storage_uuid = ?", img.UUID, r.BackupStorageUUID).Error; err != nil {
				return cloudbus.Empty{}, errcode.Wrap(errcode.Internal, err, "delete image %s on backup storage %s", img.UUID, r.BackupStorageUUID)
			}
		}
		if err := s.db.WithContext(ctx).Delete(&ImageVO{}, "uuid = ?", img.UUID).Error; err != nil {
			return cloudbus.Empty{}, errcode.Wrap(errcode.Internal, err, "delete image %s", img.UUID)
		}
		s.log.Info("image deleted", "image_uuid", img.UUID, "name", img.Name)
		return cloudbus.Empty{}, nil
	})
}

// handleChange applies updateImage and changeImageState.
func (s *Service) handleChange(ctx context.Context, req ChangeReq) (ImageVO, error) {
	return inChain(ctx, s, req.UUID, "change", func(ctx context.Context) (ImageVO, error) {
		if _, err := Load(ctx, s.db, req.UUID); err != nil {
			return ImageVO{}, err
		}
		upd := map[string]any{"last_op_date": time.Now().UTC()}
		switch req.StateEvent {
		case "enable":
			upd["state"] = StateEnabled
		case "disable":
			upd["state"] = StateDisabled
		}
		if req.Name != nil {
			upd["name"] = *req.Name
		}
		if req.Description != nil {
			upd["description"] = *req.Description
		}
		if err := s.db.WithContext(ctx).Model(&ImageVO{}).Where("uuid = ?", req.UUID).Updates(upd).Error; err != nil {
			return ImageVO{}, errcode.Wrap(errcode.Internal, err, "update image %s", req.UUID)
		}
		img, err := Load(ctx, s.db, req.UUID)
		if err != nil {
			return ImageVO{}, err
		}
		return *img, nil
	})
}
