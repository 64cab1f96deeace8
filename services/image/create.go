package image

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/flow"
	"mplane/services/resource"
	"mplane/services/storage"
)

// createChainName names the create flow in its records; rename it if its
// steps change incompatibly.
const createChainName = "create-image"

// createData is what the create flow's steps share, recorded at every step
// that can be undone so that a new owner can roll back what a dead one
// left. Everything a rollback needs (the image's UUID, the backup storages,
// the install path) is known before the first step runs.
type createData struct {
	Image              ImageVO  `json:"image"`
	BackupStorageUUIDs []string `json:"backupStorageUuids"`
	Md5Sum             string   `json:"md5sum,omitempty"`
	// Downloaded are the backup storages that have the file, with what
	// their agents reported (set by the download step).
	Downloaded []downloaded `json:"downloaded,omitempty"`
}

type downloaded struct {
	BackupStorageUUID string            `json:"backupStorageUuid"`
	Rsp               protocol.ImageRsp `json:"rsp"`
}

// createChain: record -> download on every backup storage -> Ready. A
// failure rolls back what ran: no file, ref or row stays behind.
func (s *Service) createChain() (*flow.Chain[createData], error) {
	return flow.New(createChainName, []flow.Step[createData]{
		{Name: "create-record", Run: s.stepRecord, Rollback: s.undoRecord},
		{Name: "download", Run: s.stepDownload, Rollback: s.undoDownload},
		{Name: "set-ready", Run: s.stepReady},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

func (s *Service) handleCreate(ctx context.Context, req CreateReq) (ImageVO, error) {
	return inChain(ctx, s, req.UUID, "create", func(ctx context.Context) (ImageVO, error) {
		if img, err := Load(ctx, s.db, req.UUID); err == nil {
			return *img, nil // a redelivered create: answer with what exists
		}
		p := req.Params
		now := time.Now().UTC()
		base := resource.NewBase(req.UUID, p.Name, p.Description)
		base.CreateDate, base.LastOpDate = now, now
		d := &createData{
			Image: ImageVO{Base: base, URL: p.URL, Format: p.Format, MediaType: p.MediaType, Platform: p.Platform,
				GuestOsType: p.GuestOsType, System: p.System, State: StateEnabled, Status: StatusDownloading},
			BackupStorageUUIDs: p.BackupStorageUUIDs,
			Md5Sum:             p.Md5Sum,
		}
		if err := s.create.Run(ctx, d, flow.RunOptions{Resource: req.UUID}); err != nil {
			return ImageVO{}, err
		}
		img, err := Load(ctx, s.db, req.UUID)
		if err != nil {
			return ImageVO{}, err
		}
		return *img, nil
	})
}

// usableBackupStorages loads the backup storages uuids names, refusing a
// missing or Disabled one (the caller's mistake: InvalidArgument).
func usableBackupStorages(ctx context.Context, db *gorm.DB, uuids []string) ([]*storage.BackupStorageVO, error) {
	out := make([]*storage.BackupStorageVO, 0, len(uuids))
	for _, id := range uuids {
		b, err := storage.LoadBackup(ctx, db, id)
		if errcode.Has(err, errcode.ResourceNotFound) {
			return nil, errcode.New(errcode.InvalidArgument, "backupStorageUuids: backup storage %s does not exist", id)
		}
		if err != nil {
			return nil, err
		}
		if b.State != storage.StateEnabled {
			return nil, errcode.New(errcode.InvalidArgument, "backupStorageUuids: backup storage %s (%s) is %s: enable it (changeBackupStorageState) or choose another",
				b.UUID, b.Name, b.State)
		}
		out = append(out, b)
	}
	return out, nil
}

// stepRecord writes the image, Downloading, and its ref on every backup
// storage, checking again that they can take it.
func (s *Service) stepRecord(ctx context.Context, d *createData) error {
	if _, err := usableBackupStorages(ctx, s.db, d.BackupStorageUUIDs); err != nil {
		return err
	}
	row := d.Image
	row.BackupStorageRefs = nil
	path := InstallPath(row.UUID, row.Format)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&row).Error; err != nil {
			return err
		}
		for _, bs := range d.BackupStorageUUIDs {
			ref := ImageBackupStorageRefVO{ImageUUID: row.UUID, BackupStorageUUID: bs, InstallPath: path, Status: StatusDownloading,
				CreateDate: row.CreateDate, LastOpDate: row.CreateDate}
			if err := tx.Create(&ref).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "write image %s", row.UUID)
	}
	s.log.Info("downloading image", "image_uuid", row.UUID, "name", row.Name, "url", redacted(row.URL),
		"backup_storage", strings.Join(d.BackupStorageUUIDs, ","))
	return nil
}

func (s *Service) undoRecord(ctx context.Context, d *createData) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Delete(&ImageBackupStorageRefVO{}, "image_uuid = ?", d.Image.UUID).Error; err != nil {
			return err
		}
		return tx.Delete(&ImageVO{}, "uuid = ?", d.Image.UUID).Error
	})
}

