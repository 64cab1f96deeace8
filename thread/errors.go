package thread

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns or delivers wraps one of
// them (with the signature and task name in the message); match them with
// errors.Is.
var (
	// ErrTimeout: the task's deadline passed before it started, or the
	// watchdog abandoned it, or it returned an error after its deadline.
	ErrTimeout = errors.New("thread: timed out")
	// ErrPanic: the task function panicked; see PanicError for the value
	// and the stack.
	ErrPanic = errors.New("thread: task panicked")
	// ErrQueueFull: the signature already had Task.MaxPending pending tasks.
	ErrQueueFull = errors.New("thread: queue full")
	// ErrSuperseded: a newer task with the same signature and DedupKey was
	// submitted while this one was still pending; this one never ran.
	ErrSuperseded = errors.New("thread: superseded by a newer task")
	// ErrStopped: the scheduler was stopped; the task was not accepted, or
	// was pending and never ran.
	ErrStopped = errors.New("thread: scheduler stopped")
	// ErrFenced: the signature matches an active Fence; the task was not
	// accepted, or was pending and never ran.
	ErrFenced = errors.New("thread: signature fenced")
)

// PanicError is the result of a task whose function panicked. It matches
// ErrPanic with errors.Is, and also the panic value when that is an error.
type PanicError struct {
	Signature string // empty for a periodic task
	Task      string
	Value     any    // what was passed to panic
	Stack     []byte // the stack of the panicking goroutine
}

func (e *PanicError) Error() string {
	if e.Signature == "" {
		return fmt.Sprintf("thread: task %q panicked: %v", e.Task, e.Value)
	}
	return fmt.Sprintf("thread: task %q on %q panicked: %v", e.Task, e.Signature, e.Value)
}

// Unwrap returns ErrPanic and, when the panic value is an error, that error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrPanic, err}
	}
	return []error{ErrPanic}
}
