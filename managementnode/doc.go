// Package managementnode makes a process one node of the mplane cluster:
// membership, the consistent-hash ring, ownership of resources, failover
// and graceful stop.
//
// Membership lives in the database (management_nodes; the epoch in
// management_ring is bumped in the same transaction as every change). Each
// process start is a new node UUID. A node heartbeats every interval with
// the database's clock; the first survivor that sees a peer's heartbeat
// older than threshold × interval deletes its row and publishes node.left.
// A node that finds its own row gone is fenced: it owns nothing from then
// on and must exit.
//
// The ring holds the running nodes. It is built with buraksezer/consistent
// (xxhash, 271 partitions, bounded load) from the sorted member list, so
// every node that read the same members computes the same owners, and
// published as an immutable table behind an atomic pointer: Owner and
// IsMine take no lock. Events make the nodes converge at once; a periodic
// resync makes them converge always.
//
// Guarantees for resource messages (those with Envelope.ResourceUUID set,
// on a Mux guarded by Node.Guard):
//
//   - They run only on the node that owns the resource under its current
//     ring. Another node forwards them to the owner (the owner answers the
//     caller directly), at most Options.MaxHops times; a forwarded message
//     that is not the receiver's either makes it re-read the ring first.
//   - Old and new owner never run work for one resource at once: the old
//     owner stops taking work for partitions it lost as soon as it installs
//     the new ring, and the new owner holds each gained partition closed
//     until the old owner reports that it holds no work there
//     (mn.AwaitRelease), or is gone. See handover.go.
//   - Calls waiting on a node fail with the retryable NodeUnavailable as
//     soon as its row is gone (evicted or left), not at their deadline. A
//     leaving node still answers what it was sent while it drains.
//
// Ring hooks (Node.OnRingChange) are how services rescan what they own.
// Installing a ring only offers it to the node's hook goroutine; the hooks
// run there, one at a time, outside every lock of the node, with the
// newest ring: rings reach them in epoch order, changes during a round
// coalesce into one more round, and every change is followed by a round
// with that ring or a newer one. A round for ring r starts after r is
// installed, its lost partitions forwarded and its gained partitions held
// for their handover. Start starts the goroutine; Stop cancels the hooks'
// context and waits for the round in progress.
//
// Graceful stop (Stop): turn leaving (peers drop the node from the ring at
// once), forward new work, drain held work and the scheduler up to the
// drain timeout, delete the row, publish node.left.
//
// Cluster operations (sequencer*.go, docs/cluster-operations.md): typed
// OrderedOps submitted from any node (Sequencer.Submit) are executed one
// at a time by the ring owner of SequencerKey, each with its row in
// cluster_operations in one transaction (group-committed: a batch's ops in
// savepoints of one transaction). seq is the primary key, 1..n without
// gaps, and arbitrates between two would-be sequencers; submission_id is
// unique, so a resubmission is answered from the log. Rows are then
// published; every node applies the log strictly in seq order on one
// goroutine, reading gaps and missed rows from the database (on a gap,
// every 2s, on ring changes), and replays the whole log at Start. IDPool
// (VLAN IDs, VNIs) is built on it.
//
// Locks, what they guard and their order: docs/locking.md.
package managementnode
