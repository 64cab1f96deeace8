package managementnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"mplane/cloudbus"
	"mplane/errcode"
)

// Owned is the request of a message about one resource. Its ResourceUUID is
// the one place the resource is named: CallOwner routes the message by it
// and copies it into the envelope's routing header (which Guard reads
// before decoding), so the route and the body can never disagree.
type Owned interface{ ResourceUUID() string }

// OwnedMsg is a message that runs on the owner of the resource its request
// names, on the owner's queue of Service ("<service>.<owner node>"), inside
// Guard. Services declare theirs as package variables:
//
//	var MsgStart = managementnode.NewOwnedMsg[OpReq, VmInstanceVO]("vm", "vm.StartVmInstance")
type OwnedMsg[Req Owned, Rep any] struct {
	// Service is the bus service whose queues serve the message.
	Service string
	cloudbus.Msg[Req, Rep]
}

// NewOwnedMsg defines a message named name served by service.
func NewOwnedMsg[Req Owned, Rep any](service, name string) OwnedMsg[Req, Rep] {
	if service == "" {
		panic("managementnode: an owned message needs a service")
	}
	return OwnedMsg[Req, Rep]{Service: service, Msg: cloudbus.NewMsg[Req, Rep](name)}
}

// CallOwner sends req to the owner of the resource it names, as this node's
// ring sees it, and waits for the reply. A stale ring is harmless: the
// receiving node's Guard forwards the message to the real owner.
func CallOwner[Req Owned, Rep any](ctx context.Context, n *Node, m OwnedMsg[Req, Rep], req Req, opts ...cloudbus.CallOption) (Rep, error) {
	uuid := req.ResourceUUID()
	select {
	case <-n.fenced:
		// A fenced node's work (a rollback resumed after a pause) must
		// not act through its peers either.
		var zero Rep
		return zero, n.fencedError("call " + m.Msg.Name())
	default:
	}
	target, err := n.TargetFor(m.Service, uuid)
	if err != nil {
		var zero Rep
		return zero, err
	}
	return cloudbus.Call(ctx, n.bus, target, m.Msg, req, append(opts, cloudbus.WithResource(uuid))...)
}

// CallOwnerAgain is CallOwner for a request that is safe to send twice (an
// idempotent one): when the owner was not there to take it or went away
// under it (OwnerGone: its queue had no consumer, as while its node
// reconnects to the broker; it died, left or was replaced), it is sent
// again, to the new owner once the ring has changed, with backoff, until
// ctx ends, this node is fenced, or it is leaving with no other node left.
func CallOwnerAgain[Req Owned, Rep any](ctx context.Context, n *Node, m OwnedMsg[Req, Rep], req Req, opts ...cloudbus.CallOption) (Rep, error) {
	rep, err := CallOwner(ctx, n, m, req, opts...)
	for pause := 100 * time.Millisecond; OwnerGone(err); pause = min(2*pause, 2*time.Second) {
		if n.stopped.Load() && len(n.Ring().Members) == 0 {
			// This node is leaving and no other is left to own anything:
			// nobody will take the request; its caller gives up now,
			// rather than hold the node's shutdown to its deadline.
			return rep, err
		}
		select {
		case <-ctx.Done():
			return rep, err
		case <-n.fenced:
			return rep, err
		case <-time.After(pause):
		}
		rep, err = CallOwner(ctx, n, m, req, opts...)
	}
	return rep, err
}

// OwnerGone reports a call that failed because the resource's owner was
// not there to take it (nothing ran) or went away under it.
func OwnerGone(err error) bool {
	if errors.Is(err, cloudbus.ErrNotDelivered) {
		return true
	}
	switch errcode.CodeOf(err) {
	case errcode.NodeUnavailable, errcode.BusUnavailable, errcode.ShuttingDown:
		return true
	}
	return false
}

// Handle registers fn as m's handler on mux (the Mux of m.Service, served
// with Guard).
func Handle[Req Owned, Rep any](mux *cloudbus.Mux, m OwnedMsg[Req, Rep], fn func(ctx context.Context, req Req) (Rep, error)) {
	cloudbus.Handle(mux, m.Msg, fn)
}

// ServeOwned serves this node's queue of service ("<service>.<node>") with
// the handlers register adds to its Mux, behind Guard: each message runs on
// the owner of the resource it names.
func (n *Node) ServeOwned(service string, register func(mux *cloudbus.Mux)) error {
	mux := cloudbus.NewMux()
	register(mux)
	mux.Intercept(n.Guard(service))
	if err := n.bus.Serve(service, mux); err != nil {
		return fmt.Errorf("serve the %s queue: %w", service, err)
	}
	return nil
}
