package thread

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// Defaults for the zero values of WorkQueueOptions.
const (
	DefaultBaseDelay = 5 * time.Millisecond
	DefaultMaxDelay  = 5 * time.Minute
)

// WorkQueueOptions configures a WorkQueue. The zero value is ready to use.
type WorkQueueOptions struct {
	// Name identifies the queue in logs.
	Name string
	// Clock drives AddAfter and AddRateLimited. Nil means the wall clock.
	Clock Clock
	// Logger receives the errors and panics of Run's function. Nil
	// discards them.
	Logger *slog.Logger
	// BaseDelay is the first retry delay of AddRateLimited; it doubles
	// with every further failure of the same key, up to MaxDelay. Zero
	// means DefaultBaseDelay and DefaultMaxDelay.
	BaseDelay time.Duration
	MaxDelay  time.Duration
}

// WorkQueue is a coalescing queue of keys for level-based reconciliation,
// with the semantics of client-go's util/workqueue:
//
//   - a key is queued at most once: adding a key that is already queued
//     does nothing;
//   - a key handed out by Get is never handed out again before Done: adds
//     while it is being processed coalesce into exactly one more run, which
//     is queued when Done is called;
//   - keys are handed out in the order they were (first) queued.
//
// The zero value is not usable; call NewWorkQueue.
type WorkQueue[K comparable] struct {
	name   string
	clock  Clock
	log    *slog.Logger
	base   time.Duration
	maxDel time.Duration

	mu           sync.Mutex
	cond         sync.Cond // signalled when queue grows or on shutdown
	queue        []K
	dirty        map[K]struct{} // needs a run: queued, or processing and re-added
	processing   map[K]struct{}
	waiting      map[K]*delayed // AddAfter not yet due
	failures     map[K]int
	shuttingDown bool
}

type delayed struct {
	when  time.Time
	timer Timer
}

// NewWorkQueue returns an empty WorkQueue configured by opts.
func NewWorkQueue[K comparable](opts WorkQueueOptions) *WorkQueue[K] {
	q := &WorkQueue[K]{
		name:       opts.Name,
		clock:      opts.Clock,
		log:        opts.Logger,
		base:       opts.BaseDelay,
		maxDel:     opts.MaxDelay,
		dirty:      make(map[K]struct{}),
		processing: make(map[K]struct{}),
		waiting:    make(map[K]*delayed),
		failures:   make(map[K]int),
	}
	q.cond.L = &q.mu
	if q.clock == nil {
		q.clock = realClock{}
	}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	q.log = q.log.With("component", "workqueue", "queue", q.name)
	if q.base <= 0 {
		q.base = DefaultBaseDelay
	}
	if q.maxDel <= 0 {
		q.maxDel = DefaultMaxDelay
	}
	q.maxDel = max(q.maxDel, q.base)
	return q
}

// Add marks key as needing a run. It does nothing after ShutDown.
func (q *WorkQueue[K]) Add(key K) {
	q.mu.Lock()
	q.addLocked(key)
	q.mu.Unlock()
}

func (q *WorkQueue[K]) addLocked(key K) {
	if q.shuttingDown {
		return
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	q.dirty[key] = struct{}{}
	if _, ok := q.processing[key]; ok {
		return // Done queues it
	}
	q.queue = append(q.queue, key)
	q.cond.Signal()
}

// AddAfter adds key once d has elapsed. While a delayed add of key is
// waiting, only an earlier one replaces it.
func (q *WorkQueue[K]) AddAfter(key K, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shuttingDown {
		return
	}
	when := q.clock.Now().Add(d)
	if w, ok := q.waiting[key]; ok {
		if !when.Before(w.when) {
			return
		}
		w.timer.Stop()
	}
	w := &delayed{when: when}
	w.timer = q.clock.AfterFunc(d, func() { q.fire(key, w) })
	q.waiting[key] = w
}

func (q *WorkQueue[K]) fire(key K, w *delayed) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiting[key] != w {
		return // replaced by an earlier AddAfter, or shut down
	}
	delete(q.waiting, key)
	q.addLocked(key)
}

