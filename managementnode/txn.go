package managementnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/uid"
)

// Cluster transactions, in the manner of GlusterD's: the originator locks
// the transaction's scope on every running node, stages the change on
// every node (each validates it), makes it durable (one database write),
// commits it on every node (each applies it), and unlocks. The originator
// runs an explicit state machine (txnTransitions); every transition is
// logged with the transaction's id. Locks are leases: a lock whose
// originator went silent expires, so a dead originator never leaves the
// cluster locked for longer than the lease. Once the change is durable, a
// node that missed the commit converges from the database (its
// participant's own resync).

// TxnParticipant takes part in the cluster transactions of one scope kind
// on a node.
type TxnParticipant interface {
	// Stage validates payload on this node; an error rejects the
	// transaction (its text is the reason).
	Stage(ctx context.Context, scope string, payload json.RawMessage) error
	// Commit applies the durable change (its version) on this node.
	Commit(ctx context.Context, scope string, payload json.RawMessage, version int64) error
}

// TxnSpec is a transaction to run.
type TxnSpec struct {
	// Scope is "<kind>/<name>", e.g. "globalconfig/host/ping.interval":
	// one transaction at a time holds a scope; kind names the participant.
	Scope   string
	Payload json.RawMessage
	// Durable makes the change durable (one database write) once every
	// node staged it; the version it returns is passed to every Commit.
	Durable func(ctx context.Context) (version int64, err error)
	// Lease is how long a lock outlives a silent originator. Default 10s.
	Lease time.Duration
}

// TxnResult is a committed transaction.
type TxnResult struct {
	ID      string   `json:"id"`
	Version int64    `json:"version"`
	Applied []string `json:"applied"` // nodes that acknowledged the commit
	Missed  []string `json:"missed"`  // running nodes that did not: they converge from the database
}

// TxnState is a state of the originator's state machine.
type TxnState string

// The originator's states.
const (
	TxnDefault     TxnState = "Default"
	TxnLockSent    TxnState = "Lock sent"
	TxnLocked      TxnState = "Locked"
	TxnStageSent   TxnState = "Stage op sent"
	TxnStaged      TxnState = "Staged"
	TxnCommitSent  TxnState = "Commit op sent"
	TxnCommitted   TxnState = "Committed"
	TxnUnlockSent  TxnState = "Unlock sent"
	TxnDone        TxnState = "Done"
	TxnAbortUnlock TxnState = "Abort: unlock sent"
	TxnAborted     TxnState = "Aborted"
)

// TxnEvent moves the state machine.
type TxnEvent string

// The events.
const (
	TxnEvStart     TxnEvent = "START"       // the originator begins
	TxnEvAllAcc    TxnEvent = "ALL_ACC"     // every node accepted the phase
	TxnEvRjt       TxnEvent = "RJT"         // a node rejected it, or did not answer in time
	TxnEvDurable   TxnEvent = "DURABLE"     // the database write committed
	TxnEvDurableKo TxnEvent = "DURABLE_ERR" // the database write failed: nothing changed
	TxnEvAcked     TxnEvent = "COMMIT_ACK"  // the commit went to every node (acknowledged or not)
)

// txnTransitions is the state machine: state -> event -> next state. Any
// other (state, event) is a bug, and aborts.
var txnTransitions = map[TxnState]map[TxnEvent]TxnState{
	TxnDefault:     {TxnEvStart: TxnLockSent},
	TxnLockSent:    {TxnEvAllAcc: TxnLocked, TxnEvRjt: TxnAbortUnlock},
	TxnLocked:      {TxnEvStart: TxnStageSent},
	TxnStageSent:   {TxnEvAllAcc: TxnStaged, TxnEvRjt: TxnAbortUnlock},
	TxnStaged:      {TxnEvDurable: TxnCommitSent, TxnEvDurableKo: TxnAbortUnlock},
	TxnCommitSent:  {TxnEvAcked: TxnCommitted},
	TxnCommitted:   {TxnEvStart: TxnUnlockSent},
	TxnUnlockSent:  {TxnEvAllAcc: TxnDone, TxnEvRjt: TxnDone},
	TxnAbortUnlock: {TxnEvAllAcc: TxnAborted, TxnEvRjt: TxnAborted},
}

