package vm

import (
	"context"
	"net/http"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/api/route"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/services/host"
	"mplane/services/resource"
	"mplane/services/storage"
	"mplane/services/volume"
)

// VolumeReq attaches a data volume to a VM, or detaches it, on the VM's
// owner in the VM's chain.
type VolumeReq struct {
	VMUUID     string `json:"vmInstanceUuid"`
	VolumeUUID string `json:"volumeUuid"`
}

// ResourceUUID is the VM.
func (r VolumeReq) ResourceUUID() string { return r.VMUUID }

// Messages of the attach and detach of data volumes.
var (
	MsgAttachVolume = managementnode.NewOwnedMsg[VolumeReq, volume.VolumeVO](BusService, "vm.AttachDataVolumeToVm")
	MsgDetachVolume = managementnode.NewOwnedMsg[VolumeReq, volume.VolumeVO](BusService, "vm.DetachDataVolumeFromVm")
)

// AttachParams are the params of POST
// /v1/volumes/{volumeUuid}/vm-instances/{vmInstanceUuid}.
type AttachParams struct {
	VolumeUUID     string `json:"volumeUuid"`
	VMInstanceUUID string `json:"vmInstanceUuid"`
}

// DetachParams are the params of DELETE /v1/volumes/{uuid}/vm-instances:
// vmUuid is the volume's VM if not given.
type DetachParams struct {
	UUID   string `json:"uuid"`
	VMUUID string `json:"vmUuid,omitempty"`
}

// volumeCalls are the REST calls of attach and detach (ZStack's
// AttachDataVolumeToVm and DetachDataVolumeFromVm), which answer the
// volume.
func volumeCalls() []route.Op {
	return []route.Op{
		route.Call(http.MethodPost, "volumes/{volumeUuid}/vm-instances/{vmInstanceUuid}", MsgAttachVolume,
			func(ctx context.Context, in route.In[AttachParams]) (VolumeReq, error) {
				// What can be refused at once is (4xx); the owners check
				// again where it holds.
				p := in.Params
				if err := resource.MustExist(ctx, in.DB, &VmInstanceVO{}, "vmInstanceUuid", p.VMInstanceUUID); err != nil {
					return VolumeReq{}, err
				}
				if err := resource.MustExist(ctx, in.DB, &volume.VolumeVO{}, "volumeUuid", p.VolumeUUID); err != nil {
					return VolumeReq{}, err
				}
				req := VolumeReq{VMUUID: p.VMInstanceUUID, VolumeUUID: p.VolumeUUID}
				v, err := loadVM(ctx, in.DB, p.VMInstanceUUID)
				if err != nil {
					return VolumeReq{}, err
				}
				vol, err := volume.Load(ctx, in.DB, p.VolumeUUID)
				if err != nil {
					return VolumeReq{}, err
				}
				if vol.VMInstanceUUID == v.UUID {
					return req, nil // attached already: the owner answers it
				}
				if err := attachable(v, "attach"); err != nil {
					return VolumeReq{}, err
				}
				ar, err := attachRequest(ctx, in.DB, v, vol.UUID)
				if err != nil {
					return VolumeReq{}, err
				}
				if err := volume.CheckAttach(ctx, in.DB, vol, ar); err != nil {
					return VolumeReq{}, err
				}
				return req, nil
			}),
		route.Call(http.MethodDelete, "volumes/{uuid}/vm-instances", MsgDetachVolume,
			func(ctx context.Context, in route.In[DetachParams]) (VolumeReq, error) {
				v, err := volume.Load(ctx, in.DB, in.Params.UUID)
				if err != nil {
					if errcode.Has(err, errcode.ResourceNotFound) {
						return VolumeReq{}, errcode.New(errcode.InvalidArgument, "uuid: volume %s does not exist", in.Params.UUID)
					}
					return VolumeReq{}, err
				}
				if v.Type == volume.TypeRoot {
					return VolumeReq{}, errcode.New(errcode.InvalidState, "volume %s is the root volume of VM %s: it cannot be detached", v.UUID, v.VMInstanceUUID)
				}
				vmUUID := in.Params.VMUUID
				if vmUUID == "" {
					vmUUID = v.VMInstanceUUID
				} else if v.VMInstanceUUID != "" && v.VMInstanceUUID != vmUUID {
					return VolumeReq{}, errcode.New(errcode.InvalidArgument, "volume %s is attached to VM %s, not to VM %s", v.UUID, v.VMInstanceUUID, vmUUID)
				}
				if vmUUID == "" {
					return VolumeReq{}, errcode.New(errcode.InvalidState, "volume %s is not attached to any VM", v.UUID)
				}
				return VolumeReq{VMUUID: vmUUID, VolumeUUID: v.UUID}, nil
			}),
	}
}

// attachable are the VM states in which a volume may be attached or
// detached (a running VM gets it at once, a stopped one at its next start).
func attachable(v *VmInstanceVO, op string) error {
	if v.State != StateRunning && v.State != StateStopped {
		return errcode.New(errcode.InvalidState, "cannot %s a volume: VM %s is %s; it must be Running or Stopped", op, v.UUID, v.State)
	}
	return nil
}

