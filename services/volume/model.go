package volume

import "time"

// Volume types, statuses and states (ZStack's).
const (
	TypeRoot = "Root"
	TypeData = "Data"

	StatusCreating = "Creating"
	StatusReady    = "Ready"
	StatusDeleted  = "Deleted"
	// StatusError: a create rolled back whose file could not be deleted;
	// delete and expunge it.
	StatusError = "Error"

	StateEnabled = "Enabled"
)

// VolumeVO is a row of volumes and, as JSON, ZStack's VolumeInventory.
// Size is the virtual size (what the guest sees), ActualSize what the file
// occupies; both bytes. HostUUID is the host whose directory holds the
// volume when its primary storage is LocalStorage.
type VolumeVO struct {
	UUID               string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name               string    `gorm:"column:name;size:255;not null" json:"name"`
	Description        string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	PrimaryStorageUUID string    `gorm:"column:primary_storage_uuid;size:32;index" json:"primaryStorageUuid,omitempty"`
	HostUUID           string    `gorm:"column:host_uuid;size:32;index" json:"hostUuid,omitempty"`
	VMInstanceUUID     string    `gorm:"column:vm_instance_uuid;size:32;index" json:"vmInstanceUuid,omitempty"`
	DiskOfferingUUID   string    `gorm:"column:disk_offering_uuid;size:32" json:"diskOfferingUuid,omitempty"`
	RootImageUUID      string    `gorm:"column:root_image_uuid;size:32" json:"rootImageUuid,omitempty"`
	InstallPath        string    `gorm:"column:install_path;size:1024" json:"installPath,omitempty"`
	Type               string    `gorm:"column:type;size:32;not null" json:"type"`
	Format             string    `gorm:"column:format;size:32" json:"format,omitempty"`
	Size               int64     `gorm:"column:size;not null" json:"size"`
	ActualSize         int64     `gorm:"column:actual_size;not null" json:"actualSize"`
	DeviceID           *int      `gorm:"column:device_id" json:"deviceId,omitempty"`
	State              string    `gorm:"column:state;size:32;not null" json:"state"`
	Status             string    `gorm:"column:status;size:32;not null;index" json:"status"`
	IsShareable        bool      `gorm:"column:is_shareable;not null" json:"isShareable"`
	CreateDate         time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate         time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is volumes.
func (VolumeVO) TableName() string { return "volumes" }

// VolumeSnapshotVO is a row of volume_snapshots and, as JSON, ZStack's
// VolumeSnapshotInventory. PrimaryStorageInstallPath names it to the
// agent ("<volume>@<uuid>" for a snapshot inside a qcow2 volume).
type VolumeSnapshotVO struct {
	UUID                      string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name                      string    `gorm:"column:name;size:255;not null" json:"name"`
	Description               string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	VolumeUUID                string    `gorm:"column:volume_uuid;size:32;not null;index" json:"volumeUuid"`
	VolumeType                string    `gorm:"column:volume_type;size:32;not null" json:"volumeType"`
	PrimaryStorageUUID        string    `gorm:"column:primary_storage_uuid;size:32;not null" json:"primaryStorageUuid"`
	PrimaryStorageInstallPath string    `gorm:"column:primary_storage_install_path;size:1024;not null" json:"primaryStorageInstallPath"`
	TreeUUID                  string    `gorm:"column:tree_uuid;size:32;not null" json:"treeUuid"`
	ParentUUID                string    `gorm:"column:parent_uuid;size:32" json:"parentUuid,omitempty"`
	Type                      string    `gorm:"column:type;size:32;not null" json:"type"`
	Format                    string    `gorm:"column:format;size:32" json:"format,omitempty"`
	Size                      int64     `gorm:"column:size;not null" json:"size"`
	Latest                    bool      `gorm:"column:latest;not null" json:"latest"`
	State                     string    `gorm:"column:state;size:32;not null" json:"state"`
	Status                    string    `gorm:"column:status;size:32;not null" json:"status"`
	CreateDate                time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate                time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is volume_snapshots.
func (VolumeSnapshotVO) TableName() string { return "volume_snapshots" }

// TenancyRef makes a volume created with a VM (its root volume, the data
// volumes of its create) the VM owner's (tenancy.Child); a volume created
// alone has a record of its own, made at the API edge.
func (v *VolumeVO) TenancyRef() (uuid, parent string) { return v.UUID, v.VMInstanceUUID }

// TenancyParentColumn is the column naming a volume's VM.
func (VolumeVO) TenancyParentColumn() string { return "vm_instance_uuid" }

// TenancyRef makes a snapshot its volume owner's (tenancy.Child).
func (s *VolumeSnapshotVO) TenancyRef() (uuid, parent string) { return s.UUID, s.VolumeUUID }

// TenancyParentColumn is the column naming a snapshot's volume.
func (VolumeSnapshotVO) TenancyParentColumn() string { return "volume_uuid" }
