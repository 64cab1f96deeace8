package vm

import (
	"mplane/api/quota"
	"mplane/cloudbus"
	"mplane/managementnode"
)

// BusService is the bus service name: each node consumes "vm.<node>".
const BusService = "vm"

// CreateParams are the API parameters of a new VM.
type CreateParams struct {
	Name                 string   `json:"name"`
	Description          string   `json:"description,omitempty"`
	InstanceOfferingUUID string   `json:"instanceOfferingUuid"`
	ImageUUID            string   `json:"imageUuid"`
	L3NetworkUUIDs       []string `json:"l3NetworkUuids"`
	DefaultL3NetworkUUID string   `json:"defaultL3NetworkUuid,omitempty"`
	ZoneUUID             string   `json:"zoneUuid,omitempty"`
	ClusterUUID          string   `json:"clusterUuid,omitempty"`
	HostUUID             string   `json:"hostUuid,omitempty"`
	// DataDiskOfferingUUIDs make blank data volumes, created and attached
	// with the VM (one per offering, in order).
	DataDiskOfferingUUIDs []string `json:"dataDiskOfferingUuids,omitempty"`
}

// CreateReq creates a VM with a caller-chosen UUID.
type CreateReq struct {
	UUID   string       `json:"uuid"`
	Params CreateParams `json:"params"`
	// Sizing is what the API node read while validating (offering and
	// image); nil makes the owner read it.
	Sizing *Sizing `json:"sizing,omitempty"`
	// StaticIPs are the NICs' fixed addresses, by L3 network (the
	// staticIp system tags).
	StaticIPs map[string]string `json:"staticIps,omitempty"`
}

// ResourceUUID is the VM being created.
func (r CreateReq) ResourceUUID() string { return r.UUID }

// Sizing is what a VM takes from its offering and image.
type Sizing struct {
	CPUNum     int    `json:"cpuNum"`
	MemorySize int64  `json:"memorySize"`
	Platform   string `json:"platform,omitempty"`
}

// OpReq asks for an operation on a VM. Type is stop's "grace" or "cold".
type OpReq struct {
	UUID string `json:"uuid"`
	Type string `json:"type,omitempty"`
}

// ResourceUUID is the VM.
func (r OpReq) ResourceUUID() string { return r.UUID }

// Messages of the VM service; every one runs on the VM's owner, in the
// VM's chain.
var (
	MsgCreate  = managementnode.NewOwnedMsg[CreateReq, VmInstanceVO](BusService, "vm.CreateVmInstance")
	MsgStart   = managementnode.NewOwnedMsg[OpReq, VmInstanceVO](BusService, "vm.StartVmInstance")
	MsgStop    = managementnode.NewOwnedMsg[OpReq, VmInstanceVO](BusService, "vm.StopVmInstance")
	MsgReboot  = managementnode.NewOwnedMsg[OpReq, VmInstanceVO](BusService, "vm.RebootVmInstance")
	MsgDestroy = managementnode.NewOwnedMsg[OpReq, VmInstanceVO](BusService, "vm.DestroyVmInstance")
	MsgExpunge = managementnode.NewOwnedMsg[OpReq, cloudbus.Empty](BusService, "vm.ExpungeVmInstance")
)

// QuotaDemand is what a VM create takes of its account's quota
// (quota.Demander): one VM, its vCPUs and its memory.
func (r CreateReq) QuotaDemand() (string, string, map[string]int64) {
	d := map[string]int64{quota.VMNum: 1}
	if r.Sizing != nil {
		d[quota.VMCPUNum], d[quota.VMMemorySize] = int64(r.Sizing.CPUNum), r.Sizing.MemorySize
	}
	return r.UUID, VmInstanceVO{}.TableName(), d
}
