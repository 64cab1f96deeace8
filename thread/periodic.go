package thread

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"
)

type loop struct{ cancel context.CancelFunc }

// Every calls fn every interval until ctx ends or the scheduler stops. Each
// wait, the first one included, lasts interval plus a random extra of up to
// jitter×interval, so that many nodes or resources started together spread
// their work. Runs never overlap: the next wait begins when fn returns.
//
// fn gets a context that ends with ctx or on Stop. An error returned by fn
// is logged, and so is a panic, which is recovered: either way the
// periodic task goes on. Every returns ErrStopped after Stop.
func (s *Scheduler) Every(ctx context.Context, interval time.Duration, jitter float64, name string, fn func(ctx context.Context) error) error {
	if interval <= 0 {
		return fmt.Errorf("thread: periodic task %q: interval %s is not positive", name, interval)
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &loop{cancel: cancel}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		cancel()
		return fmt.Errorf("periodic task %q: %w", name, ErrStopped)
	}
	s.loops[l] = struct{}{}
	s.mu.Unlock()
	go s.runLoop(ctx, l, interval, jitter, name, fn)
	return nil
}

func (s *Scheduler) runLoop(ctx context.Context, l *loop, interval time.Duration, jitter float64, name string, fn func(ctx context.Context) error) {
	defer func() {
		l.cancel()
		s.mu.Lock()
		delete(s.loops, l)
		s.notifyLocked()
		s.mu.Unlock()
	}()
	tick := make(chan struct{}, 1)
	fire := func() {
		select {
		case tick <- struct{}{}:
		default:
		}
	}
	for {
		tm := s.clock.AfterFunc(jittered(interval, jitter, rand.Float64()), fire)
		select {
		case <-ctx.Done():
			tm.Stop()
			return
		case <-tick:
		}
		if ctx.Err() != nil {
			return
		}
		s.runPeriodic(ctx, name, fn)
	}
}

// jittered returns d plus frac×r×d, where r is in [0, 1).
func jittered(d time.Duration, frac, r float64) time.Duration {
	if frac <= 0 {
		return d
	}
	return d + time.Duration(frac*r*float64(d))
}

func (s *Scheduler) runPeriodic(ctx context.Context, name string, fn func(ctx context.Context) error) {
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = &PanicError{Task: name, Value: r, Stack: debug.Stack()}
			}
		}()
		return fn(ctx)
	}()
	s.stats.periodicRuns.Add(1)
	if err == nil {
		return
	}
	s.stats.periodicFailures.Add(1)
	if pe, ok := errors.AsType[*PanicError](err); ok {
		s.stats.panics.Add(1)
		s.log.Error("periodic task panicked", "task", name, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
		return
	}
	if ctx.Err() == nil {
		s.log.Warn("periodic task failed", "task", name, "err", err)
	}
}
