package managementnode

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/db"
	"mplane/errcode"
)

// Execution on the sequencer. Each submission's handler queues it; the
// handler that gets the slot becomes the leader: it takes up to maxBatch
// queued submissions, executes them one at a time in one transaction (each
// exec in a savepoint, so a rejection undoes only its own writes) with
// their log rows at consecutive sequence numbers, commits, announces them
// in seq order and answers every handler. Group commit keeps the database
// lock (SQLite has one writer) free most of the time under load, where one
// transaction per operation would starve other writers (heartbeats).

const (
	maxBatch = 64
	// batchTimeout bounds a batch's work; it runs under the node's
	// context, not the leader's caller's, whose deadline is its own.
	batchTimeout = 30 * time.Second
	// maxRecordAttempts bounds the retries of a sequencer that loses
	// insert races (two nodes both believing they are the sequencer).
	maxRecordAttempts = 20
)

// submission is one submission queued for execution on this node.
type submission struct {
	req  submitReq
	k    OrderedKind
	done chan submitOutcome // buffered 1, written once by a leader
}

type submitOutcome struct {
	rep submitRep
	err error
}

// batchOut is the outcome of one submission of a recorded batch: its row
// (dup: recorded before, by an earlier submission with the same ID), or
// exec's rejection.
type batchOut struct {
	rec      OperationVO
	dup      bool
	rejected error
}

func (s *Sequencer) sequence(ctx context.Context, req submitReq) (submitRep, error) {
	if req.ID == "" || req.Kind == "" {
		return submitRep{Rejected: errcode.New(errcode.InvalidArgument, "a submission needs an id and a kind")}, nil
	}
	k := s.kind(req.Kind)
	if k == nil {
		s.stats.rejected.Add(1)
		return submitRep{Rejected: errcode.New(errcode.UnknownMessage, "no ordered operation %q is registered on the sequencer %s", req.Kind, s.n.uuid)}, nil
	}
	sub := &submission{req: req, k: k, done: make(chan submitOutcome, 1)}
	s.queueMu.Lock()
	s.queue = append(s.queue, sub)
	s.queueMu.Unlock()
	for {
		select {
		case out := <-sub.done:
			return out.rep, out.err
		case s.slot <- struct{}{}:
			select {
			case out := <-sub.done: // answered by the previous leader
				<-s.slot
				return out.rep, out.err
			default:
			}
			s.runBatch(s.takeBatch())
			<-s.slot
		case <-ctx.Done():
			if s.unqueue(sub) {
				return submitRep{}, errcode.New(errcode.NodeUnavailable, "sequencer %s: no turn for submission %s before the deadline", s.n.uuid, req.ID)
			}
			// A leader has it: its answer comes within batchTimeout.
			out := <-sub.done
			return out.rep, out.err
		}
	}
}

func (s *Sequencer) takeBatch() []*submission {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	n := min(len(s.queue), maxBatch)
	batch := s.queue[:n:n]
	s.queue = append([]*submission(nil), s.queue[n:]...)
	return batch
}

// unqueue removes sub if no leader took it yet.
func (s *Sequencer) unqueue(sub *submission) bool {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	for i, q := range s.queue {
		if q == sub {
			s.queue = append(s.queue[:i:i], s.queue[i+1:]...)
			return true
		}
	}
	return false
}

