package thread

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// patience bounds every wait of the tests. It is generous so that a loaded
// 2-core CI machine never trips it; a test never asserts a duration.
const patience = 30 * time.Second

// eventually polls cond until it holds, failing the test after patience.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv receives from ch, failing the test after patience.
func recv[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(patience):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// result waits for f's result, failing the test after patience.
func result[T any](t testing.TB, f *Future[T]) (T, error) {
	t.Helper()
	recv(t, "task result", f.Done())
	return f.Wait(context.Background())
}

// isDone reports whether f has completed, without waiting.
func isDone[T any](f *Future[T]) bool {
	select {
	case <-f.Done():
		return true
	default:
		return false
	}
}

// submit is Submit for a test that expects the task to be accepted.
func submit[T any](t testing.TB, s *Scheduler, task Task, fn func(ctx context.Context) (T, error)) *Future[T] {
	t.Helper()
	f, err := Submit(context.Background(), s, task, fn)
	if err != nil {
		t.Fatalf("submit %q on %q: %v", task.Name, task.Signature, err)
	}
	return f
}

// blocker returns a task function that reports its start on started (if
// not nil) and returns when gate is closed.
func blocker(started chan<- string, name string, gate <-chan struct{}) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		if started != nil {
			started <- name
		}
		<-gate
		return name, nil
	}
}

// drain stops s and waits for it, so that a test leaves no goroutine.
func drain(t testing.TB, s *Scheduler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// stopNow stops s without waiting for its running tasks.
func stopNow(s *Scheduler) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Stop(ctx)
}

// fakeClock is a Clock that moves only when told to. Advance runs the due
// callbacks synchronously, in deadline order, without holding its lock.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	when time.Time
	f    func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, when: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	i := slices.Index(t.c.timers, t)
	if i < 0 {
		return false
	}
	t.c.timers = slices.Delete(t.c.timers, i, i+1)
	return true
}

// Advance moves the clock forward by d and fires the timers now due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.when.After(c.now) {
			return false
		}
		due = append(due, t)
		return true
	})
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *fakeTimer) int { return a.when.Compare(b.when) })
	for _, t := range due {
		t.f()
	}
}

// Skew moves the clock forward without firing anything, as when timer
// callbacks run late on a loaded machine.
func (c *fakeClock) Skew(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Armed is the number of timers not yet fired or stopped.
func (c *fakeClock) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// logSink collects the JSON records of a slog.Logger.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newLogSink() (*logSink, *slog.Logger) {
	l := &logSink{}
	return l, slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// find returns the records whose message is msg.
func (l *logSink) find(t testing.TB, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	data := slices.Clone(l.buf.Bytes())
	l.mu.Unlock()
	var out []map[string]any
	for line := range bytes.Lines(data) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}
