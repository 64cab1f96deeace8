package host

import "time"

// Host states (administrative) and statuses (connection).
const (
	StateEnabled  = "Enabled"
	StateDisabled = "Disabled"

	StatusConnecting   = "Connecting"
	StatusConnected    = "Connected"
	StatusDisconnected = "Disconnected"

	HypervisorKVM = "KVM"
)

// HostVO is a row of hosts and, as JSON, the host inventory with ZStack's
// field names. Capacities: CPU in vCPUs, memory in bytes. Available
// capacity is what VMs have not reserved; reservations are conditional
// updates on it (see Reserve), so two nodes can never overcommit a host.
type HostVO struct {
	UUID           string `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name           string `gorm:"column:name;size:255;not null" json:"name"`
	Description    string `gorm:"column:description;size:2048" json:"description,omitempty"`
	ManagementIP   string `gorm:"column:management_ip;size:255;not null;uniqueIndex:idx_hosts_address" json:"managementIp"`
	AgentPort      int    `gorm:"column:agent_port;not null;uniqueIndex:idx_hosts_address" json:"agentPort"`
	ZoneUUID       string `gorm:"column:zone_uuid;size:32;index" json:"zoneUuid,omitempty"`
	ClusterUUID    string `gorm:"column:cluster_uuid;size:32;index" json:"clusterUuid,omitempty"`
	HypervisorType string `gorm:"column:hypervisor_type;size:32;not null" json:"hypervisorType"`
	State          string `gorm:"column:state;size:32;not null" json:"state"`
	Status         string `gorm:"column:status;size:32;not null;index" json:"status"`

	CPUNum                  int   `gorm:"column:cpu_num;not null" json:"cpuNum"`
	TotalCPUCapacity        int64 `gorm:"column:total_cpu;not null" json:"totalCpuCapacity"`
	AvailableCPUCapacity    int64 `gorm:"column:available_cpu;not null" json:"availableCpuCapacity"`
	TotalMemoryCapacity     int64 `gorm:"column:total_memory;not null" json:"totalMemoryCapacity"`
	AvailableMemoryCapacity int64 `gorm:"column:available_memory;not null" json:"availableMemoryCapacity"`

	// Secret is sent to our agent at connect; it then requires it on every
	// command and sends it with its events. Never shown.
	Secret string `gorm:"column:secret;size:64;not null" json:"-"`

	CreateDate time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is hosts.
func (HostVO) TableName() string { return "hosts" }
