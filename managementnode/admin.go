package managementnode

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"mplane/cloudbus"
	"mplane/thread"
)

// Status is the node's answer at /admin/status.
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

// RingInfo is the answer at /admin/ring.
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

// BusInfo is the answer at /admin/bus.
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

// AdminHandler serves, as JSON (in the spirit of Ceph's admin socket):
// /admin/status, /admin/ring, /admin/queues (chain queues) and /admin/bus
// (pending calls and counters).
func (n *Node) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, n.Status()) })
	mux.HandleFunc("GET /admin/ring", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, n.RingInfo()) })
	mux.HandleFunc("GET /admin/queues", func(w http.ResponseWriter, _ *http.Request) {
		var snap []thread.QueueSnapshot
		if n.opts.Scheduler != nil {
			snap = n.opts.Scheduler.Snapshot()
		}
		if snap == nil {
			snap = []thread.QueueSnapshot{}
		}
		writeJSON(w, map[string]any{"queues": snap, "at": time.Now().UTC()})
	})
	mux.HandleFunc("GET /admin/bus", func(w http.ResponseWriter, _ *http.Request) {
		p := n.bus.Pending()
		if p == nil {
			p = []cloudbus.PendingCall{}
		}
		writeJSON(w, BusInfo{Pending: p, Stats: n.bus.Stats()})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
