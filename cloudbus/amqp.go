package cloudbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"mplane/errcode"
)

// amqpTransport carries envelopes over RabbitMQ.
//
// Topology: a direct exchange for point-to-point messages, where every
// queue is bound with its own name as routing key, and a topic exchange for
// events. Node queues (service, reply and event queues of one node) are
// exclusive: they vanish with the node's connection, so a message to a dead
// node is returned (published mandatory) instead of waiting in a queue
// nobody reads. Shared queues are plain, non-durable queues.
//
// After a lost connection the transport reports it (the bus fails in-flight
// calls), reconnects with backoff, declares the whole topology again and
// resumes consuming. Publishers wait for the connection up to their
// deadline.
type amqpTransport struct {
	url      string
	direct   string
	topic    string
	prefetch int
	minWait  time.Duration
	maxWait  time.Duration
	hooks    transportHooks
	log      *slog.Logger

	mu       sync.Mutex
	conn     *amqp.Connection
	pub      *amqp.Channel
	ready    chan struct{} // closed while connected
	specs    []consumerSpec
	bindings map[string][]string // event queue -> patterns
	closing  bool
	done     chan struct{}
	wg       sync.WaitGroup // consumer loops
	bg       sync.WaitGroup // supervisor and return drainers
	// consumers of the current connection, cancelled by stopConsuming
	stopCh chan struct{}
}

type consumerSpec struct {
	q       queueSpec
	deliver func([]byte)
}

func newAMQPTransport(opts Options, direct, topic string, hooks transportHooks, log *slog.Logger) *amqpTransport {
	return &amqpTransport{
		url: opts.URL, direct: direct, topic: topic, prefetch: opts.Prefetch,
		minWait: opts.ReconnectMin, maxWait: opts.ReconnectMax, hooks: hooks, log: log,
		ready: make(chan struct{}), bindings: map[string][]string{}, done: make(chan struct{}),
		stopCh: make(chan struct{}),
	}
}

// connect dials until it succeeds or ctx ends, then supervises the
// connection in the background.
func (t *amqpTransport) connect(ctx context.Context) error {
	wait := t.minWait
	for attempt := 1; ; attempt++ {
		err := t.establish()
		if err == nil {
			t.bg.Add(1)
			go t.supervise()
			return nil
		}
		t.log.Warn("cannot reach message broker; retrying", "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker unreachable until start-up deadline: %w", err)
		case <-time.After(jitter(wait)):
		}
		wait = min(wait*2, t.maxWait)
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// establish opens a connection and declares everything known so far.
func (t *amqpTransport) establish() error {
	conn, err := amqp.DialConfig(t.url, amqp.Config{
		Heartbeat:  5 * time.Second,
		Locale:     "en_US",
		Properties: amqp.Table{"connection_name": "mplane " + t.direct},
	})
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			_ = conn.Close()
		}
	}()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.ExchangeDeclare(t.direct, "direct", false, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", t.direct, err)
	}
	if err := ch.ExchangeDeclare(t.topic, "topic", false, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", t.topic, err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 256))

	// Declare every known consumer; loop because consume may add specs
	// while we are declaring (no lock is held during network I/O).
	stop := make(chan struct{})
	declared := 0
	for {
		t.mu.Lock()
		if t.closing {
			t.mu.Unlock()
			close(stop)
			return errors.New("transport closed")
		}
		if declared == len(t.specs) {
			t.conn, t.pub, t.stopCh = conn, ch, stop
			close(t.ready)
			t.mu.Unlock()
			break
		}
		todo := append([]consumerSpec(nil), t.specs[declared:]...)
		t.mu.Unlock()
		for _, s := range todo {
			if err := t.startConsumer(conn, s, stop); err != nil {
				close(stop)
				return err
			}
		}
		declared += len(todo)
	}
	ok = true

	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		for r := range returns {
			t.hooks.returned(r.CorrelationId, r.RoutingKey)
		}
	}()
	return nil
}

// startConsumer declares, binds and consumes one queue on its own channel.
func (t *amqpTransport) startConsumer(conn *amqp.Connection, s consumerSpec, stop chan struct{}) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel for %s: %w", s.q.name, err)
	}
	exclusive := s.q.kind == queueNode
	if _, err := ch.QueueDeclare(s.q.name, false, exclusive, exclusive, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", s.q.name, err)
	}
	if s.q.topic {
		t.mu.Lock()
		patterns := append([]string(nil), t.bindings[s.q.name]...)
		t.mu.Unlock()
		for _, p := range patterns {
			if err := ch.QueueBind(s.q.name, p, t.topic, false, nil); err != nil {
				return fmt.Errorf("bind %s to %s: %w", s.q.name, p, err)
			}
		}
	} else if err := ch.QueueBind(s.q.name, s.q.name, t.direct, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", s.q.name, err)
	}
	if !s.q.noAck {
		if err := ch.Qos(t.prefetch, 0, false); err != nil {
			return fmt.Errorf("set prefetch on %s: %w", s.q.name, err)
		}
	}
	deliveries, err := ch.Consume(s.q.name, "", s.q.noAck, exclusive, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.q.name, err)
	}
	t.wg.Add(1)
	go t.consumeLoop(ch, deliveries, s, stop)
	return nil
}

