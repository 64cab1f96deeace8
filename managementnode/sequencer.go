package managementnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/uid"
)

// The cluster sequencer: totally ordered cluster operations, in the way
// Sheepdog serializes its cluster operations through ZooKeeper. Design,
// guarantees and failure cases: docs/cluster-operations.md. The applying
// side (every node) is in sequencer_apply.go, the ID pool in
// sequencer_idpool.go.

// SequencerKey is the resource whose ring owner is the cluster sequencer.
// While a submission executes, the sequencer holds the key's partition as
// the Guard holds a resource's, so a handover waits for it.
const SequencerKey = "cluster-sequencer"

// OperationVO is a row of cluster_operations, the cluster's operation log:
// one row per executed operation, written by the sequencer in the same
// transaction as the operation's own durable effect.
type OperationVO struct {
	// Seq is the operation's position: strictly increasing, no gaps (the
	// primary key arbitrates between two nodes that both think they are
	// the sequencer).
	Seq int64 `gorm:"column:seq;primaryKey;autoIncrement:false" json:"seq"`
	// SubmissionID makes submissions idempotent: a resubmission with the
	// same ID gets this row's result and is not executed again.
	SubmissionID string `gorm:"column:submission_id;size:64;not null;uniqueIndex" json:"submissionId"`
	Kind         string `gorm:"column:kind;size:128;not null" json:"kind"`
	Payload      string `gorm:"column:payload;size:16777215;not null" json:"payload"`
	Result       string `gorm:"column:result;size:16777215;not null" json:"result"`
	// Epoch is the ring epoch of the sequencer that wrote the row; it never
	// decreases along the log (a sequencer whose epoch is older than the
	// last row's is deposed and writes nothing).
	Epoch     int64     `gorm:"column:epoch;not null" json:"epoch"`
	Sequencer string    `gorm:"column:sequencer;size:64;not null" json:"sequencer"`
	CreatedAt time.Time `gorm:"column:created_at;not null" json:"createdAt"`
}

// TableName is cluster_operations.
func (OperationVO) TableName() string { return "cluster_operations" }

// maxPayload bounds an operation's payload: every node receives it in a
// notification and keeps it in the log forever.
const maxPayload = 1 << 20

// Operation is one submission: the kind (the name of an OrderedOp), its
// JSON payload and the submission's ID.
type Operation struct {
	Kind    string
	Payload json.RawMessage
	// ID identifies the submission. A submission whose ID is already in
	// the log is not executed again: it gets the recorded outcome. Empty:
	// Submit makes one, and reuses it for its own retries. Callers that
	// retry a submission themselves (or from another node) pass their own.
	ID string
}

// Applied is the outcome of a recorded operation.
type Applied struct {
	Seq       int64
	Epoch     int64
	Sequencer string
	Result    json.RawMessage
	// Duplicate: the submission ID was already in the log; this is the
	// outcome recorded then.
	Duplicate bool
}

// Entry is what an operation's apply callback gets: its log position and
// its decoded payload and result.
type Entry[T, R any] struct {
	Seq          int64
	Epoch        int64
	Sequencer    string
	SubmissionID string
	At           time.Time
	Payload      T
	Result       R
}

// OrderedKind is a registered kind of ordered operation; *OrderedOp is the
// one implementation.
type OrderedKind interface {
	// Kind is the name the log records.
	Kind() string
	execRaw(ctx context.Context, tx *gorm.DB, payload json.RawMessage) (json.RawMessage, error)
	applyRaw(ctx context.Context, rec *OperationVO) error
}

