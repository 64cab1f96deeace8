package volume

import (
	"mplane/api/quota"
	"mplane/cloudbus"
	"mplane/managementnode"
)

// Sources of a new volume.
const (
	SourceBlank    = "Blank"
	SourceImage    = "Image"
	SourceSnapshot = "Snapshot"
	SourceVolume   = "Volume"
)

// CreateReq creates a data volume with the UUID the API layer chose.
type CreateReq struct {
	UUID             string `json:"uuid"`
	Name             string `json:"name"`
	Description      string `json:"description,omitempty"`
	Source           string `json:"source"`
	SourceUUID       string `json:"sourceUuid,omitempty"` // the image, snapshot or volume
	Size             int64  `json:"size"`
	DiskOfferingUUID string `json:"diskOfferingUuid,omitempty"`
	// Placement: what the caller pinned (primary storage, host) and the
	// zone, with the offering's strategy.
	PrimaryStorageUUID string `json:"primaryStorageUuid,omitempty"`
	HostUUID           string `json:"hostUuid,omitempty"`
	ZoneUUID           string `json:"zoneUuid,omitempty"`
	Strategy           string `json:"strategy,omitempty"`
}

// ResourceUUID is the new volume.
func (r CreateReq) ResourceUUID() string { return r.UUID }

// Ref names a volume.
type Ref struct {
	UUID string `json:"uuid"`
	Mode string `json:"mode,omitempty"`
}

// ResourceUUID is the volume.
func (r Ref) ResourceUUID() string { return r.UUID }

// ResizeReq grows a volume to Size bytes.
type ResizeReq struct {
	UUID string `json:"uuid"`
	Size int64  `json:"size"`
}

// ResourceUUID is the volume.
func (r ResizeReq) ResourceUUID() string { return r.UUID }

// UpdateReq renames a volume or changes its description.
type UpdateReq struct {
	UUID        string  `json:"uuid"`
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
}

// ResourceUUID is the volume.
func (r UpdateReq) ResourceUUID() string { return r.UUID }

// SnapshotReq takes a snapshot of a volume (in the volume's chain).
type SnapshotReq struct {
	VolumeUUID   string `json:"volumeUuid"`
	SnapshotUUID string `json:"snapshotUuid"`
	Name         string `json:"name"`
	Description  string `json:"description,omitempty"`
}

// ResourceUUID is the volume: snapshots run in its chain.
func (r SnapshotReq) ResourceUUID() string { return r.VolumeUUID }

// SnapshotRef names a snapshot and its volume, whose chain it runs in.
type SnapshotRef struct {
	VolumeUUID   string `json:"volumeUuid"`
	SnapshotUUID string `json:"snapshotUuid"`
}

// ResourceUUID is the snapshot's volume.
func (r SnapshotRef) ResourceUUID() string { return r.VolumeUUID }

// Messages of the volume service; each runs on the volume's owner.
var (
	MsgCreate         = managementnode.NewOwnedMsg[CreateReq, VolumeVO](BusService, "volume.CreateDataVolume")
	MsgDelete         = managementnode.NewOwnedMsg[Ref, cloudbus.Empty](BusService, "volume.DeleteDataVolume")
	MsgExpunge        = managementnode.NewOwnedMsg[Ref, cloudbus.Empty](BusService, "volume.ExpungeDataVolume")
	MsgRecover        = managementnode.NewOwnedMsg[Ref, VolumeVO](BusService, "volume.RecoverDataVolume")
	MsgResize         = managementnode.NewOwnedMsg[ResizeReq, VolumeVO](BusService, "volume.ResizeDataVolume")
	MsgUpdate         = managementnode.NewOwnedMsg[UpdateReq, VolumeVO](BusService, "volume.UpdateVolume")
	MsgCreateSnapshot = managementnode.NewOwnedMsg[SnapshotReq, VolumeSnapshotVO](BusService, "volume.CreateVolumeSnapshot")
	MsgDeleteSnapshot = managementnode.NewOwnedMsg[SnapshotRef, cloudbus.Empty](BusService, "volume.DeleteVolumeSnapshot")
	MsgRevert         = managementnode.NewOwnedMsg[SnapshotRef, VolumeVO](BusService, "volume.RevertVolumeFromSnapshot")
	// MsgAttach and MsgDetach are sent by a VM's owner, from the VM's
	// chain (the API's attach and detach are the VM service's).
	MsgAttach = managementnode.NewOwnedMsg[AttachReq, VolumeVO](BusService, "volume.AttachDataVolume")
	MsgDetach = managementnode.NewOwnedMsg[DetachReq, VolumeVO](BusService, "volume.DetachDataVolume")
)

// QuotaDemand is what a data volume create takes of its account's quota
// (quota.Demander): one data volume and its size, when the API node knows
// it (from the size or the offering; a copy's is its source's, not
// counted).
func (r CreateReq) QuotaDemand() (string, string, map[string]int64) {
	return r.UUID, VolumeVO{}.TableName(), map[string]int64{quota.VolumeDataNum: 1, quota.VolumeCapacity: r.Size}
}

// QuotaDemand is what a snapshot takes of its account's quota: one.
func (r SnapshotReq) QuotaDemand() (string, string, map[string]int64) {
	return r.SnapshotUUID, VolumeSnapshotVO{}.TableName(), map[string]int64{quota.SnapshotNum: 1}
}
