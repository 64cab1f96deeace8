package managementnode

import "mplane/cloudbus"

// Service is the bus service of the management node itself: each node
// consumes "mn.<nodeUUID>".
const Service = "mn"

// MemberEvent tells peers that membership changed; they re-read the ring
// from the database at once instead of waiting for the periodic resync.
type MemberEvent struct {
	NodeUUID string `json:"nodeUuid"`
	Epoch    int64  `json:"epoch"`
}

// Membership events.
var (
	EvNodeJoined  = cloudbus.NewEvent[MemberEvent]("node.joined")
	EvNodeLeaving = cloudbus.NewEvent[MemberEvent]("node.leaving")
	EvNodeLeft    = cloudbus.NewEvent[MemberEvent]("node.left")
)

// releaseReq asks the previous owner of partitions to answer once it runs
// no work for them under a ring of at least Epoch.
type releaseReq struct {
	Epoch      int64 `json:"epoch"`
	Partitions []int `json:"partitions"`
}

var msgAwaitRelease = cloudbus.NewMsg[releaseReq, cloudbus.Empty]("mn.AwaitRelease")

// ProbeReq asks the owner of a resource to identify itself. It is a
// resource message like any service's: routed, forwarded and held the same
// way, so it shows where a resource's work would run. SleepMs keeps the
// owner busy on it (for drills of failover and drain).
type ProbeReq struct {
	ResourceUUID string `json:"resourceUuid"`
	SleepMs      int    `json:"sleepMs,omitempty"`
}

// ProbeReply names the node that handled a probe.
type ProbeReply struct {
	NodeUUID string `json:"nodeUuid"`
	Epoch    int64  `json:"epoch"`
	Hops     int    `json:"hops"`
}

// MsgProbe is the probe message, served on "mn.<node>".
var MsgProbe = cloudbus.NewMsg[ProbeReq, ProbeReply]("mn.Probe")
