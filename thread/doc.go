// Package thread is mplane's task scheduler: chain queues of tasks keyed by
// signature, with typed sync results, deadlines and a watchdog; periodic
// tasks; and a coalescing work queue for level-based reconciliation.
//
// # Chain queues
//
// A task is submitted with a Task (signature, name, level, deadline, ...)
// and a function, by Submit (returns a Future at once), Sync (waits for
// the typed result) or Scheduler.Do. The guarantees:
//
//   - Order. Tasks with the same signature start in submission order (the
//     order in which their submissions took the scheduler's lock; program
//     order for submissions from one goroutine). Only the head of a
//     signature's pending list may start, so a task never overtakes an
//     earlier one of its signature. A task superseded by DedupKey leaves
//     the list; its replacement joins at the end.
//   - Level. A task starts only while fewer than its Level tasks of its
//     signature hold a slot. When all tasks of a signature use the same
//     Level, at most Level of them run at once. (The rule is applied to the
//     task about to start only: mixing levels on one signature is allowed
//     but gives a Level 1 task no exclusivity against later tasks.)
//   - Slots. A task holds a slot from the moment it starts until its
//     function returns, or until the watchdog releases it. A task may
//     block, e.g. on an agent's callback: it has its own goroutine.
//   - Parallelism. Signatures are independent: a task never waits for a
//     task of another signature. There is no global worker limit.
//   - Memory. A signature's queue exists only while it has a pending or
//     running task.
//
// # Deadlines and the watchdog
//
// Every task has a deadline: the earliest of its context's deadline,
// Task.Deadline and submission time plus Task.Timeout, or else submission
// time plus Options.DefaultTimeout. All of them are measured on
// Options.Clock.
//
//   - A pending task whose deadline passes never runs: it completes with an
//     error wrapping ErrTimeout. A pending task whose context is cancelled
//     never runs: it completes with the context's cause.
//   - A running task whose deadline passes has its context cancelled with a
//     cause wrapping ErrTimeout; if it then returns an error, that error
//     is wrapped with ErrTimeout too.
//   - A running task whose context ended (deadline, or the submitter
//     cancelled) and that has not returned after Options.Grace is
//     abandoned by the watchdog: its slot goes to the next task, its
//     caller gets an error wrapping ErrTimeout, the release is logged
//     (keys signature, task) and counted (Stats.WatchdogReleases). When
//     its function returns after all, the return is logged and counted
//     (Stats.LateReturns) and its result dropped.
//
// So Sync returns at most Grace after its context ends or its deadline
// passes, whatever the task function does.
//
// # Panics
//
// A panic in a task function is recovered; the task completes with a
// *PanicError (matching ErrPanic, holding the value and the stack), the
// panic is logged and counted, and the queue goes on with the next task.
// The same holds for periodic tasks and WorkQueue.Run.
//
// # Queue limits and de-duplication
//
// Task.MaxPending bounds a signature's pending list (ErrQueueFull). A task
// with a DedupKey replaces the pending task of its signature with the same
// key, which completes with ErrSuperseded; running tasks are never
// superseded.
//
// # Stopping
//
// Stop refuses new tasks (ErrStopped), completes pending ones with
// ErrStopped and ends periodic tasks; Drain waits, up to its context, for
// every task goroutine and periodic task to return. Fence refuses, and
// drops from the pending lists, the tasks of the signatures it matches
// (ErrFenced).
//
// # Periodic tasks
//
// Scheduler.Every calls a function every interval plus jitter until its
// context ends or the scheduler stops. Runs never overlap; errors and
// panics are logged and the periodic task goes on.
//
// # Work queue
//
// WorkQueue has the semantics of client-go's util/workqueue: a key is
// queued at most once, a key being processed is never handed to a second
// worker, and adds while it is processed coalesce into exactly one more
// run after Done. AddAfter and AddRateLimited (exponential backoff) delay
// an add.
//
// # Lock rules
//
// Each Scheduler has one mutex, Scheduler.mu, guarding every queue and task
// record; each WorkQueue has its own. Neither is held while calling a task
// function, a periodic function, a WorkQueue function or the logger. Held
// with Scheduler.mu: Clock.AfterFunc and Timer.Stop (so a Clock must never
// run a callback synchronously), context creation and cancellation, the
// publication of a Future's result (a channel close), and the match
// function of a Fence (which must therefore not call the Scheduler).
// Timer and context callbacks take Scheduler.mu and re-check the task's
// state, so a callback racing with the task's completion does nothing.
// Functions that need the caller to hold the lock end in Locked.
package thread
