package managementnode

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/internal/testenv"
)

// Tests of the ring hooks (OnRingChange). Each uses one node: its ring
// changes only when the test bumps the epoch, so every round is the test's.

func mustBump(t *testing.T, c *cluster) int64 {
	t.Helper()
	epoch, err := c.bump()
	if err != nil {
		t.Fatal(err)
	}
	return epoch
}

// TestRingHooksRunOutsideRebuildLock: a hook runs with rebuildMu free and
// may call what takes it (a resync, a forced resync) and the status.
func TestRingHooksRunOutsideRebuildLock(t *testing.T) {
	c := newCluster(t)
	a := c.add("a")
	start := a.Ring().Epoch
	type seen struct {
		epoch     int64
		free      bool
		resyncErr error
		status    Status
	}
	var mu sync.Mutex
	var got []seen
	a.OnRingChange(func(ctx context.Context, r *Ring) {
		if r.Epoch <= start {
			return
		}
		// The installer releases rebuildMu just after offering the ring:
		// poll for it briefly. A hook running under the lock never gets it.
		s := seen{epoch: r.Epoch}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if a.rebuildMu.TryLock() {
				a.rebuildMu.Unlock()
				s.free = true
				break
			}
		}
		if s.free {
			s.resyncErr = a.resync(ctx)
			a.forceResync(ctx)
			s.status = a.Status()
		}
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	})
	epoch := mustBump(t, c)
	a.triggerResync()
	testenv.Eventually(t, 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0
	}, "hook called for epoch %d", epoch)
	mu.Lock()
	s := got[0]
	mu.Unlock()
	if s.epoch != epoch {
		t.Fatalf("hook saw epoch %d, want %d", s.epoch, epoch)
	}
	if !s.free {
		t.Fatal("the hook ran while rebuildMu was held")
	}
	if s.resyncErr != nil {
		t.Fatalf("resync from a hook: %v", s.resyncErr)
	}
	if s.status.Epoch != epoch || s.status.NodeUUID != "a" {
		t.Fatalf("status read from a hook: %+v, want epoch %d", s.status, epoch)
	}
}

