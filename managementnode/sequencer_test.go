package managementnode

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
)

// Tests of the cluster sequencer. Every test runs on both backends: the
// memory bus with SQLite, and RabbitMQ with MariaDB (skipped, or failed
// under CI=true, when they are not reachable). Nodes run in-process with a
// fake database clock; heartbeats (and so evictions) are driven by hand.

type seqBackend struct {
	name string
	dsn  func(testing.TB) string
	amqp bool
}

var seqBackends = []seqBackend{
	{"memory+sqlite", testenv.SQLiteDSN, false},
	{"amqp+mysql", testenv.MySQLDSN, true},
}

func forBackends(t *testing.T, fn func(t *testing.T, b seqBackend)) {
	for _, b := range seqBackends {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// seqEffect is the durable effect of the test operation, written by exec
// in the recording transaction: one row per execution.
type seqEffect struct {
	ID  uint   `gorm:"primaryKey"`
	Key string `gorm:"size:64;index;not null"`
}

func (seqEffect) TableName() string { return "seq_test_effects" }

type testPayload struct {
	Key    string `json:"key"`
	Reject bool   `json:"reject,omitempty"`
}

type testResult struct {
	Key     string `json:"key"`
	Effects int64  `json:"effects"` // effect rows after this one's
}

type seqEnv struct {
	t       *testing.T
	b       seqBackend
	dsn     string
	db      *gorm.DB // the test's own connections; every node has its own
	clock   *fakeClock
	broker  *cloudbus.Broker
	amqpURL string
	ns      string
}

// seqNode is a node with the test operation registered; it records what
// it applied (the log, through OnApplied, and the test op's apply).
type seqNode struct {
	*Node
	bus  *cloudbus.Bus
	db   *gorm.DB
	op   *OrderedOp[testPayload, testResult]
	pool *IDPool

	mu      sync.Mutex
	log     []OperationVO
	applied []string // keys, from the test op's apply
}

func newSeqEnv(t *testing.T, b seqBackend) *seqEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := b.dsn(t)
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	if err := gdb.AutoMigrate(&seqEffect{}); err != nil {
		t.Fatal(err)
	}
	e := &seqEnv{t: t, b: b, dsn: dsn, db: gdb, clock: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	if b.amqp {
		e.amqpURL = testenv.AMQPURL(t)
		e.ns = testenv.BusPrefix(t, e.amqpURL)
	} else {
		e.broker = cloudbus.NewBroker()
	}
	return e
}

func (e *seqEnv) newBus(name string) *cloudbus.Bus {
	e.t.Helper()
	opts := cloudbus.Options{URL: "memory://", Broker: e.broker, NodeUUID: name, Logger: quiet()}
	if e.b.amqp {
		opts = cloudbus.Options{URL: e.amqpURL, Namespace: e.ns, NodeUUID: name, Logger: quiet()}
	}
	b, err := cloudbus.New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = b.Stop(context.Background()) })
	return b
}

// newNode builds a node (not started) with the test operation and, if
// pools is given, ID pools name → [lo, hi]. configure runs before Start.
func (e *seqEnv) newNode(name string, configure func(sn *seqNode)) *seqNode {
	e.t.Helper()
	b := e.newBus(name)
	// A pool of its own, as a process has: a crash closes it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := db.Open(ctx, e.dsn, db.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = db.Close(gdb) })
	n, err := New(Options{DB: gdb, Bus: b, Logger: quiet(), Host: "127.0.0.1", APIPort: 8080,
		HeartbeatInterval: time.Hour, ResyncInterval: time.Hour, DrainTimeout: 10 * time.Second, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	sn := &seqNode{Node: n, bus: b, db: gdb}
	sn.op = NewOrderedOp("test.append", seqTestExec, func(_ context.Context, en Entry[testPayload, testResult]) {
		sn.mu.Lock()
		sn.applied = append(sn.applied, en.Payload.Key)
		sn.mu.Unlock()
	})
	if err := n.Sequencer().Register(sn.op); err != nil {
		e.t.Fatal(err)
	}
	n.Sequencer().OnApplied(func(rec OperationVO) {
		sn.mu.Lock()
		sn.log = append(sn.log, rec)
		sn.mu.Unlock()
	})
	n.seq.resyncEvery = 300 * time.Millisecond
	if configure != nil {
		configure(sn)
	}
	return sn
}

func seqTestExec(_ context.Context, tx *gorm.DB, p testPayload) (testResult, error) {
	if err := tx.Create(&seqEffect{Key: p.Key}).Error; err != nil {
		return testResult{}, err
	}
	if p.Reject { // after writing: the rejection must undo the write
		return testResult{}, errcode.New(errcode.InvalidArgument, "operation %s rejected", p.Key)
	}
	var n int64
	if err := tx.Model(&seqEffect{}).Count(&n).Error; err != nil {
		return testResult{}, err
	}
	return testResult{Key: p.Key, Effects: n}, nil
}

func (e *seqEnv) start(sn *seqNode) *seqNode {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sn.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sn.Stop(context.Background()) })
	return sn
}

