package managementnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// Unit tests: several nodes in one process on the memory transport and one
// SQLite file, with a fake database clock; heartbeats are driven by hand.

type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	down bool // the database is unreachable: reading its clock fails
}

var errDatabaseDown = errors.New("dial tcp 127.0.0.1:3306: connect: connection refused")

func (c *fakeClock) Now(context.Context) (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return time.Time{}, errDatabaseDown
	}
	return c.t, nil
}

func (c *fakeClock) SetDown(down bool) {
	c.mu.Lock()
	c.down = down
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type cluster struct {
	t      *testing.T
	dsn    string
	db     *gorm.DB
	broker *cloudbus.Broker
	clock  *fakeClock
	nodes  []*Node
	buses  []*cloudbus.Bus
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterOn(t, testenv.SQLiteDSN(t))
}

// newClusterOn is newCluster on the database dsn names.
func newClusterOn(t *testing.T, dsn string) *cluster {
	t.Helper()
	gdb, err := db.Open(context.Background(), dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	return &cluster{t: t, dsn: dsn, db: gdb, broker: cloudbus.NewBroker(),
		clock: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
}

const testInterval = time.Second

func (c *cluster) newBus(name string) *cloudbus.Bus {
	c.t.Helper()
	b, err := cloudbus.New(cloudbus.Options{URL: "memory://", Broker: c.broker, NodeUUID: name, Logger: quiet()})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = b.Stop(context.Background()) })
	return b
}

func (c *cluster) add(name string) *Node {
	c.t.Helper()
	n := c.newNode(name)
	c.start(n)
	return n
}

// newNode builds a node on a bus of its own, not started.
func (c *cluster) newNode(name string) *Node {
	c.t.Helper()
	b := c.newBus(name)
	n, err := New(Options{DB: c.db, Bus: b, Logger: quiet(), Host: "127.0.0.1", APIPort: 8080,
		HeartbeatInterval: time.Hour, ResyncInterval: time.Hour, DrainTimeout: 10 * time.Second,
		Now: c.clock.Now})
	if err != nil {
		c.t.Fatal(err)
	}
	// Heartbeat ticks are driven by the test: the interval used for
	// staleness is testInterval.
	n.opts.HeartbeatInterval = testInterval
	c.nodes = append(c.nodes, n)
	c.buses = append(c.buses, b)
	return n
}

func (c *cluster) start(n *Node) {
	c.t.Helper()
	if err := n.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = n.Stop(context.Background()) })
}

// bump changes the ring epoch in the database, as a membership change
// does, and returns the new epoch. Nodes install it on their next resync.
func (c *cluster) bump() (int64, error) {
	var epoch int64
	err := c.db.Transaction(func(tx *gorm.DB) error { return bumpEpoch(tx, &epoch) })
	return epoch, err
}

// members counts the membership rows.
func (c *cluster) members() int64 {
	c.t.Helper()
	var n int64
	if err := c.db.Model(&NodeVO{}).Count(&n).Error; err != nil {
		c.t.Fatal(err)
	}
	return n
}