// stepDownload downloads the image on every backup storage at once. A
// backup storage whose download fails loses its ref and is asked to delete
// the path; the step fails only if every one failed, naming each failure.
func (s *Service) stepDownload(ctx context.Context, d *createData) error {
	type result struct {
		bs, name string
		rsp      protocol.ImageRsp
		err      error
	}
	path := InstallPath(d.Image.UUID, d.Image.Format)
	results := make([]result, len(d.BackupStorageUUIDs))
	var wg sync.WaitGroup
	for i, bs := range d.BackupStorageUUIDs {
		wg.Go(func() {
			name, rsp, err := s.downloadOn(ctx, d, bs, path)
			results[i] = result{bs: bs, name: name, rsp: rsp, err: err}
		})
	}
	wg.Wait()
	var failures []string
	d.Downloaded = nil
	for _, r := range results {
		if r.err == nil {
			d.Downloaded = append(d.Downloaded, downloaded{BackupStorageUUID: r.bs, Rsp: r.rsp})
			continue
		}
		failures = append(failures, fmt.Sprintf("backup storage %s (%s): %s", r.bs, r.name, innermost(r.err)))
		s.log.Warn("image download failed", "image_uuid", d.Image.UUID, "bs_uuid", r.bs, "err", r.err)
	}
	if len(d.Downloaded) == 0 {
		return errcode.New(errcode.AgentError, "image %s (%s) could not be downloaded from %s into any backup storage: %s",
			d.Image.UUID, d.Image.Name, redacted(d.Image.URL), strings.Join(failures, "; "))
	}
	for _, r := range results {
		if r.err != nil {
			s.dropRef(ctx, d.Image.UUID, r.bs, path)
		}
	}
	return nil
}

// downloadOn runs the download on one backup storage and answers its name
// with the agent's result.
func (s *Service) downloadOn(ctx context.Context, d *createData, bsUUID, path string) (string, protocol.ImageRsp, error) {
	b, err := storage.LoadBackup(ctx, s.db, bsUUID)
	if err != nil {
		return "", protocol.ImageRsp{}, err
	}
	rsp, err := storage.RunBackup(ctx, s.store, b, protocol.DownloadImage, protocol.DownloadImageCmd{
		ImageUUID: d.Image.UUID, URL: d.Image.URL, InstallPath: path, Md5Sum: d.Md5Sum})
	return b.Name, rsp, err
}

// dropRef forgets the image on a backup storage whose download failed,
// asking its agent to delete the path (the agent leaves no partial file;
// this is for certainty).
func (s *Service) dropRef(ctx context.Context, imageUUID, bsUUID, path string) {
	if err := s.deleteFile(ctx, bsUUID, imageUUID, path); err != nil {
		s.log.Warn("delete the failed download of an image", "image_uuid", imageUUID, "bs_uuid", bsUUID, "path", path, "err", err)
	}
	if err := s.db.WithContext(ctx).Delete(&ImageBackupStorageRefVO{}, "image_uuid = ? AND backup_storage_uuid = ?", imageUUID, bsUUID).Error; err != nil {
		s.log.Warn("remove the ref of a failed image download", "image_uuid", imageUUID, "bs_uuid", bsUUID, "err", err)
	}
}

