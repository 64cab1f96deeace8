package flow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// trace is the outside world the steps act on: what ran and was undone, in
// order. It is shared by the "processes" of a crash test.
type trace struct {
	mu     sync.Mutex
	events []string
}

func (tr *trace) add(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, fmt.Sprintf(format, args...))
}

func (tr *trace) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.events)
}

func (tr *trace) want(t *testing.T, want ...string) {
	t.Helper()
	if got := tr.get(); !slices.Equal(got, want) {
		t.Fatalf("events\n got  %q\n want %q", got, want)
	}
}

// testData is JSON-serializable: Made lists what completed steps made, so
// a rollback can tell whether its step's output reached it.
type testData struct {
	Made []string `json:"made"`
}

// behaviour of one test step.
type behaviour struct {
	runErr      error
	runPanic    any
	rollbackErr error
	rbPanic     any
	noRollback  bool
	run         func(ctx context.Context, d *testData) // extra action in Run, after tracing
	rollback    func(ctx context.Context, d *testData) // extra action in Rollback, after tracing
}

// makeSteps builds steps named by names; each Run traces "run:<name>" and
// appends the name to Made, each Rollback traces "rollback:<name>".
func makeSteps(tr *trace, names []string, bs map[string]behaviour) []Step[testData] {
	var steps []Step[testData]
	for _, name := range names {
		b := bs[name]
		s := Step[testData]{Name: name}
		s.Run = func(ctx context.Context, d *testData) error {
			tr.add("run:%s", name)
			if b.run != nil {
				b.run(ctx, d)
			}
			if b.runPanic != nil {
				panic(b.runPanic)
			}
			if b.runErr != nil {
				return b.runErr
			}
			d.Made = append(d.Made, name)
			return nil
		}
		if !b.noRollback {
			s.Rollback = func(ctx context.Context, d *testData) error {
				tr.add("rollback:%s made=%s", name, strings.Join(d.Made, ","))
				if b.rollback != nil {
					b.rollback(ctx, d)
				}
				if b.rbPanic != nil {
					panic(b.rbPanic)
				}
				return b.rollbackErr
			}
		}
		steps = append(steps, s)
	}
	return steps
}

func mustChain(t *testing.T, name string, steps []Step[testData], opts Options) *Chain[testData] {
	t.Helper()
	c, err := New(name, steps, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// memRecorder keeps every saved record in order; failAt makes the n-th
// save (from 1) fail.
type memRecorder struct {
	mu     sync.Mutex
	saves  []Record
	failAt int
}

var errRecorderDown = errors.New("recorder down")

func (m *memRecorder) Save(_ context.Context, rec Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failAt > 0 && len(m.saves)+1 == m.failAt {
		m.failAt = 0
		m.saves = append(m.saves, Record{State: "save-failed"})
		return errRecorderDown
	}
	rec.Data = slices.Clone(rec.Data)
	m.saves = append(m.saves, rec)
	return nil
}

func (m *memRecorder) all() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.saves)
}

// summary is "state/applied/step" per save, the shape tests compare.
func summary(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = fmt.Sprintf("%s/%d/%s", r.State, r.Applied, r.Step)
	}
	return out
}
