package protocol

// Paths served by the agent. Sync or async as in ZStack's kvmagent.
const (
	PathEcho     = "/host/echo"     // sync (raw): 200, empty body; no secret needed
	PathConnect  = "/host/connect"  // sync: ConnectCmd -> ConnectRsp
	PathPing     = "/host/ping"     // async: PingCmd -> PingRsp
	PathCapacity = "/host/capacity" // async: {} -> CapacityRsp
	PathStartVM  = "/vm/start"      // async: StartVMCmd -> VMRsp
	PathStopVM   = "/vm/stop"       // async: StopVMCmd -> VMRsp
	PathRebootVM = "/vm/reboot"     // async: RebootVMCmd -> VMRsp
	// PathDestroyVM is async: DestroyVMCmd -> VMRsp.
	PathDestroyVM = "/vm/destroy"
	// PathAttachVolume and PathDetachVolume are async: AttachVolumeCmd ->
	// VMRsp. The VM must be running (a stopped VM gets its data volumes
	// with its next start).
	PathAttachVolume = "/vm/attachdatavolume"
	PathDetachVolume = "/vm/detachdatavolume"
	// PathAttachNic and PathDetachNic are async: NicCmd -> VMRsp. They
	// plug a NIC into, and out of, a running VM (a stopped VM gets its
	// NICs with its next start).
	PathAttachNic = "/vm/attachnic"
	PathDetachNic = "/vm/detachnic"
	// PathMigrateVM is async: MigrateVMCmd -> VMRsp. The source agent hands
	// the VM to the destination agent at PathIncomingVM.
	PathMigrateVM = "/vm/migrate"
	// PathListVMs is async: {} -> ListVMsRsp (for state sync).
	PathListVMs = "/vm/list"
	// PathIncomingVM is sync: IncomingVMCmd -> VMRsp. Called by a source
	// agent during a migration, not by the management node.
	PathIncomingVM = "/vm/migrate/incoming"

	// Debug endpoints (raw). GET ones need no secret.
	PathDebugStats    = "/debug/stats"    // GET: Stats
	PathDebugArrivals = "/debug/arrivals" // GET: []Arrival, oldest first
	// PathDebugVMArrivals (GET: []Arrival with VMUUID) tells when each VM
	// command started being handled.
	PathDebugVMArrivals = "/debug/vm-arrivals"
	// PathDebugVMs (GET) lists the agent's VMs ([]VM), for audits.
	PathDebugVMs = "/debug/vms"
	// PathDebugCrashVM and PathDebugPowerOffVM (POST {"vmUuid": ...})
	// simulate what the management node did not ask for: a crash, and a
	// shutdown from inside the guest. They emit the matching events.
	PathDebugCrashVM    = "/debug/vm/crash"
	PathDebugPowerOffVM = "/debug/vm/poweroff"
)

// ConnectCmd is the body of /host/connect. Secret is mplane's addition: when
// set, the agent requires it on every later command (header
// protocol.SecretHeader) and sends it with its events. When the agent
// already holds a secret, the connect itself must carry it in the header;
// a connect without Secret then keeps the current one.
type ConnectCmd struct {
	HostUUID       string `json:"hostUuid"`
	SendCommandURL string `json:"sendCommandUrl"`
	Version        string `json:"version,omitempty"`
	Secret         string `json:"secret,omitempty"`
}

// ConnectRsp answers /host/connect.
type ConnectRsp struct {
	Response
	LibvirtVersion string `json:"libvirtVersion"`
	QemuVersion    string `json:"qemuVersion"`
}

// PingCmd is the body of /host/ping.
type PingCmd struct {
	HostUUID string `json:"hostUuid"`
}

// PingRsp answers /host/ping. HostUUID and SendCommandURL are missing until
// the agent is connected (after a restart too, as with the Python agent): a
// management node that sees another host UUID than the one it expects
// reconnects the host.
type PingRsp struct {
	Response
	HostUUID       string `json:"hostUuid,omitempty"`
	SendCommandURL string `json:"sendCommandUrl,omitempty"`
	Version        string `json:"version"`
}