// handleAttachVolume claims the volume for the VM at the next free device
// (in the volume's chain: the lock order is VM, then volume), then plugs it
// into the running VM; if the hypervisor refuses, the claim is undone.
func (s *Service) handleAttachVolume(ctx context.Context, req VolumeReq) (volume.VolumeVO, error) {
	return inChain(ctx, s, req.VMUUID, "attach-volume", func(ctx context.Context) (volume.VolumeVO, error) {
		v, err := s.load(ctx, req.VMUUID)
		if err != nil {
			return volume.VolumeVO{}, err
		}
		for _, vol := range v.AllVolumes {
			if vol.UUID == req.VolumeUUID {
				return vol, nil // attached already
			}
		}
		if err := attachable(v, "attach"); err != nil {
			return volume.VolumeVO{}, err
		}
		ar, err := attachRequest(ctx, s.db, v, req.VolumeUUID)
		if err != nil {
			return volume.VolumeVO{}, err
		}
		vol, err := managementnode.CallOwner(ctx, s.node, volume.MsgAttach, ar)
		if err != nil {
			return volume.VolumeVO{}, err
		}
		if v.State != StateRunning {
			return vol, nil
		}
		if err := s.plug(ctx, v, vol, protocol.AttachVolume); err != nil {
			if _, derr := managementnode.CallOwner(context.WithoutCancel(ctx), s.node, volume.MsgDetach,
				volume.DetachReq{VolumeUUID: vol.UUID, VMUUID: v.UUID}); derr != nil {
				s.log.Error("undo the attach of a volume the hypervisor refused", "vm_uuid", v.UUID, "volume_uuid", vol.UUID, "err", derr)
			}
			return volume.VolumeVO{}, err
		}
		return vol, nil
	})
}

// handleDetachVolume unplugs the volume from the running VM, then releases
// it. A volume not attached to the VM is answered as it is.
func (s *Service) handleDetachVolume(ctx context.Context, req VolumeReq) (volume.VolumeVO, error) {
	return inChain(ctx, s, req.VMUUID, "detach-volume", func(ctx context.Context) (volume.VolumeVO, error) {
		v, err := s.load(ctx, req.VMUUID)
		if errcode.Has(err, errcode.ResourceNotFound) {
			// The VM is gone: only the volume's record is left to fix.
			return managementnode.CallOwner(ctx, s.node, volume.MsgDetach, volume.DetachReq{VolumeUUID: req.VolumeUUID, VMUUID: req.VMUUID})
		}
		if err != nil {
			return volume.VolumeVO{}, err
		}
		var vol *volume.VolumeVO
		for i := range v.AllVolumes {
			if v.AllVolumes[i].UUID == req.VolumeUUID {
				vol = &v.AllVolumes[i]
			}
		}
		if vol == nil {
			return managementnode.CallOwner(ctx, s.node, volume.MsgDetach, volume.DetachReq{VolumeUUID: req.VolumeUUID, VMUUID: req.VMUUID})
		}
		if vol.Type == volume.TypeRoot {
			return volume.VolumeVO{}, errcode.New(errcode.InvalidState, "volume %s is the root volume of VM %s: it cannot be detached", vol.UUID, v.UUID)
		}
		if err := attachable(v, "detach"); err != nil {
			return volume.VolumeVO{}, err
		}
		if v.State == StateRunning {
			if err := s.plug(ctx, v, *vol, protocol.DetachVolume); err != nil {
				return volume.VolumeVO{}, err
			}
		}
		return managementnode.CallOwner(ctx, s.node, volume.MsgDetach, volume.DetachReq{VolumeUUID: vol.UUID, VMUUID: v.UUID})
	})
}

// plug sends an attach or detach of vol to the VM's host.
func (s *Service) plug(ctx context.Context, v *VmInstanceVO, vol volume.VolumeVO, c protocol.Command[protocol.AttachVolumeCmd, protocol.VMRsp]) error {
	p, err := storage.LoadPrimary(ctx, s.db, vol.PrimaryStorageUUID)
	if err != nil {
		return err
	}
	cmd := protocol.AttachVolumeCmd{VMInstanceUUID: v.UUID, Volume: volume.TO(vol, p.URL, p.Type)}
	if err := agentCommand(ctx, s, v.HostUUID, c, cmd); err != nil {
		return errcode.Wrap(errcode.AgentError, err, "%s volume %s of VM %s", c.Path, vol.UUID, v.UUID)
	}
	return nil
}

// attachRequest is the claim of volume volUUID for VM v at its next free
// device, with where the volume must be: on the VM's host (or its local
// root volume's) for local storage, attached to the VM's cluster (or one
// its volumes' storage reaches) for shared storage.
func attachRequest(ctx context.Context, db *gorm.DB, v *VmInstanceVO, volUUID string) (volume.AttachReq, error) {
	onHost, clusters, err := volume.Reach(ctx, db, v.AllVolumes)
	if err != nil {
		return volume.AttachReq{}, err
	}
	if v.HostUUID != "" {
		onHost = v.HostUUID
		var h host.HostVO
		if err := db.WithContext(ctx).Select("cluster_uuid").Take(&h, "uuid = ?", v.HostUUID).Error; err != nil {
			return volume.AttachReq{}, errcode.Wrap(errcode.Internal, err, "look up host %s", v.HostUUID)
		}
		clusters = []string{h.ClusterUUID}
	}
	dev := 1
	for _, vol := range v.AllVolumes {
		if vol.DeviceID != nil && *vol.DeviceID >= dev {
			dev = *vol.DeviceID + 1
		}
	}
	return volume.AttachReq{VolumeUUID: volUUID, VMUUID: v.UUID, DeviceID: dev, ZoneUUID: v.ZoneUUID, HostUUID: onHost, ClusterUUIDs: clusters}, nil
}

// DetachFromVM detaches a volume from its VM through the VM's owner (the
// volume service's Enforcing delete).
func DetachFromVM(node *managementnode.Node) func(ctx context.Context, volumeUUID, vmUUID string) error {
	return func(ctx context.Context, volumeUUID, vmUUID string) error {
		_, err := managementnode.CallOwner(ctx, node, MsgDetachVolume, VolumeReq{VMUUID: vmUUID, VolumeUUID: volumeUUID})
		return err
	}
}
