package flow

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// State is where a chain run is, as persisted in its Record.
type State string

// The states of a run. Running and RollingBack are unfinished: a record left
// in one of them by a dead owner is what RollbackAbandoned takes over.
const (
	// Running: steps are running; steps [0, Applied) have started.
	Running State = "running"
	// Done: every step ran; the chain succeeded. Final.
	Done State = "done"
	// RollingBack: a step failed (or the owner died) and the rollbacks of
	// steps [0, Applied) have yet to run.
	RollingBack State = "rolling-back"
	// RolledBack: every rollback succeeded. Final.
	RolledBack State = "rolled-back"
	// Failed: the rollback is finished but at least one rollback returned an
	// error (see Record.Error), so effects of the chain may remain and need
	// an operator. Final.
	Failed State = "failed"
)

// Unfinished reports whether s is a state a dead owner can leave behind.
func (s State) Unfinished() bool { return s == Running || s == RollingBack }

// ErrNotOwner is returned by Recorder.Save when a record with the same ID
// belongs to another owner: typically a peer took the run over (Claim)
// because it believed this node dead.
var ErrNotOwner = errors.New("flow: record owned by another node")

// Record is the persisted progress of one run of a chain.
type Record struct {
	// ID identifies the run (RunOptions.ID).
	ID string
	// Chain is the chain's name: the key of its definition in a Registry.
	Chain string
	// Owner is the node running the chain (Options.Node).
	Owner string
	// Resource is the resource the run works on (RunOptions.Resource), so
	// the resource's new owner can find the run.
	Resource string
	State    State
	// Applied: steps [0, Applied) have started and have not been rolled back
	// yet, so their effects may exist. While Running it counts the step in
	// flight, if any; while RollingBack it counts down as rollbacks finish.
	Applied int
	// Total is the number of steps of the chain.
	Total int
	// Step is the name of the step last started or rolled back.
	Step string
	// Data is the JSON form of the chain's data after the last step that
	// completed (before any step, the data the run started with).
	Data json.RawMessage
	// Error is why the chain is rolling back, and then which rollbacks
	// failed.
	Error string
	// UpdatedAt is set by the recorder when it saves; informational.
	UpdatedAt time.Time
}

// Recorder persists run progress. A chain calls Save at every transition,
// from one goroutine at a time per record; implementations must be safe for
// concurrent use across records.
type Recorder interface {
	// Save creates the record rec.ID or replaces it. If the stored record
	// has an Owner other than rec.Owner, Save changes nothing and returns an
	// error wrapping ErrNotOwner.
	Save(ctx context.Context, rec Record) error
}
