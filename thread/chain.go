package thread

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// submit validates spec, fills in t and queues it. On error t is not
// queued and its job is never called.
func (s *Scheduler) submit(ctx context.Context, spec Task, t *task) error {
	if spec.Signature == "" {
		s.stats.rejected.Add(1)
		return fmt.Errorf("thread: task %q has no signature", spec.Name)
	}
	now := s.clock.Now()
	t.name, t.dedupKey, t.level = spec.Name, spec.DedupKey, max(spec.Level, 1)
	t.submitted, t.deadline, t.parent = now, s.deadlineFor(ctx, spec, now), ctx
	if err := ctx.Err(); err != nil {
		s.stats.rejected.Add(1)
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("task %q on %q: %w", spec.Name, spec.Signature, ErrTimeout)
		}
		return fmt.Errorf("task %q on %q: %w", spec.Name, spec.Signature, context.Cause(ctx))
	}
	if !now.Before(t.deadline) {
		s.stats.rejected.Add(1)
		return fmt.Errorf("task %q on %q: deadline %s already passed: %w",
			spec.Name, spec.Signature, t.deadline.Format(time.RFC3339Nano), ErrTimeout)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		s.stats.rejected.Add(1)
		return fmt.Errorf("task %q on %q: %w", spec.Name, spec.Signature, ErrStopped)
	}
	if len(s.fences) > 0 && s.fencedLocked(spec.Signature) {
		s.stats.rejected.Add(1)
		return fmt.Errorf("task %q on %q: %w", spec.Name, spec.Signature, ErrFenced)
	}
	q := s.queues[spec.Signature]
	if q == nil {
		q = &queue{sig: spec.Signature}
		s.queues[spec.Signature] = q
	}
	var old *task
	if t.dedupKey != "" {
		old = q.dedup[t.dedupKey]
	}
	if old == nil && spec.MaxPending > 0 && q.pending.n >= spec.MaxPending {
		s.stats.rejected.Add(1)
		return fmt.Errorf("task %q on %q: %d tasks pending: %w", spec.Name, spec.Signature, q.pending.n, ErrQueueFull)
	}
	if old != nil {
		s.removePendingLocked(old)
		s.stats.superseded.Add(1)
		s.completeUnstartedLocked(old, fmt.Errorf("task %q on %q: %w", old.name, q.sig, ErrSuperseded))
	}

	t.q = q
	t.state = statePending
	q.pending.pushBack(t)
	s.npending++
	if t.dedupKey != "" {
		if q.dedup == nil {
			q.dedup = make(map[string]*task)
		}
		q.dedup[t.dedupKey] = t
	}
	t.deadlineT = s.clock.AfterFunc(t.deadline.Sub(now), func() { s.onDeadline(t) })
	if ctx.Done() != nil {
		t.stopParent = context.AfterFunc(ctx, func() { s.onParentDone(t) })
	}
	s.stats.submitted.Add(1)
	s.dispatchLocked(q)
	return nil
}

// deadlineFor is the earliest of the context's deadline, spec.Deadline and
// now+spec.Timeout, or now+DefaultTimeout when none is set.
func (s *Scheduler) deadlineFor(ctx context.Context, spec Task, now time.Time) time.Time {
	var d time.Time
	earliest := func(x time.Time) {
		if !x.IsZero() && (d.IsZero() || x.Before(d)) {
			d = x
		}
	}
	if cd, ok := ctx.Deadline(); ok {
		earliest(cd)
	}
	earliest(spec.Deadline)
	if spec.Timeout > 0 {
		earliest(now.Add(spec.Timeout))
	}
	if d.IsZero() {
		d = now.Add(s.defaultTimeout)
	}
	return d
}

// dispatchLocked starts the head of q's pending list while it fits under
// its Level, and forgets q once it is idle. It never calls a task
// function: each started task runs on its own goroutine.
func (s *Scheduler) dispatchLocked(q *queue) {
	var now time.Time
	for t := q.pending.head; t != nil && q.running.n < t.level; t = q.pending.head {
		if now.IsZero() {
			now = s.clock.Now()
		}
		s.removePendingLocked(t)
		// The deadline timer or the context callback may be about to fire
		// and be waiting for the lock: decide here, so that a task whose
		// deadline has passed never runs.
		if !now.Before(t.deadline) {
			s.expireLocked(t)
			continue
		}
		if t.parent.Err() != nil {
			s.cancelPendingLocked(t)
			continue
		}
		s.startLocked(t, now)
	}
	s.dropIfIdleLocked(q)
}

