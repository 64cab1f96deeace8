package managementnode

import (
	"context"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

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
//
// The check before a statement leaves a gap: a process paused between the
// check and the statement sends it after its eviction. On MySQL the
// database closes it for updates, the writes that change what exists (a
// VM's state, a flow record, a job's outcome, capacity): every checked
// update also carries the condition that this node's membership row
// exists (AND EXISTS (SELECT 1 FROM management_nodes WHERE uuid = ?)),
// evaluated by the database when the statement runs. A node's row is never
// written again once deleted (each process start is a new UUID), so an
// update sent after the eviction matches nothing; the node, seeing no row
// changed and its row gone, is fenced and the update fails with
// NodeUnavailable. At READ COMMITTED (db.Open's) the condition is a plain
// read, which holds no lock. Inserts and deletes carry no condition: for
// INSERT ... SELECT and for a DELETE with a subquery InnoDB reads the
// membership row with a shared lock even at READ COMMITTED, held to the
// end of the transaction, which would block the node's own heartbeat
// behind its transactions (and its eviction behind a paused one). They
// rely on the check, which leaves at most the one statement in flight: an
// insert is of a new row (a flow record, which a dead node's successor
// rolls back, or a row such a flow's rollback removes), a delete one of
// rows the takeover would remove anyway. Raw statements (Exec) carry no
// condition either; the membership table itself cannot carry it.
func (n *Node) FenceWrites(gdb *gorm.DB) error {
	conditional := db.Dialect(gdb) == "mysql"
	// check runs before every write; cond says the statement is to carry
	// the membership condition (an update).
	check := func(tx *gorm.DB, cond bool) {
		tx.Statement.Settings.Delete(fenceMark)
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
		_, last := n.beat.get()
		if last.IsZero() {
			return
		}
		if cond && conditional && tx.Statement.Table != nodesTable {
			tx.Statement.Settings.Store(fenceMark, fenceAsked)
		}
		if n.LeaseValid() {
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
	// After a conditional write that changed nothing: nothing matched,
	// or this node's row is gone and it is fenced.
	verify := func(tx *gorm.DB) {
		mark, _ := tx.Statement.Settings.LoadAndDelete(fenceMark)
		if mark != fenceWritten || tx.Error != nil || tx.RowsAffected > 0 {
			return
		}
		ctx := tx.Statement.Context
		if ctx == nil {
			ctx = context.Background()
		}
		var count int64
		if err := n.db.WithContext(leaseExempt(ctx)).Model(&NodeVO{}).Where("uuid = ?", n.uuid).Count(&count).Error; err != nil || count > 0 {
			return
		}
		n.fence()
		_ = tx.AddError(n.fencedError("write"))
	}
	cb := gdb.Callback()
	for _, err := range []error{
		cb.Create().Before("gorm:create").Register("mplane:lease", func(tx *gorm.DB) { check(tx, false) }),
		cb.Update().Before("gorm:update").Register("mplane:lease", func(tx *gorm.DB) { check(tx, true) }),
		cb.Delete().Before("gorm:delete").Register("mplane:lease", func(tx *gorm.DB) { check(tx, false) }),
		cb.Raw().Before("gorm:raw").Register("mplane:lease", func(tx *gorm.DB) { check(tx, false) }),
		cb.Update().After("gorm:update").Register("mplane:fenced", verify),
	} {
		if err != nil {
			return err
		}
	}
	if conditional {
		n.conditionalWrites(gdb)
	}
	return nil
}

const nodesTable = "management_nodes"

// fenceMark is the statement setting of a write that is to carry the
// membership condition: fenceAsked by the check, fenceWritten once the
// clause builders wrote the condition into its SQL.
const fenceMark = "mplane:fence"

const (
	fenceAsked   = "asked"
	fenceWritten = "written"
)

// conditionalWrites installs gdb's clause builder for WHERE that adds the
// membership condition to the updates the check marked, wrapping the
// dialect's own builder.
func (n *Node) conditionalWrites(gdb *gorm.DB) {
	marked := func(b clause.Builder) (*gorm.Statement, bool) {
		stmt, ok := b.(*gorm.Statement)
		if !ok {
			return nil, false
		}
		mark, _ := stmt.Settings.Load(fenceMark)
		return stmt, mark != nil
	}
	member := func(b clause.Builder) {
		b.WriteString("EXISTS (SELECT 1 FROM " + nodesTable + " WHERE uuid = ")
		b.AddVar(b, n.uuid)
		b.WriteByte(')')
	}
	build := func(prev clause.ClauseBuilder, c clause.Clause, b clause.Builder) {
		if prev != nil {
			prev(c, b)
		} else {
			c.Build(b)
		}
	}
	prevWhere := gdb.ClauseBuilders["WHERE"]
	gdb.ClauseBuilders["WHERE"] = func(c clause.Clause, b clause.Builder) {
		stmt, ok := marked(b)
		where, isWhere := c.Expression.(clause.Where)
		if ok {
			_, ok = stmt.Clauses["UPDATE"]
		}
		if !ok || !isWhere || len(where.Exprs) == 0 {
			build(prevWhere, c, b)
			return
		}
		b.WriteString("WHERE (")
		where.Build(b)
		b.WriteString(") AND ")
		member(b)
		stmt.Settings.Store(fenceMark, fenceWritten)
	}

}
