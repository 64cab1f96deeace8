package volume

import (
	"context"
	"errors"
	"fmt"

	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/services/image"
	"mplane/services/storage"
)

// CleanImageCaches removes the image caches nothing needs any more: those
// of images that were deleted, on a storage (and host) where no volume
// made from the image is left (a linked clone needs its cache as backing
// file, until the volume is expunged). Each goes as its file, then its
// capacity, then its row; every part is idempotent, so two nodes cleaning
// at once or a clean cut short do no harm. It answers how many it removed.
func (s *Service) CleanImageCaches(ctx context.Context) (int, error) {
	var caches []storage.ImageCacheVO
	db := s.db.WithContext(ctx)
	if err := db.Where("image_uuid NOT IN (?)", db.Model(&image.ImageVO{}).Select("uuid")).Find(&caches).Error; err != nil {
		return 0, errcode.Wrap(errcode.Internal, err, "list the image caches of deleted images")
	}
	removed := 0
	var errs []error
	for _, c := range caches {
		q := db.Model(&VolumeVO{}).Where("root_image_uuid = ? AND primary_storage_uuid = ?", c.ImageUUID, c.PrimaryStorageUUID)
		if c.HostUUID != "" {
			q = q.Where("host_uuid = ?", c.HostUUID)
		}
		var users int64
		if err := q.Count(&users).Error; err != nil {
			errs = append(errs, err)
			continue
		}
		if users > 0 {
			continue
		}
		if err := s.removeCache(ctx, c); err != nil {
			errs = append(errs, fmt.Errorf("image cache %s of image %s on %s: %w", c.UUID, c.ImageUUID, c.PrimaryStorageUUID, err))
			continue
		}
		removed++
		s.log.Info("image cache removed", "image_uuid", c.ImageUUID, "ps_uuid", c.PrimaryStorageUUID, "host_uuid", c.HostUUID)
	}
	return removed, errors.Join(errs...)
}

func (s *Service) removeCache(ctx context.Context, c storage.ImageCacheVO) error {
	p, err := storage.LoadPrimary(ctx, s.db, c.PrimaryStorageUUID)
	if err != nil && !errcode.Has(err, errcode.ResourceNotFound) {
		return err
	}
	if err == nil {
		h, err := s.hostFor(ctx, p, c.HostUUID)
		if err != nil {
			return err
		}
		if _, err := storage.Run(ctx, s.store, p, h, protocol.DeleteVolume, protocol.DeleteCmd{UUID: c.ImageUUID, InstallPath: c.InstallPath}); err != nil {
			return err
		}
	}
	if err := storage.Release(ctx, s.db, c.UUID); err != nil {
		return err
	}
	return s.db.WithContext(ctx).Delete(&storage.ImageCacheVO{}, "uuid = ?", c.UUID).Error
}
