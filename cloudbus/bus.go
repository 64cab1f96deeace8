package cloudbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"mplane/errcode"
)

// Options configure a Bus. Zero values take the documented defaults.
type Options struct {
	// URL selects the transport: "memory://" (default) or "amqp://...".
	URL string
	// Broker is the in-process broker for memory://; nil gives the bus a
	// private one. Buses sharing a Broker form one cluster.
	Broker *Broker
	// Namespace prefixes every exchange and queue name ("<ns>.vm.<node>"),
	// so several clusters or test runs can share one RabbitMQ. Default none.
	Namespace string
	// NodeUUID names this node's queues. Required.
	NodeUUID string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// DefaultTimeout bounds a call made under a context without deadline.
	// Default 30s.
	DefaultTimeout time.Duration
	// Prefetch is the RabbitMQ consumer prefetch per queue. Default 256.
	Prefetch int
	// ReconnectMin and ReconnectMax bound the reconnect backoff. Defaults
	// 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
}

// Bus is one node's endpoint on the message bus. It is safe for concurrent
// use. Start it before calling; Close it once.
type Bus struct {
	opts  Options
	log   *slog.Logger
	node  string
	tr    transport
	reply string // this node's reply queue
	event string // this node's event queue

	pending pendingTable
	seq     atomic.Uint64
	stats   stats

	subMu sync.RWMutex
	subs  []subscription

	baseCtx  context.Context
	cancel   context.CancelFunc
	handlers sync.WaitGroup
	workers  workerPool
	closed   atomic.Bool
	started  atomic.Bool
}

// New builds a bus; it does not connect (Start does).
func New(opts Options) (*Bus, error) {
	if opts.NodeUUID == "" {
		return nil, errors.New("cloudbus: Options.NodeUUID is required")
	}
	if opts.URL == "" {
		opts.URL = "memory://"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 30 * time.Second
	}
	if opts.Prefetch <= 0 {
		opts.Prefetch = 256
	}
	if opts.ReconnectMin <= 0 {
		opts.ReconnectMin = 100 * time.Millisecond
	}
	if opts.ReconnectMax <= 0 {
		opts.ReconnectMax = 5 * time.Second
	}
	b := &Bus{opts: opts, node: opts.NodeUUID, log: opts.Logger.With("component", "cloudbus", "node_uuid", opts.NodeUUID)}
	b.pending.init()
	b.workers.maxIdle = 256
	b.baseCtx, b.cancel = context.WithCancel(context.Background())
	b.reply = b.name("reply." + b.node)
	b.event = b.name("event." + b.node)
	hooks := transportHooks{returned: b.onReturned, lost: b.onLost}
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("cloudbus: bad URL %q: %w", opts.URL, err)
	}
	switch u.Scheme {
	case "memory":
		br := opts.Broker
		if br == nil {
			br = NewBroker()
		}
		b.tr = newMemTransport(br)
	case "amqp", "amqps":
		ns := opts.Namespace
		if ns == "" {
			ns = "mplane"
		}
		b.tr = newAMQPTransport(opts, ns+".p2p", ns+".event", hooks, b.log)
	default:
		return nil, fmt.Errorf("cloudbus: unsupported URL scheme %q in %q; use memory:// or amqp://user:pass@host:5672/vhost", u.Scheme, opts.URL)
	}
	return b, nil
}

// NodeUUID is the node this bus speaks for.
func (b *Bus) NodeUUID() string { return b.node }

func (b *Bus) name(s string) string {
	if b.opts.Namespace == "" {
		return s
	}
	return b.opts.Namespace + "." + s
}

// NodeQueue is the queue of service on node: "<service>.<node>".
func NodeQueue(service, node string) string { return service + "." + node }

// Target returns the address of service on node, for Call and Send.
func (b *Bus) Target(service, node string) string { return b.name(NodeQueue(service, node)) }

// SharedTarget returns the address of a shared queue such as "api.portal".
func (b *Bus) SharedTarget(queue string) string { return b.name(queue) }

// Start connects to the broker, retrying until ctx ends (a node must start
// even while the broker is briefly down), and declares the node's reply and
// event queues.
func (b *Bus) Start(ctx context.Context) error {
	if err := b.tr.connect(ctx); err != nil {
		return fmt.Errorf("cloudbus: connect %s: %w", redactURL(b.opts.URL), err)
	}
	if err := b.tr.consume(queueSpec{name: b.reply, kind: queueNode, noAck: true}, b.onReply); err != nil {
		return fmt.Errorf("cloudbus: declare reply queue: %w", err)
	}
	if err := b.tr.consume(queueSpec{name: b.event, kind: queueNode, noAck: true, topic: true}, b.onEvent); err != nil {
		return fmt.Errorf("cloudbus: declare event queue: %w", err)
	}
	b.started.Store(true)
	return nil
}