func (e *seqEnv) add(name string) *seqNode { return e.start(e.newNode(name, nil)) }

// crash kills sn as a process death would: its bus goes away (queues
// vanish, no leave), its goroutines stop and its database connections
// close (rolling back what it had in progress). Peers evict it (evict).
func (e *seqEnv) crash(sn *seqNode) {
	_ = sn.bus.Stop(context.Background())
	sn.cancel()
	_ = db.Close(sn.db)
}

// evict makes the survivors evict victim, which stopped heartbeating, and
// waits until they run a ring without it. The nodes' heartbeat interval is
// an hour, so only these heartbeats run: one that read the clock before an
// advance and wrote after it (waiting for the database lock) would set its
// node's heartbeat back and get it evicted.
func (e *seqEnv) evict(victim *seqNode, survivors ...*seqNode) {
	e.t.Helper()
	ctx := context.Background()
	for _, d := range []time.Duration{2 * time.Hour, 2*time.Hour + time.Millisecond} {
		e.clock.Advance(d)
		for _, s := range survivors {
			// A survivor whose heartbeat fails (SQLite busy under load)
			// would be evicted next: retry it.
			testenv.Eventually(e.t, 20*time.Second, func() bool { return s.heartbeat(ctx) == nil }, "heartbeat of %s", s.UUID())
		}
	}
	e.converged(len(survivors), survivors...)
	for _, s := range survivors {
		if s.Ring().Has(victim.UUID()) {
			e.t.Fatalf("%s still in the ring of %s", victim.UUID(), s.UUID())
		}
	}
}

func (e *seqEnv) converged(want int, ns ...*seqNode) {
	e.t.Helper()
	testenv.Eventually(e.t, 15*time.Second, func() bool {
		var row RingVO
		if err := e.db.First(&row, 1).Error; err != nil {
			return false
		}
		for _, n := range ns {
			if n.Ring().Epoch != row.Epoch || len(n.Ring().Members) != want {
				n.triggerResync()
				return false
			}
		}
		return true
	}, "nodes converge on a ring of %d members", want)
}

func (e *seqEnv) dbLog() []OperationVO {
	e.t.Helper()
	var recs []OperationVO
	if err := e.db.Order("seq").Find(&recs).Error; err != nil {
		e.t.Fatal(err)
	}
	return recs
}

// checkLog checks the log's invariants: seq 1..n without gap or
// duplicate, epochs never decreasing, submission IDs unique.
func checkLog(t *testing.T, recs []OperationVO) {
	t.Helper()
	ids := map[string]int64{}
	for i, r := range recs {
		if r.Seq != int64(i+1) {
			t.Fatalf("log position %d holds seq %d: gap or duplicate", i, r.Seq)
		}
		if i > 0 && r.Epoch < recs[i-1].Epoch {
			t.Fatalf("seq %d has epoch %d after seq %d's %d", r.Seq, r.Epoch, recs[i-1].Seq, recs[i-1].Epoch)
		}
		if prev, dup := ids[r.SubmissionID]; dup {
			t.Fatalf("submission %s recorded twice: seq %d and %d", r.SubmissionID, prev, r.Seq)
		}
		ids[r.SubmissionID] = r.Seq
	}
}

func (sn *seqNode) appliedLog() ([]OperationVO, []string) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return slices.Clone(sn.log), slices.Clone(sn.applied)
}