// runBatch executes, records and announces batch, and answers each of its
// submissions. The caller holds the slot.
func (s *Sequencer) runBatch(batch []*submission) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.n.ctx, batchTimeout)
	defer cancel()
	failAll := func(err error) {
		for _, sub := range batch {
			sub.done <- submitOutcome{err: err}
		}
	}
	// Queued behind others: the ring may have moved meanwhile.
	r := s.n.Ring()
	if r.Owner(SequencerKey) != s.n.uuid {
		failAll(errcode.New(errcode.NodeUnavailable, "node %s is no longer the sequencer (ring epoch %d)", s.n.uuid, r.Epoch))
		return
	}
	if s.adoptedEpoch != r.Epoch {
		if err := s.adopt(ctx, r.Epoch); err != nil {
			failAll(err)
			return
		}
	}
	outs, err := s.recordBatch(ctx, r.Epoch, batch)
	if err != nil {
		failAll(err)
		return
	}
	for i, sub := range batch {
		o := outs[i]
		if o.rejected != nil {
			s.stats.rejected.Add(1)
			sub.done <- submitOutcome{rep: submitRep{Rejected: errcode.From(o.rejected)}}
			continue
		}
		if o.dup {
			s.stats.resubmits.Add(1)
		} else {
			s.stats.executed.Add(1)
		}
		if h := s.afterRecord; h != nil {
			if err := h(o.rec); err != nil {
				sub.done <- submitOutcome{err: err}
				continue
			}
		}
		// Announced even for a resubmission: the first attempt may have
		// died between recording and notifying. Appliers ignore duplicates.
		s.notify(notice{OperationVO: o.rec})
		sub.done <- submitOutcome{rep: submitRep{Seq: o.rec.Seq, Epoch: o.rec.Epoch, Sequencer: o.rec.Sequencer,
			Result: json.RawMessage(o.rec.Result), Duplicate: o.dup}}
	}
}

// adopt takes the log over at ring epoch epoch (under slot, before the
// first batch at a new epoch): the previous sequencer may have recorded
// operations it never announced, so this node brings itself to the log's
// end and announces it to every node (they read what they miss). The
// announcement also makes them ignore late notifications of a deposed
// sequencer, which have older epochs.
func (s *Sequencer) adopt(ctx context.Context, epoch int64) error {
	last, err := s.lastRecord(ctx, s.n.db)
	if err != nil {
		return errcode.Wrap(errcode.Busy, err, "sequencer %s: read the end of the log", s.n.uuid)
	}
	if last.Epoch > epoch {
		s.stats.deposed.Add(1)
		s.n.triggerResync()
		return errcode.New(errcode.NodeUnavailable, "node %s at ring epoch %d is not the sequencer: the log was written at epoch %d", s.n.uuid, epoch, last.Epoch)
	}
	s.kickSync()
	if err := s.WaitApplied(ctx, last.Seq); err != nil {
		return errcode.Wrap(errcode.NodeUnavailable, err, "sequencer %s: catch up with the log", s.n.uuid)
	}
	s.adoptedEpoch = epoch
	if last.Sequencer != s.n.uuid {
		s.stats.adoptions.Add(1)
		s.log.Info("sequencer takes over the log", "epoch", epoch, "last_seq", last.Seq, "last_sequencer", last.Sequencer)
	}
	s.notify(notice{OperationVO: OperationVO{Seq: last.Seq, Epoch: epoch, Sequencer: s.n.uuid}, Sync: true})
	return nil
}

func (s *Sequencer) lastRecord(ctx context.Context, tx *gorm.DB) (OperationVO, error) {
	var last OperationVO
	err := tx.WithContext(ctx).Order("seq DESC").Limit(1).Find(&last).Error
	return last, err
}

// notify publishes a notification. A failure is only logged: nodes read
// what they missed at their next check of the log.
func (s *Sequencer) notify(nt notice) {
	ctx, cancel := context.WithTimeout(s.n.ctx, 5*time.Second)
	defer cancel()
	if err := cloudbus.Publish(ctx, s.n.bus, evOperation, nt); err != nil {
		s.stats.notifyErrs.Add(1)
		s.log.Warn("notify operation", "seq", nt.Seq, "err", err)
	}
}

var (
	errLostRace = errors.New("another sequencer recorded this sequence number first")
	errDeposed  = errors.New("a sequencer of a newer epoch wrote the log")
)

