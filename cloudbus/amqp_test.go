package cloudbus

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"mplane/errcode"
	"mplane/internal/testenv"
)

// TestAMQPReconnect drops a node's broker connection under it: the call in
// flight fails at once with a retryable error, the node reconnects, declares
// its queues again and serves calls both ways.
func TestAMQPReconnect(t *testing.T) {
	bs := amqpHarness().cluster(t, 2)
	a, b := bs[0], bs[1]
	toB := a.Target("svc", b.NodeUUID())
	toA := b.Target("svc", a.NodeUUID())
	ctx := ctxT(t, 60*time.Second)
	if _, err := Call(ctx, a, toB, msgEcho, echoReq{Text: "before"}); err != nil {
		t.Fatal(err)
	}

	inflight := make(chan error, 1)
	go func() {
		_, err := Call(ctx, a, toB, msgEcho, echoReq{Text: "slow", Sleep: 3000}, WithTimeout(30*time.Second))
		inflight <- err
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return len(a.Pending()) == 1 }, "slow call pending")
	a.tr.(*amqpTransport).closeConnForTest()

	err := <-inflight
	if errcode.CodeOf(err) != errcode.BusUnavailable || !errcode.IsRetryable(err) {
		t.Fatalf("in-flight call: got %v, want retryable SYS.1013", err)
	}
	for _, c := range []struct {
		from *Bus
		to   string
	}{{a, toB}, {b, toA}} {
		var last error
		testenv.Eventually(t, 30*time.Second, func() bool {
			_, last = Call(ctx, c.from, c.to, msgEcho, echoReq{Text: "after"}, WithTimeout(2*time.Second))
			return last == nil
		}, "calls succeed after reconnect")
	}
}

// TestAMQPStartWaitsForBroker starts a node while its broker address does
// not answer yet; Start keeps retrying and succeeds once it does.
func TestAMQPStartWaitsForBroker(t *testing.T) {
	raw := testenv.AMQPURL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxyAddr := ln.Addr().String()
	ln.Close() // nothing listens there until the proxy starts

	pu := *u
	pu.Host = proxyAddr
	bus, err := New(Options{URL: pu.String(), Namespace: testenv.BusPrefix(t, raw), NodeUUID: "late", Logger: quietLogger(),
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Stop(context.Background()) })

	started := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		started <- bus.Start(ctx)
	}()
	select {
	case err := <-started:
		t.Fatalf("Start returned %v before the broker was reachable", err)
	case <-time.After(300 * time.Millisecond):
	}
	stop := startProxy(t, proxyAddr, u.Host)
	defer stop()
	if err := <-started; err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := bus.Serve("svc", testMux(bus)); err != nil {
		t.Fatal(err)
	}
	rep, err := Call(ctxT(t, 10*time.Second), bus, bus.Target("svc", "late"), msgEcho, echoReq{Text: "up"})
	if err != nil || rep.Text != "up" {
		t.Fatalf("call after late start: %v %+v", err, rep)
	}

	// With no broker at all until the deadline, Start gives up with an error.
	dead, err := New(Options{URL: "amqp://guest:guest@127.0.0.1:1/", NodeUUID: "never", Logger: quietLogger(),
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := dead.Start(ctx); err == nil {
		t.Fatal("Start succeeded with no broker")
	}
}

// startProxy forwards TCP connections from listen to upstream.
func startProxy(t *testing.T, listen, upstream string) func() {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}