// waitApplied waits until every node applied up to seq.
func waitApplied(t *testing.T, seq int64, ns ...*seqNode) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, n := range ns {
			if n.Sequencer().AppliedSeq() < seq {
				return false
			}
		}
		return true
	}, "nodes apply up to seq %d", seq)
}

// sameLog checks that sn applied exactly the records of want, in order
// (want may be a prefix of the log for a crashed node).
func sameLog(t *testing.T, sn *seqNode, want []OperationVO, prefix bool) {
	t.Helper()
	got, keys := sn.appliedLog()
	if !prefix && len(got) != len(want) {
		t.Fatalf("%s applied %d operations, the log holds %d", sn.UUID(), len(got), len(want))
	}
	if len(got) > len(want) {
		t.Fatalf("%s applied %d operations, more than the log's %d", sn.UUID(), len(got), len(want))
	}
	var wantKeys []string
	for i, g := range got {
		w := want[i]
		if g.Seq != w.Seq || g.SubmissionID != w.SubmissionID || g.Kind != w.Kind || g.Payload != w.Payload || g.Result != w.Result {
			t.Fatalf("%s applied as #%d: seq %d %s %s %s; the log has seq %d %s %s %s", sn.UUID(), i,
				g.Seq, g.SubmissionID, g.Payload, g.Result, w.Seq, w.SubmissionID, w.Payload, w.Result)
		}
		if w.Kind == "test.append" {
			var p testPayload
			_ = json.Unmarshal([]byte(w.Payload), &p)
			wantKeys = append(wantKeys, p.Key)
		}
	}
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("%s: apply saw %d keys %v…, want %d", sn.UUID(), len(keys), head(keys), len(wantKeys))
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// submit submits the test operation key from sn.
func (sn *seqNode) submit(ctx context.Context, key string) (testResult, Applied, error) {
	return sn.op.SubmitID(ctx, sn.Sequencer(), key, testPayload{Key: key})
}

func seqOwner(ns ...*seqNode) *seqNode {
	o := ns[0].Owner(SequencerKey)
	for _, n := range ns {
		if n.UUID() == o {
			return n
		}
	}
	return nil
}

// TestSequencerTotalOrderThroughCrashAndJoin: 1,000 operations submitted
// concurrently from every node while the sequencer dies abruptly (and is
// evicted) and a new node joins: the log has seq 1..1000 without gap or
// duplicate, each submission executed once, and every live node applied
// all of them in log order.
func TestSequencerTotalOrderThroughCrashAndJoin(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		nodes := []*seqNode{e.add("a"), e.add("b"), e.add("c")}
		e.converged(3, nodes...)

		const total, workers = 1000, 32
		var mu sync.Mutex
		live := slices.Clone(nodes)
		var crashed *seqNode
		var next, done atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, total)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= total {
						return
					}
					key := fmt.Sprintf("op-%04d", i)
					deadline := time.Now().Add(60 * time.Second)
					for attempt := 0; ; attempt++ {
						mu.Lock()
						n := live[(int(i)+attempt)%len(live)]
						mu.Unlock()
						ctx, cancel := context.WithDeadline(context.Background(), deadline)
						res, a, err := n.submit(ctx, key)
						cancel()
						if err == nil {
							if res.Key != key || a.Seq <= 0 {
								errs <- fmt.Errorf("%s: result %+v at seq %d", key, res, a.Seq)
							}
							break
						}
						mu.Lock()
						wasCrashed := n == crashed
						mu.Unlock()
						if !wasCrashed || time.Now().After(deadline) {
							errs <- fmt.Errorf("%s from %s: %w", key, n.UUID(), err)
							break
						}
						// Submitted on the node that died: resubmit
						// elsewhere with the same ID.
					}
					done.Add(1)
				}
			}()
		}

		testenv.Eventually(t, 60*time.Second, func() bool { return done.Load() >= 300 }, "300 operations done")
		victim := seqOwner(nodes...)
		mu.Lock()
		crashed = victim
		live = slices.DeleteFunc(live, func(n *seqNode) bool { return n == victim })
		survivors := slices.Clone(live)
		mu.Unlock()
		e.crash(victim)
		e.evict(victim, survivors...)

		testenv.Eventually(t, 60*time.Second, func() bool { return done.Load() >= 600 }, "600 operations done")
		d := e.add("d")
		mu.Lock()
		live = append(live, d)
		all := slices.Clone(live)
		mu.Unlock()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			t.FailNow()
		}

		recs := e.dbLog()
		checkLog(t, recs)
		if len(recs) != total {
			t.Fatalf("the log holds %d operations, want %d", len(recs), total)
		}
		keys := map[string]bool{}
		sequencers := map[string]bool{}
		for _, r := range recs {
			var res testResult
			if err := json.Unmarshal([]byte(r.Result), &res); err != nil {
				t.Fatal(err)
			}
			// The effect and the record are one transaction: the n-th
			// record saw n effect rows.
			if res.Effects != r.Seq {
				t.Fatalf("seq %d: exec saw %d effect rows", r.Seq, res.Effects)
			}
			keys[r.SubmissionID] = true
			sequencers[r.Sequencer] = true
		}
		if len(keys) != total {
			t.Fatalf("%d distinct submissions recorded, want %d", len(keys), total)
		}
		var effects int64
		e.db.Model(&seqEffect{}).Count(&effects)
		if effects != total {
			t.Fatalf("%d executions left an effect, want %d (one per operation)", effects, total)
		}
		if !sequencers[victim.UUID()] || len(sequencers) < 2 {
			t.Fatalf("sequencers in the log: %v; want the crashed %s and a successor", sequencers, victim.UUID())
		}
		waitApplied(t, total, all...)
		for _, n := range all {
			sameLog(t, n, recs, false)
		}
		sameLog(t, victim, recs, true)
		t.Logf("sequencers %d; d: %+v", len(sequencers), d.Sequencer().Stats())
	})
}

