package managementnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/internal/testenv"
)

// recorder is a participant that records what it staged and committed,
// and rejects the stage while reject is set.
type recorder struct {
	mu        sync.Mutex
	node      string
	staged    []string
	committed []int64
	reject    string
}

func (r *recorder) Stage(_ context.Context, scope string, payload json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reject != "" {
		return errors.New(r.reject)
	}
	r.staged = append(r.staged, scope+"="+string(payload))
	return nil
}

func (r *recorder) Commit(_ context.Context, _ string, _ json.RawMessage, version int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.committed = append(r.committed, version)
	return nil
}

func (r *recorder) commits() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.committed...)
}

type txnEnv struct {
	*seqEnv
	nodes []*seqNode
	parts []*recorder
	// version is the durable store of the tests' transactions.
	version atomic.Int64
	durable atomic.Int64 // calls of Durable
}

func newTxnEnv(t *testing.T, b seqBackend, n int) *txnEnv {
	e := &txnEnv{seqEnv: newSeqEnv(t, b)}
	for i := range n {
		rec := &recorder{}
		sn := e.newNode(fmt.Sprintf("txn-node-%d-%s", i, testenv.Prefix(t)), func(sn *seqNode) { sn.RegisterTxn("test", rec) })
		rec.node = sn.UUID()
		e.start(sn)
		e.nodes = append(e.nodes, sn)
		e.parts = append(e.parts, rec)
	}
	e.converged(n, e.nodes...)
	return e
}

func (e *txnEnv) spec(value string) TxnSpec {
	return TxnSpec{Scope: "test/one", Payload: json.RawMessage(`"` + value + `"`), Lease: 2 * time.Second,
		Durable: func(context.Context) (int64, error) {
			e.durable.Add(1)
			return e.version.Add(1), nil
		}}
}

// TestTxnCommitsOnEveryNode: a transaction from any node is staged and
// committed on every running node, with the durable write's version.
func TestTxnCommitsOnEveryNode(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newTxnEnv(t, b, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i, from := range e.nodes {
			res, err := from.RunTxn(ctx, e.spec(fmt.Sprintf("v%d", i)))
			if err != nil {
				t.Fatalf("transaction from node %d: %v", i, err)
			}
			if res.Version != int64(i+1) || len(res.Applied) != 3 || len(res.Missed) != 0 {
				t.Fatalf("transaction from node %d: %+v, want version %d applied on 3 nodes", i, res, i+1)
			}
		}
		for _, p := range e.parts {
			if got := p.commits(); fmt.Sprint(got) != "[1 2 3]" {
				t.Errorf("node %s committed %v, want [1 2 3]", p.node, got)
			}
			if len(p.staged) != 3 || p.staged[2] != `test/one="v2"` {
				t.Errorf("node %s staged %v", p.node, p.staged)
			}
		}
	})
}

// TestTxnStageRejectionAborts: one node's rejection at stage aborts: no
// durable write, no commit anywhere, the error names the node and its
// reason, and the scope is unlocked (the next transaction runs).
func TestTxnStageRejectionAborts(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newTxnEnv(t, b, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		bad := e.parts[2]
		bad.mu.Lock()
		bad.reject = "value out of range on this node"
		bad.mu.Unlock()
		_, err := e.nodes[0].RunTxn(ctx, e.spec("x"))
		if !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), bad.node) || !strings.Contains(err.Error(), "value out of range on this node") {
			t.Fatalf("a rejected transaction: %v; want %s naming node %s and its reason", err, errcode.InvalidArgument, bad.node)
		}
		if n := e.durable.Load(); n != 0 {
			t.Errorf("the durable write ran %d times after a rejection", n)
		}
		for _, p := range e.parts {
			if c := p.commits(); len(c) != 0 {
				t.Errorf("node %s committed %v after a rejection", p.node, c)
			}
		}
		bad.mu.Lock()
		bad.reject = ""
		bad.mu.Unlock()
		if _, err := e.nodes[1].RunTxn(ctx, e.spec("y")); err != nil {
			t.Fatalf("the next transaction, the scope unlocked: %v", err)
		}
	})
}

