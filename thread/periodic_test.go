package thread

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestEvery(t *testing.T) {
	const interval = 10 * time.Second
	tests := []struct {
		name string
		stop func(s *Scheduler, cancel context.CancelFunc)
	}{
		{"context cancelled", func(_ *Scheduler, cancel context.CancelFunc) { cancel() }},
		{"scheduler stopped", func(s *Scheduler, _ context.CancelFunc) { stopNow(s) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			logs, logger := newLogSink()
			s := New(Options{Clock: clk, Logger: logger})
			defer drain(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			runs := make(chan int, 100)
			n := 0
			err := s.Every(ctx, interval, 0.5, "ping-hosts", func(ctx context.Context) error {
				n++ // runs never overlap
				runs <- n
				switch n {
				case 2:
					panic("tick")
				case 3:
					return errors.New("host unreachable")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// Keep time moving (by the longest jittered wait) until five
			// runs have happened: the panic and the error do not end it.
			seen := 0
			eventually(t, "five runs", func() bool {
				clk.Advance(interval + interval/2)
				for {
					select {
					case seen = <-runs:
						continue
					default:
					}
					return seen >= 5
				}
			})
			st := s.Stats()
			if st.Panics != 1 || st.PeriodicFailures != 2 || st.Periodic != 1 {
				t.Fatalf("stats: %+v", st)
			}
			if recs := logs.find(t, "periodic task panicked"); len(recs) != 1 || recs[0]["task"] != "ping-hosts" {
				t.Fatalf("panic log records: %v", recs)
			}
			if recs := logs.find(t, "periodic task failed"); len(recs) != 1 || recs[0]["err"] != "host unreachable" {
				t.Fatalf("failure log records: %v", recs)
			}

			tt.stop(s, cancel)
			eventually(t, "the periodic task to end", func() bool { return s.Stats().Periodic == 0 })
			before := s.Stats().PeriodicRuns
			for range 5 {
				clk.Advance(10 * interval)
			}
			if got := s.Stats().PeriodicRuns; got != before {
				t.Fatalf("%d runs after the periodic task ended", got-before)
			}
			if clk.Armed() != 0 {
				t.Fatalf("%d timers left armed", clk.Armed())
			}
		})
	}
}

func TestEveryWaitsAnIntervalBetweenRuns(t *testing.T) {
	const interval = 10 * time.Second
	clk := newFakeClock()
	s := New(Options{Clock: clk})
	defer drain(t, s)
	runs := make(chan struct{}, 10)
	if err := s.Every(context.Background(), interval, 0, "gc", func(context.Context) error {
		runs <- struct{}{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		eventually(t, "the wait to begin", func() bool { return clk.Armed() == 1 })
		clk.Advance(interval - time.Nanosecond)
		if clk.Armed() != 1 {
			t.Fatal("the timer fired before the interval")
		}
		clk.Advance(time.Nanosecond)
		recv(t, "a run", runs)
	}
}

func TestJittered(t *testing.T) {
	const d = 10 * time.Second
	tests := []struct {
		frac, r float64
		want    time.Duration
	}{
		{0, 0.9, d},
		{-1, 0.9, d},
		{0.5, 0, d},
		{0.5, 0.5, d + d/4},
		{0.2, 0.999, d + time.Duration(0.2*0.999*float64(d))},
	}
	for _, tt := range tests {
		if got := jittered(d, tt.frac, tt.r); got != tt.want {
			t.Errorf("jittered(%s, %v, %v) = %s, want %s", d, tt.frac, tt.r, got, tt.want)
		}
	}
}

func TestEveryRejectsBadInterval(t *testing.T) {
	s := New(Options{})
	defer drain(t, s)
	if err := s.Every(context.Background(), 0, 0, "x", func(context.Context) error { return nil }); err == nil {
		t.Fatal("a zero interval was accepted")
	}
}
