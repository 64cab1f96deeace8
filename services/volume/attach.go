package volume

import (
	"context"
	"slices"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/storage"
)

// AttachReq claims a data volume for a VM at DeviceID, in the volume's
// chain; the VM's owner sends it from the VM's chain (the lock order is
// always VM, then volume). The VM's placement says where the volume must
// be: on HostUUID's local storage if the volume is on LocalStorage (the
// VM's host, or the host of its local root volume), or on shared storage
// attached to one of ClusterUUIDs; ZoneUUID is the VM's zone.
type AttachReq struct {
	VolumeUUID   string   `json:"volumeUuid"`
	VMUUID       string   `json:"vmInstanceUuid"`
	DeviceID     int      `json:"deviceId"`
	ZoneUUID     string   `json:"zoneUuid,omitempty"`
	HostUUID     string   `json:"hostUuid,omitempty"`
	ClusterUUIDs []string `json:"clusterUuids,omitempty"`
}

// ResourceUUID is the volume.
func (r AttachReq) ResourceUUID() string { return r.VolumeUUID }

// DetachReq releases a data volume from VM VMUUID (the VM's owner sends
// it once the hypervisor let the volume go).
type DetachReq struct {
	VolumeUUID string `json:"volumeUuid"`
	VMUUID     string `json:"vmInstanceUuid"`
}

// ResourceUUID is the volume.
func (r DetachReq) ResourceUUID() string { return r.VolumeUUID }

// handleAttach checks the volume can go with the VM and marks it attached
// with a conditional update (only a detached volume is taken). Attaching
// it again to the same VM answers the volume as it is.
func (s *Service) handleAttach(ctx context.Context, req AttachReq) (VolumeVO, error) {
	return inChain(ctx, s, req.VolumeUUID, "attach", func(ctx context.Context) (VolumeVO, error) {
		v, err := Load(ctx, s.db, req.VolumeUUID)
		if err != nil {
			return VolumeVO{}, err
		}
		if v.VMInstanceUUID == req.VMUUID {
			return *v, nil
		}
		if err := CheckAttach(ctx, s.db, v, req); err != nil {
			return VolumeVO{}, err
		}
		res := s.db.WithContext(ctx).Model(&VolumeVO{}).Where("uuid = ? AND vm_instance_uuid = ? AND status = ?", v.UUID, "", StatusReady).
			Updates(map[string]any{"vm_instance_uuid": req.VMUUID, "device_id": req.DeviceID, "last_op_date": time.Now().UTC()})
		if res.Error != nil {
			return VolumeVO{}, errcode.Wrap(errcode.Internal, res.Error, "attach volume %s", v.UUID)
		}
		if res.RowsAffected == 0 {
			return VolumeVO{}, errcode.New(errcode.Conflict, "volume %s changed while it was being attached", v.UUID)
		}
		dev := req.DeviceID
		v.VMInstanceUUID, v.DeviceID = req.VMUUID, &dev
		s.log.Info("volume attached", "volume_uuid", v.UUID, "vm_uuid", req.VMUUID, "device_id", dev)
		return *v, nil
	})
}

// handleDetach marks the volume detached from VMUUID (idempotent: a volume
// not attached to it is answered as it is).
func (s *Service) handleDetach(ctx context.Context, req DetachReq) (VolumeVO, error) {
	return inChain(ctx, s, req.VolumeUUID, "detach", func(ctx context.Context) (VolumeVO, error) {
		v, err := Load(ctx, s.db, req.VolumeUUID)
		if err != nil {
			return VolumeVO{}, err
		}
		if v.VMInstanceUUID != req.VMUUID {
			return *v, nil
		}
		if v.Type == TypeRoot {
			return VolumeVO{}, errcode.New(errcode.InvalidState, "volume %s is the root volume of VM %s: it cannot be detached", v.UUID, req.VMUUID)
		}
		if err := s.db.WithContext(ctx).Model(&VolumeVO{}).Where("uuid = ? AND vm_instance_uuid = ?", v.UUID, req.VMUUID).
			Updates(map[string]any{"vm_instance_uuid": "", "device_id": nil, "last_op_date": time.Now().UTC()}).Error; err != nil {
			return VolumeVO{}, errcode.Wrap(errcode.Internal, err, "detach volume %s", v.UUID)
		}
		v.VMInstanceUUID, v.DeviceID = "", nil
		s.log.Info("volume detached", "volume_uuid", v.UUID, "vm_uuid", req.VMUUID)
		return *v, nil
	})
}

// CheckAttach refuses, with a code saying whose fault it is, an attach of
// volume v to the VM of req: not a Ready, Enabled data volume, attached
// elsewhere, of another zone, on another host's local storage, or on
// shared storage the VM's cluster is not attached to. The API checks it
// first (a 4xx at once); the volume's owner checks it again in the
// volume's chain, where it holds.
func CheckAttach(ctx context.Context, db *gorm.DB, v *VolumeVO, req AttachReq) error {
	switch {
	case v.Type != TypeData:
		return errcode.New(errcode.InvalidState, "volume %s is a root volume: only data volumes are attached", v.UUID)
	case v.VMInstanceUUID != "":
		return errcode.New(errcode.InvalidState, "volume %s is attached to VM %s: detach it first", v.UUID, v.VMInstanceUUID)
	case v.Status != StatusReady:
		return errcode.New(errcode.InvalidState, "volume %s is %s: only a Ready volume can be attached", v.UUID, v.Status)
	case v.State != StateEnabled:
		return errcode.New(errcode.InvalidState, "volume %s is %s", v.UUID, v.State)
	}
	p, err := storage.LoadPrimary(ctx, db, v.PrimaryStorageUUID)
	if err != nil {
		return err
	}
	if req.ZoneUUID != "" && p.ZoneUUID != req.ZoneUUID {
		return errcode.New(errcode.InvalidArgument, "volume %s is in zone %s and VM %s in zone %s: a VM can only use volumes of its zone",
			v.UUID, p.ZoneUUID, req.VMUUID, req.ZoneUUID)
	}
	if p.Type == storage.TypeLocalStorage {
		if req.HostUUID != "" && v.HostUUID != req.HostUUID {
			return errcode.New(errcode.InvalidArgument, "volume %s is on the local storage of host %s and VM %s is on host %s: a local volume attaches only to VMs of its host",
				v.UUID, v.HostUUID, req.VMUUID, req.HostUUID)
		}
	} else if len(req.ClusterUUIDs) > 0 && !slices.ContainsFunc(req.ClusterUUIDs, func(c string) bool { return slices.Contains(p.AttachedClusterUUIDs, c) }) {
		return errcode.New(errcode.InvalidArgument, "volume %s is on primary storage %s, which the cluster of VM %s is not attached to",
			v.UUID, p.UUID, req.VMUUID)
	}
	return nil
}
