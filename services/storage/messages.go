package storage

import (
	"mplane/cloudbus"
	"mplane/managementnode"
)

// AddPrimaryStorageReq adds a primary storage with the UUID the API layer
// chose.
type AddPrimaryStorageReq struct {
	UUID        string `json:"uuid"`
	Type        string `json:"type"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	URL         string `json:"url"`
	ZoneUUID    string `json:"zoneUuid"`
}

// ResourceUUID is the primary storage.
func (r AddPrimaryStorageReq) ResourceUUID() string { return r.UUID }

// ClusterRefReq attaches a primary storage to a cluster, or detaches it.
type ClusterRefReq struct {
	PrimaryStorageUUID string `json:"primaryStorageUuid"`
	ClusterUUID        string `json:"clusterUuid"`
}

// ResourceUUID is the primary storage.
func (r ClusterRefReq) ResourceUUID() string { return r.PrimaryStorageUUID }

// Ref names a primary or backup storage.
type Ref struct {
	UUID string `json:"uuid"`
}

// ResourceUUID is the storage.
func (r Ref) ResourceUUID() string { return r.UUID }

// ChangeReq changes a storage's state (StateEvent enable or disable) or
// its name and description.
type ChangeReq struct {
	UUID        string  `json:"uuid"`
	StateEvent  string  `json:"stateEvent,omitempty"`
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
}

// ResourceUUID is the storage.
func (r ChangeReq) ResourceUUID() string { return r.UUID }

// AddBackupStorageReq adds an image store backup storage.
type AddBackupStorageReq struct {
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	URL         string `json:"url"`
	Hostname    string `json:"hostname"`
	AgentPort   int    `json:"agentPort"`
	Username    string `json:"username,omitempty"`
	SSHPort     int    `json:"sshPort,omitempty"`
}

// ResourceUUID is the backup storage.
func (r AddBackupStorageReq) ResourceUUID() string { return r.UUID }

// ZoneRefReq attaches a backup storage to a zone, or detaches it.
type ZoneRefReq struct {
	BackupStorageUUID string `json:"backupStorageUuid"`
	ZoneUUID          string `json:"zoneUuid"`
}

// ResourceUUID is the backup storage.
func (r ZoneRefReq) ResourceUUID() string { return r.BackupStorageUUID }

// Messages of the storage service; each runs on the storage's owner.
var (
	MsgAddPrimaryStorage       = managementnode.NewOwnedMsg[AddPrimaryStorageReq, PrimaryStorageVO](BusService, "storage.AddPrimaryStorage")
	MsgAttachPrimaryStorage    = managementnode.NewOwnedMsg[ClusterRefReq, PrimaryStorageVO](BusService, "storage.AttachPrimaryStorageToCluster")
	MsgDetachPrimaryStorage    = managementnode.NewOwnedMsg[ClusterRefReq, PrimaryStorageVO](BusService, "storage.DetachPrimaryStorageFromCluster")
	MsgDeletePrimaryStorage    = managementnode.NewOwnedMsg[Ref, cloudbus.Empty](BusService, "storage.DeletePrimaryStorage")
	MsgReconnectPrimaryStorage = managementnode.NewOwnedMsg[Ref, PrimaryStorageVO](BusService, "storage.ReconnectPrimaryStorage")
	MsgChangePrimaryStorage    = managementnode.NewOwnedMsg[ChangeReq, PrimaryStorageVO](BusService, "storage.ChangePrimaryStorage")

	MsgAddBackupStorage       = managementnode.NewOwnedMsg[AddBackupStorageReq, BackupStorageVO](BusService, "storage.AddImageStoreBackupStorage")
	MsgAttachBackupStorage    = managementnode.NewOwnedMsg[ZoneRefReq, BackupStorageVO](BusService, "storage.AttachBackupStorageToZone")
	MsgDetachBackupStorage    = managementnode.NewOwnedMsg[ZoneRefReq, BackupStorageVO](BusService, "storage.DetachBackupStorageFromZone")
	MsgDeleteBackupStorage    = managementnode.NewOwnedMsg[Ref, cloudbus.Empty](BusService, "storage.DeleteBackupStorage")
	MsgReconnectBackupStorage = managementnode.NewOwnedMsg[Ref, BackupStorageVO](BusService, "storage.ReconnectBackupStorage")
	MsgChangeBackupStorage    = managementnode.NewOwnedMsg[ChangeReq, BackupStorageVO](BusService, "storage.ChangeBackupStorage")
)
