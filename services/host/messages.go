package host

import (
	"encoding/json"

	"mplane/cloudbus"
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

// HostRef names a host.
type HostRef struct {
	UUID string `json:"uuid"`
}

// AgentCommandReq sends one command to a host's agent, in the host's chain.
// Sync paths (/host/echo, /host/connect) are answered by the agent at once;
// every other path is asynchronous (callback).
type AgentCommandReq struct {
	HostUUID string          `json:"hostUuid"`
	Path     string          `json:"path"`
	Command  json.RawMessage `json:"command,omitempty"`
}

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

// Messages of the host service.
var (
	MsgAddKVMHost    = cloudbus.NewMsg[AddKVMHostReq, HostVO]("host.AddKVMHost")
	MsgReconnectHost = cloudbus.NewMsg[HostRef, HostVO]("host.ReconnectHost")
	MsgDeleteHost    = cloudbus.NewMsg[HostRef, cloudbus.Empty]("host.DeleteHost")
	MsgGetHost       = cloudbus.NewMsg[HostRef, HostVO]("host.GetHost")
	MsgAgentCommand  = cloudbus.NewMsg[AgentCommandReq, AgentCommandRep]("host.AgentCommand")
	msgAgentEvent    = cloudbus.NewMsg[agentEventReq, cloudbus.Empty]("host.AgentEvent")
)
