package storage

import (
	"time"

	"gorm.io/gorm"
)

// Primary storage types.
const (
	TypeLocalStorage     = "LocalStorage"
	TypeSharedMountPoint = "SharedMountPoint"
)

// Backup storage types.
const TypeImageStore = "ImageStoreBackupStorage"

// States (administrative) and statuses (connection) of primary and backup
// storage, ZStack's.
const (
	StateEnabled  = "Enabled"
	StateDisabled = "Disabled"

	StatusConnecting   = "Connecting"
	StatusConnected    = "Connected"
	StatusDisconnected = "Disconnected"
)

// PrimaryStorageVO is a row of primary_storages and, as JSON, ZStack's
// PrimaryStorageInventory. Capacities are bytes: TotalCapacity is what may
// be reserved (the physical total), AvailableCapacity what is not
// reserved; the physical pair is what the file system reported last. For
// LocalStorage they are the sums over its hosts (LocalStorageHostRefVO).
type PrimaryStorageVO struct {
	UUID                      string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name                      string    `gorm:"column:name;size:255;not null" json:"name"`
	Description               string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	ZoneUUID                  string    `gorm:"column:zone_uuid;size:32;not null;index" json:"zoneUuid"`
	URL                       string    `gorm:"column:url;size:1024;not null" json:"url"`
	Type                      string    `gorm:"column:type;size:64;not null" json:"type"`
	State                     string    `gorm:"column:state;size:32;not null" json:"state"`
	Status                    string    `gorm:"column:status;size:32;not null" json:"status"`
	MountPath                 string    `gorm:"column:mount_path;size:1024" json:"mountPath,omitempty"`
	TotalCapacity             int64     `gorm:"column:total_capacity;not null" json:"totalCapacity"`
	AvailableCapacity         int64     `gorm:"column:available_capacity;not null" json:"availableCapacity"`
	TotalPhysicalCapacity     int64     `gorm:"column:total_physical_capacity;not null" json:"totalPhysicalCapacity"`
	AvailablePhysicalCapacity int64     `gorm:"column:available_physical_capacity;not null" json:"availablePhysicalCapacity"`
	CreateDate                time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate                time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`

	ClusterRefs []PrimaryStorageClusterRefVO `gorm:"foreignKey:PrimaryStorageUUID;references:UUID" json:"-"`
	// AttachedClusterUUIDs are ClusterRefs' clusters, as ZStack's
	// inventory has them (AfterFind).
	AttachedClusterUUIDs []string `gorm:"-" json:"attachedClusterUuids"`
}

// TableName is primary_storages.
func (PrimaryStorageVO) TableName() string { return "primary_storages" }

// AfterFind fills AttachedClusterUUIDs from the preloaded refs (GORM runs
// it after the preloads).
func (p *PrimaryStorageVO) AfterFind(*gorm.DB) error {
	p.AttachedClusterUUIDs = make([]string, 0, len(p.ClusterRefs))
	for _, r := range p.ClusterRefs {
		p.AttachedClusterUUIDs = append(p.AttachedClusterUUIDs, r.ClusterUUID)
	}
	return nil
}

// PrimaryStorageClusterRefVO attaches a primary storage to a cluster.
type PrimaryStorageClusterRefVO struct {
	PrimaryStorageUUID string    `gorm:"column:primary_storage_uuid;primaryKey;size:32" json:"primaryStorageUuid"`
	ClusterUUID        string    `gorm:"column:cluster_uuid;primaryKey;size:32;index" json:"clusterUuid"`
	CreateDate         time.Time `gorm:"column:create_date;not null" json:"createDate"`
}

// TableName is primary_storage_cluster_refs.
func (PrimaryStorageClusterRefVO) TableName() string { return "primary_storage_cluster_refs" }

// LocalStorageHostRefVO is one host's directory of a LocalStorage: its
// capacity, reserved like the storage's (see Reserve).
type LocalStorageHostRefVO struct {
	PrimaryStorageUUID        string    `gorm:"column:primary_storage_uuid;primaryKey;size:32" json:"primaryStorageUuid"`
	HostUUID                  string    `gorm:"column:host_uuid;primaryKey;size:32;index" json:"hostUuid"`
	TotalCapacity             int64     `gorm:"column:total_capacity;not null" json:"totalCapacity"`
	AvailableCapacity         int64     `gorm:"column:available_capacity;not null" json:"availableCapacity"`
	TotalPhysicalCapacity     int64     `gorm:"column:total_physical_capacity;not null" json:"totalPhysicalCapacity"`
	AvailablePhysicalCapacity int64     `gorm:"column:available_physical_capacity;not null" json:"availablePhysicalCapacity"`
	CreateDate                time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate                time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is local_storage_host_refs.
func (LocalStorageHostRefVO) TableName() string { return "local_storage_host_refs" }

// BackupStorageVO is a row of backup_storages and, as JSON, ZStack's
// ImageStoreBackupStorageInventory: a storage agent at Hostname:AgentPort
// serving the directory URL.
type BackupStorageVO struct {
	UUID              string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name              string    `gorm:"column:name;size:255;not null" json:"name"`
	Description       string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	URL               string    `gorm:"column:url;size:1024;not null" json:"url"`
	Type              string    `gorm:"column:type;size:64;not null" json:"type"`
	Hostname          string    `gorm:"column:hostname;size:255;not null;uniqueIndex:idx_backup_storages_address" json:"hostname"`
	AgentPort         int       `gorm:"column:agent_port;not null;uniqueIndex:idx_backup_storages_address" json:"agentPort"`
	Username          string    `gorm:"column:username;size:255" json:"username,omitempty"`
	SSHPort           int       `gorm:"column:ssh_port" json:"sshPort,omitempty"`
	State             string    `gorm:"column:state;size:32;not null" json:"state"`
	Status            string    `gorm:"column:status;size:32;not null" json:"status"`
	TotalCapacity     int64     `gorm:"column:total_capacity;not null" json:"totalCapacity"`
	AvailableCapacity int64     `gorm:"column:available_capacity;not null" json:"availableCapacity"`
	Secret            string    `gorm:"column:secret;size:64;not null" json:"-"`
	CreateDate        time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate        time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`

	ZoneRefs []BackupStorageZoneRefVO `gorm:"foreignKey:BackupStorageUUID;references:UUID" json:"-"`
	// AttachedZoneUUIDs are ZoneRefs' zones, as ZStack's inventory has
	// them (AfterFind).
	AttachedZoneUUIDs []string `gorm:"-" json:"attachedZoneUuids"`
}

