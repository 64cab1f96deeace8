package thread

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPendingTaskPastDeadlineNeverRuns(t *testing.T) {
	tests := []struct {
		name string
		// expire submits the victim behind a busy signature and makes its
		// deadline pass (or its context end) before the head finishes.
		expire  func(t *testing.T, s *Scheduler, clk *fakeClock, fn func(context.Context) (struct{}, error)) *Future[struct{}]
		wantErr error
		counter func(Stats) uint64
	}{
		{
			name: "Task.Timeout on the fake clock",
			expire: func(t *testing.T, s *Scheduler, clk *fakeClock, fn func(context.Context) (struct{}, error)) *Future[struct{}] {
				f := submit(t, s, Task{Signature: "vm-1", Name: "victim", Timeout: time.Second}, fn)
				clk.Advance(time.Second)
				return f
			},
			wantErr: ErrTimeout,
			counter: func(st Stats) uint64 { return st.Timeouts },
		},
		{
			name: "Task.Deadline passed while its timer is late",
			expire: func(t *testing.T, s *Scheduler, clk *fakeClock, fn func(context.Context) (struct{}, error)) *Future[struct{}] {
				f := submit(t, s, Task{Signature: "vm-1", Name: "victim", Deadline: clk.Now().Add(time.Second)}, fn)
				clk.Skew(time.Second) // the timer has not fired when the head finishes
				return f
			},
			wantErr: ErrTimeout,
			counter: func(st Stats) uint64 { return st.Timeouts },
		},
		{
			name: "context deadline on the wall clock",
			expire: func(t *testing.T, s *Scheduler, clk *fakeClock, fn func(context.Context) (struct{}, error)) *Future[struct{}] {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
				t.Cleanup(cancel)
				f, err := Submit(ctx, s, Task{Signature: "vm-1", Name: "victim"}, fn)
				if err != nil {
					t.Fatal(err)
				}
				recv(t, "victim timeout", f.Done())
				return f
			},
			wantErr: ErrTimeout,
			counter: func(st Stats) uint64 { return st.Timeouts },
		},
		{
			// The context callback has not run yet when the head finishes.
			name: "context cancelled, callback late",
			expire: func(t *testing.T, s *Scheduler, clk *fakeClock, fn func(context.Context) (struct{}, error)) *Future[struct{}] {
				ctx := &lateContext{Context: context.Background(), done: make(chan struct{})}
				f, err := Submit(ctx, s, Task{Signature: "vm-1", Name: "victim"}, fn)
				if err != nil {
					t.Fatal(err)
				}
				ctx.canceled.Store(true)
				return f
			},
			wantErr: context.Canceled,
			counter: func(st Stats) uint64 { return st.Canceled },
		},
		{
			name: "context cancelled",
			expire: func(t *testing.T, s *Scheduler, clk *fakeClock, fn func(context.Context) (struct{}, error)) *Future[struct{}] {
				ctx, cancel := context.WithCancel(context.Background())
				f, err := Submit(ctx, s, Task{Signature: "vm-1", Name: "victim"}, fn)
				if err != nil {
					t.Fatal(err)
				}
				cancel()
				recv(t, "victim cancellation", f.Done())
				return f
			},
			wantErr: context.Canceled,
			counter: func(st Stats) uint64 { return st.Canceled },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			s := New(Options{Clock: clk})
			defer drain(t, s)

			gate := make(chan struct{})
			started := make(chan string, 1)
			head := submit(t, s, Task{Signature: "vm-1", Name: "head"}, blocker(started, "head", gate))
			recv(t, "head start", started)

			var ran atomic.Bool
			victim := tt.expire(t, s, clk, func(context.Context) (struct{}, error) { ran.Store(true); return struct{}{}, nil })
			close(gate)
			if _, err := result(t, head); err != nil {
				t.Fatal(err)
			}
			// A task submitted after the victim has run, so the queue
			// went past it.
			if err := s.Do(context.Background(), Task{Signature: "vm-1", Name: "next"}, func(context.Context) error { return nil }); err != nil {
				t.Fatal(err)
			}
			_, err := result(t, victim)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("victim: %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), `"victim"`) || !strings.Contains(err.Error(), `"vm-1"`) {
				t.Errorf("error %q does not name the task and signature", err)
			}
			if ran.Load() {
				t.Fatal("the expired task ran")
			}
			if got := tt.counter(s.Stats()); got != 1 {
				t.Fatalf("counter = %d, want 1", got)
			}
		})
	}
}

