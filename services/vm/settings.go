package vm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"mplane/conf"
)

// The settings of the service that change while it runs (the node's live
// settings vm_allocation_strategy and flow_retention): each setter is safe
// at any time, from any goroutine, and takes effect at once.

// SetAllocationStrategy changes the order in which the hosts that can take
// a VM are tried (Options.AllocationStrategy), from the next create or
// start on: name is one of conf.AllocationStrategies. A create or start
// that already listed its hosts keeps their order.
func (s *Service) SetAllocationStrategy(name string) error {
	if err := checkStrategy(name); err != nil {
		return err
	}
	if old := s.strategy.Swap(&name); *old != name {
		s.log.Info("allocation strategy changed", "strategy", name, "previous", *old)
	}
	return nil
}

// AllocationStrategy is the allocation strategy now.
func (s *Service) AllocationStrategy() string { return *s.strategy.Load() }

func checkStrategy(name string) error {
	if !slices.Contains(conf.AllocationStrategies(), name) {
		return fmt.Errorf("vm allocation strategy must be one of %s (got %q)", strings.Join(conf.AllocationStrategies(), ", "), name)
	}
	return nil
}

// SetFlowRetention changes how long the records of flows that finished
// cleanly are kept (Options.FlowRetention): the next prune deletes those
// older than d. The prune loop runs every pruneEvery(d); when that period
// changes the loop is restarted with it (a prune in progress finishes).
func (s *Service) SetFlowRetention(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("flow retention must be > 0 (got %s)", d)
	}
	if old := time.Duration(s.retention.Swap(int64(d))); old != d {
		s.log.Info("flow retention changed", "retention", d, "previous", old)
	}
	return s.schedulePrune(false)
}

// FlowRetention is the flow retention now.
func (s *Service) FlowRetention() time.Duration { return time.Duration(s.retention.Load()) }

// pruneEvery is the period of the prune loop for retention r: half of it,
// so a record is never kept much longer than r, but at least every 10
// minutes and at most every second.
func pruneEvery(r time.Duration) time.Duration {
	return min(max(r/2, time.Second), 10*time.Minute)
}

// schedulePrune starts the prune loop with the period the retention now
// asks for, and ends the one it replaces: at Start (start true), and after
// that only when the period changed. Before Start it does nothing: a
// setter only stores the retention, which Start then schedules with. The
// retention is read under pruneMu, so of two setters racing the loop
// follows the one that stored last.
func (s *Service) schedulePrune(start bool) error {
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	period := pruneEvery(s.FlowRetention())
	if !start && (s.pruneStop == nil || period == s.prunePeriod) {
		return nil
	}
	ctx, stop := context.WithCancel(s.ctx)
	if err := s.sched.Every(ctx, period, 0.2, "vm-flow-prune", s.prune); err != nil {
		stop()
		return fmt.Errorf("schedule the flow record prune: %w", err)
	}
	old := s.pruneStop
	s.pruneStop, s.prunePeriod = stop, period
	if old != nil {
		old()
		s.log.Info("flow record prune period changed", "period", period)
	}
	return nil
}
