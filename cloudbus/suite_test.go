package cloudbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/errcode"
	"mplane/internal/testenv"
)

// The behaviour suite runs unchanged on both transports: the memory
// transport must behave as RabbitMQ does.

type echoReq struct {
	Text  string `json:"text"`
	Sleep int64  `json:"sleepMs,omitempty"`
}
type echoRep struct {
	Text string `json:"text"`
	Node string `json:"node"`
}

var (
	msgEcho     = NewMsg[echoReq, echoRep]("test.Echo")
	msgPanic    = NewMsg[Empty, Empty]("test.Panic")
	msgDeadline = NewMsg[Empty, deadlineRep]("test.Deadline")
	msgNested   = NewMsg[nestedReq, deadlineRep]("test.Nested")
	msgUnknown  = NewMsg[Empty, Empty]("test.NobodyHandlesThis")
	// msgEchoWrong has the name of msgEcho and a body of another shape.
	msgEchoWrong = NewMsg[struct {
		Text []int `json:"text"`
	}, echoRep]("test.Echo")
	evTest = NewEvent[echoReq]("test.happened.now")
)

type deadlineRep struct {
	Deadline     int64  `json:"deadline"`
	APIID        string `json:"apiId"`
	ResourceUUID string `json:"resourceUuid"`
}
type nestedReq struct {
	Target string `json:"target"`
}

