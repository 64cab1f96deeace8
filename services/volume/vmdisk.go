package volume

import (
	"context"
	"errors"
	"path"
	"sort"
	"time"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/services/diskoffering"
	"mplane/services/image"
	"mplane/services/resource"
	"mplane/services/storage"
)

// Disk is a volume that a VM's create flow makes with the VM: its root
// volume from the VM's image, or a data volume from a disk offering. The
// VM's flow records it (JSON), and every function here finds what a Disk
// made from its volume's UUID and the reservation row, so a node taking
// the flow over can undo it.
type Disk struct {
	Volume VolumeVO `json:"volume"`
	// Image is the root volume's image (nil for a blank data volume).
	Image *imageSource `json:"image,omitempty"`
	// Strategy is the disk offering's allocation strategy ("" default).
	Strategy string `json:"strategy,omitempty"`
	// URL and PSType are the primary storage the disk was placed on.
	URL    string `json:"url,omitempty"`
	PSType string `json:"psType,omitempty"`
	// Unmade is set, in the run that made the disks, on those whose file
	// cannot exist: never asked for, or refused unseen by the agent. Their
	// undo only gives the capacity back. Not recorded: a node taking over
	// deletes every disk's file (idempotent).
	Unmade bool `json:"-"`
}

// RootDisk resolves a VM's image into its root volume, to be made on the
// VM's host from the image (a Ready, Enabled RootVolumeTemplate on a
// Connected backup storage); the volume is as big as the image's virtual
// size.
func RootDisk(ctx context.Context, db *gorm.DB, vmUUID, volUUID, vmName, imageUUID string) (*Disk, error) {
	img, err := image.LoadReady(ctx, db, imageUUID)
	if err != nil {
		return nil, err
	}
	if img.MediaType != image.MediaRootVolumeTemplate {
		return nil, errcode.New(errcode.InvalidArgument, "image %s is a %s: a VM boots from a %s image", img.UUID, img.MediaType, image.MediaRootVolumeTemplate)
	}
	src, err := imageOnBackup(ctx, db, img)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	dev := 0
	return &Disk{Image: src, Volume: VolumeVO{UUID: volUUID, Name: "ROOT-for-" + vmName, Type: TypeRoot, VMInstanceUUID: vmUUID,
		RootImageUUID: img.UUID, Size: img.Size, DeviceID: &dev, State: StateEnabled, Status: StatusCreating,
		InstallPath: InstallPath(TypeRoot, volUUID), CreateDate: now, LastOpDate: now}}, nil
}

// DataDisk resolves a disk offering into a blank data volume for a new VM,
// at deviceID.
func DataDisk(ctx context.Context, db *gorm.DB, vmUUID, volUUID, vmName, offeringUUID string, deviceID int) (*Disk, error) {
	off, err := resource.Load[diskoffering.DiskOfferingVO](ctx, db, "disk offering", offeringUUID)
	if err != nil {
		if errcode.Has(err, errcode.ResourceNotFound) {
			return nil, errcode.New(errcode.InvalidArgument, "dataDiskOfferingUuids: disk offering %s does not exist", offeringUUID)
		}
		return nil, err
	}
	if off.State != "" && off.State != "Enabled" {
		return nil, errcode.New(errcode.InvalidState, "disk offering %s is %s", off.UUID, off.State)
	}
	now := time.Now().UTC()
	return &Disk{Strategy: off.AllocatorStrategy, Volume: VolumeVO{UUID: volUUID, Name: "DATA-for-" + vmName, Type: TypeData, VMInstanceUUID: vmUUID,
		DiskOfferingUUID: off.UUID, Size: off.DiskSize, DeviceID: &deviceID, State: StateEnabled, Status: StatusCreating,
		InstallPath: InstallPath(TypeData, volUUID), CreateDate: now, LastOpDate: now}}, nil
}

// imageOnBackup is where an image is copied from: its first ref on a
// Connected backup storage.
func imageOnBackup(ctx context.Context, db *gorm.DB, img *image.ImageVO) (*imageSource, error) {
	refs, err := image.BackupRefs(ctx, db, img.UUID)
	if err != nil {
		return nil, err
	}
	for _, r := range refs {
		bs, err := storage.LoadBackup(ctx, db, r.BackupStorageUUID)
		if errcode.Has(err, errcode.ResourceNotFound) {
			continue
		}
		if err != nil {
			// Not the storage's state: the database could not say (a
			// retryable DBUnavailable, not "on no Connected storage").
			return nil, err
		}
		if bs.Status != storage.StatusConnected {
			continue
		}
		return &imageSource{UUID: img.UUID, Backup: bs.UUID, Path: r.InstallPath, Md5Sum: img.Md5Sum, ActualSize: img.ActualSize, Format: img.Format}, nil
	}
	return nil, errcode.New(errcode.InvalidState, "image %s is on no Connected backup storage", img.UUID)
}