// CapacityRsp answers /host/capacity (ZStack's HostCapacityResponse).
// Memory is in bytes, CPU speed in MHz; Used* sum the running VMs.
type CapacityRsp struct {
	Response
	CPUNum      int   `json:"cpuNum"`
	CPUSockets  int   `json:"cpuSockets"`
	CPUSpeed    int64 `json:"cpuSpeed"`
	TotalMemory int64 `json:"totalMemory"`
	UsedCPU     int   `json:"usedCpu"`
	UsedMemory  int64 `json:"usedMemory"`
}

// StartVMCmd is the body of /vm/start, in the shape of ZStack's StartVmCmd
// (the fields kvmagent's handler reads). Memory is in bytes, CPUSpeed in
// MHz, Timeout in seconds. BootDev is ["hd"] for a VM booting from its
// root volume.
type StartVMCmd struct {
	VMInstanceUUID string     `json:"vmInstanceUuid"`
	VMName         string     `json:"vmName,omitempty"`
	CPUNum         int        `json:"cpuNum,omitempty"`
	CPUSpeed       int64      `json:"cpuSpeed,omitempty"`
	SocketNum      int        `json:"socketNum,omitempty"`
	CPUOnSocket    int        `json:"cpuOnSocket,omitempty"`
	Memory         int64      `json:"memory,omitempty"`
	BootDev        []string   `json:"bootDev,omitempty"`
	RootVolume     *VolumeTO  `json:"rootVolume,omitempty"`
	DataVolumes    []VolumeTO `json:"dataVolumes"`
	Nics           []NicTO    `json:"nics"`
	Timeout        int64      `json:"timeout,omitempty"`
	ConsoleMode    string     `json:"consoleMode,omitempty"`
	UseBootMenu    bool       `json:"useBootMenu"`
	Addons         struct{}   `json:"addons"`
}

// VolumeTO is a volume as a VM command carries it (ZStack's VolumeTO).
// InstallPath is the file's absolute path on the host: the primary
// storage's url joined with the volume's path inside it.
type VolumeTO struct {
	VolumeUUID         string `json:"volumeUuid"`
	InstallPath        string `json:"installPath"`
	DeviceID           int    `json:"deviceId"`
	DeviceType         string `json:"deviceType"` // "file"
	Format             string `json:"format"`     // "qcow2" or "raw"
	UseVirtio          bool   `json:"useVirtio"`
	UseVirtioSCSI      bool   `json:"useVirtioSCSI"`
	Shareable          bool   `json:"shareable"`
	CacheMode          string `json:"cacheMode"` // "none"
	Type               string `json:"type"`      // "Root" or "Data"
	PrimaryStorageType string `json:"primaryStorageType,omitempty"`
}

// NicTO is a NIC as a VM command carries it (ZStack's NicTO).
type NicTO struct {
	UUID          string `json:"uuid"`
	Mac           string `json:"mac"`
	IP            string `json:"ip,omitempty"`
	Netmask       string `json:"netmask,omitempty"`
	Gateway       string `json:"gateway,omitempty"`
	L3NetworkUUID string `json:"l3NetworkUuid"`
	BridgeName    string `json:"bridgeName,omitempty"`
	DeviceID      int    `json:"deviceId"`
	UseVirtio     bool   `json:"useVirtio"`
	MTU           int    `json:"mtu,omitempty"`
}

// AttachVolumeCmd is the body of /vm/attachdatavolume and
// /vm/detachdatavolume (ZStack's AttachDataVolumeCmd and
// DetachDataVolumeCmd): the volume to plug into, or unplug from, a running
// VM.
type AttachVolumeCmd struct {
	VMInstanceUUID string   `json:"vmInstanceUuid"`
	Volume         VolumeTO `json:"volume"`
	Addons         struct{} `json:"addons"`
}

// NicCmd is the body of /vm/attachnic and /vm/detachnic (kvmagent's
// AttachNicCommand and DetachNicCommand).
type NicCmd struct {
	VMUUID string   `json:"vmUuid"`
	Nic    NicTO    `json:"nic"`
	Addons struct{} `json:"addons"`
}

// StopVMCmd is the body of /vm/stop. Type is "grace" or "cold" (both do the
// same here); Timeout is in seconds, as in ZStack.
type StopVMCmd struct {
	UUID    string `json:"uuid"`
	Type    string `json:"type,omitempty"`
	Timeout int64  `json:"timeout,omitempty"`
}

