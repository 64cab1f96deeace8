package agentserver

import (
	"sort"
	"sync/atomic"
	"time"
)

type counters struct {
	syncCalls, asyncStarted, duplicates, rejected, noReply, expired, panics atomic.Uint64
	callbacksDelivered, callbacksFailed, callbackRetries                    atomic.Uint64
	eventsDelivered, eventsFailed, eventRetries                             atomic.Uint64
}

// Stats are the server's counters since New.
type Stats struct {
	// Running is the number of async tasks whose handler is running or
	// whose result is being delivered.
	Running      int    `json:"running"`
	SyncCalls    uint64 `json:"syncCalls"`
	AsyncStarted uint64 `json:"asyncStarted"`
	// Duplicates counts async commands ignored because a task with their
	// task UUID was running.
	Duplicates uint64 `json:"duplicates"`
	// Rejected counts requests refused by Options.Admit.
	Rejected uint64 `json:"rejected"`
	// NoReply counts async handlers that returned ErrNoReply.
	NoReply uint64 `json:"noReply"`
	// Expired counts async handlers that failed because their command's
	// deadline passed; their result is not sent.
	Expired            uint64 `json:"expired"`
	Panics             uint64 `json:"panics"`
	CallbacksDelivered uint64 `json:"callbacksDelivered"`
	CallbacksFailed    uint64 `json:"callbacksFailed"`
	// CallbackRetries counts attempts beyond the first one.
	CallbackRetries uint64 `json:"callbackRetries"`
	EventsDelivered uint64 `json:"eventsDelivered"`
	EventsFailed    uint64 `json:"eventsFailed"`
	EventRetries    uint64 `json:"eventRetries"`
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.tasksMu.Lock()
	running := len(s.running)
	s.tasksMu.Unlock()
	c := &s.stats
	return Stats{
		Running:            running,
		SyncCalls:          c.syncCalls.Load(),
		AsyncStarted:       c.asyncStarted.Load(),
		Duplicates:         c.duplicates.Load(),
		Rejected:           c.rejected.Load(),
		NoReply:            c.noReply.Load(),
		Expired:            c.expired.Load(),
		Panics:             c.panics.Load(),
		CallbacksDelivered: c.callbacksDelivered.Load(),
		CallbacksFailed:    c.callbacksFailed.Load(),
		CallbackRetries:    c.callbackRetries.Load(),
		EventsDelivered:    c.eventsDelivered.Load(),
		EventsFailed:       c.eventsFailed.Load(),
		EventRetries:       c.eventRetries.Load(),
	}
}

// RunningTask describes an async task in progress.
type RunningTask struct {
	TaskUUID string    `json:"taskUuid"`
	Arrived  time.Time `json:"arrived"`
}

// RunningTasks lists the async tasks in progress, oldest first.
func (s *Server) RunningTasks() []RunningTask {
	s.tasksMu.Lock()
	out := make([]RunningTask, 0, len(s.running))
	for id, at := range s.running {
		out = append(out, RunningTask{TaskUUID: id, Arrived: at})
	}
	s.tasksMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Arrived.Before(out[j].Arrived) })
	return out
}