// recordBatch executes and records batch in one transaction, retrying it
// whole when it loses a race. Errors (for the whole batch): a retryable
// NodeUnavailable when a newer sequencer wrote the log or the node stops,
// a retryable Conflict after too many lost races, a retryable Busy when
// the database fails.
func (s *Sequencer) recordBatch(ctx context.Context, epoch int64, batch []*submission) ([]batchOut, error) {
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		outs, err := s.recordOnce(ctx, epoch, batch)
		switch {
		case err == nil:
			s.stats.batches.Add(1)
			return outs, nil
		case errors.Is(err, errDeposed):
			s.stats.deposed.Add(1)
			s.n.triggerResync()
			return nil, errcode.New(errcode.NodeUnavailable, "node %s at ring epoch %d is no longer the sequencer: a newer one wrote the log", s.n.uuid, epoch)
		case ctx.Err() != nil:
			return nil, errcode.Wrap(errcode.NodeUnavailable, err, "sequencer %s stopped before recording", s.n.uuid)
		case errors.Is(err, errLostRace) || isTransient(err):
			s.stats.races.Add(1)
			if attempt >= maxRecordAttempts {
				return nil, errcode.Wrap(errcode.Conflict, err, "%d attempts lost to concurrent writers of the log", attempt)
			}
		default:
			return nil, errcode.Wrap(errcode.Busy, err, "record %d submissions", len(batch))
		}
		// Jittered, so two would-be sequencers do not keep colliding.
		select {
		case <-ctx.Done():
			return nil, errcode.Wrap(errcode.NodeUnavailable, ctx.Err(), "sequencer %s stopped before recording", s.n.uuid)
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(backoff*2, 50*time.Millisecond)
	}
}

// recordOnce is one attempt: read the end of the log (a newer epoch there
// deposes this sequencer); then per submission, in order: answer it from
// the log if its ID is there, else run exec in a savepoint (a rejection
// rolls back to it) and insert its row at the next seq.
func (s *Sequencer) recordOnce(ctx context.Context, epoch int64, batch []*submission) ([]batchOut, error) {
	outs := make([]batchOut, len(batch))
	err := s.n.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		last, err := s.lastRecord(ctx, tx)
		if err != nil {
			return err
		}
		if last.Epoch > epoch {
			return errDeposed
		}
		next := last.Seq + 1
		for i, sub := range batch {
			outs[i] = batchOut{}
			var prev []OperationVO
			if err := tx.Where("submission_id = ?", sub.req.ID).Limit(1).Find(&prev).Error; err != nil {
				return err
			}
			if len(prev) > 0 {
				outs[i] = batchOut{rec: prev[0], dup: true}
				continue
			}
			var result json.RawMessage
			err := tx.Transaction(func(sp *gorm.DB) error {
				r, err := sub.k.execRaw(ctx, sp, sub.req.Payload)
				result = r
				return err
			})
			if err != nil {
				// A rejection is exec's *errcode.Error; anything else (a
				// database error, a cancelled context) is a failure to
				// execute, never reported as the operation's outcome.
				var ce *errcode.Error
				if isTransient(err) || ctx.Err() != nil || !errors.As(err, &ce) {
					return err
				}
				outs[i].rejected = err
				continue
			}
			rec := OperationVO{Seq: next, SubmissionID: sub.req.ID, Kind: sub.req.Kind, Payload: string(sub.req.Payload),
				Result: string(result), Epoch: epoch, Sequencer: s.n.uuid}
			if err := tx.Create(&rec).Error; err != nil {
				if errors.Is(err, gorm.ErrDuplicatedKey) {
					// The seq or the submission ID: either way the next
					// attempt re-reads the log.
					return errLostRace
				}
				return err
			}
			outs[i].rec = rec
			next++
		}
		return nil
	})
	return outs, err
}

// isTransient reports database errors that a new attempt of the same
// transaction may not hit: deadlocks and lock waits (MySQL), a busy
// database (SQLite), a duplicate key (a concurrent writer of the same row).
func isTransient(err error) bool {
	return errors.Is(err, gorm.ErrDuplicatedKey) || db.Transient(err)
}
