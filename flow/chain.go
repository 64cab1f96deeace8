package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mplane/uid"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// active holds the IDs of the runs (and abandoned-run rollbacks) in
// progress in this process.
var active sync.Map

// activate marks run id in progress until the returned func is called.
func activate(id string) func() {
	active.Store(id, struct{}{})
	return func() { active.Delete(id) }
}

// Active reports whether run id is in progress in this process. A record
// of this node's that is unfinished while its run is not active was left
// behind (its last writes failed): a takeover may roll it back.
func Active(id string) bool {
	_, ok := active.Load(id)
	return ok
}

// Step is one named step of a chain. Run does the work on the shared data;
// Rollback, if not nil, undoes it. See the package doc for what Rollback
// must tolerate.
type Step[T any] struct {
	Name     string
	Run      func(ctx context.Context, data *T) error
	Rollback func(ctx context.Context, data *T) error
}

// Options configure a chain. The zero value runs without persistence.
type Options struct {
	// Recorder persists progress at every step. Nil: nothing is persisted and
	// the chain's data need not be JSON-serializable.
	Recorder Recorder
	// Node is recorded as the owner of each run (a management node UUID).
	Node string
	// Logger receives failed rollbacks (error) and failed record writes
	// during rollback (warn). Nil discards.
	Logger *slog.Logger
	// NewID makes a run ID when RunOptions.ID is empty. Nil: a UUID without
	// dashes.
	NewID func() string
	// Transient, if set, reports errors that pass on their own (the
	// database unavailable, a node's bus down): a rollback or a record
	// write during rollback that fails with one is tried again, with
	// backoff, for up to TransientFor. Rollbacks are idempotent, so trying
	// again is safe; giving up at the first error would leave the run
	// Failed and its effects in place for an operator.
	Transient func(error) bool
	// TransientFor bounds the retries of one rollback or write. Zero: two
	// minutes.
	TransientFor time.Duration
}

// RunOptions are the settings of one run.
type RunOptions struct {
	// ID of the run, the record's key. Empty: Options.NewID().
	ID string
	// Resource is the UUID of the resource the run works on, recorded so the
	// resource's next owner can find the run.
	Resource string
	// OnStep, if set, is called before each step's Run and before each
	// step's Rollback, on the chain's goroutine; it must not block.
	OnStep func(Progress)
}

// Progress describes the step about to run or roll back.
type Progress struct {
	Chain    string
	ID       string
	Step     string
	Index    int // from 0
	Total    int
	Rollback bool
}

// Chain is an ordered list of steps on data of type T. It is immutable and
// safe for concurrent runs, each with its own data.
type Chain[T any] struct {
	name  string
	steps []Step[T]
	opts  Options
	log   *slog.Logger
}

// New checks and builds a chain: name and step names must be non-empty,
// step names unique, and every step needs Run.
func New[T any](name string, steps []Step[T], opts Options) (*Chain[T], error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("flow: chain needs a name")
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("flow %q: no steps", name)
	}
	seen := make(map[string]bool, len(steps))
	for i, s := range steps {
		switch {
		case strings.TrimSpace(s.Name) == "":
			return nil, fmt.Errorf("flow %q: step %d has no name", name, i)
		case seen[s.Name]:
			return nil, fmt.Errorf("flow %q: two steps named %q", name, s.Name)
		case s.Run == nil:
			return nil, fmt.Errorf("flow %q step %q: no Run", name, s.Name)
		}
		seen[s.Name] = true
	}
	if opts.NewID == nil {
		opts.NewID = uid.New
	}
	if opts.TransientFor <= 0 {
		opts.TransientFor = 2 * time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Chain[T]{
		name:  name,
		steps: append([]Step[T](nil), steps...),
		opts:  opts,
		log:   log.With("flow", name),
	}, nil
}

// Name is the chain's name, its key in a Registry.
func (c *Chain[T]) Name() string { return c.name }

// StepNames lists the steps in order.
func (c *Chain[T]) StepNames() []string {
	names := make([]string, len(c.steps))
	for i, s := range c.steps {
		names[i] = s.Name
	}
	return names
}

// run is the state of one run: its record and where to report progress.
type run[T any] struct {
	c      *Chain[T]
	rec    Record
	onStep func(Progress)
}

func (r *run[T]) progress(i int, rollback bool) {
	if r.onStep != nil {
		r.onStep(Progress{Chain: r.c.name, ID: r.rec.ID, Step: r.c.steps[i].Name, Index: i, Total: len(r.c.steps), Rollback: rollback})
	}
}

// save persists the record if there is a recorder.
func (r *run[T]) save(ctx context.Context) error {
	if r.c.opts.Recorder == nil {
		return nil
	}
	if err := r.c.opts.Recorder.Save(ctx, r.rec); err != nil {
		return fmt.Errorf("record progress of run %s: %w", r.rec.ID, err)
	}
	return nil
}

// snapshot stores data's JSON form in the record if there is a recorder.
func (r *run[T]) snapshot(data *T) error {
	if r.c.opts.Recorder == nil {
		return nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode data of run %s as JSON: %w", r.rec.ID, err)
	}
	r.rec.Data = b
	return nil
}