// consumeLoop hands deliveries over in order. Acknowledgements go through
// a separate acker that acknowledges the latest tag with multiple=true: while
// it writes one ack frame, later deliveries pile up and are covered by its
// next one, so under load one frame acknowledges many messages and with
// light traffic every message is acknowledged at once.
func (t *amqpTransport) consumeLoop(ch *amqp.Channel, deliveries <-chan amqp.Delivery, s consumerSpec, stop chan struct{}) {
	defer t.wg.Done()
	var latest atomic.Uint64
	kick := make(chan struct{}, 1)
	ackerDone := make(chan struct{})
	if !s.q.noAck {
		go func() {
			defer close(ackerDone)
			var acked uint64
			for range kick {
				if tag := latest.Load(); tag > acked {
					if err := ch.Ack(tag, true); err != nil {
						t.log.Debug("ack failed", "queue", s.q.name, "err", err)
					}
					acked = tag
				}
			}
		}()
	} else {
		close(ackerDone)
	}
	defer func() {
		if !s.q.noAck {
			// A last kick flushes the final tag before the acker ends.
			select {
			case kick <- struct{}{}:
			default:
			}
			close(kick)
		}
		<-ackerDone
	}()
	for {
		select {
		case <-stop:
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			s.deliver(d.Body)
			if s.q.noAck {
				continue
			}
			latest.Store(d.DeliveryTag)
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
}

// supervise waits for the connection to drop and rebuilds it.
func (t *amqpTransport) supervise() {
	defer t.bg.Done()
	for {
		t.mu.Lock()
		conn := t.conn
		t.mu.Unlock()
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		var cause error = errors.New("connection closed")
		select {
		case <-t.done:
			return
		case e, ok := <-closed:
			if ok && e != nil {
				cause = e
			}
		}
		t.mu.Lock()
		if t.closing {
			t.mu.Unlock()
			return
		}
		t.ready = make(chan struct{})
		close(t.stopCh)
		t.mu.Unlock()
		t.hooks.lost(cause)
		t.log.Warn("broker connection lost; reconnecting", "err", cause)
		wait := t.minWait
		for attempt := 1; ; attempt++ {
			select {
			case <-t.done:
				return
			case <-time.After(jitter(wait)):
			}
			err := t.establish()
			if err == nil {
				t.log.Info("broker connection restored", "attempts", attempt)
				break
			}
			t.log.Warn("reconnect failed", "attempt", attempt, "err", err)
			wait = min(wait*2, t.maxWait)
		}
	}
}

// channel waits until connected (or ctx ends) and returns the publishing
// channel.
func (t *amqpTransport) channel(ctx context.Context) (*amqp.Channel, error) {
	for {
		t.mu.Lock()
		ready, ch, closing := t.ready, t.pub, t.closing
		t.mu.Unlock()
		select {
		case <-ready:
			// Still connected while closing: replies of handlers that
			// finish during shutdown go out.
			return ch, nil
		default:
		}
		if closing {
			return nil, errcode.New(errcode.ShuttingDown, "message bus is closed")
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, errcode.Wrap(errcode.BusUnavailable, ctx.Err(), "not connected to the message broker")
		case <-t.done:
		}
	}
}

func (t *amqpTransport) consume(q queueSpec, deliver func([]byte)) error {
	s := consumerSpec{q: q, deliver: deliver}
	t.mu.Lock()
	t.specs = append(t.specs, s)
	conn, stop := t.conn, t.stopCh
	connected := isClosed(t.ready)
	t.mu.Unlock()
	if !connected {
		return nil // declared by establish
	}
	return t.startConsumer(conn, s, stop)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (t *amqpTransport) bindTopic(queue, pattern string) error {
	t.mu.Lock()
	t.bindings[queue] = append(t.bindings[queue], pattern)
	connected := isClosed(t.ready)
	ch := t.pub
	t.mu.Unlock()
	if !connected {
		return nil
	}
	return ch.QueueBind(queue, pattern, t.topic, false, nil)
}

func (t *amqpTransport) publishDirect(ctx context.Context, key, id string, body []byte, ttl time.Duration) error {
	ch, err := t.channel(ctx)
	if err != nil {
		return err
	}
	ms := ttl.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return ch.PublishWithContext(ctx, t.direct, key, true, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: id,
		Expiration:    strconv.FormatInt(ms, 10),
		Body:          body,
	})
}

func (t *amqpTransport) publishTopic(ctx context.Context, key string, body []byte) error {
	ch, err := t.channel(ctx)
	if err != nil {
		return err
	}
	return ch.PublishWithContext(ctx, t.topic, key, false, false, amqp.Publishing{ContentType: "application/json", Body: body})
}

func (t *amqpTransport) stopConsuming() {
	t.mu.Lock()
	if !t.closing {
		t.closing = true
		close(t.done)
		select {
		case <-t.stopCh:
		default:
			close(t.stopCh)
		}
	}
	t.mu.Unlock()
	// The loops watch stopCh and return; their channels close with the
	// connection in close().
	t.wg.Wait()
}

func (t *amqpTransport) close() error {
	t.stopConsuming()
	t.mu.Lock()
	conn := t.conn
	t.mu.Unlock()
	var err error
	if conn != nil && !conn.IsClosed() {
		err = conn.Close()
	}
	t.bg.Wait()
	return err
}

// closeConnForTest drops the connection as a broker failure would.
func (t *amqpTransport) closeConnForTest() {
	t.mu.Lock()
	conn := t.conn
	t.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}
