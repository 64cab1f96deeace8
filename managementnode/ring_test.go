package managementnode

import (
	"fmt"

	"math"
	"testing"

	"github.com/buraksezer/consistent"
)

func nodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%03d", i)
	}
	return out
}

func TestRingSameForAnyMemberOrder(t *testing.T) {
	a, err := BuildRing(1, []string{"c", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildRing(1, []string{"b", "c", "a"})
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < Partitions; p++ {
		if a.PartitionOwner(p) != b.PartitionOwner(p) {
			t.Fatalf("partition %d: %s vs %s", p, a.PartitionOwner(p), b.PartitionOwner(p))
		}
	}
}

func TestRingBalanceAndMinimalMovement(t *testing.T) {
	three, err := BuildRing(1, nodes(3))
	if err != nil {
		t.Fatal(err)
	}
	for m, n := range three.PartitionsOf() {
		// load factor 1.25 bounds each member to ceil(avg*1.25).
		if max := math.Ceil(float64(Partitions/3) * load); float64(n) > max {
			t.Errorf("%s owns %d partitions, more than the bound %v", m, n, max)
		}
	}
	four, err := BuildRing(2, nodes(4))
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for p := 0; p < Partitions; p++ {
		if three.PartitionOwner(p) != four.PartitionOwner(p) {
			moved++
			if four.PartitionOwner(p) != "node-003" {
				// Bounded loads can shift a few partitions between old
				// members; most movement must go to the newcomer.
				continue
			}
		}
	}
	got := four.PartitionsOf()["node-003"]
	if got < Partitions/4*8/10 || got > int(math.Ceil(float64(Partitions/4)*load)) {
		t.Fatalf("newcomer owns %d partitions, want about a quarter (%d)", got, Partitions/4)
	}
	if moved > Partitions/2 {
		t.Fatalf("%d of %d partitions moved when a 4th member joined", moved, Partitions)
	}
}

func TestRingRefusesTooManyMembers(t *testing.T) {
	if _, err := BuildRing(1, nodes(Partitions+1)); err == nil {
		t.Fatal("more members than partitions accepted")
	}
	if _, err := BuildRing(1, []string{"a", "a"}); err == nil {
		t.Fatal("duplicate member accepted")
	}
	r, err := BuildRing(1, nodes(Partitions))
	if err != nil {
		t.Fatalf("a member per partition must work: %v", err)
	}
	for p := 0; p < Partitions; p++ {
		if !r.Has(r.PartitionOwner(p)) {
			t.Fatalf("partition %d has no owner with %d members", p, Partitions)
		}
	}
}

func TestRingOwnerIsAMember(t *testing.T) {
	r, err := BuildRing(7, nodes(5))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if o := r.Owner(fmt.Sprintf("vm-%d", i)); !r.Has(o) {
			t.Fatalf("owner %q is not a member", o)
		}
	}
	empty, _ := BuildRing(0, nil)
	if empty.Owner("x") != "" {
		t.Fatal("empty ring must have no owner")
	}
}

func BenchmarkOwner(b *testing.B) {
	r, err := BuildRing(1, nodes(3))
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("8c3e7f0e-5a3b-4c1d-9e2f-%012d", i)
	}
	n := &Node{}
	n.ring.Store(r)
	for _, g := range []int{1, 2} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			b.SetParallelism(1) // RunParallel starts GOMAXPROCS*1 goroutines
			if g == 1 {
				for i := 0; i < b.N; i++ {
					_ = n.Owner(keys[i&1023])
				}
				return
			}
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					_ = n.Owner(keys[i&1023])
					i++
				}
			})
		})
	}
}

// BenchmarkRingRebuild100 measures what a node does on a membership change
// at 100 members (one leaves, one joins) and, for reference, a build from
// scratch (a node's first ring).
func BenchmarkRingRebuild100(b *testing.B) {
	ms := nodes(101)
	b.Run("change", func(b *testing.B) {
		var rb ringBuilder
		if _, err := rb.build(0, ms[:100]); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i++ {
			set := ms[:100]
			if i%2 == 0 {
				set = ms[1:]
			}
			if _, err := rb.build(int64(i), set); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("scratch", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := BuildRing(int64(i), ms[:100]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLibraryLocateKey is the library's own lookup, under its read
// lock, for comparison with BenchmarkOwner.
func BenchmarkLibraryLocateKey(b *testing.B) {
	cms := []consistent.Member{member("node-000"), member("node-001"), member("node-002")}
	c := consistent.New(cms, consistent.Config{Hasher: hasher{}, PartitionCount: Partitions, ReplicationFactor: replicationFactor, Load: load})
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("8c3e7f0e-5a3b-4c1d-9e2f-%012d", i))
	}
	b.Run("goroutines=1", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_ = c.LocateKey(keys[i&1023])
		}
	})
	b.Run("goroutines=2", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				_ = c.LocateKey(keys[i&1023])
				i++
			}
		})
	})
}

// TestIncrementalBuildEqualsScratch guards the builder's shortcut.
func TestIncrementalBuildEqualsScratch(t *testing.T) {
	ms := nodes(12)
	var rb ringBuilder
	steps := [][]string{ms[:5], ms[:8], ms[2:8], ms[2:12], ms[:1], ms[3:9]}
	for i, set := range steps {
		inc, err := rb.build(int64(i), set)
		if err != nil {
			t.Fatal(err)
		}
		scratch, err := BuildRing(int64(i), set)
		if err != nil {
			t.Fatal(err)
		}
		for p := 0; p < Partitions; p++ {
			if inc.PartitionOwner(p) != scratch.PartitionOwner(p) {
				t.Fatalf("step %d partition %d: incremental %s, scratch %s", i, p, inc.PartitionOwner(p), scratch.PartitionOwner(p))
			}
		}
	}
}
