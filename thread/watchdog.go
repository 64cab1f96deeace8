package thread

import (
	"context"
	"errors"
	"fmt"
)

// The watchdog is a pair of timers per task rather than a goroutine: the
// deadline timer, armed at submission, and the grace timer, armed when a
// running task's context ends. Both callbacks take Scheduler.mu and check
// the task's state first, so a timer that fires while the task completes
// does nothing.

// onDeadline runs when t's deadline passes: a pending task completes with
// ErrTimeout without running; a running task has its context cancelled and
// its grace period begins.
func (s *Scheduler) onDeadline(t *task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch t.state {
	case statePending:
		q := t.q
		s.removePendingLocked(t)
		s.expireLocked(t)
		// t may have been the head, held back by its Level.
		s.dispatchLocked(q)
	case stateRunning:
		s.timeOutLocked(t)
	}
}

// onParentDone runs when the submitter's context ends: a pending task
// completes with the context's error without running (ErrTimeout for a
// deadline); for a running task, whose context is derived from the
// submitter's and so already cancelled, the grace period begins.
func (s *Scheduler) onParentDone(t *task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch t.state {
	case statePending:
		q := t.q
		s.removePendingLocked(t)
		s.cancelPendingLocked(t)
		s.dispatchLocked(q)
	case stateRunning:
		if errors.Is(t.parent.Err(), context.DeadlineExceeded) {
			s.timeOutLocked(t)
		} else {
			s.armGraceLocked(t)
		}
	}
}

func (s *Scheduler) timeOutLocked(t *task) {
	if t.timedOut {
		return
	}
	t.timedOut = true
	s.stats.deadlineCancels.Add(1)
	t.cancel(fmt.Errorf("task %q on %q: deadline passed: %w", t.name, t.q.sig, ErrTimeout))
	s.armGraceLocked(t)
}

func (s *Scheduler) armGraceLocked(t *task) {
	if t.graceT == nil {
		t.graceT = s.clock.AfterFunc(s.grace, func() { s.onGrace(t) })
	}
}

// onGrace runs when a running task has ignored the end of its context for
// the grace period. Its slot goes to the next task, its caller gets
// ErrTimeout, and its goroutine is left to return whenever it does (finish
// then logs the late return).
func (s *Scheduler) onGrace(t *task) {
	s.mu.Lock()
	if t.state != stateRunning {
		s.mu.Unlock()
		return
	}
	q := t.q
	q.running.remove(t)
	s.nrunning--
	s.nabandoned++
	t.state = stateAbandoned
	s.stopTimersLocked(t)
	cause := context.Cause(t.ctx)
	err := fmt.Errorf("task %q on %q abandoned by the watchdog %s after its context ended: %w",
		t.name, q.sig, s.grace, ErrTimeout)
	if !errors.Is(cause, ErrTimeout) {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	s.stats.watchdogReleases.Add(1)
	t.job.complete(err, false)
	s.dispatchLocked(q)
	ranFor := s.clock.Now().Sub(t.started)
	s.mu.Unlock()

	s.log.Warn("watchdog released stuck task", "signature", q.sig, "task", t.name,
		"ran_for", ranFor, "deadline", t.deadline, "grace", s.grace, "cause", cause)
}
