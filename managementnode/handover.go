package managementnode

import (
	"context"
	"sort"
	"sync"
	"time"

	"mplane/cloudbus"
	"mplane/errcode"
)

// Handover: when a partition moves from node A to node B, B must not start
// work on its resources while A still runs work on them. A stops taking new
// work for partitions it lost as soon as it installs the new ring (its guard
// forwards instead); B, for every partition it gained from a node that is
// still present in the database (running, or leaving and draining), holds
// the partition closed and asks A, with mn.AwaitRelease, to answer once A
// has adopted the new ring and its in-flight count for those partitions is
// zero. B opens the partition when A answers, when A turns out to be gone
// (the call fails with NodeUnavailable, or A's row disappears), or when the
// partition is no longer B's.
//
// In-flight counting: acquire increments the partition's counter before it
// reads the ring, and decrements it if the resource is not its own. So once
// A has installed the new ring, a zero count can no longer become non-zero
// through an acquire that saw the old ring.

type handover struct {
	mu    sync.Mutex
	waits map[int]*partWait
}

type partWait struct {
	from string
	done chan struct{}
}

func (h *handover) init() { h.waits = map[int]*partWait{} }

func (h *handover) get(p int) *partWait {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waits[p]
}

// open ends the wait w for partition p, if it is still the current one.
func (h *handover) open(p int, w *partWait) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waits[p] == w {
		delete(h.waits, p)
		close(w.done)
	}
}

// onRingChange is called by installLocked, with rebuildMu held; it takes
// h.mu (lock order: docs/locking.md) and never blocks.
func (h *handover) onRingChange(n *Node, old, r *Ring, present map[string]bool) {
	prev := old
	if old.Epoch == 0 && len(old.Members) == 0 {
		// First ring of this node: the others ran the ring without it.
		var others []string
		for _, m := range r.Members {
			if m != n.uuid {
				others = append(others, m)
			}
		}
		var err error
		if prev, err = BuildRing(r.Epoch-1, others); err != nil {
			prev = old
		}
	}
	gained := map[string][]int{}
	var waits []*partWait
	h.mu.Lock()
	for p := 0; p < Partitions; p++ {
		w := h.waits[p]
		if r.PartitionOwner(p) != n.uuid {
			if w != nil {
				delete(h.waits, p)
				close(w.done) // waiters re-check and forward
			}
			continue
		}
		if w != nil {
			if !present[w.from] {
				delete(h.waits, p)
				close(w.done)
			}
			continue
		}
		from := prev.PartitionOwner(p)
		if from == "" || from == n.uuid || !present[from] {
			continue
		}
		w = &partWait{from: from, done: make(chan struct{})}
		h.waits[p] = w
		gained[from] = append(gained[from], p)
		waits = append(waits, w)
	}
	h.mu.Unlock()
	if len(waits) == 0 {
		return
	}
	froms := make([]string, 0, len(gained))
	for f := range gained {
		froms = append(froms, f)
	}
	sort.Strings(froms)
	for _, from := range froms {
		parts := gained[from]
		n.log.Info("waiting for the previous owner to release partitions", "peer", from, "partitions", len(parts), "epoch", r.Epoch)
		n.wg.Add(1)
		go n.requestRelease(from, r.Epoch, parts)
	}
}

// requestRelease asks from to release parts and opens them when it has (or
// is gone). It retries until every wait it opened is settled.
func (n *Node) requestRelease(from string, epoch int64, parts []int) {
	defer n.wg.Done()
	target := n.bus.Target(Service, from)
	mine := make(map[int]*partWait, len(parts))
	for _, p := range parts {
		if w := n.handover.get(p); w != nil && w.from == from {
			mine[p] = w
		}
	}
	openAll := func() {
		for p, w := range mine {
			n.handover.open(p, w)
		}
	}
	backoff := 50 * time.Millisecond
	for {
		// Drop partitions whose wait was settled elsewhere.
		for p, w := range mine {
			select {
			case <-w.done:
				delete(mine, p)
			default:
			}
		}
		if len(mine) == 0 {
			return
		}
		ps := make([]int, 0, len(mine))
		for p := range mine {
			ps = append(ps, p)
		}
		sort.Ints(ps)
		ctx, cancel := context.WithTimeout(n.ctx, n.opts.DrainTimeout+5*time.Second)
		_, err := cloudbus.Call(ctx, n.bus, target, msgAwaitRelease, releaseReq{Epoch: epoch, Partitions: ps})
		cancel()
		switch {
		case err == nil:
			n.log.Info("previous owner released partitions", "peer", from, "partitions", len(ps))
			openAll()
			return
		case errcode.Has(err, errcode.NodeUnavailable):
			n.log.Info("previous owner is gone; taking partitions", "peer", from, "partitions", len(ps))
			openAll()
			return
		case n.ctx.Err() != nil:
			return
		}
		n.log.Warn("release request failed; retrying", "peer", from, "err", err)
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// awaitRelease answers a new owner once this node runs the ring of the
// requested epoch (or later) and holds no work in the partitions.
func (n *Node) awaitRelease(ctx context.Context, req releaseReq) (cloudbus.Empty, error) {
	if n.Ring().Epoch < req.Epoch {
		if err := n.resync(ctx); err != nil {
			return cloudbus.Empty{}, errcode.Wrap(errcode.Busy, err, "re-read ring for epoch %d", req.Epoch)
		}
	}
	if got := n.Ring().Epoch; got < req.Epoch {
		return cloudbus.Empty{}, errcode.New(errcode.Busy, "ring of node %s is at epoch %d, not yet %d", n.uuid, got, req.Epoch)
	}
	for _, p := range req.Partitions {
		if p < 0 || p >= Partitions {
			return cloudbus.Empty{}, errcode.New(errcode.InvalidArgument, "partition %d out of range 0..%d", p, Partitions-1)
		}
	}
	if err := n.waitIdle(ctx, req.Partitions); err != nil {
		return cloudbus.Empty{}, err
	}
	return cloudbus.Empty{}, nil
}
