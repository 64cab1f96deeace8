package vm

import (
	"context"
	"time"

	"mplane/api/route"
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

// RerunOp runs a VM operation ("stop", "start", "destroy") as the re-run of
// a job whose node died (route.WithRerun), in the VM's chain as the bus
// handler would.
func (s *Service) RerunOp(ctx context.Context, op, uuid string) (VmInstanceVO, error) {
	ctx = route.WithRerun(ctx)
	switch op {
	case "stop":
		return s.handleStop(ctx, OpReq{UUID: uuid})
	case "start":
		return s.handleStart(ctx, OpReq{UUID: uuid})
	default:
		return s.handleDestroy(ctx, OpReq{UUID: uuid})
	}
}
