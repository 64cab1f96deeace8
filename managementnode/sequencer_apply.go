package managementnode

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"mplane/cloudbus"
	"mplane/errcode"
)

// The applying side of the sequencer, on every node: one goroutine (loop)
// applies the log strictly in sequence order, from notifications when they
// arrive in order, from the database otherwise.
//
//   - seq == last+1: applied, then any buffered successors.
//   - seq <= last: a duplicate, ignored.
//   - seq > last+1: a gap; the notification is buffered, and if the gap is
//     still open after gapWait the missing records are read from the
//     database and applied in order first.
//   - epoch older than the newest seen: from a deposed sequencer, ignored
//     (if its operation is in the log after all, the database read of the
//     next gap or check brings it).
//   - every resyncEvery, on every ring change and whenever a waiter asks,
//     records past last are read from the database: a sequencer that died
//     between recording and notifying loses nothing.
//
// The database is the truth: a record read from it is applied whatever its
// epoch, and a notification is only ever a copy of a committed record.

const (
	defaultSeqResync = 2 * time.Second
	defaultGapWait   = 20 * time.Millisecond
	// nudgeAfter: a waiter that sees no progress for this long asks the
	// applier to read the database.
	nudgeAfter   = 100 * time.Millisecond
	noticeBuffer = 4096
	maxPending   = 4096
	readBatch    = 256
)

type applier struct {
	notices chan notice
	kick    chan struct{}

	// Owned by the loop goroutine (and by start before the loop runs).
	last    int64
	pending map[int64]notice

	applied  atomic.Int64
	maxEpoch atomic.Int64

	// advMu guards advCh, closed and replaced whenever applied advances.
	advMu sync.Mutex
	advCh chan struct{}

	hooksMu sync.Mutex
	hooks   []func(OperationVO)

	resyncEvery time.Duration
	gapWait     time.Duration
}

func (a *applier) init() {
	a.notices = make(chan notice, noticeBuffer)
	a.kick = make(chan struct{}, 1)
	a.pending = map[int64]notice{}
	a.advCh = make(chan struct{})
	a.resyncEvery = defaultSeqResync
	a.gapWait = defaultGapWait
}

// AppliedSeq is this node's applied log position: every operation up to it,
// and none after, has been applied here.
func (s *Sequencer) AppliedSeq() int64 { return s.applied.Load() }

// OnApplied registers fn to be called after each operation this node
// applies (known kind or not), in sequence order, on the applying
// goroutine. For tests and diagnostics; fn must not block.
func (s *Sequencer) OnApplied(fn func(rec OperationVO)) {
	s.hooksMu.Lock()
	s.hooks = append(s.hooks, fn)
	s.hooksMu.Unlock()
}

// WaitApplied waits until this node has applied seq. If no progress comes
// for a while (a lost notification) it has the log read from the database.
func (s *Sequencer) WaitApplied(ctx context.Context, seq int64) error {
	t := time.NewTimer(nudgeAfter)
	defer t.Stop()
	for {
		s.advMu.Lock()
		ch := s.advCh
		s.advMu.Unlock()
		if s.applied.Load() >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
			s.kickSync()
			t.Reset(nudgeAfter)
		case <-ctx.Done():
			return errcode.New(errcode.Timeout, "operation %d is recorded but node %s has applied only up to %d", seq, s.n.uuid, s.applied.Load())
		case <-s.n.ctx.Done():
			return errcode.New(errcode.ShuttingDown, "node %s stopped before applying operation %d", s.n.uuid, seq)
		}
	}
}

func (s *Sequencer) kickSync() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// start prepares the node's part before it serves: the log table exists
// (Migrate), notifications are subscribed (buffered until the loop runs),
// and the whole log is applied from the database.
func (s *Sequencer) start(ctx context.Context) error {
	s.kindsMu.Lock()
	s.started.Store(true)
	s.kindsMu.Unlock()
	if err := cloudbus.Subscribe(s.n.bus, evOperation, s.deliver); err != nil {
		return fmt.Errorf("subscribe to operation notifications: %w", err)
	}
	if err := s.readLog(ctx, false); err != nil {
		return fmt.Errorf("catch up with the operation log: %w", err)
	}
	s.n.OnRingChange(func(context.Context, *Ring) { s.kickSync() })
	s.log.Info("operation log applied", "applied_seq", s.last)
	return nil
}

// deliver is the notification subscriber (a bus goroutine): it only hands
// the notification to the loop.
func (s *Sequencer) deliver(_ context.Context, _ string, nt notice) {
	if h := s.dropNotice; h != nil && h(nt) {
		return
	}
	select {
	case s.notices <- nt:
	default:
		s.stats.dropped.Add(1)
		s.kickSync()
	}
}

