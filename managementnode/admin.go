package managementnode

import (
	"context"
	"sort"
	"strconv"
	"time"

	"mplane/admin"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/thread"
)

// Status is the answer of the admin command status (GET /admin/status).
type Status struct {
	NodeUUID        string `json:"nodeUuid"`
	State           string `json:"state"`
	Host            string `json:"host"`
	APIPort         int    `json:"apiPort"`
	Epoch           int64  `json:"epoch"`
	Members         int    `json:"members"`
	PartitionsOwned int    `json:"partitionsOwned"`
	Inflight        int64  `json:"inflight"`
	ProbesHandled   int64  `json:"probesHandled"`
	Awaiting        int    `json:"partitionsAwaitingRelease"`
}

// RingInfo is the answer of the admin command ring (GET /admin/ring).
type RingInfo struct {
	Epoch      int64        `json:"epoch"`
	Partitions int          `json:"partitions"`
	Members    []RingMember `json:"members"`
}

// RingMember is one member and how many partitions it owns.
type RingMember struct {
	UUID       string `json:"uuid"`
	Partitions int    `json:"partitions"`
}

// BusInfo is the answer of the admin command bus (GET /admin/bus).
type BusInfo struct {
	Pending []cloudbus.PendingCall `json:"pending"`
	Stats   cloudbus.Stats         `json:"stats"`
}

// Status reports the node's state.
func (n *Node) Status() Status {
	r := n.Ring()
	n.handover.mu.Lock()
	awaiting := len(n.handover.waits)
	n.handover.mu.Unlock()
	return Status{
		NodeUUID: n.uuid, State: n.State(), Host: n.opts.Host, APIPort: n.opts.APIPort,
		Epoch: r.Epoch, Members: len(r.Members), PartitionsOwned: r.PartitionsOf()[n.uuid],
		Inflight: n.Inflight(), ProbesHandled: n.probes.Load(), Awaiting: awaiting,
	}
}

// RingInfo describes the current ring.
func (n *Node) RingInfo() RingInfo {
	r := n.Ring()
	counts := r.PartitionsOf()
	info := RingInfo{Epoch: r.Epoch, Partitions: Partitions, Members: []RingMember{}}
	for _, m := range r.Members {
		info.Members = append(info.Members, RingMember{UUID: m, Partitions: counts[m]})
	}
	sort.Slice(info.Members, func(i, j int) bool { return info.Members[i].UUID < info.Members[j].UUID })
	return info
}

// AdminCommands are the node's admin commands (mplane/admin), served on
// the admin socket and under /admin/ over HTTP: status, ring, queues (the
// scheduler's chain queues), bus (pending calls and counters), locks (the
// cluster transactions' locks) and probe.
func (n *Node) AdminCommands() []admin.Command {
	return []admin.Command{
		{Name: "status", ReadOnly: true, Description: "this node: UUID, state, ring epoch, members, partitions owned, in-flight work",
			Run: func(context.Context, []string) (any, error) { return n.Status(), nil }},
		{Name: "ring", ReadOnly: true, Description: "the consistent-hash ring: epoch, members and the partitions each owns",
			Run: func(context.Context, []string) (any, error) { return n.RingInfo(), nil }},
		{Name: "queues", ReadOnly: true, Description: "the chain queues with running or pending tasks (the scheduler's snapshot)",
			Run: func(context.Context, []string) (any, error) {
				var snap []thread.QueueSnapshot
				if n.opts.Scheduler != nil {
					snap = n.opts.Scheduler.Snapshot()
				}
				if snap == nil {
					snap = []thread.QueueSnapshot{}
				}
				return map[string]any{"queues": snap, "at": time.Now().UTC()}, nil
			}},
		{Name: "bus", ReadOnly: true, Description: "the message bus: calls waiting for a reply, and the counters",
			Run: func(context.Context, []string) (any, error) {
				p := n.bus.Pending()
				if p == nil {
					p = []cloudbus.PendingCall{}
				}
				return BusInfo{Pending: p, Stats: n.bus.Stats()}, nil
			}},
		{Name: "locks", ReadOnly: true, Description: "the cluster transactions' locks this node holds: scope, transaction, originator, lease expiry",
			Run: func(context.Context, []string) (any, error) {
				return map[string]any{"locks": n.TxnLocks(), "at": time.Now().UTC()}, nil
			}},
		{Name: "probe", ReadOnly: true, Description: "ask the owner of a resource, through this node's ring, to identify itself",
			Args: []admin.Arg{
				{Name: "RESOURCE", Description: "a resource UUID (any string hashes to an owner)"},
				{Name: "SLEEP_MS", Query: "sleepMs", Optional: true, Description: "keep the owner busy this many milliseconds (drills of failover and drain)"},
			},
			Run: func(ctx context.Context, args []string) (any, error) {
				var sleep time.Duration
				if len(args) > 1 {
					ms, err := strconv.Atoi(args[1])
					if err != nil || ms < 0 {
						return nil, errcode.New(errcode.InvalidArgument, "probe: SLEEP_MS must be a non-negative integer, got %q", args[1])
					}
					sleep = time.Duration(ms) * time.Millisecond
				}
				return n.Probe(ctx, args[0], sleep)
			}},
	}
}
