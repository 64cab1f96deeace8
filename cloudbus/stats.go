package cloudbus

import (
	"sort"
	"sync"
	"sync/atomic"
)

type stats struct {
	sent, returned, timeouts, lateReplies, expired atomic.Int64
	malformed, unknown, panics, events             atomic.Int64
	byName                                         sync.Map // name -> *atomic.Int64
}

func (s *stats) handled(name string) {
	v, ok := s.byName.Load(name)
	if !ok {
		v, _ = s.byName.LoadOrStore(name, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// Stats are a bus's counters since it was created.
type Stats struct {
	// Sent counts messages published by Call and Send.
	Sent int64 `json:"sent"`
	// Returned counts messages no queue took (dead or unknown target).
	Returned int64 `json:"returned"`
	// Timeouts counts calls that reached their deadline without a reply.
	Timeouts int64 `json:"timeouts"`
	// LateReplies counts replies dropped because their caller had gone.
	LateReplies int64 `json:"lateReplies"`
	// Expired counts messages dropped unhandled because their deadline had
	// passed when they arrived.
	Expired int64 `json:"expired"`
	// Malformed counts undecodable envelopes; Unknown, messages with no
	// handler; Panics, handler panics; Events, events delivered.
	Malformed int64 `json:"malformed"`
	Unknown   int64 `json:"unknown"`
	Panics    int64 `json:"panics"`
	Events    int64 `json:"events"`
	// Handled counts handled messages by name.
	Handled map[string]int64 `json:"handled"`
}

// Stats returns a snapshot of the counters.
func (b *Bus) Stats() Stats {
	s := &b.stats
	out := Stats{
		Sent: s.sent.Load(), Returned: s.returned.Load(), Timeouts: s.timeouts.Load(),
		LateReplies: s.lateReplies.Load(), Expired: s.expired.Load(), Malformed: s.malformed.Load(),
		Unknown: s.unknown.Load(), Panics: s.panics.Load(), Events: s.events.Load(),
		Handled: map[string]int64{},
	}
	s.byName.Range(func(k, v any) bool {
		out.Handled[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// HandledNames lists the names in Stats.Handled, sorted (for stable output).
func (s Stats) HandledNames() []string {
	names := make([]string, 0, len(s.Handled))
	for n := range s.Handled {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