// Run runs the steps in order on data (nil: a new zero T). If a step fails,
// panics, or ctx is done before a step starts, every step that started is
// rolled back, in reverse order, the failed one included, and Run returns a
// *StepError naming the step. See the package doc for the guarantees.
func (c *Chain[T]) Run(ctx context.Context, data *T, ro RunOptions) error {
	if data == nil {
		data = new(T)
	}
	id := ro.ID
	if id == "" {
		id = c.opts.NewID()
	}
	r := &run[T]{c: c, onStep: ro.OnStep, rec: Record{
		ID: id, Chain: c.name, Owner: c.opts.Node, Resource: ro.Resource,
		State: Running, Total: len(c.steps),
	}}
	defer activate(id)()
	fail := func(i int, err error) *StepError {
		se := &StepError{Chain: c.name, ID: id, Index: i, Err: err}
		if i >= 0 {
			se.Step = c.steps[i].Name
		}
		return se
	}

	var failed *StepError
	// Data that cannot be recorded fails the run before any step.
	if err := r.snapshot(data); err != nil {
		return fail(-1, err)
	}
	for i, s := range c.steps {
		if ctx.Err() != nil {
			failed = fail(i, fmt.Errorf("not started: %w", context.Cause(ctx)))
			break
		}
		r.progress(i, false)
		r.rec.Applied, r.rec.Step = i+1, s.Name
		// A step with a rollback is recorded as started, with the data as
		// it is now (the outputs of every earlier step included), before it
		// can have any effect: a new owner then rolls it back if this node
		// dies while it runs, or right after. Steps without a rollback need
		// no record of their own; their outputs reach the record with the
		// next save. One save per step that can be undone, plus Done.
		if s.Rollback != nil {
			err := r.snapshot(data)
			if err == nil {
				err = r.save(ctx)
			}
			if err != nil {
				r.rec.Applied = i // it did not start
				failed = fail(i, err)
				break
			}
		}
		if err := call(ctx, s.Run, data); err != nil {
			failed = fail(i, err)
			break
		}
	}
	if failed == nil {
		if err := r.snapshot(data); err != nil {
			failed = fail(-1, err)
		}
	}
	if failed == nil {
		// A run succeeds only once Done is recorded: a record left Running
		// would make a new owner roll back a chain that succeeded.
		r.rec.State = Done
		err := r.save(ctx)
		if err == nil {
			return nil
		}
		r.rec.State = Running
		failed = fail(-1, fmt.Errorf("record completion: %w", err))
	}
	failed.RollbackErrors = c.rollback(ctx, r, data, failed.Error(), true)
	return failed
}

// rollback runs the rollbacks of steps [0, r.rec.Applied) in reverse order,
// all of them whatever fails, recording progress, and returns the errors of
// those that failed. ctx's cancellation does not stop it. begin says whether
// to record the RollingBack state first (RollbackAbandoned has done so).
func (c *Chain[T]) rollback(ctx context.Context, r *run[T], data *T, cause string, begin bool) []error {
	ctx = context.WithoutCancel(ctx)
	log := c.log.With("flow_id", r.rec.ID)
	r.rec.State, r.rec.Error = RollingBack, cause
	if begin {
		c.saveLogged(ctx, r, log)
	}
	var errs []error
	for i := r.rec.Applied - 1; i >= 0; i-- {
		s := c.steps[i]
		if s.Rollback == nil {
			continue
		}
		r.progress(i, true)
		if err := c.retry(ctx, func() error { return call(ctx, s.Rollback, data) }); err != nil {
			log.Error("flow rollback failed", "step", s.Name, "err", err)
			errs = append(errs, &StepError{Chain: c.name, ID: r.rec.ID, Step: s.Name, Index: i, Rollback: true, Err: err})
		}
		r.rec.Applied, r.rec.Step = i, s.Name
		c.saveLogged(ctx, r, log)
	}
	r.rec.Applied, r.rec.State = 0, RolledBack
	if len(errs) > 0 {
		r.rec.State = Failed
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = describeRollback(e)
		}
		r.rec.Error = cause + "; rollback failed: " + strings.Join(msgs, "; ")
	}
	c.saveLogged(ctx, r, log)
	return errs
}

// saveLogged records rollback progress. A failure is logged, not returned:
// the rollbacks go on regardless, and are idempotent, so a record that
// lags only makes a later owner repeat some of them.
func (c *Chain[T]) saveLogged(ctx context.Context, r *run[T], log *slog.Logger) {
	if err := c.retry(ctx, func() error { return r.save(ctx) }); err != nil {
		log.Warn("flow record not saved", "state", string(r.rec.State), "applied", r.rec.Applied, "err", err)
	}
}

// retry runs fn, and again while it fails with an error Options.Transient
// accepts, for up to Options.TransientFor.
func (c *Chain[T]) retry(ctx context.Context, fn func() error) error {
	err := fn()
	deadline := time.Now().Add(c.opts.TransientFor)
	for pause := 100 * time.Millisecond; err != nil && c.opts.Transient != nil && c.opts.Transient(err) &&
		time.Now().Add(pause).Before(deadline); pause = min(2*pause, 2*time.Second) {
		c.log.Debug("flow rollback: transient failure, trying again", "err", err, "in", pause)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		err = fn()
	}
	return err
}

// call runs fn, turning a panic into a *PanicError. runtime.Goexit is not a
// panic and is not stopped.
func call[T any](ctx context.Context, fn func(context.Context, *T) error, data *T) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, data)
}