// RebootVMCmd is the body of /vm/reboot.
type RebootVMCmd struct {
	UUID    string `json:"uuid"`
	Timeout int64  `json:"timeout,omitempty"`
}

// DestroyVMCmd is the body of /vm/destroy.
type DestroyVMCmd struct {
	UUID string `json:"uuid"`
}

// MigrateVMCmd is the body of /vm/migrate. DestAgentURL is the destination
// agent's base URL (e.g. http://10.0.0.7:7070); DestSecret is the
// destination host's secret, if it has one.
type MigrateVMCmd struct {
	VMUUID       string `json:"vmUuid"`
	DestAgentURL string `json:"destAgentUrl"`
	DestSecret   string `json:"destSecret,omitempty"`
	DestHostIP   string `json:"destHostIp,omitempty"`
}

// IncomingVMCmd is the body of /vm/migrate/incoming.
type IncomingVMCmd struct {
	VM             VM     `json:"vm"`
	SourceHostUUID string `json:"sourceHostUuid,omitempty"`
}

// VMRsp answers the VM commands with the VM's state after the command
// (protocol.VMStateRunning, VMStateShutdown; empty when the VM is gone).
type VMRsp struct {
	Response
	VMState string `json:"vmState,omitempty"`
}

// ListVMsRsp answers /vm/list: every VM the host has, and the same as a
// uuid -> state map (the shape of ZStack's VmSyncResponse.states).
type ListVMsRsp struct {
	Response
	VMs    []VM              `json:"vms"`
	States map[string]string `json:"states"`
}

// VM is a simulated VM as the agent knows it.
type VM struct {
	UUID   string `json:"uuid"`
	Name   string `json:"name,omitempty"`
	State  string `json:"state"`
	CPUNum int    `json:"cpuNum"`
	Memory int64  `json:"memory"`
	// Volumes are the VM's disks (root first), NICs its interfaces, as the
	// last start and the attaches since gave them.
	Volumes []VolumeTO `json:"volumes,omitempty"`
	NICs    []NicTO    `json:"nics,omitempty"`
}

// syncPaths are the commands, of every agent, that the agent answers in
// its HTTP response; every other command path is asynchronous (the result
// is posted to the callback URL).
var syncPaths = map[string]bool{
	PathEcho: true, PathConnect: true, PathIncomingVM: true, // KVM
	PathStorageEcho: true, PathStorageConnect: true, // storage
}

// IsSync reports whether the agent answers path at once rather than through
// the callback.
func IsSync(path string) bool { return syncPaths[path] }

// Command is an agent command: its path and the Go types of its body and of
// the agent's response, so a caller names the command once and gets the
// response typed (services/host.Run).
type Command[Cmd, Rsp any] struct{ Path string }

// The KVM agent's commands, as the management node sends them.
var (
	Connect  = Command[ConnectCmd, ConnectRsp]{PathConnect}
	Ping     = Command[PingCmd, PingRsp]{PathPing}
	Capacity = Command[struct{}, CapacityRsp]{PathCapacity}
	StartVM  = Command[StartVMCmd, VMRsp]{PathStartVM}
	StopVM   = Command[StopVMCmd, VMRsp]{PathStopVM}
	RebootVM = Command[RebootVMCmd, VMRsp]{PathRebootVM}
	// DestroyVM removes a VM from its host.
	DestroyVM = Command[DestroyVMCmd, VMRsp]{PathDestroyVM}
	MigrateVM = Command[MigrateVMCmd, VMRsp]{PathMigrateVM}
	// AttachVolume and DetachVolume plug a data volume into, and out of, a
	// running VM.
	AttachVolume = Command[AttachVolumeCmd, VMRsp]{PathAttachVolume}
	DetachVolume = Command[AttachVolumeCmd, VMRsp]{PathDetachVolume}
	ListVMs      = Command[struct{}, ListVMsRsp]{PathListVMs}
	// AttachNic and DetachNic plug a NIC into, and out of, a running VM.
	AttachNic = Command[NicCmd, VMRsp]{PathAttachNic}
	DetachNic = Command[NicCmd, VMRsp]{PathDetachNic}
)