func TestSubmitAfterDeadlineIsRejected(t *testing.T) {
	clk := newFakeClock()
	s := New(Options{Clock: clk})
	defer drain(t, s)
	_, err := Sync(context.Background(), s, Task{Signature: "vm-1", Deadline: clk.Now()}, func(context.Context) (int, error) {
		t.Error("ran")
		return 0, nil
	})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
}

func TestRunningTaskDeadlineCancelsContext(t *testing.T) {
	tests := []struct {
		name    string
		ret     func(ctx context.Context) error
		wantErr []error
	}{
		{"returns the cause", context.Cause, []error{ErrTimeout}},
		{"returns ctx.Err", func(ctx context.Context) error { return ctx.Err() }, []error{ErrTimeout, context.Canceled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			s := New(Options{Clock: clk})
			defer drain(t, s)

			started := make(chan time.Time, 1)
			f := submit(t, s, Task{Signature: "vm-1", Name: "start", Timeout: 10 * time.Second}, func(ctx context.Context) (struct{}, error) {
				d, _ := ctx.Deadline()
				started <- d
				<-ctx.Done()
				return struct{}{}, tt.ret(ctx)
			})
			wantDeadline := clk.Now().Add(10 * time.Second)
			if d := recv(t, "start", started); !d.Equal(wantDeadline) {
				t.Fatalf("ctx.Deadline() = %v, want %v", d, wantDeadline)
			}
			clk.Advance(10 * time.Second)
			_, err := result(t, f)
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Fatalf("got %v, want it to match %v", err, want)
				}
			}
			st := s.Stats()
			if st.DeadlineCancels != 1 || st.WatchdogReleases != 0 {
				t.Fatalf("DeadlineCancels %d, WatchdogReleases %d; want 1, 0", st.DeadlineCancels, st.WatchdogReleases)
			}
		})
	}
}

func TestWatchdogReleasesStuckTask(t *testing.T) {
	const grace = 3 * time.Second
	tests := []struct {
		name string
		// endContext makes the stuck task's context end.
		endContext func(clk *fakeClock, cancel context.CancelFunc)
		wantErr    []error
	}{
		{"deadline", func(clk *fakeClock, _ context.CancelFunc) { clk.Advance(10 * time.Second) }, []error{ErrTimeout}},
		{"submitter cancels", func(_ *fakeClock, cancel context.CancelFunc) { cancel() }, []error{ErrTimeout, context.Canceled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			logs, logger := newLogSink()
			s := New(Options{Clock: clk, Grace: grace, Logger: logger})
			defer drain(t, s)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sawCancel := make(chan struct{})
			stuck := make(chan struct{})
			returned := make(chan struct{})
			// The stuck task notices its context but ignores it, like an
			// agent call without a timeout.
			stuckF, err := Submit(ctx, s, Task{Signature: "vm-1", Name: "stuck", Timeout: 10 * time.Second}, func(ctx context.Context) (struct{}, error) {
				<-ctx.Done()
				close(sawCancel)
				<-stuck
				defer close(returned)
				return struct{}{}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var nextRan atomic.Bool
			next := submit(t, s, Task{Signature: "vm-1", Name: "next"}, func(context.Context) (struct{}, error) {
				nextRan.Store(true)
				return struct{}{}, nil
			})

			tt.endContext(clk, cancel)
			recv(t, "the stuck task's context to end", sawCancel)
			// The grace period starts in a context callback, which runs on
			// its own goroutine when the submitter cancels.
			eventually(t, "the grace period to start", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return stuckF.graceT != nil
			})
			if isDone(stuckF) || nextRan.Load() {
				t.Fatal("the slot was released before the grace period")
			}
			clk.Advance(grace - time.Nanosecond)
			if isDone(stuckF) || nextRan.Load() {
				t.Fatal("the slot was released before the grace period")
			}
			clk.Advance(time.Nanosecond)

			_, err = result(t, stuckF)
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Fatalf("stuck task: %v, want it to match %v", err, want)
				}
			}
			if !strings.Contains(err.Error(), `"stuck"`) || !strings.Contains(err.Error(), `"vm-1"`) {
				t.Errorf("error %q does not name the task and signature", err)
			}
			if _, err := result(t, next); err != nil || !nextRan.Load() {
				t.Fatalf("next task: ran %v, err %v", nextRan.Load(), err)
			}
			st := s.Stats()
			if st.WatchdogReleases != 1 || st.Abandoned != 1 || st.LateReturns != 0 {
				t.Fatalf("after release: %+v", st)
			}
			recs := logs.find(t, "watchdog released stuck task")
			if len(recs) != 1 || recs[0]["signature"] != "vm-1" || recs[0]["task"] != "stuck" {
				t.Fatalf("release log records: %v", recs)
			}
			// Drain waits for the abandoned goroutine too.
			expired, cancelDrain := context.WithCancel(context.Background())
			cancelDrain()
			if err := s.Drain(expired); err == nil {
				t.Fatal("Drain returned nil while an abandoned task was still running")
			}

			close(stuck)
			recv(t, "the stuck task to return", returned)
			eventually(t, "the late return to be logged", func() bool { return len(logs.find(t, "abandoned task returned")) > 0 })
			if recs := logs.find(t, "abandoned task returned"); len(recs) != 1 || recs[0]["signature"] != "vm-1" || recs[0]["task"] != "stuck" {
				t.Fatalf("late return log records: %v", recs)
			}
			if st := s.Stats(); st.LateReturns != 1 || st.Abandoned != 0 {
				t.Fatalf("after the late return: LateReturns %d, Abandoned %d", st.LateReturns, st.Abandoned)
			}
			// The late result is dropped: the caller keeps ErrTimeout.
			if _, err := result(t, stuckF); !errors.Is(err, ErrTimeout) {
				t.Fatalf("result changed after the late return: %v", err)
			}
		})
	}
}