// Serve consumes this node's queue of service ("<service>.<node>") with mux.
func (b *Bus) Serve(service string, mux *Mux) error {
	q := b.Target(service, b.node)
	return b.tr.consume(queueSpec{name: q, kind: queueNode}, func(body []byte) { b.dispatch(mux, body) })
}

// ServeShared consumes a queue shared by every node (such as "api.portal"):
// each message goes to one of the nodes consuming it.
func (b *Bus) ServeShared(queue string, mux *Mux) error {
	return b.tr.consume(queueSpec{name: b.name(queue), kind: queueShared}, func(body []byte) { b.dispatch(mux, body) })
}

// Stop stops consuming, lets running handlers see their context cancelled
// and waits for them (they return promptly: their context is done, so ctx
// bounds nothing more), fails calls still waiting for a reply, and closes
// the connection. It is idempotent.
func (b *Bus) Stop(context.Context) error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.tr.stopConsuming()
	b.cancel()
	b.handlers.Wait()
	b.workers.stop()
	b.pending.failAll(errcode.New(errcode.ShuttingDown, "bus of node %s closed", b.node))
	return b.tr.close()
}

// FailPending fails every call waiting for a reply whose target matches,
// with err; it returns how many it failed. The management node uses it when
// a peer leaves, so callers get a retryable error at once instead of a
// timeout.
func (b *Bus) FailPending(match func(target string) bool, err *errcode.Error) int {
	return b.pending.fail(match, err)
}

// deadlineFor computes the deadline of a message sent under ctx: the
// context's own deadline (which, in a handler, is the parent message's),
// never extended; the bus default when there is none.
func (b *Bus) deadlineFor(ctx context.Context, timeout time.Duration) time.Time {
	now := time.Now()
	if timeout <= 0 {
		timeout = b.opts.DefaultTimeout
	}
	d := now.Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	return d
}

func (b *Bus) newID() string {
	return b.node + "-" + strconv.FormatUint(b.seq.Add(1), 36)
}

// CallOption adjusts one call.
type CallOption func(*callOpts)

type callOpts struct {
	timeout  time.Duration
	resource string
}

// WithTimeout bounds the call; it can shorten but never extend the deadline
// inherited from the context.
func WithTimeout(d time.Duration) CallOption { return func(o *callOpts) { o.timeout = d } }

// WithResource sets the resource UUID the message is about, for tracing and
// ownership checks.
func WithResource(uuid string) CallOption { return func(o *callOpts) { o.resource = uuid } }

// Call sends req to target and waits for the reply until the deadline.
// Failures are *errcode.Error: Timeout at the deadline, NodeUnavailable when
// no queue takes the message (a dead node), BusUnavailable when the broker
// connection is lost meanwhile, or the handler's own error.
func Call[Req, Rep any](ctx context.Context, b *Bus, target string, msg Msg[Req, Rep], req Req, opts ...CallOption) (Rep, error) {
	var rep Rep
	env, err := b.roundTrip(ctx, target, msg.Name(), req, opts)
	if err != nil {
		return rep, err
	}
	if len(env.Body) > 0 {
		if err := json.Unmarshal(env.Body, &rep); err != nil {
			return rep, errcode.Wrap(errcode.MalformedMessage, err, "decode reply of %s from %s", msg.Name(), target)
		}
	}
	return rep, nil
}

// Send delivers req to target without waiting for a reply. It fails at once
// when the transport knows no queue takes it.
func Send[Req, Rep any](ctx context.Context, b *Bus, target string, msg Msg[Req, Rep], req Req, opts ...CallOption) error {
	env, data, ttl, err := b.prepare(ctx, target, msg.Name(), req, opts, false)
	if err != nil {
		return err
	}
	return b.publish(ctx, env, data, ttl)
}

// Request is one element of a CallAll.
type Request[Req any] struct {
	Target string
	Body   Req
}

// Result is the outcome of one element of a CallAll.
type Result[Rep any] struct {
	Reply Rep
	Err   error
}

