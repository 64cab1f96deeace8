package managementnode

import (
	"context"
	"errors"
	"sync"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
)

var errNotStale = errors.New("peer heartbeat is fresh again")

// beats is what a node knows of its own heartbeats. A database outage
// stales every heartbeat at once, so a stale peer proves nothing until this
// node itself has reached the database for a whole eviction window: only
// then has the peer had the same chance to write and missed it. And a node
// that has not written its heartbeat for most of that window (a pause, a
// frozen process, a lost database) may already be evicted: it renews its
// lease before it acts again.
type beats struct {
	mu sync.Mutex
	// since is the database time of the first write of the current run of
	// successful heartbeats; zero after a failure.
	since time.Time
	// last is the local (monotonic) time of the last successful write.
	last time.Time
	// renew serializes lease renewals.
	renew sync.Mutex
}

func (b *beats) ok(dbNow time.Time) {
	b.mu.Lock()
	if b.since.IsZero() {
		b.since = dbNow
	}
	b.last = time.Now()
	b.mu.Unlock()
}

func (b *beats) failed() {
	b.mu.Lock()
	b.since = time.Time{}
	b.mu.Unlock()
}

func (b *beats) get() (since, last time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.since, b.last
}

// window is how old a heartbeat may get before its node is evicted.
func (n *Node) window() time.Duration {
	return time.Duration(n.opts.HeartbeatThreshold) * n.opts.HeartbeatInterval
}

// leaseTerm is how long after its last heartbeat a node still acts without
// writing one: one interval short of the eviction window, so a node stops
// acting before any peer may evict it.
func (n *Node) leaseTerm() time.Duration {
	return n.window() - n.opts.HeartbeatInterval
}

// LeaseValid reports whether this node wrote its heartbeat recently enough
// to be sure no peer has evicted it.
func (n *Node) LeaseValid() bool {
	_, last := n.beat.get()
	return !last.IsZero() && time.Since(last) < n.leaseTerm()
}

// CheckLease returns nil when this node may act on what it owns: its lease
// is valid, or renewing it (writing the heartbeat now) succeeded. A node
// whose row a peer deleted is fenced here (NodeUnavailable); one that
// cannot reach the database gets DBUnavailable. Owners call it before work
// (Guard does) and before commands to agents, so a node that was frozen or
// cut off past its lease neither writes nor commands anything until it
// knows it is still a member.
func (n *Node) CheckLease(ctx context.Context) error {
	select {
	case <-n.fenced:
		return n.fencedError("")
	default:
	}
	if n.LeaseValid() {
		return nil
	}
	n.beat.renew.Lock()
	defer n.beat.renew.Unlock()
	if n.LeaseValid() { // renewed while this one waited
		return nil
	}
	_, last := n.beat.get()
	n.log.Warn("lease expired: renewing it before acting", "since_last_heartbeat", time.Since(last).Round(time.Millisecond))
	switch _, err := n.writeHeartbeat(ctx); {
	case errors.Is(err, errFenced):
		return n.fencedError("")
	case err != nil:
		return errcode.Wrap(errcode.DBUnavailable, err, "management node %s cannot renew its lease", n.uuid)
	}
	return nil
}

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
	now, err := n.writeHeartbeat(ctx)
	if err != nil {
		return err
	}
	since, _ := n.beat.get()
	return n.evictStale(ctx, now, since)
}

// writeHeartbeat writes this node's heartbeat, records the outcome in
// n.beat and returns the database time it wrote; errFenced when the row is
// gone.
func (n *Node) writeHeartbeat(ctx context.Context) (time.Time, error) {
	ctx = leaseExempt(ctx)
	now, err := n.opts.Now(ctx)
	if err != nil {
		n.beat.failed()
		n.log.Warn("heartbeat: cannot read database clock", "err", err)
		return now, err
	}
	res := n.db.WithContext(ctx).Model(&NodeVO{}).Where("uuid = ?", n.uuid).Update("heartbeat_at", now)
	if res.Error != nil {
		n.beat.failed()
		n.log.Warn("heartbeat: update failed", "err", res.Error)
		return now, res.Error
	}
	if res.RowsAffected == 0 {
		// MySQL counts changed rows only: an unchanged time is not proof.
		var count int64
		if err := n.db.WithContext(ctx).Model(&NodeVO{}).Where("uuid = ?", n.uuid).Count(&count).Error; err != nil {
			n.beat.failed()
			return now, err
		}
		if count == 0 {
			n.fence()
			return now, errFenced
		}
	}
	n.beat.ok(now)
	return now, nil
}

// evictStale evicts the peers whose heartbeat is older than the window, but
// only once this node has itself reached the database for a whole window
// (since, the start of its run of successful heartbeats, is before the
// cutoff): after an outage every peer gets that long to write again.
func (n *Node) evictStale(ctx context.Context, now, since time.Time) error {
	cutoff := now.Add(-n.window())
	if since.IsZero() || since.After(cutoff) {
		return nil
	}
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
