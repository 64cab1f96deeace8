package agentclient_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
)

// BenchmarkAgentRoundTrip measures, in one run and against the same
// in-process kvm agent on loopback HTTP:
//
//   - async: management node -> agent (POST, empty 200) -> agent's
//     callback POST -> Call returns (/host/ping);
//   - sync: CallSync of /host/echo (one POST, answer in the body);
//   - plain-post: a bare net/http POST of /host/echo, the floor.
//
// each with 1 and 64 calls in flight. Run:
//
//	go test -run '^$' -bench . -benchmem ./agents/client/
func BenchmarkAgentRoundTrip(b *testing.B) {
	n := newNode(b, 0)
	a, err := kvm.New(kvm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = a.Serve(l) }()
	b.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	url := "http://" + l.Addr().String()

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 128
	plain := &http.Client{Transport: tr}
	b.Cleanup(tr.CloseIdleConnections)

	ops := []struct {
		name string
		op   func() error
	}{
		{"async-ping-callback", func() error {
			var rsp protocol.PingRsp
			return n.client.Call(context.Background(), url, protocol.PathPing, protocol.PingCmd{HostUUID: "h1"}, &rsp)
		}},
		{"sync-echo-callsync", func() error {
			return n.client.CallSync(context.Background(), url, protocol.PathEcho, nil, nil)
		}},
		{"plain-post-echo", func() error {
			rsp, err := plain.Post(url+protocol.PathEcho, "application/json", bytes.NewReader(nil))
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, rsp.Body)
			_ = rsp.Body.Close()
			if rsp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", rsp.StatusCode)
			}
			return nil
		}},
	}
	for _, inflight := range []int{1, 64} {
		for _, o := range ops {
			b.Run(fmt.Sprintf("%s/inflight=%d", o.name, inflight), func(b *testing.B) {
				b.ReportAllocs()
				runInFlight(b, inflight, o.op)
			})
		}
	}
}

// runInFlight splits b.N operations among inflight goroutines and reports
// throughput as calls/s.
func runInFlight(b *testing.B, inflight int, op func() error) {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < inflight; w++ {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}