// seqNames finds names x, y, z such that the sequencer is x in the ring
// {x, y} and moves to z when z joins.
func seqNames(t *testing.T) (string, string, string) {
	for i := 0; i < 100; i++ {
		x, y, z := fmt.Sprintf("x%d", i), fmt.Sprintf("y%d", i), fmt.Sprintf("z%d", i)
		two, _ := BuildRing(1, []string{x, y})
		three, _ := BuildRing(2, []string{x, y, z})
		if two.Owner(SequencerKey) == x && three.Owner(SequencerKey) == z {
			return x, y, z
		}
	}
	t.Fatal("no names move the sequencer")
	return "", "", ""
}

// TestSequencerHandover: the sequencer moves to a joining node and back
// when it leaves, while operations keep coming; the new sequencer takes
// the log over (announces it) and the log stays dense and ordered.
func TestSequencerHandover(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		xn, yn, zn := seqNames(t)
		x, y := e.add(xn), e.add(yn)
		e.converged(2, x, y)

		var stop atomic.Bool
		var wg sync.WaitGroup
		var count atomic.Int64
		errs := make(chan error, 100)
		for i, n := range []*seqNode{x, y, x, y} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; !stop.Load(); j++ {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					_, _, err := n.submit(ctx, fmt.Sprintf("w%d-%d", i, j))
					cancel()
					if err != nil {
						errs <- err
						return
					}
					count.Add(1)
				}
			}()
		}
		waitCount := func(n int64) {
			t.Helper()
			testenv.Eventually(t, 30*time.Second, func() bool { return count.Load() >= n }, "%d operations", n)
		}
		waitCount(20)
		z := e.add(zn)
		e.converged(3, x, y, z)
		if seqOwner(x, y, z) != z {
			t.Fatalf("sequencer is %s, want the new node %s", seqOwner(x, y, z).UUID(), zn)
		}
		base := count.Load()
		waitCount(base + 20)
		if err := z.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.converged(2, x, y)
		base = count.Load()
		waitCount(base + 20)
		stop.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}

		recs := e.dbLog()
		checkLog(t, recs)
		var order []string // sequencers, in log order, collapsed
		for _, r := range recs {
			if len(order) == 0 || order[len(order)-1] != r.Sequencer {
				order = append(order, r.Sequencer)
			}
		}
		if !slices.Equal(order, []string{xn, zn, xn}) {
			t.Fatalf("sequencers in log order: %v, want [%s %s %s]", order, xn, zn, xn)
		}
		if z.Sequencer().Stats().Adoptions < 1 || x.Sequencer().Stats().Adoptions < 2 {
			t.Fatalf("takeovers: z %d, x %d", z.Sequencer().Stats().Adoptions, x.Sequencer().Stats().Adoptions)
		}
		last := recs[len(recs)-1].Seq
		waitApplied(t, last, x, y)
		sameLog(t, x, recs, false)
		sameLog(t, y, recs, false)
		sameLog(t, z, recs, true)
	})
}

