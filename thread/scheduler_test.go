package thread

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestStopAndDrain(t *testing.T) {
	s := New(Options{})
	gate := make(chan struct{})
	started := make(chan string, 1)
	running := submit(t, s, Task{Signature: "vm-1", Name: "running"}, blocker(started, "running", gate))
	recv(t, "running task start", started)
	var pendingRan atomic.Bool
	pending := submit(t, s, Task{Signature: "vm-1", Name: "pending"}, func(context.Context) (string, error) {
		pendingRan.Store(true)
		return "", nil
	})

	stopNow(s)
	stopNow(s) // idempotent

	if _, err := result(t, pending); !errors.Is(err, ErrStopped) {
		t.Fatalf("pending task: %v, want ErrStopped", err)
	}
	if _, err := Submit(context.Background(), s, Task{Signature: "vm-2"}, blocker(nil, "", gate)); !errors.Is(err, ErrStopped) {
		t.Fatalf("submit after Stop: %v, want ErrStopped", err)
	}
	if err := s.Every(context.Background(), time.Second, 0, "late", func(context.Context) error { return nil }); !errors.Is(err, ErrStopped) {
		t.Fatalf("Every after Stop: %v, want ErrStopped", err)
	}
	if isDone(running) {
		t.Fatal("Stop completed the running task")
	}

	// Drain does not return while a task is running...
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Drain(expired); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "1 running") {
		t.Fatalf("Drain with a running task: %v", err)
	}
	// ...and returns once it has.
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	close(gate)
	if err := recv(t, "Drain", drained); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if v, err := result(t, running); err != nil || v != "running" {
		t.Fatalf("running task: %q, %v", v, err)
	}
	if pendingRan.Load() {
		t.Fatal("a pending task ran after Stop")
	}
	if st := s.Stats(); st.Evicted != 1 || st.Running != 0 || st.Pending != 0 || st.Queues != 0 {
		t.Fatalf("stats after drain: %+v", st)
	}
}

