package thread

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultGrace   = 5 * time.Second
	DefaultTimeout = 30 * time.Minute
)

// Options configures a Scheduler. The zero value is ready to use.
type Options struct {
	// Clock drives deadlines, the watchdog's grace period and periodic
	// intervals. Nil means the wall clock.
	Clock Clock
	// Logger receives watchdog releases, late returns, panics and periodic
	// failures. Nil discards them.
	Logger *slog.Logger
	// Grace is how long a running task may go on after its context was
	// cancelled (deadline passed or submitter cancelled) before the
	// watchdog releases its slot. Zero means DefaultGrace.
	Grace time.Duration
	// DefaultTimeout bounds a task that has no other deadline, counted
	// from submission. Zero means DefaultTimeout.
	DefaultTimeout time.Duration
}

// Scheduler runs chain tasks keyed by signature, sync tasks and periodic
// tasks. See the package documentation for its guarantees. A Scheduler
// starts no goroutine of its own: a goroutine per running task, one per
// periodic task, and the Clock's timer callbacks.
type Scheduler struct {
	clock          Clock
	log            *slog.Logger
	grace          time.Duration
	defaultTimeout time.Duration

	mu         sync.Mutex
	queues     map[string]*queue
	fences     []*fence
	loops      map[*loop]struct{}
	stopped    bool
	npending   int           // tasks in every queue's pending list
	nrunning   int           // tasks holding a slot
	nabandoned int           // released by the watchdog, function not returned yet
	nlive      int           // task goroutines that have not finished
	quiet      chan struct{} // closed by notifyLocked when Drain may return

	stats counters
}

// New returns a Scheduler configured by opts.
func New(opts Options) *Scheduler {
	s := &Scheduler{
		clock:          opts.Clock,
		log:            opts.Logger,
		grace:          opts.Grace,
		defaultTimeout: opts.DefaultTimeout,
		queues:         make(map[string]*queue),
		loops:          make(map[*loop]struct{}),
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "thread")
	if s.grace <= 0 {
		s.grace = DefaultGrace
	}
	if s.defaultTimeout <= 0 {
		s.defaultTimeout = DefaultTimeout
	}
	return s
}

// Start does nothing: a scheduler runs from New. It is there so that every
// component of a node has one lifecycle, Start then Stop.
func (s *Scheduler) Start(context.Context) error { return nil }

// Stop makes the scheduler refuse new tasks and periodic tasks with
// ErrStopped, completes every pending task with ErrStopped (none of them
// will run), cancels the periodic tasks, then waits as Drain does for the
// running tasks to finish, until ctx ends (an error wrapping ctx.Err()).
// The refusal takes effect before Stop returns whatever ctx is, so a done
// ctx stops the scheduler without waiting. Stop is idempotent.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.stop()
	return s.Drain(ctx)
}

func (s *Scheduler) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	for _, q := range s.queues {
		s.evictLocked(q, ErrStopped)
	}
	cancels := make([]context.CancelFunc, 0, len(s.loops))
	for l := range s.loops {
		cancels = append(cancels, l.cancel)
	}
	s.notifyLocked()
	s.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
}

// Drain waits until no task is pending or running and every task goroutine
// the scheduler started has returned, including those the watchdog
// abandoned; after Stop it also waits for every periodic task to return.
// It returns nil once that holds, or an error wrapping ctx.Err() when ctx
// ends first. Drain does not stop the scheduler: Stop does, then drains;
// Drain alone waits for the scheduler to go idle.
func (s *Scheduler) Drain(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.quietLocked() {
			s.mu.Unlock()
			return nil
		}
		if s.quiet == nil {
			s.quiet = make(chan struct{})
		}
		ch := s.quiet
		pending, running, abandoned, loops := s.npending, s.nrunning, s.nabandoned, len(s.loops)
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("thread: drain with %d pending, %d running, %d abandoned tasks and %d periodic tasks: %w",
				pending, running, abandoned, loops, ctx.Err())
		}
	}
}

func (s *Scheduler) quietLocked() bool {
	return s.npending == 0 && s.nlive == 0 && (!s.stopped || len(s.loops) == 0)
}

// notifyLocked wakes Drain callers once the scheduler is quiet. Call it
// after any counter Drain looks at went down.
func (s *Scheduler) notifyLocked() {
	if s.quiet != nil && s.quietLocked() {
		close(s.quiet)
		s.quiet = nil
	}
}

type fence struct{ match func(sig string) bool }

// Fence rejects, until lift is called, every new task whose signature
// matches, with ErrFenced, and completes the matching pending tasks with
// ErrFenced. Running tasks are left alone. A management node uses it for
// the resources it no longer owns after a ring change.
//
// match is called with the scheduler's lock held, on every submission: it
// must be fast and must not call the Scheduler. lift is idempotent.
func (s *Scheduler) Fence(match func(sig string) bool) (lift func()) {
	f := &fence{match: match}
	s.mu.Lock()
	s.fences = append(s.fences, f)
	for sig, q := range s.queues {
		if match(sig) {
			s.evictLocked(q, ErrFenced)
		}
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.fences = slices.DeleteFunc(s.fences, func(g *fence) bool { return g == f })
		s.mu.Unlock()
	}
}

func (s *Scheduler) fencedLocked(sig string) bool {
	for _, f := range s.fences {
		if f.match(sig) {
			return true
		}
	}
	return false
}

// evictLocked completes every pending task of q with reason (ErrStopped or
// ErrFenced).
func (s *Scheduler) evictLocked(q *queue, reason error) {
	for t := q.pending.head; t != nil; t = q.pending.head {
		s.removePendingLocked(t)
		s.stats.evicted.Add(1)
		s.completeUnstartedLocked(t, fmt.Errorf("task %q on %q not started: %w", t.name, q.sig, reason))
	}
	s.dropIfIdleLocked(q)
}