func (s *Scheduler) startLocked(t *task, now time.Time) {
	q := t.q
	t.state = stateRunning
	t.started = now
	q.running.pushBack(t)
	q.level = t.level
	s.nrunning++
	s.nlive++
	ctx, cancel := context.WithCancelCause(t.parent)
	t.ctx, t.cancel = &taskContext{Context: ctx, deadline: t.deadline}, cancel
	s.stats.started.Add(1)
	s.stats.wait.observe(now.Sub(t.submitted))
	go s.execute(t)
}

// execute is the goroutine of one task. t.ctx, t.job, t.q, t.name and
// t.started are not written after startLocked, so it reads them unlocked.
func (s *Scheduler) execute(t *task) {
	err := s.call(t)
	s.finish(t, err)
}

func (s *Scheduler) call(t *task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Signature: t.q.sig, Task: t.name, Value: r, Stack: debug.Stack()}
		}
	}()
	return t.job.run(t.ctx)
}

// finish releases t's slot, publishes its result and starts the next task,
// unless the watchdog has already done all that (a late return).
func (s *Scheduler) finish(t *task, err error) {
	ranFor := s.clock.Now().Sub(t.started)
	s.stats.run.observe(ranFor)
	if pe, ok := errors.AsType[*PanicError](err); ok {
		// Logged as well as returned: a panic is a bug, and the caller
		// may well treat the error as an ordinary failure.
		s.stats.panics.Add(1)
		s.log.Error("task panicked", "signature", pe.Signature, "task", pe.Task,
			"panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
	}

	s.mu.Lock()
	if t.state == stateAbandoned {
		t.state = stateDone
		s.nabandoned--
		s.mu.Unlock()
		s.stats.lateReturns.Add(1)
		s.log.Warn("abandoned task returned", "signature", t.q.sig, "task", t.name,
			"ran_for", ranFor, "err", err)
		s.mu.Lock()
		s.nlive--
		s.notifyLocked()
		s.mu.Unlock()
		return
	}
	q := t.q
	q.running.remove(t)
	s.nrunning--
	t.state = stateDone
	s.stopTimersLocked(t)
	t.cancel(nil)
	if err != nil && t.timedOut && !errors.Is(err, ErrTimeout) {
		err = fmt.Errorf("task %q on %q: %w: %w", t.name, q.sig, ErrTimeout, err)
	}
	s.stats.finished.Add(1) // counters before results, so that a caller sees them
	t.job.complete(err, true)
	s.dispatchLocked(q)
	s.nlive--
	s.notifyLocked()
	s.mu.Unlock()
}

// removePendingLocked takes t out of its queue's pending list. The caller
// then starts or completes it.
func (s *Scheduler) removePendingLocked(t *task) {
	q := t.q
	q.pending.remove(t)
	if t.dedupKey != "" && q.dedup[t.dedupKey] == t {
		delete(q.dedup, t.dedupKey)
	}
	s.npending--
}

// completeUnstartedLocked completes a task removed from its pending list
// that will never run.
func (s *Scheduler) completeUnstartedLocked(t *task, err error) {
	t.state = stateDone
	s.stopTimersLocked(t)
	t.job.complete(err, false)
	s.notifyLocked()
}

func (s *Scheduler) expireLocked(t *task) {
	s.stats.timeouts.Add(1)
	s.completeUnstartedLocked(t, fmt.Errorf("task %q on %q timed out before it started: %w", t.name, t.q.sig, ErrTimeout))
}

func (s *Scheduler) cancelPendingLocked(t *task) {
	if errors.Is(t.parent.Err(), context.DeadlineExceeded) {
		s.expireLocked(t)
		return
	}
	s.stats.canceled.Add(1)
	s.completeUnstartedLocked(t, fmt.Errorf("task %q on %q canceled before it started: %w", t.name, t.q.sig, context.Cause(t.parent)))
}

func (s *Scheduler) stopTimersLocked(t *task) {
	if t.deadlineT != nil {
		t.deadlineT.Stop()
	}
	if t.graceT != nil {
		t.graceT.Stop()
	}
	if t.stopParent != nil {
		t.stopParent()
	}
}

func (s *Scheduler) dropIfIdleLocked(q *queue) {
	if q.idle() && s.queues[q.sig] == q {
		delete(s.queues, q.sig)
	}
}
