package kvm

import (
	"sync"
	"sync/atomic"
	"time"

	"mplane/agents/agentserver"
)

// tracker counts the commands running on each VM. The management node
// serializes the commands of one VM, so two at once on the same VM is a
// serialization violation: an overlap.
type tracker struct {
	mu          sync.Mutex
	inFlight    map[string]int
	running     int
	maxRunning  int
	overlaps    uint64
	overlapsBy  map[string]uint64
	lastOverlap time.Time
}

func newTracker() tracker {
	return tracker{inFlight: map[string]int{}, overlapsBy: map[string]uint64{}}
}

func (t *tracker) enter(vm string) func() {
	t.mu.Lock()
	if t.inFlight[vm] > 0 {
		t.overlaps++
		t.overlapsBy[vm]++
		t.lastOverlap = time.Now()
	}
	t.inFlight[vm]++
	t.running++
	t.maxRunning = max(t.maxRunning, t.running)
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			if t.inFlight[vm]--; t.inFlight[vm] <= 0 {
				delete(t.inFlight, vm)
			}
			t.running--
			t.mu.Unlock()
		})
	}
}

// Arrival is when a command arrived (before any check or latency).
type Arrival struct {
	At       time.Time `json:"at"`
	Path     string    `json:"path"`
	TaskUUID string    `json:"taskUuid,omitempty"`
	// VMUUID is set in /debug/vm-arrivals: when a command for that VM
	// started being handled (benchmarks measure API call to agent command).
	VMUUID string `json:"vmUuid,omitempty"`
	// Node and Fence are the sender's protocol.NodeHeader and
	// protocol.FenceHeader; Refused says the agent refused the command
	// (wrong secret, stale fencing token). Set in /debug/arrivals.
	Node    string `json:"node,omitempty"`
	Fence   string `json:"fence,omitempty"`
	Refused bool   `json:"refused,omitempty"`
}

// arrivalLog keeps the last n arrivals and counts them all.
type arrivalLog struct {
	mu    sync.Mutex
	ring  []Arrival
	next  int
	full  bool
	count uint64
	first time.Time
	last  time.Time
}

func newArrivalLog(n int) arrivalLog { return arrivalLog{ring: make([]Arrival, n)} }

func (l *arrivalLog) add(a Arrival) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count == 0 {
		l.first = a.At
	}
	l.count++
	l.last = a.At
	l.ring[l.next] = a
	l.next++
	if l.next == len(l.ring) {
		l.next, l.full = 0, true
	}
}

func (l *arrivalLog) list() []Arrival {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full {
		return append([]Arrival(nil), l.ring[:l.next]...)
	}
	out := make([]Arrival, 0, len(l.ring))
	out = append(out, l.ring[l.next:]...)
	return append(out, l.ring[:l.next]...)
}

type counters struct {
	mu       sync.Mutex
	commands map[string]uint64

	rejected, injectedFailures, injectedNoCallbacks, injectedLostReplies, staleFence atomic.Uint64
	eventsQueued, eventsDropped, eventsUnsent                                        atomic.Uint64
}

func (c *counters) countCommand(path string) {
	c.mu.Lock()
	if c.commands == nil {
		c.commands = map[string]uint64{}
	}
	c.commands[path]++
	c.mu.Unlock()
}

// ArrivalSummary summarizes the arrivals: how many, the first and last, and
// how many are kept for /debug/arrivals.
type ArrivalSummary struct {
	Count uint64    `json:"count"`
	Kept  int       `json:"kept"`
	First time.Time `json:"first,omitzero"`
	Last  time.Time `json:"last,omitzero"`
}

// Stats is what /debug/stats shows.
type Stats struct {
	// Commands counts arrivals by path (refused ones included).
	Commands map[string]uint64 `json:"commands"`
	// Rejected counts commands refused for a missing or wrong secret.
	Rejected uint64 `json:"rejected"`
	// Running is the number of VM commands running now; MaxRunning the
	// most at once.
	Running    int `json:"running"`
	MaxRunning int `json:"maxRunning"`
	// Overlaps counts VM commands that started while another command on
	// the same VM was running; OverlapsByVM breaks it down.
	Overlaps     uint64            `json:"overlaps"`
	OverlapsByVM map[string]uint64 `json:"overlapsByVm"`
	LastOverlap  time.Time         `json:"lastOverlap,omitzero"`

	InjectedFailures    uint64 `json:"injectedFailures"`
	InjectedNoCallbacks uint64 `json:"injectedNoCallbacks"`
	InjectedLostReplies uint64 `json:"injectedLostReplies"`
	// StaleFenceRefused counts commands refused for an old fencing token.
	StaleFenceRefused uint64 `json:"staleFenceRefused"`

	EventsQueued  uint64 `json:"eventsQueued"`
	EventsDropped uint64 `json:"eventsDropped"`
	// EventsUnsent counts events that happened while not connected.
	EventsUnsent uint64 `json:"eventsUnsent"`

	// VMs counts the VMs by state.
	VMs      map[string]int    `json:"vms"`
	Arrivals ArrivalSummary    `json:"arrivals"`
	Server   agentserver.Stats `json:"server"`
}

// Stats returns the agent's counters.
func (a *Agent) Stats() Stats {
	st := Stats{
		Commands:            map[string]uint64{},
		OverlapsByVM:        map[string]uint64{},
		VMs:                 map[string]int{},
		Rejected:            a.counters.rejected.Load(),
		InjectedFailures:    a.counters.injectedFailures.Load(),
		InjectedNoCallbacks: a.counters.injectedNoCallbacks.Load(),
		InjectedLostReplies: a.counters.injectedLostReplies.Load(),
		StaleFenceRefused:   a.counters.staleFence.Load(),
		EventsQueued:        a.counters.eventsQueued.Load(),
		EventsDropped:       a.counters.eventsDropped.Load(),
		EventsUnsent:        a.counters.eventsUnsent.Load(),
		Server:              a.srv.Stats(),
	}
	a.counters.mu.Lock()
	for p, n := range a.counters.commands {
		st.Commands[p] = n
	}
	a.counters.mu.Unlock()

	t := &a.tracker
	t.mu.Lock()
	st.Running, st.MaxRunning, st.Overlaps, st.LastOverlap = t.running, t.maxRunning, t.overlaps, t.lastOverlap
	for vm, n := range t.overlapsBy {
		st.OverlapsByVM[vm] = n
	}
	t.mu.Unlock()

	a.mu.Lock()
	for _, vm := range a.vms {
		st.VMs[vm.State]++
	}
	a.mu.Unlock()

	l := &a.arrivals
	l.mu.Lock()
	st.Arrivals = ArrivalSummary{Count: l.count, First: l.first, Last: l.last, Kept: l.next}
	if l.full {
		st.Arrivals.Kept = len(l.ring)
	}
	l.mu.Unlock()
	return st
}

// Arrivals returns the kept command arrivals, oldest first.
func (a *Agent) Arrivals() []Arrival { return a.arrivals.list() }

// VMArrivals lists when the kept VM commands reached their VM, oldest first.
func (a *Agent) VMArrivals() []Arrival { return a.vmArrivals.list() }
