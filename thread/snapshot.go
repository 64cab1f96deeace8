package thread

import (
	"slices"
	"strings"
	"time"
)

// QueueSnapshot describes the chain queue of one signature.
type QueueSnapshot struct {
	Signature string `json:"signature"`
	// Level is the Level of the task that starts next, or, with nothing
	// pending, of the task that started last.
	Level   int           `json:"level"`
	Running []RunningTask `json:"running"` // in start order
	Pending int           `json:"pending"`
	// OldestPendingAge is how long the oldest pending task has waited.
	OldestPendingAge time.Duration `json:"oldest_pending_age_ns"`
}

// RunningTask describes a task holding a slot of its queue.
type RunningTask struct {
	Name     string    `json:"name"`
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"`
	// TimedOut: the deadline has passed and the task's context is
	// cancelled; the watchdog releases the slot after the grace period.
	TimedOut bool `json:"timed_out"`
}

// Snapshot returns every queue with a pending or running task, sorted by
// signature. Abandoned tasks no longer hold a slot and are not listed;
// Stats counts them.
func (s *Scheduler) Snapshot() []QueueSnapshot {
	s.mu.Lock()
	now := s.clock.Now() // under the lock: no task submitted after it
	out := make([]QueueSnapshot, 0, len(s.queues))
	for _, q := range s.queues {
		qs := QueueSnapshot{
			Signature: q.sig,
			Level:     q.level,
			Running:   make([]RunningTask, 0, q.running.n),
			Pending:   q.pending.n,
		}
		if head := q.pending.head; head != nil {
			qs.Level = head.level
			qs.OldestPendingAge = now.Sub(head.submitted)
		}
		for t := q.running.head; t != nil; t = t.next {
			qs.Running = append(qs.Running, RunningTask{Name: t.name, Started: t.started, Deadline: t.deadline, TimedOut: t.timedOut})
		}
		out = append(out, qs)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b QueueSnapshot) int { return strings.Compare(a.Signature, b.Signature) })
	return out
}