// TableName is backup_storages.
func (BackupStorageVO) TableName() string { return "backup_storages" }

// AfterFind fills AttachedZoneUUIDs from the preloaded refs.
func (b *BackupStorageVO) AfterFind(*gorm.DB) error {
	b.AttachedZoneUUIDs = make([]string, 0, len(b.ZoneRefs))
	for _, r := range b.ZoneRefs {
		b.AttachedZoneUUIDs = append(b.AttachedZoneUUIDs, r.ZoneUUID)
	}
	return nil
}

// BackupStorageZoneRefVO attaches a backup storage to a zone.
type BackupStorageZoneRefVO struct {
	BackupStorageUUID string    `gorm:"column:backup_storage_uuid;primaryKey;size:32" json:"backupStorageUuid"`
	ZoneUUID          string    `gorm:"column:zone_uuid;primaryKey;size:32;index" json:"zoneUuid"`
	CreateDate        time.Time `gorm:"column:create_date;not null" json:"createDate"`
}

// TableName is backup_storage_zone_refs.
func (BackupStorageZoneRefVO) TableName() string { return "backup_storage_zone_refs" }

// StorageReservationVO is the capacity one volume, snapshot or cached
// image (OwnerUUID) holds on a primary storage (and, for LocalStorage, on
// one host's directory). Reserve and Release change it in the same
// transaction as the available capacity.
type StorageReservationVO struct {
	OwnerUUID          string    `gorm:"column:owner_uuid;primaryKey;size:32"`
	PrimaryStorageUUID string    `gorm:"column:primary_storage_uuid;size:32;not null;index"`
	HostUUID           string    `gorm:"column:host_uuid;size:32;not null"`
	Size               int64     `gorm:"column:size;not null"`
	CreateDate         time.Time `gorm:"column:create_date;not null"`
}

// TableName is storage_reservations.
func (StorageReservationVO) TableName() string { return "storage_reservations" }

// Models are the package's tables, in dependency order.
func Models() []any {
	return []any{&PrimaryStorageVO{}, &PrimaryStorageClusterRefVO{}, &LocalStorageHostRefVO{}, &BackupStorageVO{},
		&BackupStorageZoneRefVO{}, &StorageReservationVO{}, &ImageCacheVO{}}
}