// loop is the node's applying goroutine, started by Node.Start after start
// and ended by Node.Stop.
func (s *Sequencer) loop() {
	defer s.n.wg.Done()
	tick := time.NewTicker(s.resyncEvery)
	defer tick.Stop()
	var gap *time.Timer
	var gapC <-chan time.Time
	for {
		select {
		case <-s.n.ctx.Done():
			if gap != nil {
				gap.Stop()
			}
			return
		case nt := <-s.notices:
			s.onNotice(nt)
		case <-s.kick:
			s.sync(false)
		case <-tick.C:
			s.sync(false)
		case <-gapC:
			gapC = nil
			s.sync(true)
		}
		switch {
		case len(s.pending) > 0 && gapC == nil:
			if gap == nil {
				gap = time.NewTimer(s.gapWait)
			} else {
				gap.Reset(s.gapWait)
			}
			gapC = gap.C
		case len(s.pending) == 0 && gapC != nil:
			gap.Stop()
			gapC = nil
		}
	}
}

func (s *Sequencer) onNotice(nt notice) {
	if nt.Epoch < s.maxEpoch.Load() {
		s.stats.stale.Add(1)
		return
	}
	s.maxEpoch.Store(nt.Epoch)
	switch {
	case nt.Sync:
		if nt.Seq > s.last {
			s.sync(false)
		}
	case nt.Seq <= s.last:
		s.stats.dups.Add(1)
	case nt.Seq == s.last+1:
		rec := nt.OperationVO
		s.apply(&rec)
		s.drainPending()
	default:
		if len(s.pending) < maxPending {
			s.pending[nt.Seq] = nt
		}
	}
}

// drainPending applies the buffered notifications that now follow last.
func (s *Sequencer) drainPending() {
	for seq := range s.pending {
		if seq <= s.last {
			delete(s.pending, seq)
		}
	}
	for {
		nt, ok := s.pending[s.last+1]
		if !ok {
			return
		}
		delete(s.pending, nt.Seq)
		rec := nt.OperationVO
		s.apply(&rec)
	}
}

func (s *Sequencer) sync(gap bool) {
	if gap {
		s.stats.gapReads.Add(1)
	}
	if err := s.readLog(s.n.ctx, gap); err != nil && s.n.ctx.Err() == nil {
		s.log.Warn("read the operation log", "applied_seq", s.last, "err", err)
	}
	s.drainPending()
}

// readLog applies the records after last from the database, in order.
func (s *Sequencer) readLog(ctx context.Context, gap bool) error {
	for {
		var recs []OperationVO
		s.stats.reads.Add(1)
		if err := s.n.db.WithContext(ctx).Where("seq > ?", s.last).Order("seq").Limit(readBatch).Find(&recs).Error; err != nil {
			return err
		}
		for i := range recs {
			if recs[i].Seq != s.last+1 {
				// Cannot happen (a record is inserted only after its
				// predecessor committed); stop rather than skip.
				return fmt.Errorf("operation log has a hole: %d follows %d", recs[i].Seq, s.last)
			}
			if gap {
				s.log.Debug("gap filled from the database", "seq", recs[i].Seq)
			}
			s.apply(&recs[i])
		}
		if len(recs) < readBatch {
			return nil
		}
	}
}

// apply applies rec, which follows last, and advances last.
func (s *Sequencer) apply(rec *OperationVO) {
	if k := s.kind(rec.Kind); k == nil {
		s.stats.unknown.Add(1)
		s.log.Warn("operation of a kind not registered on this node skipped", "seq", rec.Seq, "kind", rec.Kind)
	} else if err := s.safeApply(k, rec); err != nil {
		s.stats.applyErrs.Add(1)
		s.log.Error("apply operation", "seq", rec.Seq, "kind", rec.Kind, "err", err)
	}
	s.last = rec.Seq
	if rec.Epoch > s.maxEpoch.Load() {
		s.maxEpoch.Store(rec.Epoch)
	}
	s.stats.applied.Add(1)
	s.hooksMu.Lock()
	hooks := s.hooks[:len(s.hooks):len(s.hooks)]
	s.hooksMu.Unlock()
	for _, h := range hooks {
		h(*rec)
	}
	s.applied.Store(rec.Seq)
	s.advMu.Lock()
	close(s.advCh)
	s.advCh = make(chan struct{})
	s.advMu.Unlock()
}

func (s *Sequencer) safeApply(k OrderedKind, rec *OperationVO) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("apply panicked: %v", v)
		}
	}()
	return k.applyRaw(s.n.ctx, rec)
}
