package protocol

// Command paths of the events an agent posts to the sendCommandUrl it was
// given at /host/connect, with header CommandPathHeader.
const (
	// EventReportVMState: body VMStateEvent.
	EventReportVMState = "/kvm/reportvmstate"
	// EventReportVMReboot, EventReportVMShutdown, EventReportVMStart,
	// EventReportVMCrash: body VMEvent.
	EventReportVMReboot   = "/kvm/reportvmreboot"
	EventReportVMShutdown = "/kvm/reportvmshutdown"
	EventReportVMStart    = "/kvm/reportvmstart"
	EventReportVMCrash    = "/kvm/reportvmcrash"
	// EventReconnectMe: body ReconnectMeEvent.
	EventReconnectMe = "/kvm/reconnectme"
	// EventProgressReport: body ProgressEvent.
	EventProgressReport = "/progress/report"
)

// EventPaths lists every event command path of the protocol.
func EventPaths() []string {
	return []string{
		EventReportVMState,
		EventReportVMReboot,
		EventReportVMShutdown,
		EventReportVMStart,
		EventReportVMCrash,
		EventReconnectMe,
		EventProgressReport,
	}
}

// VM states as agents report them (kvmagent's names for libvirt states).
const (
	VMStateRunning  = "Running"
	VMStateShutdown = "Shutdown"
	VMStatePaused   = "Paused"
	VMStateCrashed  = "Crashed"
)

// VMStateEvent is the body of EventReportVMState.
type VMStateEvent struct {
	HostUUID string `json:"hostUuid"`
	VMUUID   string `json:"vmUuid"`
	VMState  string `json:"vmState"`
}

// VMEvent is the body of the reboot, shutdown, start and crash events.
type VMEvent struct {
	VMUUID string `json:"vmUuid"`
}

// ReconnectMeEvent is the body of EventReconnectMe.
type ReconnectMeEvent struct {
	HostUUID string `json:"hostUuid"`
	Reason   string `json:"reason"`
}

// ProgressEvent is the body of EventProgressReport (ZStack's
// ProgressReportCmd; progress is a percentage in a string).
type ProgressEvent struct {
	Progress     string `json:"progress"`
	ProcessType  string `json:"processType"`
	ResourceUUID string `json:"resourceUuid"`
	ServerUUID   string `json:"serverUuid,omitempty"`
}