// deleteFile deletes an image's file on one backup storage (idempotent),
// bounded by a minute. A backup storage that no longer exists has nothing
// to delete.
func (s *Service) deleteFile(ctx context.Context, bsUUID, imageUUID, path string) error {
	b, err := storage.LoadBackup(ctx, s.db, bsUUID)
	if errcode.Has(err, errcode.ResourceNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err = storage.RunBackup(ctx, s.store, b, protocol.DeleteImage, protocol.DeleteCmd{UUID: imageUUID, InstallPath: path})
	return err
}

// undoDownload deletes the image's file on every backup storage it was to
// be downloaded into.
func (s *Service) undoDownload(ctx context.Context, d *createData) error {
	path := InstallPath(d.Image.UUID, d.Image.Format)
	var errs []error
	for _, bs := range d.BackupStorageUUIDs {
		if err := s.deleteFile(ctx, bs, d.Image.UUID, path); err != nil {
			errs = append(errs, fmt.Errorf("delete %s on backup storage %s: %w", path, bs, err))
		}
	}
	return errors.Join(errs...)
}

// stepReady makes the image Ready with what the agents reported (the
// first one's: every copy is the same file), and its refs Ready at 100%.
func (s *Service) stepReady(ctx context.Context, d *createData) error {
	rsp := d.Downloaded[0].Rsp
	now := time.Now().UTC()
	upd := map[string]any{"status": StatusReady, "size": rsp.Size, "actual_size": rsp.ActualSize, "md5_sum": rsp.Md5Sum, "last_op_date": now}
	// The agent's format is authoritative for a disk image (it read the
	// file's header); an ISO stays one.
	if d.Image.Format != FormatISO && rsp.Format != "" && rsp.Format != d.Image.Format {
		s.log.Warn("image format is not the one given: recording the file's", "image_uuid", d.Image.UUID, "given", d.Image.Format, "file", rsp.Format)
		upd["format"] = rsp.Format
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&ImageVO{}).Where("uuid = ?", d.Image.UUID).Updates(upd).Error; err != nil {
			return err
		}
		for _, dl := range d.Downloaded {
			err := tx.Model(&ImageBackupStorageRefVO{}).Where("image_uuid = ? AND backup_storage_uuid = ?", d.Image.UUID, dl.BackupStorageUUID).
				Updates(map[string]any{"status": StatusReady, "download_progress": 100, "install_path": dl.Rsp.InstallPath, "last_op_date": now}).Error
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "record image %s Ready", d.Image.UUID)
	}
	s.log.Info("image ready", "image_uuid", d.Image.UUID, "name", d.Image.Name, "size", rsp.Size, "actual_size", rsp.ActualSize,
		"md5", rsp.Md5Sum, "backup_storage", len(d.Downloaded))
	return nil
}

// onProgress records a backup storage agent's download progress on the
// image's ref: one conditional UPDATE, on whichever node received the
// event (a late or repeated event never moves it back).
func (s *Service) onProgress(ctx context.Context, storageUUID string, ev storage.ProgressReport) {
	if ev.ProcessType != protocol.ProcessDownloadImage || ev.ResourceUUID == "" {
		return
	}
	pct := min(max(ev.Percent, 0), 100)
	res := s.db.WithContext(ctx).Model(&ImageBackupStorageRefVO{}).
		Where("image_uuid = ? AND backup_storage_uuid = ? AND status = ? AND download_progress < ?", ev.ResourceUUID, storageUUID, StatusDownloading, pct).
		Updates(map[string]any{"download_progress": pct, "last_op_date": time.Now().UTC()})
	if res.Error != nil {
		s.log.Warn("record image download progress", "image_uuid", ev.ResourceUUID, "bs_uuid", storageUUID, "err", res.Error)
		return
	}
	if res.RowsAffected > 0 {
		s.log.Info("image download progress", "image_uuid", ev.ResourceUUID, "bs_uuid", storageUUID, "percent", pct)
	}
}

// innermost is what an error's deepest cause says: the agent's own message
// rather than every layer that carried it.
func innermost(err error) string {
	e := errcode.From(err)
	msg := e.Error()
	for c := e; c != nil; c = c.Cause {
		if c.Details != "" {
			msg = c.Details
		}
	}
	return msg
}

// redacted is a URL without its password, for logs and errors.
func redacted(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}
