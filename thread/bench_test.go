package thread

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func drainB(b *testing.B, s *Scheduler) {
	b.Helper()
	stopNow(s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSyncOneSignature is the overhead of a task, from submission to
// its result, on one signature: queue, goroutine, context, deadline timer.
func BenchmarkSyncOneSignature(b *testing.B) {
	s := New(Options{})
	defer drainB(b, s)
	ctx := context.Background()
	task := Task{Signature: "vm-1", Name: "bench"}
	fn := func(context.Context) (int, error) { return 1, nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sync(ctx, s, task, fn); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSyncManySignatures is the same from parallel callers spread
// over 10,000 signatures.
func BenchmarkSyncManySignatures(b *testing.B) {
	const n = 10_000
	sigs := make([]string, n)
	for i := range sigs {
		sigs[i] = fmt.Sprintf("vm-%d", i)
	}
	s := New(Options{})
	defer drainB(b, s)
	ctx := context.Background()
	fn := func(context.Context) (int, error) { return 1, nil }
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sig := sigs[next.Add(1)%n]
			if _, err := Sync(ctx, s, Task{Signature: sig, Name: "bench"}, fn); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkBlockedTasks queues 10,000 tasks blocked on a channel and
// reports the memory each one holds: heap (HeapAlloc delta after GC) and
// goroutine stacks (StackInuse delta), per task. On one signature, one task
// runs and the others wait in the queue; on 10,000 signatures, all run.
func BenchmarkBlockedTasks(b *testing.B) {
	const n = 10_000
	sigs := make([]string, n)
	for i := range sigs {
		sigs[i] = fmt.Sprintf("vm-%d", i)
	}
	cases := []struct {
		name    string
		sig     func(i int) string
		running int
	}{
		{"pending_on_1_signature", func(int) string { return "vm-1" }, 1},
		{"running_on_10000_signatures", func(i int) string { return sigs[i] }, n},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			var heap, stack float64
			for range b.N {
				s := New(Options{})
				release := make(chan struct{})
				var entered atomic.Int64
				fn := func(context.Context) (struct{}, error) {
					entered.Add(1)
					<-release
					return struct{}{}, nil
				}
				futures := make([]*Future[struct{}], 0, n)
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for i := range n {
					f, err := Submit(context.Background(), s, Task{Signature: bc.sig(i), Name: "blocked"}, fn)
					if err != nil {
						b.Fatal(err)
					}
					futures = append(futures, f)
				}
				for entered.Load() != int64(bc.running) {
					runtime.Gosched()
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
				stack += float64(int64(after.StackInuse)-int64(before.StackInuse)) / n
				if st := s.Stats(); st.Running != bc.running || st.Pending != n-bc.running {
					b.Fatalf("running %d, pending %d", st.Running, st.Pending)
				}
				close(release)
				for _, f := range futures {
					<-f.Done()
				}
				drainB(b, s)
			}
			b.ReportMetric(heap/float64(b.N), "heap-B/task")
			b.ReportMetric(stack/float64(b.N), "stack-B/task")
		})
	}
}