// RecordDisks writes the disks' rows (Creating) in tx.
func RecordDisks(ctx context.Context, tx *gorm.DB, disks []*Disk) error {
	for _, d := range disks {
		if err := tx.WithContext(ctx).Create(&d.Volume).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "write volume %s", d.Volume.UUID)
		}
	}
	return nil
}

// DropDisks removes the rows of disks whose create was undone. A disk
// that still holds capacity (its file could not be deleted) is kept as
// Error, detached, so that its delete finishes the cleanup.
func DropDisks(ctx context.Context, db *gorm.DB, uuids []string) error {
	for _, u := range uuids {
		if _, held, err := storage.Reservation(ctx, db, u); err != nil {
			return err
		} else if held {
			if err := db.WithContext(ctx).Model(&VolumeVO{}).Where("uuid = ?", u).
				Updates(map[string]any{"status": StatusError, "vm_instance_uuid": "", "device_id": nil, "last_op_date": time.Now().UTC()}).Error; err != nil {
				return err
			}
			continue
		}
		if err := db.WithContext(ctx).Delete(&VolumeVO{}, "uuid = ?", u).Error; err != nil {
			return err
		}
	}
	return nil
}

// PlaceDisks reserves capacity for every disk on primary storage that
// hostUUID (of clusterUUID) reaches: its own directory of a LocalStorage,
// or a shared storage attached to the cluster. It answers false, holding
// nothing, when some disk finds no room there.
func (s *Service) PlaceDisks(ctx context.Context, disks []*Disk, hostUUID, clusterUUID, zoneUUID string) (bool, error) {
	db := s.db
	for i, d := range disks {
		st := d.Strategy
		if st == "" {
			st = s.opts.Strategy
		}
		req := request{Size: d.Volume.Size, ZoneUUID: zoneUUID, ClusterUUID: clusterUUID, HostUUID: hostUUID, Strategy: st}
		cs, err := candidates(ctx, db, req)
		placed := false
		if err == nil {
			for _, c := range cs {
				if c.Type == storage.TypeLocalStorage && c.Host != hostUUID {
					continue
				}
				err := storage.Reserve(ctx, db, d.Volume.UUID, c.PS, c.Host, d.Volume.Size)
				if errors.Is(err, storage.ErrNoCapacity) {
					continue
				}
				if err != nil {
					return false, errors.Join(errcode.Wrap(errcode.Internal, err, "reserve %d bytes on %s", d.Volume.Size, c), releaseAll(ctx, db, disks[:i]))
				}
				d.Volume.PrimaryStorageUUID, d.Volume.HostUUID, d.URL, d.PSType = c.PS, c.Host, c.URL, c.Type
				placed = true
				break
			}
		} else if !errcode.Has(err, errcode.CapacityExhausted) {
			return false, errors.Join(err, releaseAll(ctx, db, disks[:i]))
		}
		if !placed {
			return false, releaseAll(ctx, db, disks[:i])
		}
	}
	return true, nil
}

func releaseAll(ctx context.Context, db *gorm.DB, disks []*Disk) error {
	var errs []error
	for _, d := range disks {
		errs = append(errs, storage.Release(ctx, db, d.Volume.UUID))
		d.Volume.PrimaryStorageUUID, d.Volume.HostUUID, d.URL, d.PSType = "", "", "", ""
	}
	return errors.Join(errs...)
}

// MakeDisks makes the placed disks' files with the agent of hostUUID (the
// VM's host): a root volume from its image, cached on the storage first; a
// data volume blank.
func (s *Service) MakeDisks(ctx context.Context, disks []*Disk, hostUUID string) error {
	for i, d := range disks {
		c := candidate{PS: d.Volume.PrimaryStorageUUID, Host: d.Volume.HostUUID, URL: d.URL, Type: d.PSType}
		cd := &createData{Req: CreateReq{UUID: d.Volume.UUID, Source: SourceBlank}, Volume: d.Volume, Image: d.Image}
		if d.Image != nil {
			cd.Req.Source, cd.Req.SourceUUID = SourceImage, d.Image.UUID
		}
		if err := s.createOn(ctx, cd, c, hostUUID); err != nil {
			next := i + 1
			if notDelivered(err) {
				next = i
			}
			for _, u := range disks[next:] {
				u.Unmade = true
			}
			return errcode.Wrap(errcode.AgentError, err, "create %s volume %s on %s", d.Volume.Type, d.Volume.UUID, c)
		}
		d.Volume.Format, d.Volume.ActualSize, d.Volume.Size = cd.Volume.Format, cd.Volume.ActualSize, cd.Volume.Size
	}
	return nil
}

