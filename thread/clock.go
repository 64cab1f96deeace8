package thread

import "time"

// Clock is the time source of a Scheduler and a WorkQueue. Tests inject a
// fake one so that deadlines, grace periods, periodic intervals and backoff
// delays pass without sleeping.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc arranges for f to be called once d has elapsed, like
	// time.AfterFunc. It must never call f before it returns: the package
	// calls AfterFunc with its own lock held, and f takes that lock.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the handle returned by Clock.AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not happened yet and reports whether
	// it did so.
	Stop() bool
}

// realClock is the wall clock; *time.Timer satisfies Timer.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
