package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/flow"
	"mplane/services/image"
	"mplane/services/storage"
)

// createData is what the create flow's steps share, recorded at every
// step so a new owner can roll back what a dead one left.
type createData struct {
	Req    CreateReq `json:"req"`
	Volume VolumeVO  `json:"volume"`
	// Source is the volume or snapshot to copy, resolved at the start:
	// its storage pins the new volume's.
	SrcPath string `json:"srcPath,omitempty"`
	SrcFmt  string `json:"srcFormat,omitempty"`
	// Image is the image to make the volume from (SourceImage).
	Image *imageSource `json:"image,omitempty"`
	// Attempts are the failed placements, in order, for the error.
	Attempts []string `json:"attempts,omitempty"`
}

// InstallPath is where a volume's file goes, relative to its storage's
// directory.
func InstallPath(typ, uuid string) string {
	dir := "dataVolumes"
	if typ == TypeRoot {
		dir = "rootVolumes"
	}
	return dir + "/vol-" + uuid + "/" + uuid
}

// createChain: record (Creating) -> place and create (reserve on the best
// candidate, create the file with the storage's agent; on a failure,
// undo that attempt and reschedule to the next candidate) -> Ready. A
// failure rolls back: no reservation, file or row stays behind.
func (s *Service) createChain() (*flow.Chain[createData], error) {
	return flow.New("create-volume", []flow.Step[createData]{
		{Name: "create-record", Run: s.stepRecord, Rollback: s.undoRecord},
		{Name: "place-and-create", Run: s.stepPlace, Rollback: s.undoPlace},
		{Name: "set-ready", Run: s.stepReady},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

func (s *Service) handleCreate(ctx context.Context, req CreateReq) (VolumeVO, error) {
	return inChain(ctx, s, req.UUID, "create", func(ctx context.Context) (VolumeVO, error) {
		if v, err := Load(ctx, s.db, req.UUID); err == nil {
			return *v, nil // a redelivered create
		}
		now := time.Now().UTC()
		d := &createData{Req: req, Volume: VolumeVO{UUID: req.UUID, Name: req.Name, Description: req.Description, Type: TypeData,
			DiskOfferingUUID: req.DiskOfferingUUID, Size: req.Size, State: StateEnabled, Status: StatusCreating,
			InstallPath: InstallPath(TypeData, req.UUID), CreateDate: now, LastOpDate: now}}
		if err := s.resolveSource(ctx, d); err != nil {
			return VolumeVO{}, err
		}
		if err := s.create.Run(ctx, d, flow.RunOptions{Resource: req.UUID}); err != nil {
			return VolumeVO{}, err
		}
		s.log.Info("volume created", "volume_uuid", d.Volume.UUID, "ps_uuid", d.Volume.PrimaryStorageUUID, "host_uuid", d.Volume.HostUUID,
			"size", d.Volume.Size, "source", req.Source)
		return d.Volume, nil
	})
}

// resolveSource pins a copy to its source's storage (and host) and size.
func (s *Service) resolveSource(ctx context.Context, d *createData) error {
	switch d.Req.Source {
	case SourceBlank:
		return nil
	case SourceVolume:
		src, err := Load(ctx, s.db, d.Req.SourceUUID)
		if err != nil {
			return errcode.New(errcode.InvalidArgument, "source volume %s does not exist", d.Req.SourceUUID)
		}
		if src.Status != StatusReady {
			return errcode.New(errcode.InvalidState, "source volume %s is %s, not Ready", src.UUID, src.Status)
		}
		d.SrcPath, d.SrcFmt = src.InstallPath, src.Format
		d.Req.PrimaryStorageUUID, d.Req.HostUUID, d.Volume.Size = src.PrimaryStorageUUID, src.HostUUID, src.Size
		return nil
	case SourceSnapshot:
		var sp VolumeSnapshotVO
		if err := s.db.WithContext(ctx).Take(&sp, "uuid = ?", d.Req.SourceUUID).Error; err != nil {
			return errcode.New(errcode.InvalidArgument, "source snapshot %s does not exist", d.Req.SourceUUID)
		}
		src, err := Load(ctx, s.db, sp.VolumeUUID)
		if err != nil {
			return err
		}
		d.SrcPath, d.SrcFmt = sp.PrimaryStorageInstallPath, sp.Format
		d.Req.PrimaryStorageUUID, d.Req.HostUUID, d.Volume.Size = sp.PrimaryStorageUUID, src.HostUUID, sp.Size
		return nil
	case SourceImage:
		img, err := image.LoadReady(ctx, s.db, d.Req.SourceUUID)
		if err != nil {
			return err
		}
		if img.MediaType != image.MediaDataVolumeTemplate {
			return errcode.New(errcode.InvalidArgument, "image %s is a %s: a data volume is made from a %s image", img.UUID, img.MediaType, image.MediaDataVolumeTemplate)
		}
		if d.Image, err = imageOnBackup(ctx, s.db, img); err != nil {
			return err
		}
		d.Volume.Size = max(d.Volume.Size, img.Size)
		d.Volume.RootImageUUID = img.UUID // its cache is the volume's backing file
		return nil
	}
	return errcode.New(errcode.InvalidArgument, "volume source %q is not supported", d.Req.Source)
}

// imageSource is the image a volume is made from and the backup storage
// file it is copied from into the primary storage's cache.
type imageSource struct {
	UUID       string `json:"uuid"`
	Backup     string `json:"backupStorageUuid"`
	Path       string `json:"path"`
	Md5Sum     string `json:"md5Sum,omitempty"`
	ActualSize int64  `json:"actualSize"`
	Format     string `json:"format"`
}

func (s *Service) stepRecord(ctx context.Context, d *createData) error {
	if err := s.db.WithContext(ctx).Create(&d.Volume).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "write volume %s", d.Volume.UUID)
	}
	return nil
}

// undoRecord removes the row, unless the volume still holds capacity (its
// file could not be deleted: the agent stayed unreachable): then the
// volume is kept as Error, visible, and its delete and expunge finish the
// cleanup, instead of a reservation that nothing refers to.
func (s *Service) undoRecord(ctx context.Context, d *createData) error {
	if _, held, err := storage.Reservation(ctx, s.db, d.Volume.UUID); err != nil {
		return err
	} else if held {
		s.log.Error("volume create rolled back but its file may remain: kept as Error; delete and expunge it to clean up", "volume_uuid", d.Volume.UUID)
		return s.setStatus(ctx, d.Volume.UUID, StatusError, nil)
	}
	return s.db.WithContext(ctx).Delete(&VolumeVO{}, "uuid = ?", d.Volume.UUID).Error
}

// stepPlace tries the candidates in order: a reservation that finds no
// capacity (another create took it) moves on without counting; a storage
// whose agent fails the create is undone and counts as an attempt, up to
// Attempts.
func (s *Service) stepPlace(ctx context.Context, d *createData) error {
	req := request{Size: d.Volume.Size, ZoneUUID: d.Req.ZoneUUID, PrimaryStorageUUID: d.Req.PrimaryStorageUUID, HostUUID: d.Req.HostUUID,
		Strategy: d.Req.Strategy}
	if req.Strategy == "" {
		req.Strategy = s.opts.Strategy
	}
	for len(d.Attempts) < s.opts.Attempts {
		cs, err := candidates(ctx, s.db, req)
		if err != nil {
			return s.placeError(d, err)
		}
		placed := false
		for _, c := range cs {
			err := storage.Reserve(ctx, s.db, d.Volume.UUID, c.PS, c.Host, d.Volume.Size)
			if errors.Is(err, storage.ErrNoCapacity) {
				req.Avoid = append(req.Avoid, c.key())
				continue
			}
			if err != nil {
				return errcode.Wrap(errcode.Internal, err, "reserve %d bytes on %s", d.Volume.Size, c)
			}
			placed = true
			if err := s.createOn(ctx, d, c, ""); err != nil {
				s.log.Warn("volume create failed on a primary storage, rescheduling", "volume_uuid", d.Volume.UUID, "candidate", c.String(), "err", err)
				d.Attempts = append(d.Attempts, fmt.Sprintf("%s: %v", c, err))
				undo := s.undoPlace
				if notDelivered(err) {
					// The agent never saw the create (its host is down):
					// there is no file to delete, only the reservation.
					undo = func(ctx context.Context, d *createData) error { return storage.Release(ctx, s.db, d.Volume.UUID) }
				}
				if uerr := undo(ctx, d); uerr != nil {
					return errcode.Wrap(errcode.Internal, uerr, "undo the failed attempt on %s", c)
				}
				req.Avoid = append(req.Avoid, c.key())
				break
			}
			return nil
		}
		if !placed {
			return s.placeError(d, errcode.New(errcode.CapacityExhausted, "no primary storage can hold a volume of %d bytes: every candidate was taken meanwhile", d.Volume.Size))
		}
	}
	return errcode.New(errcode.AgentError, "volume %s: every attempt failed (%d): %s", d.Volume.UUID, len(d.Attempts), strings.Join(d.Attempts, "; "))
}

func (s *Service) placeError(d *createData, err error) error {
	if len(d.Attempts) == 0 {
		return err
	}
	return errcode.Wrap(errcode.AgentError, err, "volume %s: %d attempts failed (%s), and no other candidate is left", d.Volume.UUID,
		len(d.Attempts), strings.Join(d.Attempts, "; "))
}

// createOn makes the volume's file on candidate c and fills in the row.
// agentHost is the host whose agent does it ("": the volume's own on
// LocalStorage, any of the storage's otherwise).
func (s *Service) createOn(ctx context.Context, d *createData, c candidate, agentHost string) error {
	p := &storage.PrimaryStorageVO{UUID: c.PS, URL: c.URL, Type: c.Type}
	hostUUID, err := agentHost, error(nil)
	if hostUUID == "" {
		if hostUUID, err = s.hostFor(ctx, p, c.Host); err != nil {
			return err
		}
	}
	var rsp protocol.VolumeRsp
	switch d.Req.Source {
	case SourceBlank:
		rsp, err = storage.Run(ctx, s.store, p, hostUUID, protocol.CreateEmptyVolume,
			protocol.CreateEmptyVolumeCmd{VolumeUUID: d.Volume.UUID, InstallPath: d.Volume.InstallPath, Size: d.Volume.Size})
	case SourceImage:
		var bs *storage.BackupStorageVO
		if bs, err = storage.LoadBackup(ctx, s.db, d.Image.Backup); err != nil {
			return err
		}
		var cache *storage.ImageCacheVO
		cache, err = s.store.EnsureCached(ctx, p, c.Host, hostUUID, storage.CacheSource{ImageUUID: d.Image.UUID, Backup: bs, Path: d.Image.Path,
			Md5Sum: d.Image.Md5Sum, ActualSize: d.Image.ActualSize})
		if err != nil {
			return err
		}
		rsp, err = storage.Run(ctx, s.store, p, hostUUID, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{VolumeUUID: d.Volume.UUID,
			ImagePath: cache.InstallPath, ImageFormat: cache.Format, InstallPath: d.Volume.InstallPath, Size: d.Volume.Size})
	default:
		rsp, err = storage.Run(ctx, s.store, p, hostUUID, protocol.CloneVolume,
			protocol.CloneVolumeCmd{VolumeUUID: d.Volume.UUID, SrcPath: d.SrcPath, Format: d.SrcFmt, InstallPath: d.Volume.InstallPath})
	}
	if err != nil {
		return err
	}
	d.Volume.PrimaryStorageUUID, d.Volume.HostUUID = c.PS, c.Host
	d.Volume.Format, d.Volume.ActualSize = rsp.Format, rsp.ActualSize
	if rsp.Size > 0 {
		d.Volume.Size = rsp.Size
	}
	return nil
}

// hostFor is the host whose agent serves a command on a volume: its own
// host on LocalStorage, any host of the storage's clusters otherwise.
func (s *Service) hostFor(ctx context.Context, p *storage.PrimaryStorageVO, volumeHost string) (string, error) {
	if p.Type == storage.TypeLocalStorage {
		if volumeHost == "" {
			return "", errcode.New(errcode.Internal, "local primary storage %s: no host given", p.UUID)
		}
		return volumeHost, nil
	}
	return s.store.HostFor(ctx, p)
}

// undoPlace deletes the file of the volume's attempt, if any, and gives
// its reservation back. It finds both from the reservation row, so it
// works on data recorded before the attempt began (a node taking over).
func (s *Service) undoPlace(ctx context.Context, d *createData) error {
	return s.undoPlacement(ctx, d.Volume.UUID, d.Volume.Type)
}

// undoPlacement deletes the file that volume uuid's create may have made
// (found from its reservation) and gives the reservation back.
func (s *Service) undoPlacement(ctx context.Context, uuid, typ string) error {
	r, found, err := storage.Reservation(ctx, s.db, uuid)
	if err != nil || !found {
		return err
	}
	p, err := storage.LoadPrimary(ctx, s.db, r.PrimaryStorageUUID)
	if err != nil {
		return err
	}
	// The host's agent may be unreachable for a moment (its owner node
	// died and the ring is moving): retry for a while before giving up.
	path := InstallPath(typ, uuid)
	backoff := 200 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		err = s.deleteFile(ctx, p, r.HostUUID, path)
		if err == nil {
			break
		}
		if time.Now().Add(backoff).After(deadline) || ctx.Err() != nil {
			return err
		}
		s.log.Warn("delete the file of a failed volume create; retrying", "volume_uuid", uuid, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return storage.Release(ctx, s.db, uuid)
}

// deleteFile deletes a volume's file (idempotent on the agent).
func (s *Service) deleteFile(ctx context.Context, p *storage.PrimaryStorageVO, hostUUID, path string) error {
	h, err := s.hostFor(ctx, p, hostUUID)
	if err != nil {
		return err
	}
	if _, err := storage.Run(ctx, s.store, p, h, protocol.DeleteVolume, protocol.DeleteCmd{InstallPath: path}); err != nil {
		return fmt.Errorf("delete %s on %s: %w", path, p.UUID, err)
	}
	return nil
}

func (s *Service) stepReady(ctx context.Context, d *createData) error {
	v := &d.Volume
	v.Status = StatusReady
	return s.setStatus(ctx, v.UUID, StatusReady, map[string]any{"primary_storage_uuid": v.PrimaryStorageUUID, "host_uuid": v.HostUUID,
		"format": v.Format, "size": v.Size, "actual_size": v.ActualSize})
}

// notDelivered reports whether err says the command never reached the
// agent (a refused connection, an agent that was stopping): the agent
// marks such errors retryable because nothing ran.
func notDelivered(err error) bool {
	var e *errcode.Error
	if !errors.As(err, &e) {
		return false
	}
	for ; e != nil; e = e.Cause {
		if e.Retryable && e.Code == errcode.AgentError {
			return true
		}
	}
	return false
}
