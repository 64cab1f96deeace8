package host

import (
	"encoding/json"

	"mplane/cloudbus"
	"mplane/managementnode"
)

// BusService is the bus service name: each node consumes "host.<nodeUUID>".
const BusService = "host"

// AddKVMHostReq adds a KVM host. UUID is chosen by the caller (the API
// layer) so the message can be routed to the host's owner.
type AddKVMHostReq struct {
	UUID         string `json:"uuid"`
	Name         string `json:"name,omitempty"`
	Description  string `json:"description,omitempty"`
	ManagementIP string `json:"managementIp"`
	AgentPort    int    `json:"agentPort,omitempty"`
	ZoneUUID     string `json:"zoneUuid,omitempty"`
	ClusterUUID  string `json:"clusterUuid,omitempty"`
}

// ResourceUUID is the host being added.
func (r AddKVMHostReq) ResourceUUID() string { return r.UUID }

// HostRef names a host.
type HostRef struct {
	UUID string `json:"uuid"`
}

// ResourceUUID is the host.
func (r HostRef) ResourceUUID() string { return r.UUID }

// AgentCommandReq sends one command to a host's agent, in the host's chain.
// Sync paths (/host/echo, /host/connect) are answered by the agent at once;
// every other path is asynchronous (callback). Storage, for a storage
// command to a primary storage the host's agent serves, is that storage's
// URL, sent in protocol.StorageHeader (RunStorage).
type AgentCommandReq struct {
	HostUUID string          `json:"hostUuid"`
	Path     string          `json:"path"`
	Command  json.RawMessage `json:"command,omitempty"`
	Storage  string          `json:"storage,omitempty"`
}

// ResourceUUID is the host whose agent runs the command.
func (r AgentCommandReq) ResourceUUID() string { return r.HostUUID }

// AgentCommandRep is the agent's result body.
type AgentCommandRep struct {
	Result json.RawMessage `json:"result,omitempty"`
}

// agentEventReq carries an agent's event from the node that received it to
// the host's owner, with what the owner needs to authenticate it.
type agentEventReq struct {
	HostUUID string          `json:"hostUuid"`
	Path     string          `json:"path"`
	Body     json.RawMessage `json:"body,omitempty"`
	Secret   string          `json:"secret,omitempty"`
	RemoteIP string          `json:"remoteIp"`
}

// ResourceUUID is the host the event is about.
func (r agentEventReq) ResourceUUID() string { return r.HostUUID }

// Messages of the host service; each runs on the host's owner.
var (
	MsgAddKVMHost    = managementnode.NewOwnedMsg[AddKVMHostReq, HostVO](BusService, "host.AddKVMHost")
	MsgReconnectHost = managementnode.NewOwnedMsg[HostRef, HostVO](BusService, "host.ReconnectHost")
	MsgDeleteHost    = managementnode.NewOwnedMsg[HostRef, cloudbus.Empty](BusService, "host.DeleteHost")
	MsgGetHost       = managementnode.NewOwnedMsg[HostRef, HostVO](BusService, "host.GetHost")
	MsgAgentCommand  = managementnode.NewOwnedMsg[AgentCommandReq, AgentCommandRep](BusService, "host.AgentCommand")
	msgAgentEvent    = managementnode.NewOwnedMsg[agentEventReq, cloudbus.Empty](BusService, "host.AgentEvent")
)
