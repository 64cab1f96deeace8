package managementnode

import (
	"context"
	"time"

	"gorm.io/gorm"
)

// Stop leaves the cluster gracefully: the node turns leaving (peers drop it
// from the ring at once and stop routing to it), forwards new resource
// work to the new owners, waits up to DrainTimeout for the work it holds
// and for the scheduler's tasks, stops the node's goroutines (heartbeat,
// resync, hooks, handovers) and waits for them, a hook round in progress
// included, then deletes its row and tells the peers. The caller closes
// the bus afterwards. Stop is idempotent; on a fenced node it only stops
// and waits for the goroutines. A ring hook must not call Stop.
func (n *Node) Stop(ctx context.Context) error {
	if !n.stopped.CompareAndSwap(false, true) {
		return nil
	}
	defer func() {
		n.cancel()
		n.wg.Wait()
	}()
	select {
	case <-n.fenced:
		return nil
	default:
	}
	n.state.Store(StateLeaving)
	var epoch int64
	if err := n.changeMembership(ctx, func(tx *gorm.DB) error {
		return tx.Model(&NodeVO{}).Where("uuid = ?", n.uuid).Update("state", StateLeaving).Error
	}, &epoch); err != nil {
		n.log.Warn("leave: mark leaving", "err", err)
	}
	n.publish(ctx, EvNodeLeaving, epoch)
	if err := n.resync(ctx); err != nil {
		n.log.Warn("leave: rebuild ring", "err", err)
	}

	drainCtx, cancel := context.WithTimeout(ctx, n.opts.DrainTimeout)
	defer cancel()
	start := time.Now()
	if err := n.waitIdle(drainCtx, nil); err != nil {
		n.log.Warn("leave: drain timeout; abandoning held work", "held", n.Inflight(), "err", err)
	}
	if s := n.opts.Scheduler; s != nil {
		if err := s.Stop(drainCtx); err != nil {
			n.log.Warn("leave: scheduler drain", "err", err)
		}
	}
	n.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))

	// Stop heartbeating before the row goes, or a heartbeat in between
	// would see it gone and report a fencing.
	n.cancel()
	n.wg.Wait()
	if err := n.changeMembership(ctx, func(tx *gorm.DB) error {
		return tx.Where("uuid = ?", n.uuid).Delete(&NodeVO{}).Error
	}, &epoch); err != nil {
		n.log.Warn("leave: delete row", "err", err)
		return err
	}
	n.publish(ctx, EvNodeLeft, epoch)
	n.log.Info("left the cluster", "epoch", epoch)
	return nil
}