func TestPanicBecomesErrPanic(t *testing.T) {
	errDisk := errors.New("disk gone")
	tests := []struct {
		name    string
		value   any
		wantErr error
	}{
		{"string", "boom", nil},
		{"error", errDisk, errDisk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs, logger := newLogSink()
			s := New(Options{Logger: logger})
			defer drain(t, s)

			gate := make(chan struct{})
			bad := submit(t, s, Task{Signature: "vm-1", Name: "bad"}, func(context.Context) (int, error) {
				<-gate
				panic(tt.value)
			})
			next := submit(t, s, Task{Signature: "vm-1", Name: "next"}, func(context.Context) (int, error) { return 7, nil })
			close(gate)

			_, err := result(t, bad)
			if !errors.Is(err, ErrPanic) {
				t.Fatalf("got %v, want ErrPanic", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want it to match %v", err, tt.wantErr)
			}
			pe, ok := errors.AsType[*PanicError](err)
			if !ok || pe.Value != tt.value || pe.Signature != "vm-1" || pe.Task != "bad" {
				t.Fatalf("PanicError %+v", pe)
			}
			if !strings.Contains(string(pe.Stack), "TestPanicBecomesErrPanic") {
				t.Fatalf("stack does not show the panicking function:\n%s", pe.Stack)
			}
			if v, err := result(t, next); err != nil || v != 7 {
				t.Fatalf("next task: %d, %v", v, err)
			}
			if got := s.Stats().Panics; got != 1 {
				t.Fatalf("Stats.Panics = %d, want 1", got)
			}
			if recs := logs.find(t, "task panicked"); len(recs) != 1 || recs[0]["signature"] != "vm-1" || recs[0]["task"] != "bad" {
				t.Fatalf("panic log records: %v", recs)
			}
		})
	}
}

// lateContext reports cancellation through Err before closing Done, which
// it never does: as if the context callbacks had not run yet.
type lateContext struct {
	context.Context
	done     chan struct{}
	canceled atomic.Bool
}

func (c *lateContext) Done() <-chan struct{} { return c.done }

func (c *lateContext) Err() error {
	if c.canceled.Load() {
		return context.Canceled
	}
	return nil
}