// converged waits until every listed node runs the same ring of want
// members, at the epoch in the database.
func (c *cluster) converged(want int, ns ...*Node) {
	c.t.Helper()
	testenv.Eventually(c.t, 10*time.Second, func() bool {
		var row RingVO
		if err := c.db.First(&row, 1).Error; err != nil {
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

func TestNodesAgreeOnRing(t *testing.T) {
	c := newCluster(t)
	a, b, d := c.add("a"), c.add("b"), c.add("c")
	c.converged(3, a, b, d)
	for p := 0; p < Partitions; p++ {
		if a.Ring().PartitionOwner(p) != b.Ring().PartitionOwner(p) || a.Ring().PartitionOwner(p) != d.Ring().PartitionOwner(p) {
			t.Fatalf("partition %d owners differ", p)
		}
	}
	owned := 0
	for _, n := range []*Node{a, b, d} {
		owned += n.Status().PartitionsOwned
	}
	if owned != Partitions {
		t.Fatalf("nodes own %d partitions in all, want %d", owned, Partitions)
	}
}

func TestStaleNodeEvictedAndFenced(t *testing.T) {
	c := newCluster(t)
	a, b, d := c.add("a"), c.add("b"), c.add("c")
	c.converged(3, a, b, d)
	epoch := a.Ring().Epoch
	var hookRing *Ring
	var hookMu sync.Mutex
	a.OnRingChange(func(_ context.Context, r *Ring) { hookMu.Lock(); hookRing = r; hookMu.Unlock() })

	// Within the threshold nobody is evicted.
	c.clock.Advance(testInterval * 3)
	for _, n := range []*Node{a, b} {
		if err := n.heartbeat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if a.Ring().Epoch != epoch {
		t.Fatal("a node was evicted within the threshold")
	}
	// Past it, c (which stopped heartbeating) is.
	c.clock.Advance(testInterval + time.Millisecond)
	for _, n := range []*Node{a, b} {
		if err := n.heartbeat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	c.converged(2, a, b)
	if a.Ring().Has("c") || b.Ring().Has("c") {
		t.Fatal("evicted node still in the ring")
	}
	// Hooks run right after the new ring is installed: wait for them.
	testenv.Eventually(t, 10*time.Second, func() bool {
		hookMu.Lock()
		defer hookMu.Unlock()
		return hookRing != nil && !hookRing.Has("c")
	}, "takeover hook sees the ring without c")
	// c finds its row gone on its next heartbeat: fenced.
	if err := d.heartbeat(context.Background()); err != errFenced {
		t.Fatalf("heartbeat of the evicted node: %v, want fenced", err)
	}
	select {
	case <-d.Fenced():
	default:
		t.Fatal("Fenced not closed")
	}
	if d.IsMine("anything") || d.Owner("anything") != "" {
		t.Fatal("a fenced node must own nothing")
	}
}

func TestMessagesRunOnlyOnTheOwner(t *testing.T) {
	c := newCluster(t)
	a, b, d := c.add("a"), c.add("b"), c.add("c")
	c.converged(3, a, b, d)
	all := []*Node{a, b, d}
	const n = 60
	for i := 0; i < n; i++ {
		res := fmt.Sprintf("vm-%d", i)
		wrong := all[i%3]
		if wrong.IsMine(res) {
			wrong = all[(i+1)%3]
		}
		// Sent straight to a node that does not own the resource, as a
		// sender with a stale ring would.
		rep, err := cloudbus.Call(context.Background(), c.buses[0], c.buses[0].Target(Service, wrong.UUID()), MsgProbe,
			ProbeReq{ResourceUUID: res}, cloudbus.WithResource(res))
		if err != nil {
			t.Fatal(err)
		}
		if rep.NodeUUID != a.Owner(res) || rep.Hops != 1 {
			t.Fatalf("%s: handled by %s after %d hops, want owner %s after 1", res, rep.NodeUUID, rep.Hops, a.Owner(res))
		}
	}
	var total int64
	for _, x := range all {
		total += x.Status().ProbesHandled
	}
	if total != n {
		t.Fatalf("%d probes executed for %d sent", total, n)
	}
}

// TestNewOwnerWaitsForPreviousOwner: a resource whose partition moves to a
// joining node while its previous owner is still working on it is not
// worked on by the new owner until the previous owner has finished.
func TestNewOwnerWaitsForPreviousOwner(t *testing.T) {
	c := newCluster(t)
	a, b := c.add("a"), c.add("b")
	c.converged(2, a, b)
	two, _ := BuildRing(0, []string{"a", "b"})
	three, _ := BuildRing(0, []string{"a", "b", "c"})
	res := ""
	for i := 0; res == ""; i++ {
		r := fmt.Sprintf("vm-%d", i)
		if two.Owner(r) == "a" && three.Owner(r) == "c" {
			res = r
		}
	}
	slow := make(chan error, 1)
	go func() {
		_, err := a.Probe(context.Background(), res, 800*time.Millisecond)
		slow <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return a.Inflight() == 1 }, "slow probe running on a")

	d := c.add("c")
	c.converged(3, a, b, d)
	if !d.IsMine(res) {
		t.Fatal("resource did not move to the new node")
	}
	rep, err := d.Probe(context.Background(), res, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.NodeUUID != "c" {
		t.Fatalf("handled by %s, want c", rep.NodeUUID)
	}
	if got := a.Status().ProbesHandled; got != 1 {
		t.Fatalf("new owner ran the resource's work while the previous owner was still running it (a finished %d probes)", got)
	}
	if err := <-slow; err != nil {
		t.Fatalf("the previous owner's work failed: %v", err)
	}
}

func TestGracefulStopDrainsAndLeaves(t *testing.T) {
	c := newCluster(t)
	a, b, d := c.add("a"), c.add("b"), c.add("c")
	c.converged(3, a, b, d)
	res := ""
	for i := 0; res == ""; i++ {
		if r := fmt.Sprintf("vm-%d", i); d.IsMine(r) {
			res = r
		}
	}
	slow := make(chan error, 1)
	go func() {
		_, err := a.Probe(context.Background(), res, 500*time.Millisecond)
		slow <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return d.Inflight() == 1 }, "slow probe running on c")
	if err := d.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("work running on the leaving node was lost: %v", err)
	}
	c.converged(2, a, b)
	var count int64
	c.db.Model(&NodeVO{}).Where("uuid = ?", "c").Count(&count)
	if count != 0 {
		t.Fatal("row of the stopped node still there")
	}
	rep, err := a.Probe(context.Background(), res, 0)
	if err != nil || rep.NodeUUID == "c" {
		t.Fatalf("after leave: %+v %v", rep, err)
	}
}

// TestCallsToEvictedNodeFailFast: a call waiting on a node that stops
// heartbeating fails with SYS.1012 when the node is evicted, not at its
// deadline.
func TestCallsToEvictedNodeFailFast(t *testing.T) {
	c := newCluster(t)
	a := c.add("a")
	// A ghost: a member whose handler never answers, as a hung process.
	ghost := c.newBus("ghost")
	block := make(chan struct{})
	defer close(block)
	m := cloudbus.NewMux()
	cloudbus.Handle(m, MsgProbe, func(ctx context.Context, _ ProbeReq) (ProbeReply, error) {
		<-block
		return ProbeReply{}, nil
	})
	if err := ghost.Serve(Service, m); err != nil {
		t.Fatal(err)
	}
	now, _ := c.clock.Now(context.Background())
	if err := c.db.Create(&NodeVO{UUID: "ghost", Host: "x", State: StateRunning, HeartbeatAt: now, JoinedAt: now}).Error; err != nil {
		t.Fatal(err)
	}
	if err := c.db.Transaction(func(tx *gorm.DB) error { return bumpEpoch(tx) }); err != nil {
		t.Fatal(err)
	}
	c.converged(2, a)
	done := make(chan error, 1)
	go func() {
		_, err := cloudbus.Call(context.Background(), c.buses[0], c.buses[0].Target(Service, "ghost"), MsgProbe,
			ProbeReq{}, cloudbus.WithTimeout(time.Minute))
		done <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return len(c.buses[0].Pending()) == 1 }, "call pending on ghost")
	c.clock.Advance(5 * testInterval)
	if err := a.heartbeat(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if errcode.CodeOf(err) != errcode.NodeUnavailable || !errcode.IsRetryable(err) {
		t.Fatalf("got %v, want retryable SYS.1012", err)
	}
}

func TestForwardingIsBounded(t *testing.T) {
	c := newCluster(t)
	a, b := c.add("a"), c.add("b")
	c.converged(2, a, b)
	res := ""
	for i := 0; res == ""; i++ {
		if r := fmt.Sprintf("vm-%d", i); b.IsMine(r) {
			res = r
		}
	}
	// Pretend the message has already bounced MaxHops times.
	env := &cloudbus.Envelope{ResourceUUID: res, Hops: a.opts.MaxHops, Name: MsgProbe.Name()}
	_, err := a.Guard(Service)(context.Background(), env, nil)
	if errcode.CodeOf(err) != errcode.NodeUnavailable {
		t.Fatalf("got %v, want SYS.1012 after too many hops", err)
	}
}

// TestCallOwnerAgain: a call to a resource's owner whose queue has no
// consumer yet (as while that node reconnects to the broker) fails with
// nothing run for CallOwner, and is delivered by CallOwnerAgain, once,
// when the owner serves.
func TestCallOwnerAgain(t *testing.T) {
	c := newCluster(t)
	a, b := c.add("a"), c.add("b")
	c.converged(2, a, b)
	msg := NewOwnedMsg[lateReq, ProbeReply]("late", "test.Late")
	res := ""
	for i := 0; ; i++ {
		if res = fmt.Sprintf("vm-%d", i); b.IsMine(res) {
			break
		}
	}
	var calls atomic.Int32
	if _, err := CallOwner(context.Background(), a, msg, lateReq{UUID: res}); !OwnerGone(err) {
		t.Fatalf("call to an owner that does not serve yet: %v, want its owner gone", err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		if err := b.ServeOwned("late", func(mux *cloudbus.Mux) {
			Handle(mux, msg, func(context.Context, lateReq) (ProbeReply, error) {
				calls.Add(1)
				return ProbeReply{NodeUUID: b.UUID()}, nil
			})
		}); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := CallOwnerAgain(ctx, a, msg, lateReq{UUID: res})
	if err != nil || rep.NodeUUID != b.UUID() {
		t.Fatalf("CallOwnerAgain: %v %+v, want the owner's answer once it serves", err, rep)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the owner ran the call %d times, want once", n)
	}
}

type lateReq struct {
	UUID string `json:"uuid"`
}

func (r lateReq) ResourceUUID() string { return r.UUID }

// A lone node that is leaving has nobody to send a request to: a
// CallOwnerAgain under way gives up at once instead of holding the node's
// shutdown to the request's deadline.
func TestCallOwnerAgainOnALoneLeavingNode(t *testing.T) {
	c := newCluster(t)
	a := c.add("a")
	c.converged(1, a)
	msg := NewOwnedMsg[lateReq, ProbeReply]("nobody", "test.Nobody")
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := CallOwnerAgain(ctx, a, msg, lateReq{UUID: "vm-1"}); !OwnerGone(err) {
		t.Fatalf("CallOwnerAgain on a lone stopped node: %v, want its owner gone", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("CallOwnerAgain on a lone stopped node returned after %v, want at once", d)
	}
}