// TestSequencerFillsGaps: a node that misses a notification reads the
// missing record from the database when the next one shows the gap, and
// applies both in order. The periodic check is off, so only the gap read
// can fill it.
func TestSequencerFillsGaps(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		// The notification is dropped on the node that is not the
		// sequencer (the sequencer applies what it executes itself): which
		// one that is, the ring decides; the first operation tells.
		var victim atomic.Value
		victim.Store("")
		var dropped atomic.Int64
		hook := func(name string) func(sn *seqNode) {
			return func(sn *seqNode) {
				sn.seq.resyncEvery = time.Hour
				sn.seq.dropNotice = func(nt notice) bool {
					if victim.Load() == name && !nt.Sync && nt.Seq == 3 {
						dropped.Add(1)
						return true
					}
					return false
				}
			}
		}
		a := e.start(e.newNode("a", hook("a")))
		c := e.start(e.newNode("c", hook("c")))
		e.converged(2, a, c)
		ctx := context.Background()
		if _, _, err := a.submit(ctx, "k1"); err != nil {
			t.Fatal(err)
		}
		waitApplied(t, 1, a, c)
		// The others submit through the sequencer itself: a submitter reads
		// the log to apply its own operation, which would fill the gap
		// without the gap read.
		seqr, other := a, c
		if c.Sequencer().Stats().Executed > 0 {
			seqr, other = c, a
		}
		name := "c"
		if other == a {
			name = "a"
		}
		victim.Store(name)
		for i := 2; i <= 5; i++ {
			if _, _, err := seqr.submit(ctx, fmt.Sprintf("k%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		waitApplied(t, 5, a, c)
		if dropped.Load() != 1 {
			t.Fatalf("dropped %d notifications of seq 3 on %s, want 1", dropped.Load(), name)
		}
		recs := e.dbLog()
		sameLog(t, other, recs, false)
		st := other.Sequencer().Stats()
		if st.GapReads < 1 {
			t.Fatalf("no gap read on %s: %+v", name, st)
		}
	})
}

// TestSequencerConvergesAfterUnannouncedRecord: the sequencer records an
// operation and dies before notifying (and before answering): nodes still
// apply it, at their next check of the log.
func TestSequencerConvergesAfterUnannouncedRecord(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		var fail atomic.Bool
		cfg := func(sn *seqNode) {
			sn.seq.resyncEvery = 100 * time.Millisecond
			sn.seq.afterRecord = func(rec OperationVO) error {
				if fail.Load() {
					return errcode.New(errcode.Internal, "simulated death after recording seq %d", rec.Seq)
				}
				return nil
			}
		}
		a, c := e.start(e.newNode("a", cfg)), e.start(e.newNode("c", cfg))
		e.converged(2, a, c)
		ctx := context.Background()
		if _, _, err := a.submit(ctx, "k1"); err != nil {
			t.Fatal(err)
		}
		fail.Store(true)
		// A raw call: the submitter gives up, nobody resubmits.
		raw, _ := json.Marshal(testPayload{Key: "k2"})
		target, _ := a.TargetFor(Service, SequencerKey)
		_, err := cloudbus.Call(ctx, a.bus, target, msgSubmit, submitReq{ID: "k2", Kind: "test.append", Payload: raw})
		if err == nil {
			t.Fatal("the simulated death did not fail the call")
		}
		waitApplied(t, 2, a, c)
		recs := e.dbLog()
		if len(recs) != 2 {
			t.Fatalf("log holds %d records, want 2", len(recs))
		}
		sameLog(t, a, recs, false)
		sameLog(t, c, recs, false)
	})
}

