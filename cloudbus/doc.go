// Package cloudbus is mplane's message bus: typed request/reply messages,
// one-way sends and cluster-wide events between management nodes, over
// RabbitMQ (amqp://) or an in-process broker (memory://) with the same
// semantics.
//
// Guarantees:
//
//   - A Call returns exactly once: the handler's reply, the handler's error,
//     or a bus error. It never waits past its deadline (errcode.Timeout).
//     A call to a queue nobody consumes (a dead node) fails at once with
//     errcode.NodeUnavailable (RabbitMQ returns the mandatory message; the
//     memory broker knows synchronously). A call in flight when the broker
//     connection drops fails with the retryable errcode.BusUnavailable.
//   - Deadlines are absolute and travel in the envelope. A handler's context
//     carries its message's deadline, and anything it sends inherits the
//     remaining time, never more (WithTimeout can only shorten it). A
//     message whose deadline passed before it was delivered is dropped
//     unhandled (the caller has already failed it) and counted.
//   - A handler panic becomes an errcode.Internal reply, an unknown name
//     errcode.UnknownMessage, an undecodable body errcode.MalformedMessage;
//     the node keeps serving. A reply that arrives after its caller gave up
//     is dropped and counted (Stats.LateReplies).
//   - Each handler runs on its own goroutine (reused from a pool), so a slow
//     handler never holds up its queue; messages from one sender to one
//     queue are dispatched in the order they were sent.
//   - Events go to every subscription on every node whose pattern matches
//     (AMQP topic rules). Delivery is at most once per node: events are
//     hints (membership changes, state changes), and every consumer has a
//     periodic resync behind them.
//   - After a lost connection the bus reconnects with backoff, declares its
//     exchanges, queues and bindings again and resumes consuming; senders
//     wait for the connection up to their deadline. Start retries until its
//     context ends, so a node may start before the broker.
//
// Topology on RabbitMQ (names get the Options.Namespace prefix): a direct
// exchange "<ns>.p2p" where every queue is bound by its own name, a topic
// exchange "<ns>.event"; per node and service an exclusive queue
// "<service>.<nodeUUID>", an exclusive reply queue "reply.<nodeUUID>" and
// event queue "event.<nodeUUID>"; shared queues such as "api.portal" are
// consumed by every node. Exclusive queues vanish with their node's
// connection, which is what makes calls to a dead node bounce.
//
// The wire form (envelope.go) is a small binary header followed by the JSON
// body, identical on both transports: nothing can work in memory that would
// not work on RabbitMQ.
//
// Lock order: Bus has no lock held across a handler, a publish or a
// callback; pending-table shards, the subscription list and the transports'
// own locks are leaves.
package cloudbus
