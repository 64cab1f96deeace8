package thread

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func TestFIFOPerSignature(t *testing.T) {
	s := New(Options{})
	defer drain(t, s)

	// Hold the signature so that every later task is queued, then let
	// them all go: they must start in submission order.
	gate := make(chan struct{})
	started := make(chan string, 1)
	head := submit(t, s, Task{Signature: "vm-1", Name: "head"}, blocker(started, "head", gate))
	recv(t, "head start", started)

	const n = 200
	var mu sync.Mutex
	var order []int
	futures := make([]*Future[int], n)
	for i := range n {
		futures[i] = submit(t, s, Task{Signature: "vm-1", Name: fmt.Sprint(i)}, func(context.Context) (int, error) {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			return i, nil
		})
		// Unrelated traffic must not disturb the order.
		submit(t, s, Task{Signature: fmt.Sprintf("vm-other-%d", i%7)}, func(context.Context) (int, error) { return 0, nil })
	}
	close(gate)
	if _, err := result(t, head); err != nil {
		t.Fatal(err)
	}
	for i, f := range futures {
		v, err := result(t, f)
		if err != nil || v != i {
			t.Fatalf("task %d: got %d, %v", i, v, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.IsSorted(order) || len(order) != n {
		t.Fatalf("tasks ran out of submission order: %v", order)
	}
}

func TestLevelBoundsConcurrency(t *testing.T) {
	for _, level := range []int{1, 3} {
		t.Run(fmt.Sprintf("level=%d", level), func(t *testing.T) {
			s := New(Options{})
			defer drain(t, s)

			const n = 12
			var running, peak atomic.Int64
			release := make(chan struct{})
			fn := func(context.Context) (struct{}, error) {
				cur := running.Add(1)
				for {
					p := peak.Load()
					if cur <= p || peak.CompareAndSwap(p, cur) {
						break
					}
				}
				<-release
				running.Add(-1)
				return struct{}{}, nil
			}
			futures := make([]*Future[struct{}], n)
			for i := range n {
				futures[i] = submit(t, s, Task{Signature: "host-1", Name: fmt.Sprint(i), Level: level}, fn)
			}
			// Before each release, wait for the slots to fill: this proves
			// that level tasks do run together, while peak proves that
			// never more do.
			for i := range n {
				want := int64(min(level, n-i))
				eventually(t, fmt.Sprintf("%d tasks running", want), func() bool { return running.Load() == want })
				release <- struct{}{}
			}
			for _, f := range futures {
				if _, err := result(t, f); err != nil {
					t.Fatal(err)
				}
			}
			if got := peak.Load(); got != int64(level) {
				t.Fatalf("peak concurrency %d, want %d", got, level)
			}
		})
	}
}

func TestSignaturesRunInParallel(t *testing.T) {
	s := New(Options{})
	defer drain(t, s)

	// Every task waits at a barrier that opens only once all of them have
	// reached it: this completes only if they all run at the same time.
	const n = 64
	var arrived atomic.Int64
	barrier := make(chan struct{})
	futures := make([]*Future[struct{}], n)
	for i := range n {
		futures[i] = submit(t, s, Task{Signature: fmt.Sprintf("vm-%d", i)}, func(context.Context) (struct{}, error) {
			arrived.Add(1)
			<-barrier
			return struct{}{}, nil
		})
	}
	eventually(t, "every task at the barrier", func() bool { return arrived.Load() == n })
	close(barrier)
	for _, f := range futures {
		if _, err := result(t, f); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSyncResult(t *testing.T) {
	s := New(Options{})
	defer drain(t, s)
	errBoom := errors.New("boom")
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, "request-7")

	tests := []struct {
		name    string
		fn      func(ctx context.Context) (string, error)
		want    string
		wantErr error
	}{
		{"value", func(context.Context) (string, error) { return "vm-running", nil }, "vm-running", nil},
		{"error", func(context.Context) (string, error) { return "partial", errBoom }, "partial", errBoom},
		{"context values", func(ctx context.Context) (string, error) { return ctx.Value(ctxKey{}).(string), nil }, "request-7", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Sync(ctx, s, Task{Signature: "vm-1", Name: tt.name}, tt.fn)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	t.Run("Do", func(t *testing.T) {
		called := false
		if err := s.Do(ctx, Task{Signature: "vm-1"}, func(context.Context) error { called = true; return errBoom }); !errors.Is(err, errBoom) || !called {
			t.Fatalf("Do: called %v, err %v", called, err)
		}
	})
	t.Run("no signature", func(t *testing.T) {
		if _, err := Sync(ctx, s, Task{Name: "x"}, func(context.Context) (int, error) { t.Error("ran"); return 0, nil }); err == nil {
			t.Fatal("a task without a signature was accepted")
		}
	})
}

func TestDedupSupersedesPendingTask(t *testing.T) {
	s := New(Options{})
	defer drain(t, s)

	var mu sync.Mutex
	var ran []string
	record := func(name string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) {
			mu.Lock()
			ran = append(ran, name)
			mu.Unlock()
			return name, nil
		}
	}
	gate := make(chan struct{})
	started := make(chan string, 1)
	// The running task has the same key: only pending tasks are superseded.
	running := submit(t, s, Task{Signature: "host-1", Name: "refresh-0", DedupKey: "refresh"}, blocker(started, "refresh-0", gate))
	recv(t, "first refresh start", started)
	first := submit(t, s, Task{Signature: "host-1", Name: "refresh-1", DedupKey: "refresh"}, record("refresh-1"))
	other := submit(t, s, Task{Signature: "host-1", Name: "ping", DedupKey: "ping"}, record("ping"))
	latest := submit(t, s, Task{Signature: "host-1", Name: "refresh-2", DedupKey: "refresh"}, record("refresh-2"))

	if _, err := result(t, first); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("older pending task: %v, want ErrSuperseded", err)
	}
	if isDone(running) {
		t.Fatal("the running task was superseded")
	}
	close(gate)
	for _, f := range []*Future[string]{running, other, latest} {
		if _, err := result(t, f); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The replacement goes to the end of the queue, behind "ping".
	if want := []string{"ping", "refresh-2"}; !slices.Equal(ran, want) {
		t.Fatalf("ran %v, want %v", ran, want)
	}
	if got := s.Stats().Superseded; got != 1 {
		t.Fatalf("Stats.Superseded = %d, want 1", got)
	}
}

func TestMaxPending(t *testing.T) {
	s := New(Options{})
	defer drain(t, s)

	gate := make(chan struct{})
	started := make(chan string, 1)
	task := func(name, key string) Task {
		return Task{Signature: "host-1", Name: name, MaxPending: 2, DedupKey: key}
	}
	submit(t, s, task("running", ""), blocker(started, "running", gate))
	recv(t, "running task start", started)
	submit(t, s, task("p1", ""), blocker(nil, "p1", gate))
	p2 := submit(t, s, task("p2", "sync"), blocker(nil, "p2", gate))

	// The running task does not count: two are pending, the third fails.
	if _, err := Submit(context.Background(), s, task("p3", ""), blocker(nil, "p3", gate)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third pending task: %v, want ErrQueueFull", err)
	}
	// Another signature has its own limit.
	submit(t, s, Task{Signature: "host-2", MaxPending: 2}, blocker(nil, "other", gate))
	// Superseding does not lengthen the queue, so it is accepted.
	p2b := submit(t, s, task("p2b", "sync"), blocker(nil, "p2b", gate))
	if _, err := result(t, p2); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("p2: %v, want ErrSuperseded", err)
	}
	close(gate)
	if v, err := result(t, p2b); err != nil || v != "p2b" {
		t.Fatalf("p2b: %q, %v", v, err)
	}
	if got := s.Stats().Rejected; got != 1 {
		t.Fatalf("Stats.Rejected = %d, want 1", got)
	}
}