// CallAll calls every request with at most parallel in flight (default 16)
// and returns the results in the order of reqs.
func CallAll[Req, Rep any](ctx context.Context, b *Bus, msg Msg[Req, Rep], reqs []Request[Req], parallel int, opts ...CallOption) []Result[Rep] {
	if parallel <= 0 {
		parallel = 16
	}
	out := make([]Result[Rep], len(reqs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range reqs {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			out[i].Reply, out[i].Err = Call(ctx, b, reqs[i].Target, msg, reqs[i].Body, opts...)
		}(i)
	}
	wg.Wait()
	return out
}

func (b *Bus) prepare(ctx context.Context, target, name string, req any, opts []CallOption, wantReply bool) (*Envelope, []byte, time.Duration, error) {
	if b.closed.Load() {
		return nil, nil, 0, errcode.New(errcode.ShuttingDown, "bus of node %s is closed", b.node)
	}
	var o callOpts
	for _, f := range opts {
		f(&o)
	}
	deadline := b.deadlineFor(ctx, o.timeout)
	ttl := time.Until(deadline)
	if ttl <= 0 {
		return nil, nil, 0, errcode.New(errcode.Timeout, "deadline passed before %s was sent to %s", name, target)
	}
	env := &Envelope{ID: b.newID(), Name: name, Target: target, Deadline: deadline.UnixNano(), From: b.node}
	fillMeta(ctx, env)
	if o.resource != "" {
		env.ResourceUUID = o.resource
	}
	if wantReply {
		env.ReplyTo = b.reply
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, nil, 0, errcode.Wrap(errcode.Internal, err, "encode %s", name)
	}
	env.Body = body
	data, err := encodeEnvelope(env)
	if err != nil {
		return nil, nil, 0, errcode.Wrap(errcode.Internal, err, "encode envelope of %s", name)
	}
	return env, data, ttl, nil
}

func (b *Bus) publish(ctx context.Context, env *Envelope, data []byte, ttl time.Duration) error {
	b.stats.sent.Add(1)
	err := b.tr.publishDirect(ctx, env.Target, env.ID, data, ttl)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNoRoute):
		b.stats.returned.Add(1)
		return errcode.WithLocal(errcode.New(errcode.NodeUnavailable, "no node consumes %s (message %s)", env.Target, env.Name), ErrNotDelivered)
	default:
		var e *errcode.Error
		if errors.As(err, &e) {
			return err
		}
		return errcode.Wrap(errcode.BusUnavailable, err, "publish %s to %s", env.Name, env.Target)
	}
}

func (b *Bus) roundTrip(ctx context.Context, target, name string, req any, opts []CallOption) (*Envelope, error) {
	env, data, ttl, err := b.prepare(ctx, target, name, req, opts, true)
	if err != nil {
		return nil, err
	}
	p := b.pending.add(env.ID, target, name)
	defer b.pending.remove(env.ID)
	if err := b.publish(ctx, env, data, ttl); err != nil {
		return nil, err
	}
	timer := time.NewTimer(ttl)
	defer timer.Stop()
	select {
	case rep := <-p.ch:
		if rep.Error != nil {
			return nil, rep.Error
		}
		return rep, nil
	case <-timer.C:
		b.stats.timeouts.Add(1)
		return nil, errcode.New(errcode.Timeout, "no reply to %s from %s within %s", name, target, ttl.Round(time.Millisecond))
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			b.stats.timeouts.Add(1)
			return nil, errcode.New(errcode.Timeout, "no reply to %s from %s before the caller's deadline", name, target)
		}
		return nil, errcode.Wrap(errcode.Canceled, ctx.Err(), "call %s to %s", name, target)
	}
}

// onReply routes a reply to its waiting caller; one that arrives after the
// caller gave up is dropped and counted.
func (b *Bus) onReply(data []byte) {
	env, err := decodeEnvelope(data)
	if err != nil {
		b.stats.malformed.Add(1)
		b.log.Warn("undecodable reply dropped", "err", err)
		return
	}
	if !b.pending.deliver(env.ID, env) {
		b.stats.lateReplies.Add(1)
	}
}

func (b *Bus) onReturned(id, key string) {
	b.stats.returned.Add(1)
	b.pending.failOne(id, errcode.WithLocal(errcode.New(errcode.NodeUnavailable, "no node consumes %s", key), ErrNotDelivered))
}

func (b *Bus) onLost(err error) {
	n := b.pending.fail(func(string) bool { return true }, errcode.Wrap(errcode.BusUnavailable, err, "connection to the message broker lost"))
	b.log.Warn("broker connection lost; failed in-flight calls", "err", err, "failed_calls", n)
}