// TestTxnLockIsALease: a scope locked by an originator that went silent
// refuses other transactions (Conflict, retryable, naming the lock's
// transaction) until the lease runs out; then they run.
func TestTxnLockIsALease(t *testing.T) {
	e := newTxnEnv(t, seqBackends[0], 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A dead originator's lock on every node, with a 700 ms lease.
	for _, sn := range e.nodes {
		if _, err := cloudbus.Call(ctx, sn.bus, sn.bus.Target(Service, sn.UUID()), msgTxn,
			txnReq{ID: "dead-txn", Scope: "test/one", Phase: phaseLock, Originator: "gone", LeaseMs: 700}); err != nil {
			t.Fatal(err)
		}
	}
	for _, sn := range e.nodes {
		if l := sn.TxnLocks(); len(l) != 1 || l[0].Txn != "dead-txn" || l[0].Scope != "test/one" || l[0].Originator != "gone" {
			t.Fatalf("node %s's locks: %+v, want dead-txn's lock of test/one", sn.UUID(), l)
		}
	}
	_, err := e.nodes[0].RunTxn(ctx, e.spec("x"))
	if !errcode.Has(err, errcode.Conflict) || !errcode.IsRetryable(err) || !strings.Contains(err.Error(), "dead-txn") {
		t.Fatalf("a transaction on a locked scope: %v; want a retryable %s naming dead-txn", err, errcode.Conflict)
	}
	if e.durable.Load() != 0 {
		t.Error("the durable write ran on a locked scope")
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err := e.nodes[1].RunTxn(ctx, e.spec("y"))
		return err == nil
	}, "a transaction once the dead originator's lease ran out")
	for _, sn := range e.nodes {
		if l := sn.TxnLocks(); len(l) != 0 {
			t.Errorf("node %s holds %+v after the transaction ended", sn.UUID(), l)
		}
	}
	for _, p := range e.parts {
		if c := p.commits(); len(c) != 1 {
			t.Errorf("node %s committed %v, want one commit", p.node, c)
		}
	}
}

// TestTxnAbortBeforeDurable: an originator that stops between stage and
// the durable write (the test hook) changes nothing and unlocks.
func TestTxnAbortBeforeDurable(t *testing.T) {
	e := newTxnEnv(t, seqBackends[0], 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := txnTestHook
	txnTestHook = func(_, _, point string) error {
		if point == "after-stage" {
			return errcode.New(errcode.Internal, "the originator stops")
		}
		return nil
	}
	_, err := e.nodes[0].RunTxn(ctx, e.spec("x"))
	txnTestHook = old
	if err == nil || !strings.Contains(err.Error(), "the originator stops") {
		t.Fatalf("RunTxn: %v", err)
	}
	if e.durable.Load() != 0 {
		t.Error("durable write ran")
	}
	if _, err := e.nodes[1].RunTxn(ctx, e.spec("y")); err != nil {
		t.Fatalf("the next transaction: %v", err)
	}
}

// TestTxnStateMachine: every state but the two final ones has a way out,
// and both final states are reachable.
func TestTxnStateMachine(t *testing.T) {
	reach := map[TxnState]bool{TxnDefault: true}
	for changed := true; changed; {
		changed = false
		for from, evs := range txnTransitions {
			if !reach[from] {
				continue
			}
			for _, to := range evs {
				if !reach[to] {
					reach[to], changed = true, true
				}
			}
		}
	}
	for _, s := range []TxnState{TxnDefault, TxnLockSent, TxnLocked, TxnStageSent, TxnStaged, TxnCommitSent, TxnCommitted, TxnUnlockSent, TxnAbortUnlock} {
		if len(txnTransitions[s]) == 0 {
			t.Errorf("state %q has no transition", s)
		}
	}
	for _, s := range []TxnState{TxnDone, TxnAborted} {
		if !reach[s] || len(txnTransitions[s]) != 0 {
			t.Errorf("final state %q: reachable %v, transitions %v", s, reach[s], txnTransitions[s])
		}
	}
	if len(TxnTransitions()) != 14 {
		t.Errorf("%d transitions listed", len(TxnTransitions()))
	}
}

// TestTxnPauseEnv: the environment's pause holds the first originator
// that reaches the point of a transaction on the scope the request file
// names, and only that one: the file is renamed to paused-<node>.
func TestTxnPauseEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(PauseEnv, dir)
	old := pauseFor
	pauseFor = 50 * time.Millisecond
	defer func() { pauseFor = old }()
	if err := os.WriteFile(filepath.Join(dir, "pause"), []byte("after-stage globalconfig/a/b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	held := func(node, scope, point string) bool {
		start := time.Now()
		if err := envPause(node, scope, point); err != nil {
			t.Fatal(err)
		}
		return time.Since(start) >= pauseFor
	}
	if held("n1", "globalconfig/a/b", "after-lock") || held("n1", "globalconfig/a/c", "after-stage") {
		t.Fatal("paused at a point or scope the request does not name")
	}
	if !held("n2", "globalconfig/a/b", "after-stage") {
		t.Fatal("not paused at the point and scope requested")
	}
	if _, err := os.Stat(filepath.Join(dir, "paused-n2")); err != nil {
		t.Fatalf("the request was not claimed by n2: %v", err)
	}
	if held("n3", "globalconfig/a/b", "after-stage") {
		t.Fatal("a second originator paused on a claimed request")
	}
}