func TestDrainWithoutStopWaitsForPendingTasks(t *testing.T) {
	s := New(Options{})
	defer drain(t, s)
	gate := make(chan struct{})
	var done atomic.Int64
	for i := range 5 {
		submit(t, s, Task{Signature: "vm-1", Name: fmt.Sprint(i)}, func(context.Context) (struct{}, error) {
			<-gate
			done.Add(1)
			return struct{}{}, nil
		})
	}
	close(gate)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := done.Load(); got != 5 {
		t.Fatalf("Drain returned with %d of 5 tasks done", got)
	}
	// The scheduler still accepts work.
	if err := s.Do(context.Background(), Task{Signature: "vm-1"}, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestFence(t *testing.T) {
	s := New(Options{})
	defer drain(t, s)
	gate := make(chan struct{})
	started := make(chan string, 1)
	running := submit(t, s, Task{Signature: "host-1", Name: "running"}, blocker(started, "running", gate))
	recv(t, "running task start", started)
	pending := submit(t, s, Task{Signature: "host-1", Name: "pending"}, blocker(nil, "pending", gate))

	lift := s.Fence(func(sig string) bool { return strings.HasPrefix(sig, "host-") })
	if _, err := result(t, pending); !errors.Is(err, ErrFenced) {
		t.Fatalf("pending task: %v, want ErrFenced", err)
	}
	if _, err := Submit(context.Background(), s, Task{Signature: "host-2"}, blocker(nil, "", gate)); !errors.Is(err, ErrFenced) {
		t.Fatalf("submit to a fenced signature: %v, want ErrFenced", err)
	}
	if err := s.Do(context.Background(), Task{Signature: "vm-1"}, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("unfenced signature: %v", err)
	}
	close(gate)
	if _, err := result(t, running); err != nil {
		t.Fatalf("running task: %v", err)
	}
	lift()
	lift()
	if err := s.Do(context.Background(), Task{Signature: "host-2"}, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("after lift: %v", err)
	}
}

func TestIdleSignaturesAreRemoved(t *testing.T) {
	tests := []struct {
		name string
		// run waits for the result of every task it submits.
		run func(t *testing.T, s *Scheduler, clk *fakeClock)
	}{
		{"many signatures", func(t *testing.T, s *Scheduler, clk *fakeClock) {
			futures := make([]*Future[int], 0, 1000)
			for i := range 1000 {
				futures = append(futures, submit(t, s, Task{Signature: fmt.Sprintf("vm-%d", i)}, func(context.Context) (int, error) { return i, nil }))
			}
			for _, f := range futures {
				result(t, f)
			}
		}},
		{"errors and panics", func(t *testing.T, s *Scheduler, clk *fakeClock) {
			s.Do(context.Background(), Task{Signature: "a"}, func(context.Context) error { return errors.New("x") })
			s.Do(context.Background(), Task{Signature: "b"}, func(context.Context) error { panic("x") })
		}},
		{"pending timeout, cancel, dedup and rejection", func(t *testing.T, s *Scheduler, clk *fakeClock) {
			gate := make(chan struct{})
			head := submit(t, s, Task{Signature: "a", MaxPending: 3}, blocker(nil, "", gate))
			timedOut := submit(t, s, Task{Signature: "a", Timeout: time.Second}, blocker(nil, "", gate))
			ctx, cancel := context.WithCancel(context.Background())
			canceled, _ := Submit(ctx, s, Task{Signature: "a"}, blocker(nil, "", gate))
			old := submit(t, s, Task{Signature: "a", DedupKey: "k"}, blocker(nil, "", gate))
			latest := submit(t, s, Task{Signature: "a", DedupKey: "k", MaxPending: 1}, blocker(nil, "", gate))
			if _, err := Submit(context.Background(), s, Task{Signature: "a", MaxPending: 1}, blocker(nil, "", gate)); !errors.Is(err, ErrQueueFull) {
				t.Fatalf("want ErrQueueFull, got %v", err)
			}
			clk.Advance(time.Second)
			cancel()
			close(gate)
			for _, f := range []*Future[string]{head, timedOut, canceled, old, latest} {
				result(t, f)
			}
		}},
		{"watchdog release", func(t *testing.T, s *Scheduler, clk *fakeClock) {
			stuck := make(chan struct{})
			f := submit(t, s, Task{Signature: "a", Timeout: time.Second}, blocker(nil, "", stuck))
			clk.Advance(time.Second)
			clk.Advance(DefaultGrace)
			result(t, f)
			// The queue goes although the abandoned function has not
			// returned.
			eventually(t, "no queue left", func() bool { return s.Stats().Queues == 0 })
			close(stuck)
		}},
		{"stop", func(t *testing.T, s *Scheduler, clk *fakeClock) {
			gate := make(chan struct{})
			head := submit(t, s, Task{Signature: "a"}, blocker(nil, "", gate))
			next := submit(t, s, Task{Signature: "a"}, blocker(nil, "", gate))
			stopNow(s)
			close(gate)
			result(t, head)
			result(t, next)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			s := New(Options{Clock: clk})
			defer drain(t, s)
			tt.run(t, s, clk)
			eventually(t, "no queue left", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return len(s.queues) == 0
			})
			if st := s.Stats(); st.Queues != 0 || st.Pending != 0 || st.Running != 0 {
				t.Fatalf("stats: %+v", st)
			}
		})
	}
}

func TestStatsHistograms(t *testing.T) {
	clk := newFakeClock()
	s := New(Options{Clock: clk})
	defer drain(t, s)

	gate := make(chan struct{})
	started := make(chan string, 2)
	first := submit(t, s, Task{Signature: "vm-1", Name: "first"}, blocker(started, "first", gate))
	recv(t, "first start", started)
	second := submit(t, s, Task{Signature: "vm-1", Name: "second"}, blocker(started, "second", gate))
	clk.Advance(5 * time.Second) // first runs 5s, second waits 5s
	close(gate)
	result(t, first)
	result(t, second)

	st := s.Stats()
	// Waits: 0 and 5s. Runs: 5s and 0.
	for name, h := range map[string]Histogram{"wait": st.Wait, "run": st.Run} {
		if h.Count != 2 || h.Sum != 5*time.Second {
			t.Fatalf("%s: count %d, sum %s; want 2, 5s", name, h.Count, h.Sum)
		}
		for _, b := range h.Buckets {
			want := uint64(1)
			if b.UpperBound >= 5*time.Second {
				want = 2
			}
			if b.Count != want {
				t.Fatalf("%s: bucket le %s has %d, want %d", name, b.UpperBound, b.Count, want)
			}
		}
	}
	if st.Submitted != 2 || st.Started != 2 || st.Finished != 2 {
		t.Fatalf("counters: %+v", st)
	}
}

func TestHistogramBuckets(t *testing.T) {
	var h histogram
	for _, d := range []time.Duration{0, time.Millisecond, time.Millisecond + 1, time.Second, time.Hour} {
		h.observe(d)
	}
	got := h.snapshot()
	// Cumulative counts of the observations <= each bound.
	want := map[time.Duration]uint64{
		100 * time.Microsecond: 1, time.Millisecond: 2, 10 * time.Millisecond: 3, 100 * time.Millisecond: 3,
		time.Second: 4, 10 * time.Second: 4, time.Minute: 4, 10 * time.Minute: 4,
	}
	if got.Count != 5 || got.Sum != 2*time.Millisecond+1+time.Second+time.Hour || len(got.Buckets) != len(want) {
		t.Fatalf("histogram %+v", got)
	}
	for _, b := range got.Buckets {
		if b.Count != want[b.UpperBound] {
			t.Errorf("bucket le %s: %d, want %d", b.UpperBound, b.Count, want[b.UpperBound])
		}
	}
}
