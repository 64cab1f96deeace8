package vm

import (
	"context"
	"time"
)

// PruneNow runs one prune of the finished flow records, as the periodic
// task does (for the package's external tests).
func (s *Service) PruneNow(ctx context.Context) error { return s.prune(ctx) }

// PrunePeriod is the period of the prune loop running now (0 before
// Start).
func (s *Service) PrunePeriod() time.Duration {
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	return s.prunePeriod
}

// RepairTransients runs one pass over the VMs left in a transitional
// state, as the periodic task does.
func (s *Service) RepairTransients(ctx context.Context) error { return s.repairTransients(ctx) }