// dispatch runs in the queue's delivery goroutine: it decodes, then hands
// the message to its own goroutine so a slow handler never holds the queue.
func (b *Bus) dispatch(mux *Mux, data []byte) {
	env, err := decodeEnvelope(data)
	if err != nil {
		b.stats.malformed.Add(1)
		b.log.Warn("undecodable message dropped", "err", err, "bytes", len(data))
		return
	}
	deadline := env.DeadlineTime()
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		// The caller has already given up; running it would be work nobody
		// waits for.
		b.stats.expired.Add(1)
		return
	}
	if b.closed.Load() {
		return
	}
	b.handlers.Add(1)
	b.workers.run(func() { b.handle(mux, env) })
}

func (b *Bus) handle(mux *Mux, env *Envelope) {
	defer b.handlers.Done()
	ctx := b.baseCtx
	if dl := env.DeadlineTime(); !dl.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	ctx = withEnvelope(ctx, env)
	b.stats.handled(env.Name)
	rep, err := b.invoke(ctx, mux, env)
	if errors.Is(err, ErrNoReply) {
		return
	}
	if env.ReplyTo == "" {
		if err != nil {
			b.log.Warn("message without reply-to failed", "msg", env.Name, "msg_id", env.ID, "err", err)
		}
		return
	}
	b.sendReply(env, rep, err)
}

func (b *Bus) invoke(ctx context.Context, mux *Mux, env *Envelope) (rep json.RawMessage, err error) {
	defer func() {
		if r := recover(); r != nil {
			b.stats.panics.Add(1)
			b.log.Error("handler panicked", "msg", env.Name, "msg_id", env.ID, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			rep, err = nil, errcode.New(errcode.Internal, "handler of %s panicked: %v", env.Name, r)
		}
	}()
	h, wrap := mux.lookup(env.Name)
	if h == nil {
		b.stats.unknown.Add(1)
		return nil, errcode.New(errcode.UnknownMessage, "no handler for %q on %s", env.Name, env.Target)
	}
	if wrap != nil {
		return wrap(ctx, env, func(ctx context.Context) (json.RawMessage, error) { return h(ctx, env) })
	}
	return h(ctx, env)
}

func (b *Bus) sendReply(req *Envelope, body json.RawMessage, err error) {
	rep := &Envelope{ID: req.ID, Name: req.Name, Target: req.ReplyTo, Reply: true, From: b.node, Body: body}
	if err != nil {
		rep.Error = errcode.From(err)
	}
	ttl := time.Until(req.DeadlineTime())
	if req.Deadline != 0 && ttl <= 0 {
		b.stats.lateReplies.Add(1)
		return
	}
	data, encErr := encodeEnvelope(rep)
	if encErr != nil {
		b.log.Error("encode reply", "msg", req.Name, "err", encErr)
		return
	}
	if perr := b.tr.publishDirect(b.baseCtxOrBackground(), req.ReplyTo, rep.ID, data, ttl); perr != nil {
		b.log.Debug("reply not delivered", "msg", req.Name, "msg_id", req.ID, "reply_to", req.ReplyTo, "err", perr)
	}
}

// baseCtxOrBackground lets replies of handlers that finish during Close
// still be attempted.
func (b *Bus) baseCtxOrBackground() context.Context {
	if b.baseCtx.Err() != nil {
		return context.Background()
	}
	return b.baseCtx
}

// ErrNoReply, returned by a handler or interceptor, tells the bus not to
// reply: someone else will (the node a message was forwarded to).
var ErrNoReply = errors.New("cloudbus: reply sent by another node")

// ErrNotDelivered is in the chain (errors.Is, in the sending process only)
// of the NodeUnavailable error of a message the broker could not route: no
// node consumed its queue, so no handler ran and sending it again is safe.
var ErrNotDelivered = errors.New("cloudbus: message not delivered")

// ForwardTo re-sends the envelope being handled to another target, keeping
// its id, reply-to and deadline, so the reply goes straight to the original
// caller. Hops is incremented. The management node uses it for messages
// that reached a node which no longer owns their resource.
func (b *Bus) ForwardTo(ctx context.Context, env *Envelope, target string) error {
	fwd := *env
	fwd.Target = target
	fwd.Hops++
	ttl := time.Until(fwd.DeadlineTime())
	if ttl <= 0 {
		return errcode.New(errcode.Timeout, "deadline passed before %s could be forwarded to %s", env.Name, target)
	}
	data, err := encodeEnvelope(&fwd)
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "encode forwarded %s", env.Name)
	}
	return b.publish(ctx, &fwd, data, ttl)
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}
