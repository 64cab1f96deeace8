package managementnode

import (
	"context"
	"fmt"
	"sync"
)

// ringHooks hands installed rings to the OnRingChange hooks. The installer
// (under rebuildMu) only records the newest ring and wakes the node's hook
// goroutine (hookLoop), which runs the hooks outside every node lock.
// Locks: docs/locking.md.
type ringHooks struct {
	mu      sync.Mutex
	fns     []func(ctx context.Context, r *Ring)
	pending *Ring // newest ring installed and not yet taken by a round
	newest  int64 // epoch of the newest ring offered; older ones are dropped
	offered bool  // a ring has been offered
	wake    chan struct{}
}

func (h *ringHooks) init() { h.wake = make(chan struct{}, 1) }

func (h *ringHooks) add(fn func(ctx context.Context, r *Ring)) {
	h.mu.Lock()
	h.fns = append(h.fns, fn)
	h.mu.Unlock()
}

// offer makes r the ring of the next round and wakes the hook goroutine. It
// never blocks (it runs under rebuildMu). A ring older than one already
// offered is dropped, so rounds see epochs in increasing order.
func (h *ringHooks) offer(r *Ring) {
	h.mu.Lock()
	if h.offered && r.Epoch < h.newest {
		h.mu.Unlock()
		return
	}
	h.offered, h.newest, h.pending = true, r.Epoch, r
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default: // a wake-up is already pending: the rings coalesce
	}
}

// take returns the ring of the next round and the hooks to call with it
// (those registered so far), or a nil ring if there is none.
func (h *ringHooks) take() (*Ring, []func(ctx context.Context, r *Ring)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.pending
	h.pending = nil
	return r, h.fns[:len(h.fns):len(h.fns)]
}

// hookLoop is the node's hook goroutine: one round per wake-up, with the
// newest ring, until the node stops. A round in progress finishes (Stop
// waits for it); rounds not started when the node stops are dropped.
func (n *Node) hookLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.hooks.wake:
		}
		r, fns := n.hooks.take()
		if r == nil {
			continue // taken by the previous round
		}
		for _, fn := range fns {
			if n.ctx.Err() != nil {
				return
			}
			n.runHook(fn, r)
		}
	}
}

func (n *Node) runHook(fn func(ctx context.Context, r *Ring), r *Ring) {
	defer func() {
		if p := recover(); p != nil {
			n.log.Error("ring change hook panicked", "epoch", r.Epoch, "panic", fmt.Sprint(p))
		}
	}()
	fn(n.ctx, r)
}
