package managementnode

import (
	"context"
	"encoding/json"
	"errors"

	"mplane/cloudbus"
	"mplane/errcode"
)

var errNotMine = errors.New("resource owned by another node")

// Guard returns the interceptor for a resource service's Mux: a message
// naming a resource (Envelope.ResourceUUID) runs only on the resource's
// owner. On another node it is forwarded to the owner (the owner replies to
// the caller directly), at most MaxHops times; on the owner it waits while
// the previous owner still runs work for the resource, then holds the
// resource's partition until the handler returns. Messages without a
// resource run wherever they arrive.
func (n *Node) Guard(service string) cloudbus.Interceptor {
	return func(ctx context.Context, env *cloudbus.Envelope, next func(context.Context) (json.RawMessage, error)) (json.RawMessage, error) {
		uuid := env.ResourceUUID
		if uuid == "" {
			return n.runJob(ctx, env, next)
		}
		release, owner, err := n.acquire(ctx, uuid)
		if errors.Is(err, errNotMine) && env.Hops > 0 {
			// A forwarded message that is not ours either: one of the two
			// rings is stale; make sure it is not ours.
			n.forceResync(ctx)
			release, owner, err = n.acquire(ctx, uuid)
		}
		if errors.Is(err, errNotMine) {
			if owner == "" {
				return nil, errcode.New(errcode.NodeUnavailable, "no management node owns %s: the ring is empty", uuid)
			}
			if env.Hops >= n.opts.MaxHops {
				return nil, errcode.New(errcode.NodeUnavailable, "%s for %s forwarded %d times; the ring is changing, retry", env.Name, uuid, env.Hops)
			}
			if err := n.bus.ForwardTo(ctx, env, n.bus.Target(service, owner)); err != nil {
				return nil, err
			}
			return nil, cloudbus.ErrNoReply
		}
		if err != nil {
			return nil, err
		}
		defer release()
		if err := n.CheckLease(ctx); err != nil {
			return nil, err
		}
		return n.runJob(ctx, env, next)
	}
}

// SetJobHook installs h around every message that Guard lets run on this
// node and that carries an API job's ID (Envelope.APIID): the portal's
// record of which node runs a job, so a job is run once however often it
// is sent. nil removes it.
func (n *Node) SetJobHook(h cloudbus.Interceptor) {
	if h == nil {
		n.jobHook.Store(nil)
		return
	}
	n.jobHook.Store(&h)
}

func (n *Node) runJob(ctx context.Context, env *cloudbus.Envelope, next func(context.Context) (json.RawMessage, error)) (json.RawMessage, error) {
	if env.APIID != "" {
		if h := n.jobHook.Load(); h != nil {
			return (*h)(ctx, env, next)
		}
	}
	return next(ctx)
}

// Alive reports whether node is a member now: it has a membership row
// (this node's own view of the database; a peer evicted a moment ago may
// still be in another's ring).
func (n *Node) Alive(ctx context.Context, node string) (bool, error) {
	if node == n.uuid {
		return true, nil
	}
	var count int64
	if err := n.db.WithContext(ctx).Model(&NodeVO{}).Where("uuid = ?", node).Count(&count).Error; err != nil {
		return false, err
	}
	return count > 0, nil
}

// acquire holds uuid's partition for work on this node. It fails with
// errNotMine (and the owner) if another node owns it, and waits while a
// previous owner has not released it.
func (n *Node) acquire(ctx context.Context, uuid string) (release func(), owner string, err error) {
	p := PartitionOf(uuid)
	for {
		n.inflight[p].Add(1)
		owner = n.ring.Load().PartitionOwner(p)
		if owner != n.uuid {
			n.releasePartition(p)
			return nil, owner, errNotMine
		}
		w := n.handover.get(p)
		if w == nil {
			return func() { n.releasePartition(p) }, owner, nil
		}
		n.releasePartition(p)
		select {
		case <-w.done:
		case <-ctx.Done():
			return nil, owner, errcode.New(errcode.Timeout, "resource %s: previous owner %s did not release it before the deadline", uuid, w.from)
		}
	}
}

func (n *Node) releasePartition(p int) {
	if n.inflight[p].Add(-1) == 0 && n.idleWaiters.Load() > 0 {
		n.idleMu.Lock()
		close(n.idle)
		n.idle = make(chan struct{})
		n.idleMu.Unlock()
	}
}

// waitIdle waits until no work is held in any of parts (all partitions if
// parts is nil), or ctx ends.
func (n *Node) waitIdle(ctx context.Context, parts []int) error {
	n.idleWaiters.Add(1)
	defer n.idleWaiters.Add(-1)
	for {
		n.idleMu.Lock()
		ch := n.idle
		n.idleMu.Unlock()
		busy := 0
		if parts == nil {
			for p := range n.inflight {
				if n.inflight[p].Load() > 0 {
					busy++
				}
			}
		} else {
			for _, p := range parts {
				if n.inflight[p].Load() > 0 {
					busy++
				}
			}
		}
		if busy == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return errcode.New(errcode.Timeout, "%d partitions still busy on node %s", busy, n.uuid)
		}
	}
}

// Inflight is the number of resource messages this node is running.
func (n *Node) Inflight() int64 {
	var t int64
	for p := range n.inflight {
		t += n.inflight[p].Load()
	}
	return t
}
