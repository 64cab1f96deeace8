package managementnode

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/errcode"
	"mplane/internal/testenv"
)

func withPool(name string, lo, hi int) func(sn *seqNode) {
	return func(sn *seqNode) {
		p, err := NewIDPool(sn.Node, name, lo, hi)
		if err != nil {
			panic(err)
		}
		sn.pool = p
	}
}

func (e *seqEnv) poolInDB(name string) map[int]string {
	e.t.Helper()
	var rows []IDPoolEntryVO
	if err := e.db.Where("pool = ?", name).Find(&rows).Error; err != nil {
		e.t.Fatal(err)
	}
	out := map[int]string{}
	for _, r := range rows {
		out[r.ID] = r.Holder
	}
	return out
}

// TestIDPoolConsistentAcrossNodes: concurrent allocations and releases
// from three nodes never hand one VNI to two holders, and every node's
// cached in-use set equals the database's once it applied the log; a node
// that joins afterwards has the same set as soon as it started.
func TestIDPoolConsistentAcrossNodes(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		var nodes []*seqNode
		for _, name := range []string{"a", "b", "c"} {
			nodes = append(nodes, e.start(e.newNode(name, withPool("vni", 1, 4094))))
		}
		e.converged(3, nodes...)

		// Each worker allocates, keeps every other ID and releases the rest.
		var mu sync.Mutex
		held := map[int]string{} // what the workers believe they hold
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		for i, n := range nodes {
			for w := 0; w < 6; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					holder := fmt.Sprintf("l2-%d-%d", i, w)
					for j := 0; j < 12; j++ {
						id, err := n.pool.Allocate(ctx, holder)
						if err != nil {
							errs <- err
							return
						}
						mu.Lock()
						if h, dup := held[id]; dup {
							errs <- fmt.Errorf("VNI %d allocated to %s while %s holds it", id, holder, h)
						}
						held[id] = holder
						mu.Unlock()
						// The allocating node reflects it at once.
						if h, ok := n.pool.Holder(id); !ok || h != holder {
							errs <- fmt.Errorf("node %s does not show VNI %d as %s's after Allocate", n.UUID(), id, holder)
						}
						if j%2 == 1 {
							mu.Lock()
							delete(held, id)
							mu.Unlock()
							if err := n.pool.Release(ctx, id, holder); err != nil {
								errs <- err
								return
							}
							// (Another worker may have taken it again since.)
							if h, ok := n.pool.Holder(id); ok && h == holder {
								errs <- fmt.Errorf("node %s still shows VNI %d as %s's after Release", n.UUID(), id, holder)
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
		inDB := e.poolInDB("vni")
		if !maps.Equal(inDB, held) {
			t.Fatalf("database holds %d VNIs, the workers %d", len(inDB), len(held))
		}
		recs := e.dbLog()
		checkLog(t, recs)
		last := recs[len(recs)-1].Seq
		waitApplied(t, last, nodes...)
		for _, n := range nodes {
			if got := n.pool.InUse(); !maps.Equal(got, inDB) {
				t.Fatalf("node %s caches %d VNIs, the database has %d", n.UUID(), len(got), len(inDB))
			}
		}
		// A node joining later has the set once Start returns.
		d := e.start(e.newNode("d", withPool("vni", 1, 4094)))
		if got := d.pool.InUse(); !maps.Equal(got, inDB) || d.Sequencer().AppliedSeq() != last {
			t.Fatalf("joined node caches %d VNIs at seq %d, the database has %d at %d", len(got), d.Sequencer().AppliedSeq(), len(inDB), last)
		}
	})
}

// TestIDPoolRules: lowest free first, exhaustion, a taken or out-of-range
// ID, releasing what is not held, and an idempotent retried allocation.
func TestIDPoolRules(t *testing.T) {
	forBackends(t, func(t *testing.T, b seqBackend) {
		e := newSeqEnv(t, b)
		a := e.start(e.newNode("a", withPool("vlan", 100, 102)))
		c := e.start(e.newNode("c", withPool("vlan", 100, 102)))
		e.converged(2, a, c)
		ctx := context.Background()
		for want := 100; want <= 102; want++ {
			id, err := a.pool.Allocate(ctx, "x")
			if err != nil || id != want {
				t.Fatalf("Allocate: %d %v, want %d", id, err, want)
			}
		}
		if _, err := c.pool.Allocate(ctx, "y"); errcode.CodeOf(err) != errcode.CapacityExhausted {
			t.Fatalf("full pool: %v, want CapacityExhausted", err)
		}
		if err := c.pool.Release(ctx, 101, "y"); errcode.CodeOf(err) != errcode.ResourceNotFound {
			t.Fatalf("release by a non-holder: %v, want ResourceNotFound", err)
		}
		if err := c.pool.Release(ctx, 101, "x"); err != nil {
			t.Fatal(err)
		}
		if err := c.pool.Release(ctx, 101, ""); errcode.CodeOf(err) != errcode.ResourceNotFound {
			t.Fatalf("release of a free ID: %v, want ResourceNotFound", err)
		}
		if _, err := a.pool.AllocateWithID(ctx, "", 102, "y"); errcode.CodeOf(err) != errcode.InvalidState {
			t.Fatalf("taken ID: %v, want InvalidState", err)
		}
		if _, err := a.pool.AllocateWithID(ctx, "", 99, "y"); errcode.CodeOf(err) != errcode.InvalidArgument {
			t.Fatalf("out of range: %v, want InvalidArgument", err)
		}
		id1, err := c.pool.AllocateWithID(ctx, "sub-1", 0, "y")
		if err != nil || id1 != 101 {
			t.Fatalf("Allocate after release: %d %v, want 101", id1, err)
		}
		id2, err := a.pool.AllocateWithID(ctx, "sub-1", 0, "y")
		if err != nil || id2 != id1 {
			t.Fatalf("retried allocation: %d %v, want the first one's %d", id2, err, id1)
		}
		want := map[int]string{100: "x", 101: "y", 102: "x"}
		if got := e.poolInDB("vlan"); !maps.Equal(got, want) {
			t.Fatalf("database %v, want %v", got, want)
		}
		recs := e.dbLog()
		checkLog(t, recs)
		waitApplied(t, recs[len(recs)-1].Seq, a, c)
		for _, n := range []*seqNode{a, c} {
			testenv.Eventually(t, 5*time.Second, func() bool { return maps.Equal(n.pool.InUse(), want) }, "node %s caches the pool", n.UUID())
		}
	})
}

// TestIDPoolAllocateIn: allocations within a part of the pool's range
// (a VXLAN pool's VNI range) take that part's lowest free ID, skip what
// other parts hold, fill it, and refuse IDs and parts outside it.
func TestIDPoolAllocateIn(t *testing.T) {
	e := newSeqEnv(t, seqBackends[0])
	a := e.start(e.newNode("a", withPool("vni", 1, 1000)))
	e.converged(1, a)
	ctx := context.Background()
	if id, err := a.pool.Allocate(ctx, "other"); err != nil || id != 1 {
		t.Fatalf("Allocate: %d %v", id, err)
	}
	if _, err := a.pool.AllocateIn(ctx, "", 20, 22, 21, "x"); err != nil {
		t.Fatal(err)
	}
	var got []int
	for range 2 {
		id, err := a.pool.AllocateIn(ctx, "", 20, 22, 0, "x")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	if fmt.Sprint(got) != "[20 22]" {
		t.Fatalf("allocations in 20-22 around a taken 21: %v, want [20 22]", got)
	}
	if _, err := a.pool.AllocateIn(ctx, "", 20, 22, 0, "x"); errcode.CodeOf(err) != errcode.CapacityExhausted || !strings.Contains(err.Error(), "20-22") {
		t.Fatalf("a full part: %v, want CapacityExhausted naming 20-22", err)
	}
	for _, c := range []struct{ lo, hi, id int }{{20, 22, 23}, {0, 22, 0}, {990, 1001, 0}, {30, 29, 0}} {
		if _, err := a.pool.AllocateIn(ctx, "", c.lo, c.hi, c.id, "x"); errcode.CodeOf(err) != errcode.InvalidArgument {
			t.Errorf("AllocateIn(%d, %d, %d): %v, want InvalidArgument", c.lo, c.hi, c.id, err)
		}
	}
	if id, err := a.pool.Allocate(ctx, "other"); err != nil || id != 2 {
		t.Fatalf("Allocate in the whole pool: %d %v, want 2", id, err)
	}
}
