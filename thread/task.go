package thread

import (
	"context"
	"time"
)

// Task describes one unit of work for the chain queue. Only Signature is
// required.
type Task struct {
	// Signature names the queue: tasks with the same signature run in
	// submit order, at most Level at a time (e.g. "vm-<uuid>").
	Signature string
	// Name identifies the task in logs, errors and Snapshot.
	Name string
	// Level is how many tasks of this signature may run at once when this
	// task starts: it starts only once fewer than Level are running.
	// Values below 1 mean 1.
	Level int
	// Deadline and Timeout (counted from submission) bound the task, as
	// does the deadline of the submitting context; the earliest of the
	// three wins. With none of them, Options.DefaultTimeout applies.
	Deadline time.Time
	Timeout  time.Duration
	// MaxPending, when positive, rejects the submission with ErrQueueFull
	// if the signature already has that many pending (not running) tasks.
	// A submission that supersedes a pending task (DedupKey) is never
	// rejected, since it does not make the queue longer.
	MaxPending int
	// DedupKey, when not empty, drops the pending task of this signature
	// with the same key (it completes with ErrSuperseded) and queues this
	// one at the end: only the latest request matters.
	DedupKey string
}

type taskState uint8

const (
	statePending   taskState = iota
	stateRunning             // holds a slot of its queue
	stateAbandoned           // released by the watchdog; its function has not returned
	stateDone
)

// job is the typed half of a task (a Future).
type job interface {
	// run calls the task function. It is called once, on the task's own
	// goroutine, without any lock held.
	run(ctx context.Context) error
	// complete publishes the result. It is called exactly once, with the
	// scheduler's lock held; ran reports whether run returned before
	// complete was called (false: the task never ran or was abandoned).
	complete(err error, ran bool)
}

// task is the scheduler's record of a submitted Task. Every field but the
// ones written before the task's goroutine starts is guarded by
// Scheduler.mu.
type task struct {
	name     string
	dedupKey string
	level    int
	q        *queue

	submitted time.Time
	started   time.Time
	deadline  time.Time

	state    taskState
	timedOut bool // the deadline passed while running; ctx is cancelled

	parent     context.Context // the submitter's context
	stopParent func() bool     // unregisters the context.AfterFunc on parent
	ctx        context.Context // the running task's context
	cancel     context.CancelCauseFunc
	deadlineT  Timer
	graceT     Timer

	prev, next *task // links in q.pending or q.running
	job        job
}

// taskList is an intrusive doubly linked list, so that a pending task can
// leave the middle of its queue (deadline, cancel, dedup) in O(1) and
// without allocating a list element per task.
type taskList struct {
	head, tail *task
	n          int
}

func (l *taskList) pushBack(t *task) {
	t.prev, t.next = l.tail, nil
	if l.tail == nil {
		l.head = t
	} else {
		l.tail.next = t
	}
	l.tail = t
	l.n++
}

func (l *taskList) remove(t *task) {
	if t.prev == nil {
		l.head = t.next
	} else {
		t.prev.next = t.next
	}
	if t.next == nil {
		l.tail = t.prev
	} else {
		t.next.prev = t.prev
	}
	t.prev, t.next = nil, nil
	l.n--
}

// queue is the chain queue of one signature. It exists only while it has a
// pending or running task.
type queue struct {
	sig     string
	level   int // Level of the task that started last
	pending taskList
	running taskList
	dedup   map[string]*task // pending tasks by DedupKey; allocated on first use
}

func (q *queue) idle() bool { return q.pending.n == 0 && q.running.n == 0 }

// taskContext is the context a task function receives: cancelled when the
// submitter's context is, or by the scheduler at the task's deadline.
// Deadline reports the task's deadline even when it came from Task.Deadline
// or Task.Timeout, so that calls made by the task inherit the remaining
// time; the cancellation itself is driven by the scheduler's Clock.
type taskContext struct {
	context.Context
	deadline time.Time
}

func (c *taskContext) Deadline() (time.Time, bool) { return c.deadline, true }