// AddRateLimited adds key after its backoff delay and counts one more
// failure for it: BaseDelay after the first, doubling up to MaxDelay.
func (q *WorkQueue[K]) AddRateLimited(key K) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	q.AddAfter(key, q.backoff(n))
}

// backoff is the delay after n earlier failures.
func (q *WorkQueue[K]) backoff(n int) time.Duration {
	d := q.base
	for range n {
		if d >= q.maxDel/2 {
			return q.maxDel
		}
		d *= 2
	}
	return d
}

// Forget clears key's failure count, once it has been processed
// successfully.
func (q *WorkQueue[K]) Forget(key K) {
	q.mu.Lock()
	delete(q.failures, key)
	q.mu.Unlock()
}

// NumRequeues is the number of failures counted for key since its last
// Forget.
func (q *WorkQueue[K]) NumRequeues(key K) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Get blocks until a key is queued and hands it out; the caller must call
// Done with it when finished. After ShutDown, Get still hands out the keys
// already queued, then returns shutdown == true.
func (q *WorkQueue[K]) Get() (key K, shutdown bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shuttingDown {
		q.cond.Wait()
	}
	if len(q.queue) == 0 {
		return key, true
	}
	key = q.queue[0]
	var zero K
	q.queue[0] = zero // let the backing array forget it
	q.queue = q.queue[1:]
	q.processing[key] = struct{}{}
	delete(q.dirty, key)
	return key, false
}

// Done marks key as processed. If it was added again meanwhile, it is
// queued for one more run.
func (q *WorkQueue[K]) Done(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if _, ok := q.dirty[key]; ok {
		q.queue = append(q.queue, key)
		q.cond.Signal()
	}
}

// Len is the number of queued keys, not counting those being processed or
// waiting for a delayed add.
func (q *WorkQueue[K]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// ShutDown makes Add a no-op, drops the delayed adds and wakes every Get.
// It is idempotent.
func (q *WorkQueue[K]) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shuttingDown = true
	for key, w := range q.waiting {
		w.timer.Stop()
		delete(q.waiting, key)
	}
	q.cond.Broadcast()
}

// ShuttingDown reports whether ShutDown has been called.
func (q *WorkQueue[K]) ShuttingDown() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shuttingDown
}

// Run processes keys with workers goroutines until ctx ends or ShutDown is
// called, then waits for the workers to return. On success the key's
// failures are forgotten; on error or panic (recovered and logged) the key
// is added again with AddRateLimited. Keys still queued when ctx ends are
// dropped without a call to fn. Run returns an error only for workers < 1.
func (q *WorkQueue[K]) Run(ctx context.Context, workers int, fn func(ctx context.Context, key K) error) error {
	if workers < 1 {
		return fmt.Errorf("thread: work queue %q: %d workers", q.name, workers)
	}
	stop := context.AfterFunc(ctx, q.ShutDown)
	defer stop()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { q.work(ctx, fn) })
	}
	wg.Wait()
	return nil
}

func (q *WorkQueue[K]) work(ctx context.Context, fn func(ctx context.Context, key K) error) {
	for {
		key, shutdown := q.Get()
		if shutdown {
			return
		}
		if ctx.Err() != nil {
			q.Done(key)
			continue
		}
		if err := q.process(ctx, key, fn); err != nil {
			if pe, ok := errors.AsType[*PanicError](err); ok {
				q.log.Error("work queue function panicked", "key", key, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
			} else if ctx.Err() == nil {
				q.log.Warn("work queue function failed", "key", key, "requeues", q.NumRequeues(key), "err", err)
			}
			q.AddRateLimited(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}

func (q *WorkQueue[K]) process(ctx context.Context, key K, fn func(ctx context.Context, key K) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Task: fmt.Sprint(key), Value: r, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, key)
}
