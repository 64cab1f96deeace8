package thread

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWorkQueueDuplicateAddsCoalesce(t *testing.T) {
	q := NewWorkQueue[string](WorkQueueOptions{})
	defer q.ShutDown()
	for _, k := range []string{"host-1", "host-2", "host-1", "host-1", "host-2", "host-3"} {
		q.Add(k)
	}
	if got := q.Len(); got != 3 {
		t.Fatalf("Len = %d, want 3", got)
	}
	for _, want := range []string{"host-1", "host-2", "host-3"} {
		if k, shutdown := q.Get(); k != want || shutdown {
			t.Fatalf("Get = %q, %v; want %q", k, shutdown, want)
		}
		q.Done(want)
	}
	if got := q.Len(); got != 0 {
		t.Fatalf("Len = %d after every key was processed", got)
	}
}

func TestWorkQueueAddWhileProcessing(t *testing.T) {
	q := NewWorkQueue[string](WorkQueueOptions{})
	defer q.ShutDown()
	q.Add("host-1")
	k, _ := q.Get()

	// Re-adds while host-1 is processed: it is not handed out again...
	for range 3 {
		q.Add("host-1")
	}
	q.Add("host-2")
	got := make(chan string, 2)
	go func() {
		k, _ := q.Get()
		got <- k
		q.Done(k)
		k, _ = q.Get()
		got <- k
	}()
	// ...so a second worker gets host-2, queued after it.
	if k2 := recv(t, "second Get", got); k2 != "host-2" {
		t.Fatalf("second worker got %q while %q was processing", k2, k)
	}
	// Done queues exactly one more run.
	q.Done(k)
	if k3 := recv(t, "third Get", got); k3 != "host-1" {
		t.Fatalf("got %q, want host-1 again", k3)
	}
	q.Done("host-1")
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) != 0 || len(q.dirty) != 0 || len(q.processing) != 0 {
		t.Fatalf("a third run is pending: queue %v, dirty %v, processing %v", q.queue, q.dirty, q.processing)
	}
}

func TestWorkQueueRunOneMoreRun(t *testing.T) {
	q := NewWorkQueue[string](WorkQueueOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	runs := map[string]int{}
	started := make(chan string, 10)
	finished := make(chan string, 10)
	gate := make(chan struct{})
	ran := make(chan error, 1)
	go func() {
		ran <- q.Run(ctx, 2, func(_ context.Context, k string) error {
			mu.Lock()
			runs[k]++
			n := runs[k]
			mu.Unlock()
			started <- k
			if k == "a" && n == 1 {
				<-gate
			}
			finished <- k
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := recv(t, "Run to return", ran); err != nil {
			t.Fatal(err)
		}
	}()

	q.Add("a")
	if k := recv(t, "first run", started); k != "a" {
		t.Fatalf("started %q", k)
	}
	q.Add("a")
	q.Add("a")
	q.Add("b")
	// The idle worker must take b, not a second a: if a were queued it
	// would come first.
	if k := recv(t, "b", started); k != "b" {
		t.Fatalf("the second worker started %q while a was processing", k)
	}
	recv(t, "b to finish", finished)
	close(gate)
	recv(t, "a to finish", finished)
	if k := recv(t, "a's second run", started); k != "a" {
		t.Fatalf("started %q", k)
	}
	recv(t, "a's second run to finish", finished)
	eventually(t, "the queue to settle", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.processing) == 0
	})
	q.mu.Lock()
	left := len(q.queue) + len(q.dirty)
	q.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if runs["a"] != 2 || runs["b"] != 1 || left != 0 {
		t.Fatalf("runs %v, %d keys left; want a twice, b once", runs, left)
	}
}

// TestWorkQueueStress adds keys from several goroutines while several
// workers process them: no key is ever processed by two workers at once,
// and every add is followed by a run that sees it.
func TestWorkQueueStress(t *testing.T) {
	const (
		keys    = 8
		adders  = 4
		adds    = 2000
		workers = 4
	)
	q := NewWorkQueue[int](WorkQueueOptions{})
	var version, seen [keys]atomic.Int64
	var inflight [keys]atomic.Int32
	var overlap atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() {
		ran <- q.Run(ctx, workers, func(_ context.Context, k int) error {
			if inflight[k].Add(1) != 1 {
				overlap.Store(true)
			}
			seen[k].Store(version[k].Load())
			for range rand.IntN(50) {
				runtime.Gosched()
			}
			inflight[k].Add(-1)
			return nil
		})
	}()

	var wg sync.WaitGroup
	for a := range adders {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(a), 1))
			for range adds {
				k := r.IntN(keys)
				version[k].Add(1)
				q.Add(k)
			}
		})
	}
	wg.Wait()
	eventually(t, "every add to be seen by a run", func() bool {
		for k := range keys {
			if seen[k].Load() != version[k].Load() {
				return false
			}
		}
		return true
	})
	cancel()
	if err := recv(t, "Run to return", ran); err != nil {
		t.Fatal(err)
	}
	if overlap.Load() {
		t.Fatal("a key was processed by two workers at once")
	}
}

