package managementnode

import (
	"context"

	"gorm.io/gorm"

	"mplane/db"
)

// leaseExemptKey marks the statements of the lease itself (the heartbeat),
// which FenceWrites must not check: checking them would renew the lease
// from within its renewal.
type leaseExemptKey struct{}

func leaseExempt(ctx context.Context) context.Context {
	return context.WithValue(ctx, leaseExemptKey{}, true)
}

// FenceWrites makes every write through gdb (create, update, delete, exec)
// check this node's lease first, so a node that was paused or cut off past
// its lease writes nothing until it knows it is still a member: with the
// lease expired, the write renews it (CheckLease); a node whose row a peer
// deleted is fenced there and the write fails with NodeUnavailable, one
// that cannot reach the database fails with DBUnavailable. The renewal
// uses a connection of its own, also for a write inside a transaction; on
// SQLite, whose transaction holds the write lock the renewal needs, a write
// in a transaction goes on and the lease is renewed in the background (an
// SQLite database serves one node, which nobody evicts).
//
// A fenced node's writes are all refused, during its shutdown too. Writes
// before the node's first heartbeat (it owns nothing yet) and after it
// began to leave gracefully (it has handed everything on) are not checked. gdb must
// be this node's alone: the check is against this node's lease.
func (n *Node) FenceWrites(gdb *gorm.DB) error {
	check := func(tx *gorm.DB) {
		if tx.Error != nil {
			return
		}
		ctx := tx.Statement.Context
		if ctx == nil {
			ctx = context.Background()
		}
		if ctx.Value(leaseExemptKey{}) != nil {
			return
		}
		select {
		case <-n.fenced:
			// Whatever it was doing (a rollback resumed after a pause, a
			// shutdown): a fenced node writes nothing.
			_ = tx.AddError(n.fencedError("write"))
			return
		default:
		}
		if n.stopped.Load() {
			return
		}
		if _, last := n.beat.get(); last.IsZero() || n.LeaseValid() {
			return
		}
		if _, inTx := tx.Statement.ConnPool.(gorm.TxCommitter); inTx && db.Dialect(tx) == "sqlite" {
			// SQLite's transaction holds the write lock the renewal
			// needs: renew in the background and let the write go (an
			// SQLite database has one node; nobody evicts it).
			go func() { _ = n.CheckLease(context.WithoutCancel(ctx)) }()
			return
		}
		if err := n.CheckLease(ctx); err != nil {
			_ = tx.AddError(err)
		}
	}
	cb := gdb.Callback()
	for _, err := range []error{
		cb.Create().Before("gorm:create").Register("mplane:lease", check),
		cb.Update().Before("gorm:update").Register("mplane:lease", check),
		cb.Delete().Before("gorm:delete").Register("mplane:lease", check),
		cb.Raw().Before("gorm:raw").Register("mplane:lease", check),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}
