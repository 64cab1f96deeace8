package cloudbus

import (
	"context"
	"errors"
	"time"
)

// queueKind tells a transport how to declare a queue.
type queueKind int

const (
	// queueNode is a node's own queue ("vm.<node>", the reply and event
	// queues): it lives and dies with the node's connection, so messages
	// to a dead node bounce instead of piling up.
	queueNode queueKind = iota
	// queueShared is consumed by every node ("api.portal") and outlives any
	// one of them.
	queueShared
)

// queueSpec is one queue a bus consumes.
type queueSpec struct {
	name string
	kind queueKind
	// noAck: deliveries need no acknowledgement (replies, events).
	noAck bool
	// topic: bind to the event exchange with these patterns instead of the
	// direct exchange.
	topic bool
}

// transportHooks are the bus's callbacks into which a transport reports.
type transportHooks struct {
	// returned reports a message published with id that no queue took.
	returned func(id, routingKey string)
	// lost reports a lost broker connection; in-flight calls must fail.
	lost func(err error)
}

// errNoRoute is returned by a transport that knows synchronously that no
// queue takes a message.
var errNoRoute = errors.New("no queue bound for this routing key")

// transport moves encoded envelopes. Both implementations give the same
// semantics: direct publish to a queue name is mandatory (an unknown queue
// fails, synchronously with errNoRoute or later through hooks.returned),
// events go to every bound event queue whose pattern matches.
type transport interface {
	connect(ctx context.Context) error
	// consume declares q (and re-declares it after a reconnect) and hands
	// every delivery to deliver, in order, from one goroutine.
	consume(q queueSpec, deliver func(body []byte)) error
	// bindTopic adds a topic pattern to an event queue.
	bindTopic(queue, pattern string) error
	publishDirect(ctx context.Context, key, id string, body []byte, ttl time.Duration) error
	publishTopic(ctx context.Context, key string, body []byte) error
	// stopConsuming stops deliveries; close releases everything.
	stopConsuming()
	close() error
}