func TestWorkQueueAddAfter(t *testing.T) {
	clk := newFakeClock()
	q := NewWorkQueue[string](WorkQueueOptions{Clock: clk})
	defer q.ShutDown()

	q.AddAfter("late", 10*time.Second)
	q.AddAfter("late", 20*time.Second) // later: ignored
	q.AddAfter("early", 10*time.Second)
	q.AddAfter("early", 5*time.Second) // earlier: replaces
	clk.Advance(5*time.Second - time.Nanosecond)
	if q.Len() != 0 {
		t.Fatal("a delayed key was added early")
	}
	clk.Advance(time.Nanosecond)
	if k, _ := q.Get(); k != "early" || q.Len() != 0 {
		t.Fatalf("after 5s: got %q, Len %d", k, q.Len())
	}
	q.Done("early")
	clk.Advance(5 * time.Second)
	if k, _ := q.Get(); k != "late" {
		t.Fatalf("after 10s: got %q", k)
	}
	q.Done("late")
	clk.Advance(time.Minute)
	if q.Len() != 0 {
		t.Fatal("a replaced delayed add fired")
	}
}

func TestWorkQueueBackoff(t *testing.T) {
	q := NewWorkQueue[string](WorkQueueOptions{BaseDelay: time.Second, MaxDelay: 5 * time.Second})
	defer q.ShutDown()
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for n, w := range want {
		if got := q.backoff(n); got != w {
			t.Errorf("backoff(%d) = %s, want %s", n, got, w)
		}
	}
	if got := q.backoff(1000); got != 5*time.Second {
		t.Errorf("backoff(1000) = %s", got)
	}
}

func TestWorkQueueRunRetriesWithBackoff(t *testing.T) {
	clk := newFakeClock()
	logs, logger := newLogSink()
	q := NewWorkQueue[string](WorkQueueOptions{Clock: clk, Logger: logger, BaseDelay: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	attempts := make(chan int, 10)
	n := 0
	ran := make(chan error, 1)
	go func() {
		ran <- q.Run(ctx, 1, func(_ context.Context, k string) error {
			n++
			attempts <- n
			switch n {
			case 1:
				return errors.New("agent unreachable")
			case 2:
				panic("bad state")
			}
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := recv(t, "Run to return", ran); err != nil {
			t.Fatal(err)
		}
	}()

	q.Add("host-1")
	recv(t, "attempt 1", attempts)
	eventually(t, "the first retry to be scheduled", func() bool { return clk.Armed() == 1 })
	if got := q.NumRequeues("host-1"); got != 1 {
		t.Fatalf("NumRequeues = %d, want 1", got)
	}
	clk.Advance(time.Second - time.Nanosecond)
	if clk.Armed() != 1 {
		t.Fatal("retried before the base delay")
	}
	clk.Advance(time.Nanosecond)
	recv(t, "attempt 2", attempts)
	eventually(t, "the second retry to be scheduled", func() bool { return clk.Armed() == 1 })
	clk.Advance(2*time.Second - time.Nanosecond)
	if clk.Armed() != 1 {
		t.Fatal("retried before twice the base delay")
	}
	clk.Advance(time.Nanosecond)
	recv(t, "attempt 3", attempts)
	eventually(t, "success to clear the failures", func() bool { return q.NumRequeues("host-1") == 0 })
	if recs := logs.find(t, "work queue function failed"); len(recs) != 1 || recs[0]["key"] != "host-1" {
		t.Fatalf("failure log records: %v", recs)
	}
	if recs := logs.find(t, "work queue function panicked"); len(recs) != 1 {
		t.Fatalf("panic log records: %v", recs)
	}
}

func TestWorkQueueShutDown(t *testing.T) {
	clk := newFakeClock()
	q := NewWorkQueue[string](WorkQueueOptions{Clock: clk})
	q.Add("queued")
	q.AddAfter("delayed", time.Second)
	type got struct {
		key      string
		shutdown bool
	}
	gotc := make(chan got, 1)
	q.ShutDown()
	q.ShutDown()
	q.Add("after")
	if clk.Armed() != 0 {
		t.Fatal("ShutDown left a delayed add armed")
	}
	// Keys queued before ShutDown are still handed out, then Get reports
	// the shutdown.
	if k, shutdown := q.Get(); k != "queued" || shutdown {
		t.Fatalf("Get = %q, %v", k, shutdown)
	}
	q.Done("queued")
	go func() {
		k, shutdown := q.Get()
		gotc <- got{k, shutdown}
	}()
	if r := recv(t, "Get after ShutDown", gotc); r != (got{"", true}) {
		t.Fatalf("Get after ShutDown = %+v", r)
	}
	if !q.ShuttingDown() {
		t.Fatal("ShuttingDown = false")
	}
	if err := q.Run(context.Background(), 0, nil); err == nil {
		t.Fatal("Run accepted 0 workers")
	}
}