// TestSequencerIgnoresDuplicateAndStaleNotifications: a notification for a
// seq already applied, and one from an older sequencer epoch than one seen,
// change nothing, even when they carry a different payload.
func TestSequencerIgnoresDuplicateAndStaleNotifications(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		a, c := e.add("a"), e.add("c")
		e.converged(2, a, c)
		ctx := context.Background()
		for i := 1; i <= 3; i++ {
			if _, _, err := a.submit(ctx, fmt.Sprintf("k%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		waitApplied(t, 3, a, c)
		st := c.Sequencer().Stats()
		epoch := st.MaxEpoch
		if epoch < 1 {
			t.Fatalf("max epoch %d", epoch)
		}
		bogus := func(seq, epoch int64) notice {
			return notice{OperationVO: OperationVO{Seq: seq, SubmissionID: fmt.Sprintf("bogus-%d", seq), Kind: "test.append",
				Payload: `{"key":"bogus"}`, Result: `{"key":"bogus"}`, Epoch: epoch, Sequencer: "nobody"}}
		}
		c.seq.deliver(ctx, "", bogus(2, epoch))   // duplicate
		c.seq.deliver(ctx, "", bogus(4, epoch-1)) // next seq, but from an older epoch
		testenv.Eventually(t, 5*time.Second, func() bool {
			s := c.Sequencer().Stats()
			return s.Duplicates > st.Duplicates && s.Stale > st.Stale
		}, "the duplicate and the stale notification counted")
		if got := c.Sequencer().AppliedSeq(); got != 3 {
			t.Fatalf("applied seq %d after the bogus notifications, want 3", got)
		}
		if _, _, err := a.submit(ctx, "k4"); err != nil {
			t.Fatal(err)
		}
		waitApplied(t, 4, c)
		sameLog(t, c, e.dbLog(), false)
	})
}

// TestSequencerIdempotentSubmissions: a submission ID is executed once,
// whether resubmitted after success or after the sequencer died between
// recording and answering; rejections are not recorded.
func TestSequencerIdempotentSubmissions(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		var failOnce atomic.Bool
		cfg := func(sn *seqNode) {
			sn.seq.afterRecord = func(rec OperationVO) error {
				if rec.SubmissionID == "lost" && failOnce.CompareAndSwap(true, false) {
					return errcode.New(errcode.NodeUnavailable, "simulated death after recording %s", rec.SubmissionID)
				}
				return nil
			}
		}
		a, c := e.start(e.newNode("a", cfg)), e.start(e.newNode("c", cfg))
		e.converged(2, a, c)
		ctx := context.Background()

		r1, a1, err := a.submit(ctx, "same")
		if err != nil {
			t.Fatal(err)
		}
		r2, a2, err := c.submit(ctx, "same")
		if err != nil {
			t.Fatal(err)
		}
		if a1.Duplicate || !a2.Duplicate || a1.Seq != a2.Seq || r1 != r2 {
			t.Fatalf("first %+v %+v, resubmission %+v %+v", a1, r1, a2, r2)
		}

		failOnce.Store(true)
		_, a3, err := c.submit(ctx, "lost")
		if err != nil {
			t.Fatal(err)
		}
		if !a3.Duplicate || failOnce.Load() {
			t.Fatalf("the lost reply was not retried from the log: %+v", a3)
		}

		_, _, err = a.op.Submit(ctx, a.Sequencer(), testPayload{Key: "no", Reject: true})
		if errcode.CodeOf(err) != errcode.InvalidArgument {
			t.Fatalf("rejected operation: %v, want InvalidArgument", err)
		}
		var effects []seqEffect
		e.db.Order("id").Find(&effects)
		if len(effects) != 2 || effects[0].Key != "same" || effects[1].Key != "lost" {
			t.Fatalf("effects %+v, want one for same and one for lost", effects)
		}
		recs := e.dbLog()
		checkLog(t, recs)
		if len(recs) != 2 {
			t.Fatalf("log holds %d records, want 2", len(recs))
		}
		if st := seqOwner(a, c).Sequencer().Stats(); st.Resubmits != 2 || st.Rejected != 1 {
			t.Fatalf("sequencer stats %+v: want 2 resubmissions and 1 rejection", st)
		}

		// Rejections mixed into concurrent submissions (which share
		// recording transactions) undo only their own writes.
		var wg sync.WaitGroup
		errs := make(chan error, 60)
		for i := 0; i < 60; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := []*seqNode{a, c}[i%2]
				p := testPayload{Key: fmt.Sprintf("mix-%d", i), Reject: i%3 == 0}
				_, _, err := n.op.SubmitID(ctx, n.Sequencer(), p.Key, p)
				if p.Reject != (errcode.CodeOf(err) == errcode.InvalidArgument) || (!p.Reject && err != nil) {
					errs <- fmt.Errorf("%s: %v", p.Key, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		recs = e.dbLog()
		checkLog(t, recs)
		var n int64
		e.db.Model(&seqEffect{}).Count(&n)
		if len(recs) != 2+40 || n != int64(len(recs)) {
			t.Fatalf("%d records and %d effects, want %d of each", len(recs), n, 2+40)
		}
		waitApplied(t, recs[len(recs)-1].Seq, a, c)
		sameLog(t, a, recs, false)
		sameLog(t, c, recs, false)
		t.Logf("batches: %d for %d operations", seqOwner(a, c).Sequencer().Stats().Batches, len(recs))
	})
}

// TestSequencerDatabaseArbitrates: two nodes that both believe they are
// the sequencer never assign one seq twice nor execute a submission twice,
// and a sequencer of an older epoch than the log's last writer is refused.
func TestSequencerDatabaseArbitrates(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		a, c := e.add("a"), e.add("c")
		e.converged(2, a, c)
		ctx := context.Background()
		epoch := a.Ring().Epoch
		req := func(key string) submitReq {
			raw, _ := json.Marshal(testPayload{Key: key})
			return submitReq{ID: key, Kind: "test.append", Payload: raw}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for _, n := range []*seqNode{a, c} {
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 15; i++ {
						// Distinct keys, and shared ones both submit.
						for _, key := range []string{fmt.Sprintf("%s-%d-%d", n.UUID(), w, i), fmt.Sprintf("shared-%d-%d", w, i)} {
							// Conflict (too many lost races) is retryable:
							// eight writers on one log are far more than
							// the two of a ring change.
							_, err := recordOne(ctx, n.seq, epoch, req(key), n.op)
							for try := 0; errcode.CodeOf(err) == errcode.Conflict && try < 20; try++ {
								_, err = recordOne(ctx, n.seq, epoch, req(key), n.op)
							}
							if err != nil {
								errs <- fmt.Errorf("%s: %s: %w", n.UUID(), key, err)
							}
						}
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		recs := e.dbLog()
		checkLog(t, recs)
		if len(recs) != 2*4*15+4*15 {
			t.Fatalf("log holds %d records, want %d", len(recs), 2*4*15+4*15)
		}
		var effects int64
		e.db.Model(&seqEffect{}).Count(&effects)
		if effects != int64(len(recs)) {
			t.Fatalf("%d effects for %d records: a submission was executed twice", effects, len(recs))
		}

		// c writes at a newer epoch; a, at the old one, is deposed.
		if _, err := recordOne(ctx, c.seq, epoch+1, req("newer"), c.op); err != nil {
			t.Fatal(err)
		}
		_, err := recordOne(ctx, a.seq, epoch, req("older"), a.op)
		if errcode.CodeOf(err) != errcode.NodeUnavailable || !errcode.IsRetryable(err) {
			t.Fatalf("deposed sequencer: %v, want retryable NodeUnavailable", err)
		}
		t.Logf("insert races lost and retried: %d", a.Sequencer().Stats().Races+c.Sequencer().Stats().Races)
		recs = e.dbLog()
		checkLog(t, recs)
		if recs[len(recs)-1].SubmissionID != "newer" {
			t.Fatalf("last record %s", recs[len(recs)-1].SubmissionID)
		}
	})
}

// recordOne records one submission as a sequencer at epoch would, without
// the ownership check: as a node that wrongly believes it is the sequencer.
func recordOne(ctx context.Context, s *Sequencer, epoch int64, req submitReq, k OrderedKind) (OperationVO, error) {
	outs, err := s.recordBatch(ctx, epoch, []*submission{{req: req, k: k}})
	if err != nil {
		return OperationVO{}, err
	}
	if outs[0].rejected != nil {
		return OperationVO{}, outs[0].rejected
	}
	return outs[0].rec, nil
}