// TxnTransitions lists the state machine's transitions (for docs and
// tests), sorted.
func TxnTransitions() [][3]string {
	var out [][3]string
	for from, evs := range txnTransitions {
		for ev, to := range evs {
			out = append(out, [3]string{string(from), string(ev), string(to)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i][0]+out[i][1] < out[j][0]+out[j][1]
	})
	return out
}

// Phases sent to the nodes.
const (
	phaseLock   = "lock"
	phaseStage  = "stage"
	phaseCommit = "commit"
	phaseUnlock = "unlock"
)

type txnReq struct {
	ID         string          `json:"id"`
	Scope      string          `json:"scope"`
	Phase      string          `json:"phase"`
	Originator string          `json:"originator"`
	LeaseMs    int64           `json:"leaseMs"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	Version    int64           `json:"version,omitempty"`
}

var msgTxn = cloudbus.NewMsg[txnReq, cloudbus.Empty]("mn.Txn")

// txnLock is one scope's lock on a node.
type txnLock struct {
	id, originator string
	expires        time.Time
}

// txns is a node's side of the cluster transactions: its participants and
// its lock table.
type txns struct {
	n            *Node
	mu           sync.Mutex
	participants map[string]TxnParticipant
	locks        map[string]txnLock
	now          func() time.Time
}

func newTxns(n *Node) *txns {
	return &txns{n: n, participants: map[string]TxnParticipant{}, locks: map[string]txnLock{}, now: time.Now}
}

// RegisterTxn registers the participant of scopes "<kind>/..." on this
// node. Register before Start: a node takes part in every transaction once
// it runs.
func (n *Node) RegisterTxn(kind string, p TxnParticipant) {
	n.txn.mu.Lock()
	defer n.txn.mu.Unlock()
	n.txn.participants[kind] = p
}

func scopeKind(scope string) string {
	kind, _, _ := strings.Cut(scope, "/")
	return kind
}

// handle is a node's part of one phase.
func (t *txns) handle(ctx context.Context, req txnReq) (cloudbus.Empty, error) {
	t.mu.Lock()
	p := t.participants[scopeKind(req.Scope)]
	now := t.now()
	cur, held := t.locks[req.Scope]
	if held && !cur.expires.After(now) {
		delete(t.locks, req.Scope) // its originator went silent: the lease ran out
		held = false
		t.n.log.Warn("transaction lock expired", "txn", cur.id, "scope", req.Scope, "originator", cur.originator)
	}
	lease := time.Duration(req.LeaseMs) * time.Millisecond
	switch req.Phase {
	case phaseLock:
		if held && cur.id != req.ID {
			t.mu.Unlock()
			e := errcode.New(errcode.Conflict, "%s is locked by transaction %s of node %s; retry", req.Scope, cur.id, cur.originator)
			return cloudbus.Empty{}, e
		}
		if p == nil {
			t.mu.Unlock()
			return cloudbus.Empty{}, errcode.New(errcode.InvalidArgument, "node %s has no participant for transactions on %s", t.n.uuid, req.Scope)
		}
		t.locks[req.Scope] = txnLock{id: req.ID, originator: req.Originator, expires: now.Add(lease)}
		t.mu.Unlock()
		return cloudbus.Empty{}, nil
	case phaseUnlock:
		if held && cur.id == req.ID {
			delete(t.locks, req.Scope)
		}
		t.mu.Unlock()
		return cloudbus.Empty{}, nil
	case phaseStage:
		if !held || cur.id != req.ID {
			t.mu.Unlock()
			return cloudbus.Empty{}, errcode.New(errcode.Conflict, "transaction %s does not hold the lock of %s on node %s (its lease ran out?)", req.ID, req.Scope, t.n.uuid)
		}
		t.locks[req.Scope] = txnLock{id: req.ID, originator: req.Originator, expires: now.Add(lease)}
		t.mu.Unlock()
		if err := p.Stage(ctx, req.Scope, req.Payload); err != nil {
			var e *errcode.Error
			if !errors.As(err, &e) {
				err = errcode.Wrap(errcode.InvalidArgument, err, "node %s rejects the change", t.n.uuid)
			}
			return cloudbus.Empty{}, err
		}
		return cloudbus.Empty{}, nil
	case phaseCommit:
		// Durable already: applied whatever the lock (a node whose lease
		// ran out still converges).
		t.mu.Unlock()
		if p == nil {
			return cloudbus.Empty{}, errcode.New(errcode.InvalidArgument, "node %s has no participant for transactions on %s", t.n.uuid, req.Scope)
		}
		return cloudbus.Empty{}, p.Commit(ctx, req.Scope, req.Payload, req.Version)
	}
	t.mu.Unlock()
	return cloudbus.Empty{}, errcode.New(errcode.InvalidArgument, "unknown transaction phase %q", req.Phase)
}

// txnRun is the originator's state machine of one transaction.
type txnRun struct {
	n     *Node
	id    string
	spec  TxnSpec
	state TxnState
	nodes []string
}

func (r *txnRun) fire(ev TxnEvent, why string) {
	next, ok := txnTransitions[r.state][ev]
	if !ok {
		r.n.log.Error("transaction: no transition", "txn", r.id, "scope", r.spec.Scope, "state", string(r.state), "event", string(ev))
		next = TxnAbortUnlock
	}
	r.n.log.Info(fmt.Sprintf("Transitioning from '%s' to '%s' due to event %s", r.state, next, ev),
		"txn", r.id, "scope", r.spec.Scope, "why", why)
	r.state = next
}

// phaseReject is a node's answer to a phase: a refusal unless err is nil.
type phaseReject struct {
	node string
	err  error
}

// send sends phase to every node at once and waits for all; it answers
// the nodes that accepted and the rejections, by node.
func (r *txnRun) send(ctx context.Context, phase string, version int64) (acc []string, rjt []phaseReject) {
	answers := make(chan phaseReject, len(r.nodes))
	req := txnReq{ID: r.id, Scope: r.spec.Scope, Phase: phase, Originator: r.n.uuid, LeaseMs: r.spec.Lease.Milliseconds(),
		Payload: r.spec.Payload, Version: version}
	for _, node := range r.nodes {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, r.spec.Lease/2)
			defer cancel()
			_, err := cloudbus.Call(cctx, r.n.bus, r.n.bus.Target(Service, node), msgTxn, req)
			answers <- phaseReject{node, err}
		}()
	}
	for range r.nodes {
		a := <-answers
		if a.err != nil {
			rjt = append(rjt, a)
		} else {
			acc = append(acc, a.node)
		}
	}
	sort.Strings(acc)
	sort.Slice(rjt, func(i, j int) bool { return rjt[i].node < rjt[j].node })
	return acc, rjt
}

// txnTestHook, if set (tests), runs at the named points of an originator
// ("after-lock", "after-stage", "after-durable", "after-commit"); an error
// aborts there (before the durable write). By default it is the
// environment's pause.
var txnTestHook = envPause

// PauseEnv names the test hook of the cluster transactions: a directory.
// An originator whose environment sets it looks there, at each point of
// a transaction, for a file "pause" reading "<point> <scope>"; the first
// originator to reach that point of a transaction on that scope renames
// it to "paused-<node UUID>" (one node wins, wherever the ring put the
// transaction) and holds the transaction there for two minutes, so that
// tests can kill it at a chosen point.
const PauseEnv = "MPLANE_TEST_TXN_PAUSE"

// pauseFor is how long envPause holds a transaction.
var pauseFor = 2 * time.Minute

func envPause(node, scope, point string) error {
	dir := os.Getenv(PauseEnv)
	if dir == "" {
		return nil
	}
	req := filepath.Join(dir, "pause")
	b, err := os.ReadFile(req)
	if err != nil || strings.TrimSpace(string(b)) != point+" "+scope {
		return nil
	}
	if os.Rename(req, filepath.Join(dir, "paused-"+node)) != nil {
		return nil // another node won it
	}
	slog.Warn("transaction paused by "+PauseEnv, "node_uuid", node, "scope", scope, "point", point)
	time.Sleep(pauseFor)
	return nil
}

// TxnLock is a lock this node holds for a cluster transaction (the admin
// command locks).
type TxnLock struct {
	Scope      string    `json:"scope"`
	Txn        string    `json:"txn"`
	Originator string    `json:"originator"`
	Expires    time.Time `json:"expires"`
}

// TxnLocks lists the transaction locks this node holds whose lease has not
// run out, by scope.
func (n *Node) TxnLocks() []TxnLock {
	t := n.txn
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	out := []TxnLock{}
	for scope, l := range t.locks {
		if l.expires.After(now) {
			out = append(out, TxnLock{Scope: scope, Txn: l.id, Originator: l.originator, Expires: l.expires.UTC()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Scope < out[j].Scope })
	return out
}

// RunTxn runs a transaction over every running node: lock, stage, the
// durable write, commit, unlock. A rejection at lock or stage aborts
// (nothing durable), with an *errcode.Error naming the node and its
// reason; a scope locked by another transaction fails with a retryable
// errcode.Conflict.
func (n *Node) RunTxn(ctx context.Context, spec TxnSpec) (TxnResult, error) {
	if spec.Lease <= 0 {
		spec.Lease = 10 * time.Second
	}
	if spec.Durable == nil || scopeKind(spec.Scope) == spec.Scope {
		return TxnResult{}, errcode.New(errcode.InvalidArgument, "transaction on %q: a scope <kind>/<name> and a durable write are required", spec.Scope)
	}
	r := &txnRun{n: n, id: uid.New(), spec: spec, state: TxnDefault, nodes: n.Ring().Members}
	if len(r.nodes) == 0 {
		return TxnResult{}, errcode.New(errcode.NodeUnavailable, "no management node is running")
	}
	hook := func(point string) error {
		if txnTestHook != nil {
			return txnTestHook(n.uuid, spec.Scope, point)
		}
		return nil
	}
	abort := func(rjt []phaseReject, cause error) (TxnResult, error) {
		r.send(context.WithoutCancel(ctx), phaseUnlock, 0)
		r.fire(TxnEvAllAcc, "unlocked")
		if cause != nil {
			return TxnResult{}, cause
		}
		first := rjt[0]
		var nodes []string
		for _, x := range rjt {
			nodes = append(nodes, x.node)
		}
		code := errcode.InvalidArgument
		var e *errcode.Error
		if errors.As(first.err, &e) {
			code = e.Code
		}
		return TxnResult{}, errcode.Wrap(code, first.err, "transaction %s on %s aborted: node %s refused it (nodes refusing: %s)",
			r.id, spec.Scope, first.node, strings.Join(nodes, ", "))
	}

	r.fire(TxnEvStart, fmt.Sprintf("%d nodes", len(r.nodes)))
	if _, rjt := r.send(ctx, phaseLock, 0); len(rjt) > 0 {
		r.fire(TxnEvRjt, rjt[0].err.Error())
		return abort(rjt, nil)
	}
	r.fire(TxnEvAllAcc, "every node locked "+spec.Scope)
	if err := hook("after-lock"); err != nil {
		r.fire(TxnEvStart, "test hook")
		r.fire(TxnEvRjt, err.Error())
		return abort(nil, err)
	}
	r.fire(TxnEvStart, "stage")
	if _, rjt := r.send(ctx, phaseStage, 0); len(rjt) > 0 {
		r.fire(TxnEvRjt, rjt[0].err.Error())
		return abort(rjt, nil)
	}
	r.fire(TxnEvAllAcc, "every node staged the change")
	if err := hook("after-stage"); err != nil {
		r.fire(TxnEvDurableKo, err.Error())
		return abort(nil, err)
	}
	version, err := spec.Durable(ctx)
	if err != nil {
		r.fire(TxnEvDurableKo, err.Error())
		return abort(nil, err)
	}
	r.fire(TxnEvDurable, fmt.Sprintf("version %d", version))
	_ = hook("after-durable")
	// Durable: the commit goes everywhere even if the caller gave up.
	cctx := context.WithoutCancel(ctx)
	acc, rjt := r.send(cctx, phaseCommit, version)
	res := TxnResult{ID: r.id, Version: version, Applied: acc}
	for _, x := range rjt {
		res.Missed = append(res.Missed, x.node)
		n.log.Warn("transaction commit not acknowledged; the node converges from the database", "txn", r.id, "scope", spec.Scope,
			"node", x.node, "err", x.err)
	}
	r.fire(TxnEvAcked, fmt.Sprintf("%d applied, %d missed", len(acc), len(rjt)))
	_ = hook("after-commit")
	r.fire(TxnEvStart, "unlock")
	if _, rjt := r.send(cctx, phaseUnlock, 0); len(rjt) > 0 {
		r.fire(TxnEvRjt, "some nodes did not answer the unlock: their lease runs out")
	} else {
		r.fire(TxnEvAllAcc, "every node unlocked")
	}
	return res, nil
}
