package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mplane/errcode"
)

func TestNewValidation(t *testing.T) {
	run := func(context.Context, *testData) error { return nil }
	tests := []struct {
		name    string
		chain   string
		steps   []Step[testData]
		wantErr string
	}{
		{"ok", "c", []Step[testData]{{Name: "a", Run: run}}, ""},
		{"no chain name", " ", []Step[testData]{{Name: "a", Run: run}}, "needs a name"},
		{"no steps", "c", nil, "no steps"},
		{"step without name", "c", []Step[testData]{{Run: run}}, "step 0 has no name"},
		{"duplicate step", "c", []Step[testData]{{Name: "a", Run: run}, {Name: "a", Run: run}}, `two steps named "a"`},
		{"no run", "c", []Step[testData]{{Name: "a"}}, `step "a": no Run`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.chain, tc.steps, Options{})
			if tc.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestRunInOrder(t *testing.T) {
	tr := &trace{}
	c := mustChain(t, "create-vm", makeSteps(tr, []string{"a", "b", "c"}, nil), Options{})
	var progress []Progress
	var data testData
	err := c.Run(context.Background(), &data, RunOptions{ID: "r1", OnStep: func(p Progress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	tr.want(t, "run:a", "run:b", "run:c")
	if !slices.Equal(data.Made, []string{"a", "b", "c"}) {
		t.Errorf("data.Made = %q: the steps did not share the data", data.Made)
	}
	want := []Progress{
		{Chain: "create-vm", ID: "r1", Step: "a", Index: 0, Total: 3},
		{Chain: "create-vm", ID: "r1", Step: "b", Index: 1, Total: 3},
		{Chain: "create-vm", ID: "r1", Step: "c", Index: 2, Total: 3},
	}
	if !slices.Equal(progress, want) {
		t.Errorf("progress\n got  %+v\n want %+v", progress, want)
	}
	if got := c.StepNames(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("StepNames() = %q", got)
	}
}

func TestRunNilData(t *testing.T) {
	tr := &trace{}
	c := mustChain(t, "c", makeSteps(tr, []string{"a"}, nil), Options{})
	if err := c.Run(context.Background(), nil, RunOptions{}); err != nil {
		t.Fatalf("Run(nil data): %v", err)
	}
	tr.want(t, "run:a")
}

func TestRollbackReverseOfStepsThatStarted(t *testing.T) {
	boom := errors.New("boom")
	names := []string{"a", "b", "c", "d"}
	tests := []struct {
		name         string
		bs           map[string]behaviour
		wantEvents   []string
		wantRollback []string // steps announced to OnStep as rolling back
	}{
		{
			name:         "first step fails",
			bs:           map[string]behaviour{"a": {runErr: boom}},
			wantEvents:   []string{"run:a", "rollback:a made="},
			wantRollback: []string{"a"},
		},
		{
			name: "third step fails",
			bs:   map[string]behaviour{"c": {runErr: boom}},
			wantEvents: []string{"run:a", "run:b", "run:c",
				"rollback:c made=a,b", "rollback:b made=a,b", "rollback:a made=a,b"},
			wantRollback: []string{"c", "b", "a"},
		},
		{
			name: "last step fails",
			bs:   map[string]behaviour{"d": {runErr: boom}},
			wantEvents: []string{"run:a", "run:b", "run:c", "run:d",
				"rollback:d made=a,b,c", "rollback:c made=a,b,c", "rollback:b made=a,b,c", "rollback:a made=a,b,c"},
			wantRollback: []string{"d", "c", "b", "a"},
		},
		{
			name: "a step without rollback is skipped",
			bs:   map[string]behaviour{"b": {noRollback: true}, "c": {runErr: boom}},
			wantEvents: []string{"run:a", "run:b", "run:c",
				"rollback:c made=a,b", "rollback:a made=a,b"},
			wantRollback: []string{"c", "a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trace{}
			c := mustChain(t, "c", makeSteps(tr, names, tc.bs), Options{})
			var rolled []string
			err := c.Run(context.Background(), &testData{}, RunOptions{OnStep: func(p Progress) {
				if p.Rollback {
					rolled = append(rolled, p.Step)
				}
			}})
			if !errors.Is(err, boom) {
				t.Fatalf("Run error %v, want boom", err)
			}
			tr.want(t, tc.wantEvents...)
			if !slices.Equal(rolled, tc.wantRollback) {
				t.Errorf("OnStep rollbacks %q, want %q", rolled, tc.wantRollback)
			}
		})
	}
}

func TestErrorNamesStepAndKeepsCode(t *testing.T) {
	sentinel := errors.New("agent said no")
	tests := []struct {
		name        string
		stepErr     error
		wantMsg     string
		wantCode    errcode.Code
		wantDetails string
	}{
		{
			name:        "catalogued error keeps its code",
			stepErr:     errcode.New(errcode.CapacityExhausted, "no host has 4 CPUs free"),
			wantMsg:     `flow "create-vm" step "allocate-host": SYS.1015 not enough capacity (no host has 4 CPUs free)`,
			wantCode:    errcode.CapacityExhausted,
			wantDetails: `flow "create-vm" step "allocate-host": no host has 4 CPUs free`,
		},
		{
			name:        "wrapped catalogued error",
			stepErr:     fmt.Errorf("host h1: %w", errcode.New(errcode.InvalidState, "host is Disabled")),
			wantMsg:     `flow "create-vm" step "allocate-host": host h1: SYS.1006 operation not allowed in the resource's current state (host is Disabled)`,
			wantCode:    errcode.InvalidState,
			wantDetails: `flow "create-vm" step "allocate-host": host h1: host is Disabled`,
		},
		{
			name:        "plain error",
			stepErr:     fmt.Errorf("start: %w", sentinel),
			wantMsg:     `flow "create-vm" step "allocate-host": start: agent said no`,
			wantCode:    errcode.Internal,
			wantDetails: `flow "create-vm" step "allocate-host": start: agent said no`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trace{}
			steps := makeSteps(tr, []string{"prepare", "allocate-host", "start-on-host"},
				map[string]behaviour{"allocate-host": {runErr: tc.stepErr}})
			err := mustChain(t, "create-vm", steps, Options{}).Run(context.Background(), &testData{}, RunOptions{ID: "r9"})
			if err == nil {
				t.Fatal("Run succeeded")
			}
			if err.Error() != tc.wantMsg {
				t.Errorf("message\n got  %s\n want %s", err, tc.wantMsg)
			}
			if !errors.Is(err, tc.stepErr) {
				t.Error("errors.Is(err, step error) is false")
			}
			var se *StepError
			if !errors.As(err, &se) || se.Step != "allocate-host" || se.Index != 1 || se.Chain != "create-vm" || se.ID != "r9" || se.Rollback {
				t.Fatalf("StepError = %+v", se)
			}
			if got := errcode.CodeOf(err); got != tc.wantCode {
				t.Errorf("CodeOf = %s, want %s", got, tc.wantCode)
			}
			if got := errcode.From(err); got.Code != tc.wantCode || got.Details != tc.wantDetails {
				t.Errorf("errcode.From = %s / %q, want %s / %q", got.Code, got.Details, tc.wantCode, tc.wantDetails)
			}
		})
	}
	if tr := (&trace{}); errors.Is(mustChain(t, "x", makeSteps(tr, []string{"a"}, nil), Options{}).Run(context.Background(), nil, RunOptions{}), sentinel) {
		t.Error("a successful run must not match the sentinel")
	}
}

func TestRollbackErrorsCollectedAndLogged(t *testing.T) {
	boom := errors.New("boom")
	errA := errors.New("cannot release a")
	tr := &trace{}
	steps := makeSteps(tr, []string{"a", "b", "c", "d"}, map[string]behaviour{
		"a": {rollbackErr: errA},
		"b": {rbPanic: "b rollback exploded"},
		"d": {runErr: boom},
	})
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	err := mustChain(t, "c", steps, Options{Logger: log}).Run(context.Background(), &testData{}, RunOptions{ID: "r1"})

	// Every rollback ran although two failed.
	tr.want(t, "run:a", "run:b", "run:c", "run:d",
		"rollback:d made=a,b,c", "rollback:c made=a,b,c", "rollback:b made=a,b,c", "rollback:a made=a,b,c")
	var se *StepError
	if !errors.As(err, &se) || se.Step != "d" || !errors.Is(err, boom) {
		t.Fatalf("Run error %v, want step d's error", err)
	}
	if len(se.RollbackErrors) != 2 {
		t.Fatalf("RollbackErrors = %v, want 2", se.RollbackErrors)
	}
	var rb, ra *StepError
	if !errors.As(se.RollbackErrors[0], &rb) || rb.Step != "b" || !rb.Rollback || !errors.Is(rb, ErrPanic) {
		t.Errorf("first rollback error %v, want step b's panic", se.RollbackErrors[0])
	}
	if !errors.As(se.RollbackErrors[1], &ra) || ra.Step != "a" || !errors.Is(ra, errA) {
		t.Errorf("second rollback error %v, want step a's error", se.RollbackErrors[1])
	}
	if errors.Is(err, errA) || errors.Is(err, ErrPanic) {
		t.Error("the returned error must unwrap to the step's failure only")
	}
	wantMsg := `flow "c" step "d" (2 rollback(s) failed too: step "b": panic: b rollback exploded; step "a": cannot release a): boom`
	if err.Error() != wantMsg {
		t.Errorf("message\n got  %s\n want %s", err, wantMsg)
	}
	out := logs.String()
	for _, want := range []string{`level=ERROR msg="flow rollback failed" flow=c flow_id=r1 step=b`, `step=a err="cannot release a"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestPanicRecovered(t *testing.T) {
	valueErr := errors.New("nil map")
	tests := []struct {
		name  string
		value any
		match error
	}{
		{"string value", "index out of range", ErrPanic},
		{"error value", valueErr, valueErr},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trace{}
			steps := makeSteps(tr, []string{"a", "b", "c"}, map[string]behaviour{"b": {runPanic: tc.value}})
			err := mustChain(t, "c", steps, Options{}).Run(context.Background(), &testData{}, RunOptions{})
			tr.want(t, "run:a", "run:b", "rollback:b made=a", "rollback:a made=a")
			var pe *PanicError
			if !errors.As(err, &pe) || pe.Value != tc.value || len(pe.Stack) == 0 {
				t.Fatalf("Run error %v, want a PanicError with value and stack", err)
			}
			if !errors.Is(err, ErrPanic) || !errors.Is(err, tc.match) {
				t.Errorf("errors.Is(err, ErrPanic / %v) false", tc.match)
			}
			if want := fmt.Sprintf(`flow "c" step "b": panic: %v`, tc.value); err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
		})
	}
}

func TestCancellationStopsBeforeNextStep(t *testing.T) {
	cause := errors.New("api job cancelled by user")
	t.Run("cancelled during a step", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		tr := &trace{}
		var rollbackCtxErr []error
		steps := makeSteps(tr, []string{"a", "b", "c"}, map[string]behaviour{
			"b": {run: func(context.Context, *testData) { cancel(cause) }},
			"a": {rollback: func(ctx context.Context, _ *testData) { rollbackCtxErr = append(rollbackCtxErr, ctx.Err()) }},
		})
		err := mustChain(t, "c", steps, Options{}).Run(ctx, &testData{}, RunOptions{})
		tr.want(t, "run:a", "run:b", "rollback:b made=a,b", "rollback:a made=a,b")
		var se *StepError
		if !errors.As(err, &se) || se.Step != "c" || !errors.Is(err, cause) {
			t.Fatalf("Run error %v, want step c not started because of the cause", err)
		}
		if want := `flow "c" step "c": not started: api job cancelled by user`; err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
		if len(rollbackCtxErr) != 1 || rollbackCtxErr[0] != nil {
			t.Errorf("rollback saw ctx.Err() %v, want a live context", rollbackCtxErr)
		}
	})
	t.Run("cancelled before the run", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		tr := &trace{}
		err := mustChain(t, "c", makeSteps(tr, []string{"a", "b"}, nil), Options{}).Run(ctx, &testData{}, RunOptions{})
		tr.want(t)
		if !errors.Is(err, context.Canceled) || errcode.CodeOf(err) != errcode.Canceled {
			t.Fatalf("Run error %v (code %s), want context.Canceled", err, errcode.CodeOf(err))
		}
	})
}

func TestRecordedProgress(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		bs        map[string]behaviour
		wantErr   bool
		wantSaves []string
		wantData  string // JSON of the last save
		wantError string // substring of the last save's Error
	}{
		{
			name:      "success",
			wantSaves: []string{"running/1/a", "running/2/b", "done/2/b"},
			wantData:  `{"made":["a","b"]}`,
		},
		{
			name:    "failure rolls back",
			bs:      map[string]behaviour{"b": {runErr: boom}},
			wantErr: true,
			wantSaves: []string{"running/1/a", "running/2/b",
				"rolling-back/2/b", "rolling-back/1/b", "rolling-back/0/a", "rolled-back/0/a"},
			wantData:  `{"made":["a"]}`,
			wantError: `step "b": boom`,
		},
		{
			name:    "failed rollback",
			bs:      map[string]behaviour{"b": {runErr: boom}, "a": {rollbackErr: errors.New("stuck")}},
			wantErr: true,
			wantSaves: []string{"running/1/a", "running/2/b",
				"rolling-back/2/b", "rolling-back/1/b", "rolling-back/0/a", "failed/0/a"},
			wantData:  `{"made":["a"]}`,
			wantError: `rollback failed: step "a": stuck`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &memRecorder{}
			c := mustChain(t, "c", makeSteps(&trace{}, []string{"a", "b"}, tc.bs), Options{Recorder: rec, Node: "n1"})
			err := c.Run(context.Background(), &testData{}, RunOptions{ID: "r1", Resource: "vm1"})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Run error %v, want error %v", err, tc.wantErr)
			}
			saves := rec.all()
			if got := summary(saves); !slices.Equal(got, tc.wantSaves) {
				t.Fatalf("saves\n got  %q\n want %q", got, tc.wantSaves)
			}
			last := saves[len(saves)-1]
			if last.ID != "r1" || last.Chain != "c" || last.Owner != "n1" || last.Resource != "vm1" || last.Total != 2 {
				t.Errorf("last record %+v", last)
			}
			if string(last.Data) != tc.wantData {
				t.Errorf("last data %s, want %s", last.Data, tc.wantData)
			}
			if !strings.Contains(last.Error, tc.wantError) {
				t.Errorf("last error %q, want it to contain %q", last.Error, tc.wantError)
			}
		})
	}
}

func TestRecorderFailureFailsRun(t *testing.T) {
	// Saves of a successful two-step run (both steps have a rollback):
	// 1 a started, 2 b started (with a's outputs), 3 done.
	tests := []struct {
		name       string
		failAt     int
		wantStep   string
		wantEvents []string
	}{
		{"start of the first step", 1, "a", nil},
		{"start of a later step", 2, "b", []string{"run:a", "rollback:a made=a"}},
		{"completion of the run", 3, "", []string{"run:a", "run:b", "rollback:b made=a,b", "rollback:a made=a,b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trace{}
			rec := &memRecorder{failAt: tc.failAt}
			err := mustChain(t, "c", makeSteps(tr, []string{"a", "b"}, nil), Options{Recorder: rec}).
				Run(context.Background(), &testData{}, RunOptions{})
			var se *StepError
			if !errors.As(err, &se) || se.Step != tc.wantStep || !errors.Is(err, errRecorderDown) {
				t.Fatalf("Run error %v, want a recorder failure at step %q", err, tc.wantStep)
			}
			tr.want(t, tc.wantEvents...)
		})
	}
}

func TestDataMustBeJSONWithRecorder(t *testing.T) {
	type bad struct{ C chan int }
	ran := false
	steps := []Step[bad]{{Name: "a", Run: func(context.Context, *bad) error { ran = true; return nil }}}
	c, err := New("c", steps, Options{Recorder: &memRecorder{}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(context.Background(), &bad{}, RunOptions{})
	var ute *json.UnsupportedTypeError
	if !errors.As(err, &ute) || ran {
		t.Fatalf("Run error %v (ran %v), want a JSON error before any step", err, ran)
	}
	// Without a recorder the data is never encoded.
	c, _ = New("c", steps, Options{})
	if err := c.Run(context.Background(), &bad{}, RunOptions{}); err != nil || !ran {
		t.Fatalf("Run without recorder: %v (ran %v)", err, ran)
	}
}

// A rollback that fails with a transient error (the database briefly
// unavailable) is tried again until it succeeds, and so is a record write
// during the rollback: the run ends RolledBack, not Failed. A permanent
// error is not tried again. While the run is in progress Active reports it.
func TestTransientRollbackFailuresAreTriedAgain(t *testing.T) {
	errDown := errTransientDown
	errPermanent := errors.New("the host refused")
	var bFails, saveFails atomic.Int32
	bFails.Store(3)
	tr := &trace{}
	var activeDuring bool
	steps := makeSteps(tr, []string{"a", "b", "c", "d"}, map[string]behaviour{
		"a": {rollbackErr: errPermanent},
		"c": {run: func(context.Context, *testData) { activeDuring = Active("r-transient") }},
		"d": {runErr: errors.New("boom")},
	})
	steps[1].Rollback = func(ctx context.Context, d *testData) error {
		tr.add("rollback:b")
		if bFails.Add(-1) >= 0 {
			return errDown
		}
		return nil
	}
	steps[0].Rollback = func(ctx context.Context, d *testData) error {
		tr.add("rollback:a")
		return errPermanent
	}
	rec := &flakyRecorder{fails: &saveFails}
	saveFails.Store(2)
	c := mustChain(t, "c", steps, Options{Recorder: rec, Transient: func(err error) bool { return errors.Is(err, errDown) }, TransientFor: 30 * time.Second})
	err := c.Run(context.Background(), &testData{}, RunOptions{ID: "r-transient"})
	var se *StepError
	if !errors.As(err, &se) || se.Step != "d" {
		t.Fatalf("Run error %v, want step d's failure", err)
	}
	tr.want(t, "run:a", "run:b", "run:c", "run:d", "rollback:d made=a,b,c", "rollback:c made=a,b,c",
		"rollback:b", "rollback:b", "rollback:b", "rollback:b", "rollback:a")
	if len(se.RollbackErrors) != 1 || !errors.Is(se.RollbackErrors[0], errPermanent) {
		t.Errorf("rollback errors %v, want only a's permanent one", se.RollbackErrors)
	}
	if !activeDuring || Active("r-transient") {
		t.Errorf("Active during the run %v, after %v; want true, then false", activeDuring, Active("r-transient"))
	}
	if n := saveFails.Load(); n > 0 {
		t.Errorf("%d record writes still to fail: the rollback's writes were not tried again", n)
	}
	if last := rec.last(); last.State != Failed || last.Applied != 0 {
		t.Errorf("last record %s/%d, want failed/0 (a's rollback failed for good)", last.State, last.Applied)
	}
}

var errTransientDown = errors.New("database unavailable")

// flakyRecorder fails its saves with a transient error while fails > 0
// (after the first save, so the run starts), counting down.
type flakyRecorder struct {
	memRecorder
	fails *atomic.Int32
}

func (f *flakyRecorder) Save(ctx context.Context, rec Record) error {
	if rec.State == RollingBack && f.fails.Add(-1) >= 0 {
		return fmt.Errorf("save: %w", errTransientDown)
	}
	return f.memRecorder.Save(ctx, rec)
}

func (m *memRecorder) last() Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saves[len(m.saves)-1]
}