// TestRingHooksCoalesce: the goroutine that changes the ring (here the
// Guard's forced resync, then plain resyncs) does not wait for the hooks;
// changes made while a round runs give exactly one more round, with the
// newest ring.
func TestRingHooksCoalesce(t *testing.T) {
	c := newCluster(t)
	a := c.add("a")
	ctx := context.Background()
	start := a.Ring().Epoch
	entered := make(chan int64, 16)
	release := make(chan struct{})
	var returned atomic.Int32
	var mu sync.Mutex
	var calls []int64
	a.OnRingChange(func(ctx context.Context, r *Ring) {
		if r.Epoch <= start {
			return
		}
		defer returned.Add(1)
		mu.Lock()
		calls = append(calls, r.Epoch)
		mu.Unlock()
		entered <- r.Epoch
		select {
		case <-release:
		case <-ctx.Done():
		case <-time.After(10 * time.Second): // bound a failing run
		}
	})

	e1 := mustBump(t, c)
	a.forceResync(ctx) // what Guard does on a bus handler goroutine
	if a.Ring().Epoch != e1 {
		t.Fatalf("forced resync installed epoch %d, want %d", a.Ring().Epoch, e1)
	}
	if n := returned.Load(); n != 0 {
		t.Fatalf("the forced resync waited for the hook (%d rounds returned)", n)
	}
	select {
	case got := <-entered:
		if got != e1 {
			t.Fatalf("first round with epoch %d, want %d", got, e1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no hook round for the first change")
	}

	// Two more changes while that round is blocked.
	mustBump(t, c)
	if err := a.resync(ctx); err != nil {
		t.Fatal(err)
	}
	e3 := mustBump(t, c)
	if err := a.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Ring().Epoch != e3 {
		t.Fatalf("ring at epoch %d, want %d", a.Ring().Epoch, e3)
	}
	if n := returned.Load(); n != 0 {
		t.Fatalf("a resync waited for the hook (%d rounds returned)", n)
	}
	close(release)
	testenv.Eventually(t, 10*time.Second, func() bool { return returned.Load() >= 2 }, "second round returns")
	// Both rings are installed and no other change is made: no third round
	// can be pending. A wrong implementation that runs one round per change
	// shows up here or in calls.
	testenv.Eventually(t, 10*time.Second, func() bool { return len(a.hooks.wake) == 0 }, "no wake-up left")
	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	if want := []int64{e1, e3}; !slices.Equal(got, want) {
		t.Fatalf("rounds with epochs %v, want %v (the changes during a round coalesce into one round with the newest ring)", got, want)
	}
}

// TestRingHooksNeverOverlap: ring changes from several goroutines at once
// (resync loop, forced and direct resyncs) never run two hooks at once,
// each hook sees increasing epochs, and every hook ends at the newest ring.
func TestRingHooksNeverOverlap(t *testing.T) {
	c := newCluster(t)
	a := c.add("a")
	const hooks = 3
	var running, overlaps atomic.Int32
	var mu sync.Mutex
	last := make([]int64, hooks)
	var orderErrs []string
	for i := 0; i < hooks; i++ {
		a.OnRingChange(func(_ context.Context, r *Ring) {
			if running.Add(1) != 1 {
				overlaps.Add(1)
			}
			defer running.Add(-1)
			mu.Lock()
			if r.Epoch <= last[i] {
				orderErrs = append(orderErrs, fmt.Sprintf("hook %d: epoch %d after %d", i, r.Epoch, last[i]))
			}
			last[i] = r.Epoch
			mu.Unlock()
			for j := 0; j < 200; j++ { // widen the window for an overlap
				runtime.Gosched()
			}
		})
	}
	const changers, changes = 4, 10
	errs := make(chan error, changers*changes)
	var wg sync.WaitGroup
	for g := 0; g < changers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < changes; k++ {
				if _, err := c.bump(); err != nil {
					errs <- err
					return
				}
				switch k % 3 {
				case 0:
					if err := a.resync(context.Background()); err != nil {
						errs <- err
					}
				case 1:
					a.forceResync(context.Background())
				default:
					a.triggerResync()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var row RingVO
	if err := c.db.First(&row, 1).Error; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		if a.Ring().Epoch != row.Epoch {
			a.triggerResync()
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range last {
			if e != row.Epoch {
				return false
			}
		}
		return true
	}, "every hook reaches epoch %d", row.Epoch)
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("hooks ran concurrently %d times", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(orderErrs) > 0 {
		t.Fatalf("rings out of epoch order: %v", orderErrs)
	}
}

// TestRingHookRegisteredBeforeStart is called with the node's first ring.
func TestRingHookRegisteredBeforeStart(t *testing.T) {
	c := newCluster(t)
	a := c.newNode("a")
	var got atomic.Pointer[Ring]
	a.OnRingChange(func(_ context.Context, r *Ring) { got.Store(r) })
	c.start(a)
	testenv.Eventually(t, 10*time.Second, func() bool {
		r := got.Load()
		return r != nil && r.Has("a") && r.Epoch == a.Ring().Epoch
	}, "hook called with the first ring")
}

// TestStopWaitsForRingHooks: Stop cancels the hooks' context and does not
// return before the round in progress has.
func TestStopWaitsForRingHooks(t *testing.T) {
	c := newCluster(t)
	a := c.add("a")
	start := a.Ring().Epoch
	entered, cancelled, gate := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var returned atomic.Bool
	var once sync.Once
	a.OnRingChange(func(ctx context.Context, r *Ring) {
		first := false
		if r.Epoch > start {
			once.Do(func() { first = true })
		}
		if !first {
			return
		}
		defer returned.Store(true)
		close(entered)
		select {
		case <-ctx.Done():
			close(cancelled)
		case <-time.After(10 * time.Second): // bound a failing run
			return
		}
		select {
		case <-gate: // the hook's own cleanup, after its context ended
		case <-time.After(10 * time.Second):
		}
	})
	mustBump(t, c)
	a.triggerResync()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("hook not called")
	}

	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(context.Background()) }()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not cancel the hooks' context")
	}
	// The round is still running: Stop must still be waiting for it.
	// (Proving that something does not happen takes a wait.)
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a hook was still running", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(gate)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Stop did not return after the hook did")
	}
	if !returned.Load() {
		t.Fatal("Stop returned before the hook round")
	}
	if err := a.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
