package managementnode

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"
)

var errNotStale = errors.New("peer heartbeat is fresh again")

func (n *Node) heartbeatLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if err := n.heartbeat(n.ctx); errors.Is(err, errFenced) {
			return
		}
	}
}

// heartbeat writes this node's heartbeat from the database clock, then
// evicts peers whose heartbeat is older than the threshold. Finding its own
// row gone means a peer evicted this node: it is fenced.
func (n *Node) heartbeat(ctx context.Context) error {
	now, err := n.opts.Now(ctx)
	if err != nil {
		n.log.Warn("heartbeat: cannot read database clock", "err", err)
		return err
	}
	res := n.db.WithContext(ctx).Model(&NodeVO{}).Where("uuid = ?", n.uuid).Update("heartbeat_at", now)
	if res.Error != nil {
		n.log.Warn("heartbeat: update failed", "err", res.Error)
		return res.Error
	}
	if res.RowsAffected == 0 {
		// MySQL counts changed rows only: an unchanged time is not proof.
		var count int64
		if err := n.db.WithContext(ctx).Model(&NodeVO{}).Where("uuid = ?", n.uuid).Count(&count).Error; err != nil {
			return err
		}
		if count == 0 {
			n.fence()
			return errFenced
		}
	}
	return n.evictStale(ctx, now)
}

func (n *Node) evictStale(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-time.Duration(n.opts.HeartbeatThreshold) * n.opts.HeartbeatInterval)
	var stale []NodeVO
	if err := n.db.WithContext(ctx).Where("heartbeat_at < ? AND uuid <> ?", cutoff, n.uuid).Find(&stale).Error; err != nil {
		n.log.Warn("heartbeat: look for stale peers", "err", err)
		return err
	}
	for _, s := range stale {
		var epoch int64
		err := n.changeMembership(ctx, func(tx *gorm.DB) error {
			res := tx.Where("uuid = ? AND heartbeat_at < ?", s.UUID, cutoff).Delete(&NodeVO{})
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected == 0 {
				return errNotStale // another survivor was first, or it came back
			}
			return nil
		}, &epoch)
		if errors.Is(err, errNotStale) {
			continue
		}
		if err != nil {
			n.log.Warn("evict stale peer", "peer", s.UUID, "err", err)
			continue
		}
		n.log.Warn("evicted a peer that stopped heartbeating", "peer", s.UUID, "last_heartbeat", s.HeartbeatAt, "epoch", epoch)
		n.publishFor(ctx, EvNodeLeft, s.UUID, epoch)
		n.triggerResync()
	}
	return nil
}

// fence stops this node from owning anything: a peer deleted its row, so
// the others have already taken its resources over.
func (n *Node) fence() {
	select {
	case <-n.fenced:
		return
	default:
	}
	n.log.Error("this node's membership row was deleted by a peer (missed heartbeats): fenced; it stops serving and must exit")
	n.state.Store(StateLeaving)
	n.rebuildMu.Lock()
	empty, _ := BuildRing(n.Ring().Epoch, nil)
	n.ring.Store(empty)
	n.rebuildMu.Unlock()
	close(n.fenced)
}