// OrderedOp is a typed kind of cluster operation: its payload T, its result
// R, exec (run by the sequencer, one operation at a time cluster-wide, in
// the transaction that records the operation) and apply (run on every
// node, in sequence order). Services declare theirs and register them with
// Sequencer.Register on every node before Node.Start:
//
//	op := managementnode.NewOrderedOp[AllocReq]("vni.allocate", exec, apply)
//	node.Sequencer().Register(op)
//	res, applied, err := op.Submit(ctx, node.Sequencer(), AllocReq{...})
//
// exec must decide from the database (tx), never from a cache: the cache
// of the sequencer node may lag the log. It rejects the operation by
// returning an *errcode.Error, which the submitter gets (nothing is
// recorded, no sequence number is used); any other error (a database
// failure) fails the submission with a retryable Busy. A duplicate key or
// a deadlock in exec is taken for a race with a concurrent writer: the
// whole transaction is retried. exec runs with the sequencer's slot held:
// it must not submit, nor wait for anything that may. apply updates what the node keeps in memory; it must not block
// for long (it holds up the node's later operations) and must not submit.
type OrderedOp[T, R any] struct {
	name  string
	exec  func(ctx context.Context, tx *gorm.DB, p T) (R, error)
	apply func(ctx context.Context, e Entry[T, R])
}

// NewOrderedOp defines the operation kind name. apply may be nil (the
// operation's effect is only durable).
func NewOrderedOp[T, R any](name string, exec func(ctx context.Context, tx *gorm.DB, p T) (R, error), apply func(ctx context.Context, e Entry[T, R])) *OrderedOp[T, R] {
	if name == "" || exec == nil {
		panic("managementnode: an ordered operation needs a name and an exec function")
	}
	return &OrderedOp[T, R]{name: name, exec: exec, apply: apply}
}

// Kind is the operation's name.
func (o *OrderedOp[T, R]) Kind() string { return o.name }

// Operation encodes p as a submission of this kind with the given ID
// (empty: Submit makes one).
func (o *OrderedOp[T, R]) Operation(id string, p T) (Operation, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return Operation{}, errcode.Wrap(errcode.InvalidArgument, err, "encode the payload of %s", o.name)
	}
	return Operation{Kind: o.name, Payload: raw, ID: id}, nil
}

// Submit submits p through s and decodes the result.
func (o *OrderedOp[T, R]) Submit(ctx context.Context, s *Sequencer, p T) (R, Applied, error) {
	return o.SubmitID(ctx, s, "", p)
}

// SubmitID submits p with the submission ID id: submitting the same ID
// again returns the first outcome without executing it again.
func (o *OrderedOp[T, R]) SubmitID(ctx context.Context, s *Sequencer, id string, p T) (R, Applied, error) {
	var r R
	op, err := o.Operation(id, p)
	if err != nil {
		return r, Applied{}, err
	}
	a, err := s.Submit(ctx, op)
	if err != nil {
		return r, a, err
	}
	if err := json.Unmarshal(a.Result, &r); err != nil {
		return r, a, errcode.Wrap(errcode.MalformedMessage, err, "decode the result of %s (seq %d)", o.name, a.Seq)
	}
	return r, a, nil
}

func (o *OrderedOp[T, R]) execRaw(ctx context.Context, tx *gorm.DB, payload json.RawMessage) (out json.RawMessage, err error) {
	var p T
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, errcode.Wrap(errcode.MalformedMessage, err, "decode the payload of %s", o.name)
	}
	defer func() {
		if v := recover(); v != nil {
			out, err = nil, errcode.New(errcode.Internal, "exec of %s panicked: %v", o.name, v)
		}
	}()
	r, err := o.exec(ctx, tx, p)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "encode the result of %s", o.name)
	}
	return raw, nil
}

func (o *OrderedOp[T, R]) applyRaw(ctx context.Context, rec *OperationVO) error {
	if o.apply == nil {
		return nil
	}
	e := Entry[T, R]{Seq: rec.Seq, Epoch: rec.Epoch, Sequencer: rec.Sequencer, SubmissionID: rec.SubmissionID, At: rec.CreatedAt}
	if err := json.Unmarshal([]byte(rec.Payload), &e.Payload); err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	if err := json.Unmarshal([]byte(rec.Result), &e.Result); err != nil {
		return fmt.Errorf("decode result: %w", err)
	}
	o.apply(ctx, e)
	return nil
}