type harness struct {
	name string
	// cluster returns n started buses forming one cluster.
	cluster func(t *testing.T, n int) []*Bus
	amqp    bool
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func memoryHarness() harness {
	return harness{name: "memory", cluster: func(t *testing.T, n int) []*Bus {
		br := NewBroker()
		return startBuses(t, n, func(i int) Options {
			return Options{URL: "memory://", Broker: br, NodeUUID: fmt.Sprintf("node%d", i)}
		})
	}}
}

func amqpHarness() harness {
	return harness{name: "amqp", amqp: true, cluster: func(t *testing.T, n int) []*Bus {
		url := testenv.AMQPURL(t)
		ns := testenv.BusPrefix(t, url)
		testenv.DeleteQueuesAtCleanup(t, url, ns+".portal")
		return startBuses(t, n, func(i int) Options {
			return Options{URL: url, Namespace: ns, NodeUUID: fmt.Sprintf("node%d", i)}
		})
	}}
}

func startBuses(t *testing.T, n int, opts func(i int) Options) []*Bus {
	t.Helper()
	var out []*Bus
	for i := 0; i < n; i++ {
		o := opts(i)
		o.Logger = quietLogger()
		b, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = b.Start(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Stop(context.Background()) })
		mux := testMux(b)
		if err := b.Serve("svc", mux); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func testMux(b *Bus) *Mux {
	m := NewMux()
	Handle(m, msgEcho, func(ctx context.Context, r echoReq) (echoRep, error) {
		if r.Sleep > 0 {
			select {
			case <-time.After(time.Duration(r.Sleep) * time.Millisecond):
			case <-ctx.Done():
			}
		}
		if r.Text == "fail" {
			return echoRep{}, errcode.New(errcode.InvalidArgument, "text must not be %q", r.Text)
		}
		return echoRep{Text: r.Text, Node: b.NodeUUID()}, nil
	})
	Handle(m, msgPanic, func(ctx context.Context, _ Empty) (Empty, error) {
		panic("boom")
	})
	Handle(m, msgDeadline, func(ctx context.Context, _ Empty) (deadlineRep, error) {
		dl, _ := ctx.Deadline()
		env := EnvelopeFrom(ctx)
		return deadlineRep{Deadline: dl.UnixNano(), APIID: env.APIID, ResourceUUID: env.ResourceUUID}, nil
	})
	Handle(m, msgNested, func(ctx context.Context, r nestedReq) (deadlineRep, error) {
		// Ask for far more time than the parent has: it must not be granted.
		return Call(ctx, b, r.Target, msgDeadline, Empty{}, WithTimeout(time.Hour))
	})
	return m
}

func harnesses() []harness { return []harness{memoryHarness(), amqpHarness()} }

func TestSuite(t *testing.T) {
	for _, h := range harnesses() {
		t.Run(h.name, func(t *testing.T) {
			t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, h) })
			t.Run("HandlerError", func(t *testing.T) { testHandlerError(t, h) })
			t.Run("Timeout", func(t *testing.T) { testTimeout(t, h) })
			t.Run("DeadlineInheritance", func(t *testing.T) { testDeadlineInheritance(t, h) })
			t.Run("Publish", func(t *testing.T) { testPublish(t, h) })
			t.Run("DeadNode", func(t *testing.T) { testDeadNode(t, h) })
			t.Run("PanicUnknownMalformed", func(t *testing.T) { testPanicUnknownMalformed(t, h) })
			t.Run("LateReply", func(t *testing.T) { testLateReply(t, h) })
			t.Run("CallAllOrder", func(t *testing.T) { testCallAll(t, h) })
			t.Run("SendAndShared", func(t *testing.T) { testSendAndShared(t, h) })
			t.Run("FailPending", func(t *testing.T) { testFailPending(t, h) })
		})
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func testRoundTrip(t *testing.T, h harness) {
	bs := h.cluster(t, 2)
	a, b := bs[0], bs[1]
	for _, target := range []*Bus{a, b} {
		rep, err := Call(ctxT(t, 10*time.Second), a, a.Target("svc", target.NodeUUID()), msgEcho, echoReq{Text: "hello"})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Text != "hello" || rep.Node != target.NodeUUID() {
			t.Fatalf("reply %+v, want hello from %s", rep, target.NodeUUID())
		}
	}
	if got := b.Stats().Handled[msgEcho.Name()]; got != 1 {
		t.Fatalf("node1 handled %d echo messages, want 1", got)
	}
}

func testHandlerError(t *testing.T, h harness) {
	bs := h.cluster(t, 2)
	_, err := Call(ctxT(t, 10*time.Second), bs[0], bs[0].Target("svc", bs[1].NodeUUID()), msgEcho, echoReq{Text: "fail"})
	var e *errcode.Error
	if !errors.As(err, &e) || e.Code != errcode.InvalidArgument || e.Details != `text must not be "fail"` {
		t.Fatalf("got %v, want the handler's SYS.1007 with its details", err)
	}
}

func testTimeout(t *testing.T, h harness) {
	bs := h.cluster(t, 2)
	_, err := Call(ctxT(t, 10*time.Second), bs[0], bs[0].Target("svc", bs[1].NodeUUID()), msgEcho,
		echoReq{Text: "slow", Sleep: 2000}, WithTimeout(100*time.Millisecond))
	if errcode.CodeOf(err) != errcode.Timeout {
		t.Fatalf("got %v, want SYS.1001", err)
	}
	if bs[0].Stats().Timeouts != 1 {
		t.Fatalf("timeouts counter = %d, want 1", bs[0].Stats().Timeouts)
	}
}

func testDeadlineInheritance(t *testing.T, h harness) {
	bs := h.cluster(t, 3)
	a, b, c := bs[0], bs[1], bs[2]
	parentDeadline := time.Now().Add(3 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), parentDeadline)
	defer cancel()
	ctx = WithMeta(ctx, Meta{APIID: "api-1", ResourceUUID: "vm-1"})
	rep, err := Call(ctx, a, a.Target("svc", b.NodeUUID()), msgNested, nestedReq{Target: a.Target("svc", c.NodeUUID())})
	if err != nil {
		t.Fatal(err)
	}
	got := time.Unix(0, rep.Deadline)
	if got.After(parentDeadline) {
		t.Fatalf("nested call deadline %v is later than the parent's %v", got, parentDeadline)
	}
	if parentDeadline.Sub(got) > time.Second {
		t.Fatalf("nested call deadline %v lost the parent's %v", got, parentDeadline)
	}
	if rep.APIID != "api-1" {
		t.Fatalf("API id not inherited: %+v", rep)
	}
	if rep.ResourceUUID != "" {
		t.Fatalf("resource UUID %q inherited by a nested message; each message names its own", rep.ResourceUUID)
	}
}

