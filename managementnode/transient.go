package managementnode

import (
	"mplane/db"
	"mplane/errcode"
)

// Transient reports a failure caused, anywhere in its chain, by a fault of
// the cluster that passes on its own: the database unavailable (coded, or a
// driver error db.Unavailable recognises), a node, the bus or a stopping
// node unreachable. The flows' rollbacks are tried again after it, and a
// job whose work it rolled back runs again.
func Transient(err error) bool {
	if db.Unavailable(err) {
		return true
	}
	for _, c := range []errcode.Code{errcode.DBUnavailable, errcode.NodeUnavailable, errcode.BusUnavailable, errcode.ShuttingDown} {
		if errcode.Has(err, c) {
			return true
		}
	}
	return false
}

// Transient is Transient for this node's work: nothing is transient any
// more once the node is fenced (its writes and calls are refused for good,
// and its resources' new owners roll its flows back), so a fenced node
// stops retrying and can exit; nor once it is stopping: what it cannot
// roll back now stays recorded for the resources' new owners (or for the
// next start of a lone node), instead of holding its shutdown for the
// retries' two minutes. It is what flow.Options.Transient takes.
func (n *Node) Transient(err error) bool {
	select {
	case <-n.fenced:
		return false
	default:
	}
	if n.stopped.Load() {
		return false
	}
	return Transient(err)
}

// fencedError is what a fenced node answers to any attempt to act; what
// says what was refused ("" for none).
func (n *Node) fencedError(what string) *errcode.Error {
	if what != "" {
		what = "; " + what + " refused"
	}
	return errcode.New(errcode.NodeUnavailable, "management node %s is fenced: its peers evicted it%s", n.uuid, what)
}