// UndoDisks deletes whatever file each disk's create made and gives its
// capacity back (idempotent; the file is found from the reservation).
func (s *Service) UndoDisks(ctx context.Context, disks []*Disk) error {
	var errs []error
	for _, d := range disks {
		if d.Unmade {
			errs = append(errs, storage.Release(ctx, s.db, d.Volume.UUID))
			continue
		}
		errs = append(errs, s.undoPlacement(ctx, d.Volume.UUID, d.Volume.Type))
	}
	return errors.Join(errs...)
}

// DisksReady marks the disks Ready and attached to their VM, in tx.
func DisksReady(ctx context.Context, tx *gorm.DB, disks []*Disk) error {
	now := time.Now().UTC()
	for _, d := range disks {
		v := &d.Volume
		v.Status, v.LastOpDate = StatusReady, now
		if err := tx.WithContext(ctx).Model(&VolumeVO{}).Where("uuid = ?", v.UUID).Updates(map[string]any{"status": StatusReady,
			"primary_storage_uuid": v.PrimaryStorageUUID, "host_uuid": v.HostUUID, "format": v.Format, "size": v.Size,
			"actual_size": v.ActualSize, "last_op_date": now}).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "set volume %s Ready", v.UUID)
		}
	}
	return nil
}

// TO is a volume as a VM command carries it: its file's absolute path on
// the host is the storage's url joined with its install path.
func TO(v VolumeVO, psURL, psType string) protocol.VolumeTO {
	dev := 0
	if v.DeviceID != nil {
		dev = *v.DeviceID
	}
	return protocol.VolumeTO{VolumeUUID: v.UUID, InstallPath: path.Join(psURL, v.InstallPath), DeviceID: dev, DeviceType: "file",
		Format: v.Format, UseVirtio: true, CacheMode: "none", Type: v.Type, Shareable: v.IsShareable, PrimaryStorageType: psType}
}

// TOs are the volumes as a VM command carries them, looking their storage
// up.
func TOs(ctx context.Context, db *gorm.DB, vols []VolumeVO) ([]protocol.VolumeTO, error) {
	out := make([]protocol.VolumeTO, 0, len(vols))
	pss := map[string]*storage.PrimaryStorageVO{}
	for _, v := range vols {
		p := pss[v.PrimaryStorageUUID]
		if p == nil {
			var err error
			if p, err = storage.LoadPrimary(ctx, db, v.PrimaryStorageUUID); err != nil {
				return nil, err
			}
			pss[v.PrimaryStorageUUID] = p
		}
		out = append(out, TO(v, p.URL, p.Type))
	}
	return out, nil
}

// ExpungeOfVM removes an expunged VM's root volume for good (its
// snapshots, file, capacity and row) and detaches its data volumes, which
// stay. Idempotent: an expunge cut short is finished by the next.
func (s *Service) ExpungeOfVM(ctx context.Context, vmUUID string) error {
	var vols []VolumeVO
	if err := s.db.WithContext(ctx).Where("vm_instance_uuid = ?", vmUUID).Find(&vols).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "list the volumes of VM %s", vmUUID)
	}
	for i := range vols {
		v := &vols[i]
		if v.Type == TypeRoot {
			if err := s.expunge(ctx, v); err != nil {
				return err
			}
			continue
		}
		if err := s.setStatus(ctx, v.UUID, v.Status, map[string]any{"vm_instance_uuid": "", "device_id": nil}); err != nil {
			return err
		}
	}
	return nil
}

// Reach says where a VM with volumes vols can run: on hostUUID if one of
// them is on a host's LocalStorage (else ""), and in one of clusters (nil:
// anywhere), those that every volume's storage is attached to.
func Reach(ctx context.Context, db *gorm.DB, vols []VolumeVO) (hostUUID string, clusters []string, err error) {
	var allowed map[string]bool
	for _, v := range vols {
		if v.PrimaryStorageUUID == "" {
			continue
		}
		p, err := storage.LoadPrimary(ctx, db, v.PrimaryStorageUUID)
		if err != nil {
			return "", nil, err
		}
		if p.Type == storage.TypeLocalStorage {
			if hostUUID != "" && hostUUID != v.HostUUID {
				return "", nil, errcode.New(errcode.InvalidState, "volumes of the VM are on the local storage of two hosts (%s and %s)", hostUUID, v.HostUUID)
			}
			hostUUID = v.HostUUID
		}
		next := map[string]bool{}
		for _, c := range p.AttachedClusterUUIDs {
			if allowed == nil || allowed[c] {
				next[c] = true
			}
		}
		allowed = next
	}
	if allowed == nil {
		return hostUUID, nil, nil
	}
	if len(allowed) == 0 {
		return "", nil, errcode.New(errcode.InvalidState, "no cluster is attached to the primary storage of every volume of the VM")
	}
	for c := range allowed {
		clusters = append(clusters, c)
	}
	sort.Strings(clusters)
	return hostUUID, clusters, nil
}
