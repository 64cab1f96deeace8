package managementnode

import (
	"fmt"
	"sort"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Ring parameters. Every node must use the same ones, or nodes would
// disagree about owners; they are constants, not configuration.
const (
	// Partitions is the number of partitions resource UUIDs hash into
	// (a prime, as the library recommends). A ring can hold at most this
	// many members.
	Partitions = 271
	// replicationFactor is how many points each member has on the circle.
	// Bounded load, not the point count, keeps shares even; fewer points
	// keep a from-scratch build at 100 members near 3 ms (the library
	// re-sorts the circle for every member it adds).
	replicationFactor = 10
	// load bounds a member's partitions to load × the average. 1.05 keeps
	// every member within about ±15% of an equal share (the library's
	// default of 1.25 let a member of four fall to 29 of 271).
	load = 1.05
)

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

type member string

func (m member) String() string { return string(m) }

// Ring is an immutable owner table: one owner per partition, derived from a
// sorted member list, so every node that reads the same members from the
// database computes the same table. Lookups take no lock.
type Ring struct {
	Epoch   int64
	Members []string // sorted
	owners  [Partitions]string
}

// BuildRing computes the ring of members at epoch from scratch. It refuses
// more members than partitions (the library would panic) and turns any
// panic of the library into an error.
func BuildRing(epoch int64, members []string) (*Ring, error) {
	var b ringBuilder
	return b.build(epoch, members)
}

// ringBuilder keeps the library's ring between builds and applies only the
// membership difference: the library re-sorts the whole circle on every
// member it adds, so a from-scratch build at 100 members costs tens of
// milliseconds while a one-member change costs about one re-sort and one
// partition distribution. The result is the same as a from-scratch build:
// the library's state is a function of the member set.
type ringBuilder struct {
	c       *consistent.Consistent
	members map[string]bool
}

func (b *ringBuilder) build(epoch int64, members []string) (r *Ring, err error) {
	ms := append([]string(nil), members...)
	sort.Strings(ms)
	for i := 1; i < len(ms); i++ {
		if ms[i] == ms[i-1] {
			return nil, fmt.Errorf("ring: member %s listed twice", ms[i])
		}
	}
	if len(ms) > Partitions {
		return nil, fmt.Errorf("ring: %d members exceed the %d partitions; a ring holds at most %d management nodes", len(ms), Partitions, Partitions)
	}
	r = &Ring{Epoch: epoch, Members: ms}
	if len(ms) == 0 {
		return r, nil
	}
	defer func() {
		if p := recover(); p != nil {
			b.c, b.members = nil, nil // state unknown: start over next time
			r, err = nil, fmt.Errorf("ring: cannot distribute %d partitions over %d members: %v", Partitions, len(ms), p)
		}
	}()
	want := make(map[string]bool, len(ms))
	for _, m := range ms {
		want[m] = true
	}
	if b.c == nil || len(b.members) == 0 {
		cms := make([]consistent.Member, len(ms))
		for i, m := range ms {
			cms[i] = member(m)
		}
		b.c = consistent.New(cms, consistent.Config{
			Hasher: hasher{}, PartitionCount: Partitions, ReplicationFactor: replicationFactor, Load: load,
		})
	} else {
		for m := range b.members {
			if !want[m] {
				b.c.Remove(m)
			}
		}
		for _, m := range ms {
			if !b.members[m] {
				b.c.Add(member(m))
			}
		}
	}
	b.members = want
	for p := 0; p < Partitions; p++ {
		r.owners[p] = b.c.GetPartitionOwner(p).String()
	}
	return r, nil
}

// PartitionOf is the partition a resource UUID hashes to (the library's
// FindPartitionID, without its lock).
func PartitionOf(uuid string) int { return int(xxhash.Sum64String(uuid) % Partitions) }

// Owner is the member owning uuid, or "" for an empty ring.
func (r *Ring) Owner(uuid string) string { return r.owners[PartitionOf(uuid)] }

// PartitionOwner is the member owning partition p.
func (r *Ring) PartitionOwner(p int) string { return r.owners[p] }

// Has reports whether node is a member.
func (r *Ring) Has(node string) bool {
	i := sort.SearchStrings(r.Members, node)
	return i < len(r.Members) && r.Members[i] == node
}

// PartitionsOf counts partitions per member.
func (r *Ring) PartitionsOf() map[string]int {
	out := make(map[string]int, len(r.Members))
	if len(r.Members) == 0 {
		return out
	}
	for _, o := range r.owners {
		out[o]++
	}
	return out
}
