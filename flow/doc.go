// Package flow runs flow chains in the manner of ZStack's FlowChain: an
// ordered list of named steps over shared data, where a failure rolls back
// what the steps did, and whose progress can be persisted so that a node
// can roll back what a dead node left half done.
//
// A chain is built once, with New, from []Step[T]: each step has Run and an
// optional Rollback, both operating on a *T shared by the steps of one run
// (steps pass results to later steps and to their own rollback through it).
// Run executes one run. Chains are immutable and run concurrently.
//
// # Guarantees of Run
//
//   - Order. Steps run one at a time, in order, on the caller's goroutine.
//   - Rollback. When a step returns an error or panics, or ctx is done
//     before a step starts, no further step runs, and the Rollback of every
//     step that started runs, in reverse order. Unlike ZStack, the failed
//     step is rolled back too: a step that fails half-way (or panics) cannot
//     be trusted to have cleaned up, and crash recovery must undo a step
//     that was in flight anyway, so there is one rule: a step that started
//     is rolled back. Steps that never started are never rolled back.
//   - All rollbacks are attempted. A rollback that fails or panics is
//     logged (error level, keys flow, flow_id, step, err) and collected in
//     StepError.RollbackErrors; the rollbacks of earlier steps still run.
//   - Rollbacks run even if ctx is cancelled (they get a context without
//     its cancellation but with its values); bound their own calls.
//   - The error. Run returns nil or a *StepError whose text is
//     `flow "<chain>" step "<step>": <step's error>` and which unwraps to the
//     step's error: errors.Is/As work, and an *errcode.Error keeps its code
//     (errcode.CodeOf, errcode.From). A panic becomes a *PanicError
//     (errors.Is(err, ErrPanic)); cancellation wraps context.Cause(ctx).
//     runtime.Goexit is not recovered.
//
// # What a Rollback must tolerate
//
// Rollbacks must be idempotent and must tolerate that Run did only part of
// its work, or none: they run for the failed step, and after a crash they
// may run for a step that was in flight or run twice. A step that creates
// something should therefore know its key before creating it (e.g. the IP
// owner is a NIC UUID chosen by an earlier step), so that its rollback can
// find what it made even when Run never returned.
//
// # Persistence and abandoned runs
//
// With Options.Recorder set, a run saves its Record (run ID, chain name,
// owner node, resource, state, steps applied, data as JSON) when each step
// that has a Rollback starts, before it can have any effect, with the data
// as it is then (the outputs of every earlier step included); at each
// rollback; and at the end. Steps without a Rollback are not recorded on
// their own: their outputs reach the record with the next save. That is one
// database write per step that can be undone, plus one at the end. The
// states are running, done, rolling-back, rolled-back and failed (rollback
// finished with errors). The data type T must then be JSON-serializable
// (exported fields, no channels or funcs) and survive a round trip: a new
// owner rolls back with the data decoded from the record, which holds the
// outputs of the steps before the last recorded one, not necessarily that
// step's own (hence the rule above: a rollback finds what its step made by
// keys known before the step ran). Data that cannot be encoded fails the
// run before any step starts.
//
// A run succeeds only once its done state is saved; if a save fails while
// steps run, the run fails and rolls back (a run that cannot be recorded
// cannot be recovered). Saves during rollback that fail are logged, and
// the rollback goes on.
//
// When a node dies, a node that takes its work over lists the unfinished
// records (GormRecorder.Unfinished), claims each one it now owns
// (GormRecorder.Claim: a conditional update, so one claimant wins) and
// passes it to Registry.RollbackAbandoned, which rolls back steps
// [0, Applied) in reverse order under the chain definition registered
// with the record's name. The step that was in flight when the owner died
// is rolled back too. Because every save is conditional on the owner, a
// node that lost its run to a claim can no longer write its record.
// Definitions must not change incompatibly while records of them are
// unfinished: rename the chain instead.
package flow
