package cloudbus

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Broker is the in-process message broker of the memory:// transport. Several
// buses (several node UUIDs) sharing one Broker behave like nodes of one
// cluster on RabbitMQ: node queues disappear with their bus, a message to a
// queue that does not exist fails at once, shared queues are consumed round
// robin, events reach every matching event queue.
type Broker struct {
	mu     sync.RWMutex
	queues map[string]*memQueue
}

// NewBroker returns an empty broker.
func NewBroker() *Broker { return &Broker{queues: map[string]*memQueue{}} }

type memQueue struct {
	name      string
	kind      queueKind
	consumers []*memConsumer
	next      int
	patterns  []string // topic bindings, for event queues
}

// memConsumer is one bus's subscription to a queue. Delivery runs in the
// publisher's goroutine: the bus's delivery callbacks never block (handlers
// get goroutines of their own), so no queue goroutine is needed, and a
// publisher's messages arrive in the order it sent them, as on RabbitMQ.
type memConsumer struct {
	deliver func([]byte)
	// mu is held for reading during a delivery and for writing by stop, so
	// no delivery runs after stop returns.
	mu      sync.RWMutex
	stopped bool
}

// push delivers b; it reports false if the consumer has stopped.
func (c *memConsumer) push(b []byte) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.stopped {
		return false
	}
	c.deliver(b)
	return true
}

func (c *memConsumer) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
}

// memTransport is one bus's connection to a Broker.
type memTransport struct {
	broker *Broker
	mu     sync.Mutex
	mine   map[string]*memConsumer
	closed bool
}

func newMemTransport(b *Broker) *memTransport {
	return &memTransport{broker: b, mine: map[string]*memConsumer{}}
}

func (t *memTransport) connect(context.Context) error { return nil }

func (t *memTransport) consume(q queueSpec, deliver func([]byte)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("memory transport closed")
	}
	c := &memConsumer{deliver: deliver}
	b := t.broker
	b.mu.Lock()
	mq := b.queues[q.name]
	if mq == nil {
		mq = &memQueue{name: q.name, kind: q.kind}
		b.queues[q.name] = mq
	} else if mq.kind == queueNode && len(mq.consumers) > 0 {
		b.mu.Unlock()
		return errors.New("queue " + q.name + " is exclusive to another node")
	}
	mq.consumers = append(mq.consumers, c)
	b.mu.Unlock()
	t.mine[q.name] = c
	return nil
}

func (t *memTransport) bindTopic(queue, pattern string) error {
	b := t.broker
	b.mu.Lock()
	defer b.mu.Unlock()
	mq := b.queues[queue]
	if mq == nil {
		return errors.New("bind to unknown queue " + queue)
	}
	for _, p := range mq.patterns {
		if p == pattern {
			return nil
		}
	}
	mq.patterns = append(mq.patterns, pattern)
	return nil
}

func (t *memTransport) publishDirect(_ context.Context, key, _ string, body []byte, _ time.Duration) error {
	b := t.broker
	b.mu.Lock()
	mq := b.queues[key]
	if mq == nil || len(mq.consumers) == 0 {
		b.mu.Unlock()
		return errNoRoute
	}
	c := mq.consumers[mq.next%len(mq.consumers)]
	mq.next++
	b.mu.Unlock()
	if !c.push(body) {
		return errNoRoute
	}
	return nil
}

func (t *memTransport) publishTopic(_ context.Context, key string, body []byte) error {
	b := t.broker
	var targets []*memConsumer
	b.mu.RLock()
	for _, mq := range b.queues {
		if len(mq.consumers) == 0 {
			continue
		}
		for _, p := range mq.patterns {
			if topicMatch(p, key) {
				targets = append(targets, mq.consumers[0])
				break
			}
		}
	}
	b.mu.RUnlock()
	for _, c := range targets {
		c.push(body)
	}
	return nil
}

// stopConsuming removes this transport's consumers; its node queues vanish
// from the broker, as exclusive queues do on RabbitMQ when a node dies.
func (t *memTransport) stopConsuming() {
	t.mu.Lock()
	mine := t.mine
	t.mine = map[string]*memConsumer{}
	t.closed = true
	t.mu.Unlock()
	b := t.broker
	b.mu.Lock()
	for name, c := range mine {
		mq := b.queues[name]
		if mq == nil {
			continue
		}
		for i, x := range mq.consumers {
			if x == c {
				mq.consumers = append(mq.consumers[:i], mq.consumers[i+1:]...)
				break
			}
		}
		if mq.kind == queueNode && len(mq.consumers) == 0 {
			delete(b.queues, name)
		}
	}
	b.mu.Unlock()
	for _, c := range mine {
		c.stop()
	}
}

func (t *memTransport) close() error {
	t.stopConsuming()
	return nil
}