func testPublish(t *testing.T, h harness) {
	bs := h.cluster(t, 3)
	var mu sync.Mutex
	got := map[string][]string{}
	for _, b := range bs {
		b := b
		if err := Subscribe(b, evTest, func(ctx context.Context, from string, e echoReq) {
			mu.Lock()
			got[b.NodeUUID()] = append(got[b.NodeUUID()], from+":"+e.Text)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	// A wildcard subscriber on node2 sees the event once more, through its
	// own pattern; a non-matching one sees nothing.
	var wild, other atomic.Int32
	if err := bs[2].SubscribePattern("test.#", func(context.Context, *Envelope) { wild.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := bs[2].SubscribePattern("other.*", func(context.Context, *Envelope) { other.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctxT(t, 5*time.Second), bs[0], evTest, echoReq{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 3 && wild.Load() == 1
	}, "event reaches 3 nodes")
	mu.Lock()
	defer mu.Unlock()
	for _, b := range bs {
		if v := got[b.NodeUUID()]; len(v) != 1 || v[0] != bs[0].NodeUUID()+":x" {
			t.Fatalf("node %s got %v, want one event from %s", b.NodeUUID(), v, bs[0].NodeUUID())
		}
	}
	if other.Load() != 0 {
		t.Fatal("non-matching pattern received the event")
	}
}

func testDeadNode(t *testing.T, h harness) {
	bs := h.cluster(t, 2)
	dead := bs[1]
	target := bs[0].Target("svc", dead.NodeUUID())
	if _, err := Call(ctxT(t, 10*time.Second), bs[0], target, msgEcho, echoReq{Text: "alive"}); err != nil {
		t.Fatal(err)
	}
	if err := dead.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := Call(ctxT(t, 30*time.Second), bs[0], target, msgEcho, echoReq{Text: "anyone?"}, WithTimeout(20*time.Second))
	if errcode.CodeOf(err) != errcode.NodeUnavailable {
		t.Fatalf("got %v, want SYS.1012", err)
	}
	if !errcode.IsRetryable(err) {
		t.Fatal("SYS.1012 must be retryable")
	}
	if !errors.Is(err, ErrNotDelivered) {
		t.Fatalf("an unrouted message's error %v does not say it was not delivered", err)
	}
	// An unknown target fails the same way.
	_, err = Call(ctxT(t, 30*time.Second), bs[0], bs[0].Target("svc", "no-such-node"), msgEcho, echoReq{}, WithTimeout(20*time.Second))
	if errcode.CodeOf(err) != errcode.NodeUnavailable {
		t.Fatalf("unknown target: got %v, want SYS.1012", err)
	}
}

func testPanicUnknownMalformed(t *testing.T, h harness) {
	bs := h.cluster(t, 2)
	target := bs[0].Target("svc", bs[1].NodeUUID())
	ctx := ctxT(t, 10*time.Second)
	_, err := Call(ctx, bs[0], target, msgPanic, Empty{})
	if errcode.CodeOf(err) != errcode.Internal {
		t.Fatalf("panic: got %v, want SYS.1000", err)
	}
	_, err = Call(ctx, bs[0], target, msgUnknown, Empty{})
	if errcode.CodeOf(err) != errcode.UnknownMessage {
		t.Fatalf("unknown: got %v, want SYS.1003", err)
	}
	_, err = Call(ctx, bs[0], target, msgEchoWrong, struct {
		Text []int `json:"text"`
	}{Text: []int{1}})
	if errcode.CodeOf(err) != errcode.MalformedMessage {
		t.Fatalf("malformed: got %v, want SYS.1004", err)
	}
	// The handling node keeps serving.
	rep, err := Call(ctx, bs[0], target, msgEcho, echoReq{Text: "still here"})
	if err != nil || rep.Text != "still here" {
		t.Fatalf("after failures: %v %+v", err, rep)
	}
	if s := bs[1].Stats(); s.Panics != 1 || s.Unknown != 1 {
		t.Fatalf("stats %+v, want 1 panic and 1 unknown", s)
	}
}

func testLateReply(t *testing.T, h harness) {
	bs := h.cluster(t, 2)
	target := bs[0].Target("svc", bs[1].NodeUUID())
	// The handler ignores nothing: it sleeps past the caller's timeout but
	// the message's own deadline (set by the caller) is what the handler's
	// reply is bound by, so give the handler a long deadline and make the
	// caller give up through its context instead.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Call(ctx, bs[0], target, msgEcho, echoReq{Text: "late", Sleep: 300}, WithTimeout(10*time.Second))
		done <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return len(bs[0].Pending()) == 1 }, "call pending")
	cancel()
	if err := <-done; errcode.CodeOf(err) != errcode.Canceled {
		t.Fatalf("got %v, want SYS.1002", err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return bs[0].Stats().LateReplies == 1 }, "late reply counted")
}

func testCallAll(t *testing.T, h harness) {
	bs := h.cluster(t, 3)
	var reqs []Request[echoReq]
	for i := 0; i < 30; i++ {
		reqs = append(reqs, Request[echoReq]{Target: bs[0].Target("svc", bs[i%3].NodeUUID()), Body: echoReq{Text: fmt.Sprint(i)}})
	}
	reqs[7].Body.Text = "fail"
	res := CallAll(ctxT(t, 20*time.Second), bs[0], msgEcho, reqs, 4)
	for i, r := range res {
		if i == 7 {
			if errcode.CodeOf(r.Err) != errcode.InvalidArgument {
				t.Fatalf("result 7: %v, want SYS.1007", r.Err)
			}
			continue
		}
		if r.Err != nil || r.Reply.Text != fmt.Sprint(i) || r.Reply.Node != bs[i%3].NodeUUID() {
			t.Fatalf("result %d = %+v %v", i, r.Reply, r.Err)
		}
	}
}

var msgRecord = NewMsg[echoReq, Empty]("test.Record")

func testSendAndShared(t *testing.T, h harness) {
	bs := h.cluster(t, 3)
	var mu sync.Mutex
	seen := map[string][]string{}
	for _, b := range bs {
		b := b
		m := NewMux()
		Handle(m, msgRecord, func(ctx context.Context, r echoReq) (Empty, error) {
			mu.Lock()
			seen[r.Text] = append(seen[r.Text], b.NodeUUID())
			mu.Unlock()
			return Empty{}, nil
		})
		if err := b.ServeShared("portal", m); err != nil {
			t.Fatal(err)
		}
	}
	const n = 60
	ctx := ctxT(t, 20*time.Second)
	for i := 0; i < n; i++ {
		if err := Send(ctx, bs[i%3], bs[0].SharedTarget("portal"), msgRecord, echoReq{Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	}, "all sent messages handled")
	mu.Lock()
	defer mu.Unlock()
	nodes := map[string]int{}
	for text, by := range seen {
		if len(by) != 1 {
			t.Fatalf("message %s handled %d times (%v), want once", text, len(by), by)
		}
		nodes[by[0]]++
	}
	if len(nodes) < 2 {
		var ks []string
		for k := range nodes {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		t.Fatalf("shared queue served by %v only; every consuming node should take a share", ks)
	}
}

func testFailPending(t *testing.T, h harness) {
	bs := h.cluster(t, 2)
	target := bs[0].Target("svc", bs[1].NodeUUID())
	done := make(chan error, 1)
	go func() {
		_, err := Call(ctxT(t, 20*time.Second), bs[0], target, msgEcho, echoReq{Text: "x", Sleep: 5000}, WithTimeout(15*time.Second))
		done <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return len(bs[0].Pending()) == 1 }, "call pending")
	n := bs[0].FailPending(func(tg string) bool { return tg == target }, errcode.New(errcode.NodeUnavailable, "node left"))
	if n != 1 {
		t.Fatalf("FailPending failed %d calls, want 1", n)
	}
	if err := <-done; errcode.CodeOf(err) != errcode.NodeUnavailable || errors.Is(err, ErrNotDelivered) {
		t.Fatalf("got %v, want SYS.1012, not marked undelivered (the call was delivered)", err)
	}
}

func TestEnvelopeJSONRoundTrip(t *testing.T) {
	in := &Envelope{ID: "a-1", Name: "vm.Start", Target: "vm.n1", ReplyTo: "reply.n2", Deadline: 42,
		APIID: "api", ResourceUUID: "r", Caller: &Identity{AccountUUID: "acc"}, Body: json.RawMessage(`{"x":1}`)}
	data, err := encodeEnvelope(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeEnvelope(data)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != in.ID || out.Name != in.Name || out.Deadline != 42 || out.Caller.AccountUUID != "acc" || string(out.Body) != `{"x":1}` {
		t.Fatalf("round trip lost fields: %+v", out)
	}
}

func TestTopicMatch(t *testing.T) {
	tests := []struct {
		pattern, key string
		want         bool
	}{
		{"a.b.c", "a.b.c", true},
		{"a.*.c", "a.b.c", true},
		{"a.*", "a.b.c", false},
		{"a.#", "a", true},
		{"a.#", "a.b.c", true},
		{"#", "x.y", true},
		{"#.c", "a.b.c", true},
		{"a.#.c", "a.c", true},
		{"a.#.c", "a.b.d", false},
		{"*", "a.b", false},
		{"node.left", "node.joined", false},
	}
	for _, tc := range tests {
		if got := topicMatch(tc.pattern, tc.key); got != tc.want {
			t.Errorf("topicMatch(%q, %q) = %v, want %v", tc.pattern, tc.key, got, tc.want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := New(Options{URL: "memory://"}); err == nil {
		t.Fatal("missing NodeUUID accepted")
	}
	if _, err := New(Options{URL: "kafka://x", NodeUUID: "n"}); err == nil {
		t.Fatal("unsupported scheme accepted")
	}
}

func TestDecodeEnvelopeRejectsGarbage(t *testing.T) {
	good, err := encodeEnvelope(&Envelope{ID: "x", Name: "n", Error: errcode.New(errcode.Timeout, "t"), Body: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	e, err := decodeEnvelope(good)
	if err != nil || e.Error == nil || e.Error.Code != errcode.Timeout {
		t.Fatalf("good envelope: %v %+v", err, e)
	}
	for i := 0; i < len(good)-2; i++ {
		if _, err := decodeEnvelope(good[:i]); err == nil {
			t.Fatalf("truncated envelope of %d bytes accepted", i)
		}
	}
	if _, err := decodeEnvelope(append([]byte{9}, good[1:]...)); err == nil {
		t.Fatal("unknown version accepted")
	}
}