// submitReq is a submission on its way to the sequencer.
type submitReq struct {
	ID      string          `json:"id"`
	Kind    string          `json:"kind"`
	Payload json.RawMessage `json:"payload"`
}

// submitRep is the sequencer's answer. A rejection by exec travels as a
// successful reply, so the submitter never retries it.
type submitRep struct {
	Seq       int64           `json:"seq,omitempty"`
	Epoch     int64           `json:"epoch,omitempty"`
	Sequencer string          `json:"sequencer,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Duplicate bool            `json:"duplicate,omitempty"`
	Rejected  *errcode.Error  `json:"rejected,omitempty"`
}

var msgSubmit = cloudbus.NewMsg[submitReq, submitRep]("mn.SequencerSubmit")

// notice tells every node that an operation was recorded (with the record,
// so nodes need not read it), or, with Sync, that the log holds records up
// to Seq (a new sequencer's announcement).
type notice struct {
	OperationVO
	Sync bool `json:"sync,omitempty"`
}

var evOperation = cloudbus.NewEvent[notice]("sequencer.operation")

// SequencerStats counts what a node's sequencer did, as sequencer and as
// applier.
type SequencerStats struct {
	// AppliedSeq is the node's applied log position; MaxEpoch the newest
	// sequencer epoch it has seen.
	AppliedSeq int64 `json:"appliedSeq"`
	MaxEpoch   int64 `json:"maxEpoch"`
	// Applied operations; those whose kind is not registered here
	// (skipped) or whose apply failed (logged) are counted too.
	Applied      int64 `json:"applied"`
	UnknownKinds int64 `json:"unknownKinds"`
	ApplyErrors  int64 `json:"applyErrors"`
	// Notifications ignored: duplicates (seq already applied), stale (from
	// an older sequencer epoch than one already seen), dropped (buffer
	// full; read from the database instead).
	Duplicates int64 `json:"duplicates"`
	Stale      int64 `json:"stale"`
	Dropped    int64 `json:"dropped"`
	// Reads of the log from the database: to fill a gap, and in all.
	GapReads int64 `json:"gapReads"`
	Reads    int64 `json:"reads"`
	// As sequencer: operations executed and recorded, rejected by exec,
	// resubmissions answered from the log, insert races lost and retried,
	// takeovers announced, refusals because a newer sequencer wrote.
	Executed   int64 `json:"executed"`
	Rejected   int64 `json:"rejected"`
	Resubmits  int64 `json:"resubmits"`
	Races      int64 `json:"races"`
	Adoptions  int64 `json:"adoptions"`
	Deposed    int64 `json:"deposed"`
	NotifyErrs int64 `json:"notifyErrors"`
	// Batches: recording transactions committed (several operations may
	// share one).
	Batches int64 `json:"batches"`
}

type seqStats struct {
	applied, unknown, applyErrs, dups, stale, dropped, gapReads, reads            atomic.Int64
	executed, rejected, resubmits, races, adoptions, deposed, notifyErrs, batches atomic.Int64
}

// Sequencer is a node's part in the cluster's operation log: every node
// submits and applies; the ring owner of SequencerKey also executes and
// records. Get it with Node.Sequencer.
type Sequencer struct {
	n   *Node
	log *slog.Logger

	// Registry of kinds, closed once the node starts.
	kindsMu sync.RWMutex
	kinds   map[string]OrderedKind
	started atomic.Bool

	// slot serializes execution on this node: its holder (the leader, one
	// of the waiting handlers) takes a batch of queued submissions and
	// executes, records and announces them, one at a time, in seq order.
	slot         chan struct{}
	adoptedEpoch int64 // under slot: the ring epoch whose takeover was announced
	queueMu      sync.Mutex
	queue        []*submission // waiting for a leader, in arrival order

	applier
	stats seqStats

	// Test hooks, set before Start.
	afterRecord func(rec OperationVO) error // after commit, before notifying
	dropNotice  func(nt notice) bool        // receiving side: drop this notification
}

func newSequencer(n *Node) *Sequencer {
	s := &Sequencer{n: n, log: n.log.With("part", "sequencer"), kinds: map[string]OrderedKind{}, slot: make(chan struct{}, 1)}
	s.applier.init()
	return s
}

// Sequencer is the node's part in the cluster's operation log.
func (n *Node) Sequencer() *Sequencer { return n.seq }

// Register adds kinds of operation. Every node must register the same
// kinds, before Node.Start (a node applies the whole log at start, so a
// kind registered later would have missed records).
func (s *Sequencer) Register(kinds ...OrderedKind) error {
	s.kindsMu.Lock()
	defer s.kindsMu.Unlock()
	if s.started.Load() {
		return errors.New("managementnode: register ordered operations before Node.Start")
	}
	for _, k := range kinds {
		if _, dup := s.kinds[k.Kind()]; dup {
			return fmt.Errorf("managementnode: ordered operation %q registered twice", k.Kind())
		}
		s.kinds[k.Kind()] = k
	}
	return nil
}

func (s *Sequencer) kind(name string) OrderedKind {
	s.kindsMu.RLock()
	defer s.kindsMu.RUnlock()
	return s.kinds[name]
}

// Stats reports the counters.
func (s *Sequencer) Stats() SequencerStats {
	st := &s.stats
	return SequencerStats{
		AppliedSeq: s.AppliedSeq(), MaxEpoch: s.maxEpoch.Load(),
		Applied: st.applied.Load(), UnknownKinds: st.unknown.Load(), ApplyErrors: st.applyErrs.Load(),
		Duplicates: st.dups.Load(), Stale: st.stale.Load(), Dropped: st.dropped.Load(),
		GapReads: st.gapReads.Load(), Reads: st.reads.Load(),
		Executed: st.executed.Load(), Rejected: st.rejected.Load(), Resubmits: st.resubmits.Load(),
		Races: st.races.Load(), Adoptions: st.adoptions.Load(), Deposed: st.deposed.Load(), NotifyErrs: st.notifyErrs.Load(), Batches: st.batches.Load(),
	}
}

// defaultSubmitTimeout bounds a submission made under a context without
// deadline.
const defaultSubmitTimeout = 30 * time.Second

// Submit sends op to the sequencer and returns once it is recorded and
// applied on this node (so what apply maintains here reflects it). It
// retries, with the same submission ID, while the sequencer is unavailable
// or moving (a dead node, a ring change), until ctx ends; a retried
// submission is executed at most once. A rejection by exec is returned as
// is, and never retried. If the operation was recorded but this node did
// not apply it before ctx ended, Submit returns the Applied and a Timeout.
func (s *Sequencer) Submit(ctx context.Context, op Operation) (Applied, error) {
	if op.Kind == "" {
		return Applied{}, errcode.New(errcode.InvalidArgument, "an operation needs a kind")
	}
	if len(op.ID) > 64 {
		return Applied{}, errcode.New(errcode.InvalidArgument, "submission id longer than 64 characters")
	}
	if op.ID == "" {
		op.ID = uid.New()
	}
	if len(op.Payload) == 0 {
		op.Payload = json.RawMessage("null")
	}
	if len(op.Payload) > maxPayload {
		return Applied{}, errcode.New(errcode.InvalidArgument, "payload of %s is %d bytes, more than %d", op.Kind, len(op.Payload), maxPayload)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultSubmitTimeout)
		defer cancel()
	}
	req := submitReq{ID: op.ID, Kind: op.Kind, Payload: op.Payload}
	backoff := 5 * time.Millisecond
	for {
		rep, err := s.call(ctx, req)
		if err == nil {
			if rep.Rejected != nil {
				return Applied{}, rep.Rejected
			}
			a := Applied{Seq: rep.Seq, Epoch: rep.Epoch, Sequencer: rep.Sequencer, Result: rep.Result, Duplicate: rep.Duplicate}
			return a, s.WaitApplied(ctx, a.Seq)
		}
		if !retrySubmit(err) || ctx.Err() != nil || s.n.ctx.Err() != nil {
			return Applied{}, err
		}
		if errcode.Has(err, errcode.NodeUnavailable) {
			s.n.forceResync(ctx) // the sequencer may have moved
		}
		select {
		case <-ctx.Done():
			return Applied{}, err
		case <-s.n.ctx.Done():
			return Applied{}, err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// retrySubmit: errors after which Submit sends the submission again (the
// sequencer is unreachable, moving or stopping). Busy (the database
// failed) and Conflict (too many lost races) go back to the caller, who
// may retry with the same submission ID.
func retrySubmit(err error) bool {
	switch errcode.CodeOf(err) {
	case errcode.NodeUnavailable, errcode.BusUnavailable, errcode.ShuttingDown:
		return true
	}
	return false
}

func (s *Sequencer) call(ctx context.Context, req submitReq) (submitRep, error) {
	if s.n.ctx.Err() != nil {
		return submitRep{}, errcode.New(errcode.ShuttingDown, "management node %s is stopping", s.n.uuid)
	}
	target, err := s.n.TargetFor(Service, SequencerKey)
	if err != nil {
		return submitRep{}, err
	}
	return cloudbus.Call(ctx, s.n.bus, target, msgSubmit, req)
}

// handleSubmit serves a submission on the node its sender took for the
// sequencer. Submissions carry no resource header, so the Guard lets them
// through and hold does its work here: the Guard's forwarding would lose a
// submission forwarded by a stale ring to a dead node (on RabbitMQ the
// broker returns it to the forwarder, not to the caller), whereas a
// refusal makes the submitter re-read its ring and retry.
func (s *Sequencer) handleSubmit(ctx context.Context, req submitReq) (submitRep, error) {
	release, err := s.hold(ctx)
	if err != nil {
		return submitRep{}, err
	}
	defer release()
	rep, err := s.sequence(ctx, req)
	if err != nil && ctx.Err() != nil && !errcode.IsRetryable(err) {
		// The bus stopped under us (this node is going away) or the
		// caller gave up: the outcome is unknown to the caller, who may
		// retry with the same submission ID.
		return submitRep{}, errcode.Wrap(errcode.NodeUnavailable, err, "sequencer %s stopped while handling submission %s; retry it", s.n.uuid, req.ID)
	}
	return rep, err
}

// hold holds SequencerKey's partition, as the Guard does for a resource
// message: it refuses if this node does not own the key (after re-reading
// the ring once), and waits while the previous owner has not released it
// (is still executing), so old and new sequencer never execute at once
// while both are alive. The database arbitrates the rest (recordBatch).
func (s *Sequencer) hold(ctx context.Context) (func(), error) {
	release, owner, err := s.n.acquire(ctx, SequencerKey)
	if errors.Is(err, errNotMine) {
		s.n.forceResync(ctx)
		release, owner, err = s.n.acquire(ctx, SequencerKey)
	}
	if errors.Is(err, errNotMine) {
		if owner == "" {
			return nil, errcode.New(errcode.NodeUnavailable, "no sequencer: the ring of node %s is empty", s.n.uuid)
		}
		return nil, errcode.New(errcode.NodeUnavailable, "node %s is not the sequencer; %s is at ring epoch %d", s.n.uuid, owner, s.n.Ring().Epoch)
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.NodeUnavailable, err, "sequencer %s", s.n.uuid)
	}
	return release, nil
}
