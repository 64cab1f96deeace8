package vm

import (
	"time"

	"mplane/services/volume"
)

// VM states (ZStack's).
const (
	StateCreated    = "Created"
	StateStarting   = "Starting"
	StateRunning    = "Running"
	StateStopping   = "Stopping"
	StateStopped    = "Stopped"
	StateRebooting  = "Rebooting"
	StateMigrating  = "Migrating"
	StateDestroying = "Destroying"
	StateDestroyed  = "Destroyed"
	StateExpunging  = "Expunging"
	StateUnknown    = "Unknown"
	StateError      = "Error"
)

// VmInstanceVO is a row of vm_instances and, as JSON, the VM inventory with
// ZStack's field names. Version guards every state change (optimistic
// concurrency): a stale owner cannot overwrite a newer one.
type VmInstanceVO struct {
	UUID                 string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name                 string    `gorm:"column:name;size:255;not null" json:"name"`
	Description          string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	ZoneUUID             string    `gorm:"column:zone_uuid;size:32;index" json:"zoneUuid,omitempty"`
	ClusterUUID          string    `gorm:"column:cluster_uuid;size:32;index" json:"clusterUuid,omitempty"`
	HostUUID             string    `gorm:"column:host_uuid;size:32;index" json:"hostUuid,omitempty"`
	LastHostUUID         string    `gorm:"column:last_host_uuid;size:32" json:"lastHostUuid,omitempty"`
	InstanceOfferingUUID string    `gorm:"column:instance_offering_uuid;size:32;not null" json:"instanceOfferingUuid"`
	ImageUUID            string    `gorm:"column:image_uuid;size:32;not null" json:"imageUuid"`
	RootVolumeUUID       string    `gorm:"column:root_volume_uuid;size:32" json:"rootVolumeUuid,omitempty"`
	DefaultL3NetworkUUID string    `gorm:"column:default_l3_network_uuid;size:32" json:"defaultL3NetworkUuid,omitempty"`
	Type                 string    `gorm:"column:type;size:32;not null" json:"type"`
	HypervisorType       string    `gorm:"column:hypervisor_type;size:32;not null" json:"hypervisorType"`
	Platform             string    `gorm:"column:platform;size:32" json:"platform,omitempty"`
	CPUNum               int       `gorm:"column:cpu_num;not null" json:"cpuNum"`
	MemorySize           int64     `gorm:"column:memory_size;not null" json:"memorySize"`
	State                string    `gorm:"column:state;size:32;not null;index" json:"state"`
	Version              int64     `gorm:"column:version;not null" json:"-"`
	CreateDate           time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate           time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
	VMNics               []VmNicVO `gorm:"foreignKey:VMInstanceUUID;references:UUID" json:"vmNics"`
	// AllVolumes are the VM's volumes, root first (ZStack's allVolumes):
	// the volume service's rows, read only here (no constraint either: a
	// volume outlives the VM it was attached to).
	AllVolumes []volume.VolumeVO `gorm:"foreignKey:VMInstanceUUID;references:UUID;-:migration" json:"allVolumes"`
}

// volumeOrder is the SQL order of a VM's volumes: root first, then by
// device.
const volumeOrder = "CASE WHEN type = 'Root' THEN 0 ELSE 1 END, device_id"

// TableName is vm_instances.
func (VmInstanceVO) TableName() string { return "vm_instances" }

// VmNicVO is a VM's network interface with its IP.
type VmNicVO struct {
	UUID           string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	VMInstanceUUID string    `gorm:"column:vm_instance_uuid;size:32;not null;index" json:"vmInstanceUuid"`
	L3NetworkUUID  string    `gorm:"column:l3_network_uuid;size:32;not null" json:"l3NetworkUuid"`
	IP             string    `gorm:"column:ip;size:64" json:"ip"`
	Netmask        string    `gorm:"column:netmask;size:64" json:"netmask"`
	Gateway        string    `gorm:"column:gateway;size:64" json:"gateway"`
	Mac            string    `gorm:"column:mac;size:17;not null" json:"mac"`
	DeviceID       int       `gorm:"column:device_id;not null" json:"deviceId"`
	UsedIPUUID     string    `gorm:"column:used_ip_uuid;size:32" json:"usedIpUuid,omitempty"`
	CreateDate     time.Time `gorm:"column:create_date;not null" json:"createDate"`
	// UsedIPs are the NIC's addresses (ZStack's usedIps), as the queries
	// show them: the network service's rows, read only here.
	UsedIPs []NicUsedIP `gorm:"foreignKey:VMNicUUID;references:UUID;-:migration" json:"usedIps,omitempty"`
}

// TableName is vm_nics.
func (VmNicVO) TableName() string { return "vm_nics" }

// TenancyRef makes a NIC its VM owner's (tenancy.Child).
func (n *VmNicVO) TenancyRef() (uuid, parent string) { return n.UUID, n.VMInstanceUUID }

// TenancyParentColumn is the column naming a NIC's VM.
func (VmNicVO) TenancyParentColumn() string { return "vm_instance_uuid" }
