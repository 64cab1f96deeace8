package managementnode

import (
	"context"
	"errors"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
)

// A database outage longer than the eviction window stales every
// heartbeat at once: the first node back must not evict its peers, which
// had no way to write theirs. A peer that stays silent once the database
// is back for a whole window is evicted as before.
func TestDatabaseOutageEvictsNobody(t *testing.T) {
	c := newCluster(t)
	a, b, d := c.add("a"), c.add("b"), c.add("c")
	c.converged(3, a, b, d)
	epoch := a.Ring().Epoch

	c.clock.SetDown(true)
	for i := 0; i < 10; i++ { // 10 s of outage, 10 failed rounds on every node
		c.clock.Advance(testInterval)
		for _, n := range []*Node{a, b, d} {
			if err := n.heartbeat(context.Background()); err == nil {
				t.Fatal("heartbeat succeeded with the database down")
			}
		}
	}
	c.clock.SetDown(false)
	// a is back first: every peer's heartbeat is 10 s old, yet nobody goes.
	if err := a.heartbeat(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := c.members(); n != 3 || a.Ring().Epoch != epoch {
		t.Fatalf("after the outage the first node back left %d members (epoch %d, was %d), want all 3", n, a.Ring().Epoch, epoch)
	}
	// b comes back within the window; c never does.
	c.clock.Advance(testInterval)
	for _, n := range []*Node{a, b} {
		if err := n.heartbeat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.members(); n != 3 {
		t.Fatalf("%d members one interval after the outage, want 3", n)
	}
	c.clock.Advance(testInterval * 3)
	for _, n := range []*Node{a, b} {
		if err := n.heartbeat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	c.converged(2, a, b)
	if a.Ring().Has("c") {
		t.Fatal("c stayed silent for a whole window after the outage and was not evicted")
	}
}

// A node frozen past its lease (as by SIGSTOP) acts on nothing when it
// resumes before it has written its heartbeat again: evicted meanwhile, it
// finds its row gone and is fenced at its first message, not after it.
func TestExpiredLeaseIsRenewedBeforeActing(t *testing.T) {
	c := newCluster(t)
	a, b := c.add("a"), c.add("b")
	c.converged(2, a, b)
	res := ""
	for i := 0; ; i++ {
		if r := "vm-" + string(rune('a'+i%26)) + string(rune('a'+i/26)); b.IsMine(r) {
			res = r
			break
		}
	}
	// b is frozen: a peer evicts it (deletes its row) once its heartbeat
	// is past the window; frozen, b hears nothing of it.
	if err := c.db.Delete(&NodeVO{}, "uuid = ?", b.UUID()).Error; err != nil {
		t.Fatal(err)
	}
	// b's ring still says it owns res (it has not looked); its lease has
	// run out on its own clock.
	b.beat.mu.Lock()
	b.beat.last = time.Now().Add(-b.leaseTerm() - time.Millisecond)
	b.beat.mu.Unlock()
	if b.LeaseValid() || !b.IsMine(res) {
		t.Fatal("setup: b's lease should be expired with res still in its ring")
	}
	// Sent by a client that has not heard of the eviction (a stale ring).
	client := c.newBus("client")
	_, err := cloudbus.Call(context.Background(), client, client.Target(Service, b.UUID()), MsgProbe,
		ProbeReq{ResourceUUID: res}, cloudbus.WithResource(res), cloudbus.WithTimeout(10*time.Second))
	if err == nil {
		t.Fatal("a fenced node handled a message after resuming")
	}
	if got := b.Status().ProbesHandled; got != 0 {
		t.Fatalf("b handled %d probes after its eviction, want 0", got)
	}
	select {
	case <-b.Fenced():
	default:
		t.Fatalf("b not fenced after renewing its lease found its row gone (call: %v)", err)
	}
	if err := b.CheckLease(context.Background()); errcode.CodeOf(err) != errcode.NodeUnavailable {
		t.Fatalf("CheckLease of a fenced node: %v, want NodeUnavailable", err)
	}
}

// A live node whose lease ran out (a long pause, nobody evicted it) renews
// it and goes on; one that cannot reach the database refuses to act with
// DBUnavailable, a retryable error.
func TestLeaseRenewal(t *testing.T) {
	c := newCluster(t)
	a := c.add("a")
	expire := func() {
		a.beat.mu.Lock()
		a.beat.last = time.Now().Add(-a.leaseTerm())
		a.beat.mu.Unlock()
	}
	expire()
	if err := a.CheckLease(context.Background()); err != nil || !a.LeaseValid() {
		t.Fatalf("renewal of a live member: %v (valid %v)", err, a.LeaseValid())
	}
	expire()
	c.clock.SetDown(true)
	err := a.CheckLease(context.Background())
	if errcode.CodeOf(err) != errcode.DBUnavailable || !errcode.IsRetryable(err) || !errors.Is(err, errDatabaseDown) {
		t.Fatalf("renewal with the database down: %v, want retryable DBUnavailable caused by the outage", err)
	}
	c.clock.SetDown(false)
	if err := a.CheckLease(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A node's writes check its lease (FenceWrites): with a valid lease they
// pass; with the lease expired (a pause, a loaded machine) the write
// renews it first and passes, in a transaction too; once its row is gone
// (evicted while it was frozen) its first write renews, finds itself
// fenced, and fails; nothing is written.
func TestWritesOfAFencedNodeAreRefused(t *testing.T) {
	c := newCluster(t)
	a, b := c.add("a"), c.add("b")
	c.converged(2, a, b)
	bdb, err := db.Open(context.Background(), c.dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(bdb) })
	if err := b.FenceWrites(bdb); err != nil {
		t.Fatal(err)
	}
	type fenceProbe struct {
		ID string `gorm:"primaryKey;size:64"`
	}
	if err := bdb.AutoMigrate(&fenceProbe{}); err != nil {
		t.Fatal(err)
	}
	expire := func() {
		b.beat.mu.Lock()
		b.beat.last = time.Now().Add(-b.leaseTerm() - time.Millisecond)
		b.beat.mu.Unlock()
	}
	count := func() int64 {
		var n int64
		if err := c.db.Model(&fenceProbe{}).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := bdb.Create(&fenceProbe{ID: "valid-lease"}).Error; err != nil {
		t.Fatalf("write with a valid lease: %v", err)
	}
	expire()
	if err := bdb.Transaction(func(tx *gorm.DB) error { return tx.Create(&fenceProbe{ID: "in-tx"}).Error }); err != nil {
		t.Fatalf("write in a transaction with the lease expired: %v, want the lease renewed and the write done", err)
	}
	testenv.Eventually(t, 10*time.Second, b.LeaseValid, "b's lease renewed by the write (in the background, on SQLite)")
	expire()
	if err := bdb.Create(&fenceProbe{ID: "renewed"}).Error; err != nil {
		t.Fatalf("write with the lease expired: %v, want it renewed and the write done", err)
	}
	// b is evicted while frozen; its lease runs out on its own clock.
	if err := c.db.Delete(&NodeVO{}, "uuid = ?", b.UUID()).Error; err != nil {
		t.Fatal(err)
	}
	expire()
	err = bdb.Create(&fenceProbe{ID: "zombie"}).Error
	if errcode.CodeOf(err) != errcode.NodeUnavailable {
		t.Fatalf("write of an evicted node: %v, want NodeUnavailable", err)
	}
	select {
	case <-b.Fenced():
	default:
		t.Fatal("b not fenced by its first write after its eviction")
	}
	if err := bdb.Model(&fenceProbe{}).Where("id = ?", "valid-lease").Update("id", "changed").Error; errcode.CodeOf(err) != errcode.NodeUnavailable {
		t.Fatalf("update of a fenced node: %v, want NodeUnavailable", err)
	}
	// A fenced node shuts down; what it still runs meanwhile (a rollback
	// resumed after the pause) writes nothing either.
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := bdb.Delete(&fenceProbe{}, "id = ?", "valid-lease").Error; errcode.CodeOf(err) != errcode.NodeUnavailable {
		t.Fatalf("delete of a fenced node shutting down: %v, want NodeUnavailable", err)
	}
	if n := count(); n != 3 {
		t.Fatalf("%d rows, want 3 (the writes of the member, none of the fenced node)", n)
	}
}

// The lease check before a write cannot stop a write sent by a process
// paused after its check: on MySQL an update carries the condition that
// the node's row exists, so once the node is evicted it matches nothing,
// whatever the node believes of its lease. The condition takes no lock: a
// node's open transaction holds up neither its heartbeat nor its eviction.
func TestUpdatesSentAfterTheEvictionChangeNothing(t *testing.T) {
	c := newClusterOn(t, testenv.MySQLDSN(t))
	a, b := c.add("a"), c.add("b")
	c.converged(2, a, b)
	bdb, err := db.Open(context.Background(), c.dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(bdb) })
	if err := b.FenceWrites(bdb); err != nil {
		t.Fatal(err)
	}
	type fenceRow struct {
		ID    string `gorm:"primaryKey;size:64"`
		Value int
	}
	if err := c.db.AutoMigrate(&fenceRow{}); err != nil {
		t.Fatal(err)
	}
	value := func(id string) int {
		var r fenceRow
		if err := c.db.Take(&r, "id = ?", id).Error; err != nil {
			t.Fatal(err)
		}
		return r.Value
	}
	if err := bdb.Create(&[]fenceRow{{ID: "one", Value: 1}, {ID: "two", Value: 2}, {ID: "three", Value: 3}}).Error; err != nil {
		t.Fatalf("insert of a member: %v", err)
	}
	// A member's update does what it says, an OR kept inside the
	// condition.
	if err := bdb.Model(&fenceRow{}).Where("id = ? OR id = ?", "one", "two").Update("value", gorm.Expr("value + 10")).Error; err != nil {
		t.Fatalf("update of a member: %v", err)
	}
	if v := value("one"); v != 11 {
		t.Fatalf("one = %d after the member's update, want 11", v)
	}
	if v := value("three"); v != 3 {
		t.Fatalf("three = %d after an update of one and two, want 3", v)
	}
	// An update that matches nothing is no fencing.
	if err := bdb.Model(&fenceRow{}).Where("id = ?", "none").Update("value", 7).Error; err != nil {
		t.Fatalf("update of a member matching nothing: %v", err)
	}
	select {
	case <-b.Fenced():
		t.Fatal("b fenced by an update that matched no row")
	default:
	}

	// While a transaction of b's that updated, inserted and deleted is
	// open (a node paused in the middle of one), its heartbeat and its
	// eviction go through: nothing of b's locks its membership row.
	tx := bdb.Begin()
	if err := tx.Model(&fenceRow{}).Where("id = ?", "three").Update("value", 30).Error; err != nil {
		t.Fatal(err)
	}
	if err := tx.Create(&fenceRow{ID: "four", Value: 4}).Error; err != nil {
		t.Fatal(err)
	}
	if err := tx.Delete(&fenceRow{}, "id = ?", "two").Error; err != nil {
		t.Fatal(err)
	}
	quick := func(what string, fn func(tx *gorm.DB) error) {
		t.Helper()
		err := c.db.Transaction(func(q *gorm.DB) error {
			if err := q.Exec("SET SESSION innodb_lock_wait_timeout = 2").Error; err != nil {
				return err
			}
			return fn(q)
		})
		if err != nil {
			t.Fatalf("%s while b's transaction is open: %v (blocked by a lock of b's?)", what, err)
		}
	}
	quick("b's heartbeat", func(q *gorm.DB) error {
		return q.Model(&NodeVO{}).Where("uuid = ?", b.UUID()).Update("heartbeat_at", time.Now().UTC()).Error
	})
	// b is evicted; its lease, on its own clock, is still valid: the check
	// lets its writes through, as after a pause between check and send.
	quick("b's eviction", func(q *gorm.DB) error { return q.Delete(&NodeVO{}, "uuid = ?", b.UUID()).Error })
	if !b.LeaseValid() {
		t.Fatal("b's lease expired: the test needs it valid")
	}
	err = tx.Model(&fenceRow{}).Where("id = ?", "one").Update("value", 99).Error
	if errcode.CodeOf(err) != errcode.NodeUnavailable {
		t.Fatalf("update sent after the eviction: %v, want NodeUnavailable", err)
	}
	tx.Rollback()
	select {
	case <-b.Fenced():
	default:
		t.Fatal("b not fenced by the update that found its row gone")
	}
	if v := value("one"); v != 11 {
		t.Fatalf("one = %d, want 11: the evicted node's update changed it", v)
	}
	if v := value("three"); v != 3 {
		t.Fatalf("three = %d, want 3: the evicted node's transaction was committed", v)
	}
}

// A node's flows retry their rollbacks after a transient fault, but not
// once the node is stopping (what is left stays recorded for the new
// owners) or fenced.
func TestNodeTransientEndsWithTheNode(t *testing.T) {
	c := newCluster(t)
	a, b := c.add("a"), c.add("b")
	c.converged(2, a, b)
	blip := errcode.New(errcode.DBUnavailable, "database restarting")
	if !a.Transient(blip) || !b.Transient(blip) {
		t.Fatal("a database outage is not transient for a running node")
	}
	if a.Transient(errcode.New(errcode.InvalidArgument, "bad")) {
		t.Fatal("a caller's error is transient")
	}
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.Transient(blip) {
		t.Error("a database outage is still transient for a stopped node")
	}
	if err := c.db.Delete(&NodeVO{}, "uuid = ?", b.UUID()).Error; err != nil {
		t.Fatal(err)
	}
	if err := b.CheckLease(context.Background()); err == nil {
		// The lease is valid: renew it by hand to find the row gone.
		if _, err := b.writeHeartbeat(context.Background()); !errors.Is(err, errFenced) {
			t.Fatalf("heartbeat of an evicted node: %v, want errFenced", err)
		}
	}
	if b.Transient(blip) {
		t.Error("a database outage is still transient for a fenced node")
	}
}
