package storage

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"time"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/errcode"
)

// ImageCacheVO is an image copied into a primary storage (for
// LocalStorage, into one host's directory), as ZStack's image cache: the
// volumes made from the image there are linked clones of it. UUID is the
// owner of its capacity reservation.
type ImageCacheVO struct {
	UUID               string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	PrimaryStorageUUID string    `gorm:"column:primary_storage_uuid;size:32;not null;uniqueIndex:idx_image_caches_place" json:"primaryStorageUuid"`
	HostUUID           string    `gorm:"column:host_uuid;size:32;not null;uniqueIndex:idx_image_caches_place" json:"hostUuid,omitempty"`
	ImageUUID          string    `gorm:"column:image_uuid;size:32;not null;uniqueIndex:idx_image_caches_place" json:"imageUuid"`
	InstallPath        string    `gorm:"column:install_path;size:1024;not null" json:"installPath"`
	Format             string    `gorm:"column:format;size:32" json:"format"`
	Size               int64     `gorm:"column:size;not null" json:"size"`
	ActualSize         int64     `gorm:"column:actual_size;not null" json:"actualSize"`
	CreateDate         time.Time `gorm:"column:create_date;not null" json:"createDate"`
}

// TableName is image_caches.
func (ImageCacheVO) TableName() string { return "image_caches" }

// CacheSource is where an image is fetched from: a backup storage's file.
type CacheSource struct {
	ImageUUID  string
	Backup     *BackupStorageVO
	Path       string // the image's install path on the backup storage
	Md5Sum     string
	ActualSize int64 // bytes to reserve for the copy
}

// cacheUUID is the one UUID of an image's cache at a place, so that two
// creates caching it at once share one reservation and one row.
func cacheUUID(ps, host, img string) string {
	sum := md5.Sum([]byte(ps + "/" + host + "/" + img))
	return hex.EncodeToString(sum[:])
}

// CachePath is where an image's cache goes in a primary storage.
func CachePath(imageUUID string) string { return "imagecache/" + imageUUID + "/" + imageUUID }

// EnsureCached makes sure image src is in primary storage p (on host's
// directory for LocalStorage; hostUUID is also the host whose agent
// fetches it) and answers its cache: reserved first (idempotent for the
// place), fetched by the agent from the backup storage (an existing copy
// is a cache hit, and the agent serializes fetches of one path), then
// recorded.
func (s *Service) EnsureCached(ctx context.Context, p *PrimaryStorageVO, placeHost, hostUUID string, src CacheSource) (*ImageCacheVO, error) {
	var c ImageCacheVO
	err := s.db.WithContext(ctx).Take(&c, "primary_storage_uuid = ? AND host_uuid = ? AND image_uuid = ?", p.UUID, placeHost, src.ImageUUID).Error
	if err == nil {
		return &c, nil
	}
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errcode.Wrap(errcode.Internal, err, "look up the cache of image %s", src.ImageUUID)
	}
	owner := cacheUUID(p.UUID, placeHost, src.ImageUUID)
	if err := Reserve(ctx, s.db, owner, p.UUID, placeHost, src.ActualSize); err != nil {
		if errors.Is(err, ErrNoCapacity) {
			return nil, errcode.New(errcode.CapacityExhausted, "no room for image %s (%d bytes) in the cache of %s", src.ImageUUID, src.ActualSize, p.UUID)
		}
		return nil, errcode.Wrap(errcode.Internal, err, "reserve the cache of image %s", src.ImageUUID)
	}
	rsp, err := Run(ctx, s, p, hostUUID, protocol.FetchImage, protocol.FetchImageCmd{ImageUUID: src.ImageUUID,
		BackupStorageURL: s.backupURL(src.Backup), BackupStoragePath: src.Path, BackupStorageSecret: src.Backup.Secret,
		InstallPath: CachePath(src.ImageUUID), Md5Sum: src.Md5Sum})
	if err != nil {
		if rerr := Release(context.WithoutCancel(ctx), s.db, owner); rerr != nil {
			s.log.Warn("release the reservation of a failed image fetch", "image_uuid", src.ImageUUID, "err", rerr)
		}
		return nil, errcode.Wrap(errcode.AgentError, err, "copy image %s from backup storage %s into primary storage %s", src.ImageUUID, src.Backup.UUID, p.UUID)
	}
	c = ImageCacheVO{UUID: owner, PrimaryStorageUUID: p.UUID, HostUUID: placeHost, ImageUUID: src.ImageUUID, InstallPath: rsp.InstallPath,
		Format: rsp.Format, Size: rsp.Size, ActualSize: rsp.ActualSize, CreateDate: time.Now().UTC()}
	if err := s.db.WithContext(ctx).Create(&c).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			// Cached meanwhile by another create: the same row.
			if err := s.db.WithContext(ctx).Take(&c, "uuid = ?", owner).Error; err == nil {
				return &c, nil
			}
		}
		return nil, errcode.Wrap(errcode.Internal, err, "record the cache of image %s", src.ImageUUID)
	}
	s.log.Info("image cached in primary storage", "image_uuid", src.ImageUUID, "ps_uuid", p.UUID, "host_uuid", placeHost, "cached", rsp.Cached)
	return &c, nil
}
