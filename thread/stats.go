package thread

import (
	"sync/atomic"
	"time"
)

// Stats is a point-in-time copy of a Scheduler's metrics, for an admin
// endpoint or an exporter. Counters only grow; gauges are current values.
// Each field is read atomically, but the fields are not read at one
// instant, so under load they need not add up exactly.
type Stats struct {
	// Counters.
	Submitted        uint64 `json:"submitted"`         // accepted by Submit
	Rejected         uint64 `json:"rejected"`          // refused by Submit (stopped, fenced, queue full, expired, invalid)
	Started          uint64 `json:"started"`           // functions called
	Finished         uint64 `json:"finished"`          // functions returned while holding their slot
	Panics           uint64 `json:"panics"`            // task and periodic functions that panicked
	Timeouts         uint64 `json:"timeouts"`          // pending tasks whose deadline passed: never ran
	Canceled         uint64 `json:"canceled"`          // pending tasks whose context was cancelled: never ran
	Superseded       uint64 `json:"superseded"`        // pending tasks replaced by a newer one with the same DedupKey
	Evicted          uint64 `json:"evicted"`           // pending tasks dropped by Stop or Fence
	DeadlineCancels  uint64 `json:"deadline_cancels"`  // running tasks whose deadline passed
	WatchdogReleases uint64 `json:"watchdog_releases"` // running tasks abandoned after the grace period
	LateReturns      uint64 `json:"late_returns"`      // abandoned tasks whose function returned later
	PeriodicRuns     uint64 `json:"periodic_runs"`
	PeriodicFailures uint64 `json:"periodic_failures"` // errors and panics

	// Gauges.
	Queues    int `json:"queues"`    // signatures with a pending or running task
	Pending   int `json:"pending"`   // queue depth, all signatures together
	Running   int `json:"running"`   // tasks holding a slot
	Abandoned int `json:"abandoned"` // abandoned tasks whose function has not returned yet
	Periodic  int `json:"periodic"`  // periodic tasks

	// Wait is the time from submission to start, Run from start to the
	// function's return (late returns included).
	Wait Histogram `json:"wait"`
	Run  Histogram `json:"run"`
}

// Histogram is a cumulative duration histogram in the Prometheus manner.
type Histogram struct {
	Count   uint64        `json:"count"`
	Sum     time.Duration `json:"sum_ns"`
	Buckets []Bucket      `json:"buckets"` // ascending; the +Inf bucket is Count
}

// Bucket counts the observations less than or equal to UpperBound.
type Bucket struct {
	UpperBound time.Duration `json:"le_ns"`
	Count      uint64        `json:"count"`
}

// Stats returns the scheduler's metrics.
func (s *Scheduler) Stats() Stats {
	c := &s.stats
	st := Stats{
		Submitted:        c.submitted.Load(),
		Rejected:         c.rejected.Load(),
		Started:          c.started.Load(),
		Finished:         c.finished.Load(),
		Panics:           c.panics.Load(),
		Timeouts:         c.timeouts.Load(),
		Canceled:         c.canceled.Load(),
		Superseded:       c.superseded.Load(),
		Evicted:          c.evicted.Load(),
		DeadlineCancels:  c.deadlineCancels.Load(),
		WatchdogReleases: c.watchdogReleases.Load(),
		LateReturns:      c.lateReturns.Load(),
		PeriodicRuns:     c.periodicRuns.Load(),
		PeriodicFailures: c.periodicFailures.Load(),
		Wait:             c.wait.snapshot(),
		Run:              c.run.snapshot(),
	}
	s.mu.Lock()
	st.Queues, st.Pending, st.Running = len(s.queues), s.npending, s.nrunning
	st.Abandoned, st.Periodic = s.nabandoned, len(s.loops)
	s.mu.Unlock()
	return st
}

type counters struct {
	submitted, rejected, started, finished, panics atomic.Uint64
	timeouts, canceled, superseded, evicted        atomic.Uint64
	deadlineCancels, watchdogReleases, lateReturns atomic.Uint64
	periodicRuns, periodicFailures                 atomic.Uint64
	wait, run                                      histogram
}

// bucketBounds spans a hand-off on an idle queue to an agent call that
// waits for its callback.
var bucketBounds = [...]time.Duration{
	100 * time.Microsecond, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond,
	time.Second, 10 * time.Second, time.Minute, 10 * time.Minute,
}

type histogram struct {
	counts [len(bucketBounds) + 1]atomic.Uint64 // per bucket, not cumulative; last is +Inf
	sum    atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(bucketBounds) && d > bucketBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Sum: time.Duration(h.sum.Load()), Buckets: make([]Bucket, len(bucketBounds))}
	for i := range h.counts {
		out.Count += h.counts[i].Load()
		if i < len(bucketBounds) {
			out.Buckets[i] = Bucket{UpperBound: bucketBounds[i], Count: out.Count}
		}
	}
	return out
}
