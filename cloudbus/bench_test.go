package cloudbus

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"mplane/internal/testenv"
)

// The benchmarks measure mplane's Call against a raw amqp091 request/reply
// (reply queue + correlation ids, the RabbitMQ tutorial's RPC pattern) in
// the same run, at 1 and at 64 calls in flight, so the figures read as
// ratios. Run: make bench-bus (or go test -run '^$' -bench . ./cloudbus/).

var benchBody = echoReq{Text: "0123456789abcdef0123456789abcdef"}

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
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}

func benchBuses(b *testing.B, url string) (*Bus, *Bus) {
	b.Helper()
	var broker *Broker
	ns := ""
	if url == "memory://" {
		broker = NewBroker()
	} else {
		ns = testenv.BusPrefix(b, url)
	}
	var out []*Bus
	for i := 0; i < 2; i++ {
		bus, err := New(Options{URL: url, Broker: broker, Namespace: ns, NodeUUID: fmt.Sprintf("bench%d", i), Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := bus.Start(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.Cleanup(func() { _ = bus.Stop(context.Background()) })
		if err := bus.Serve("svc", testMux(bus)); err != nil {
			b.Fatal(err)
		}
		out = append(out, bus)
	}
	return out[0], out[1]
}

func benchCall(b *testing.B, url string, inflight int) {
	client, server := benchBuses(b, url)
	target := client.Target("svc", server.NodeUUID())
	ctx := context.Background()
	b.ReportAllocs()
	runInFlight(b, inflight, func() error {
		_, err := Call(ctx, client, target, msgEcho, benchBody)
		return err
	})
}

func BenchmarkCall(b *testing.B) {
	b.Run("memory/inflight=1", func(b *testing.B) { benchCall(b, "memory://", 1) })
	b.Run("memory/inflight=64", func(b *testing.B) { benchCall(b, "memory://", 64) })
	b.Run("amqp/inflight=1", func(b *testing.B) { benchCall(b, testenv.AMQPURL(b), 1) })
	b.Run("amqp/inflight=64", func(b *testing.B) { benchCall(b, testenv.AMQPURL(b), 64) })
	b.Run("rawamqp/inflight=1", func(b *testing.B) { benchRaw(b, 1) })
	b.Run("rawamqp/inflight=64", func(b *testing.B) { benchRaw(b, 64) })
}

// benchRaw is the baseline: a server consuming a request queue and
// answering to ReplyTo with the request's CorrelationId; a client with one
// reply queue and a map of waiting correlation ids.
func benchRaw(b *testing.B, inflight int) {
	url := testenv.AMQPURL(b)
	prefix := testenv.Prefix(b)
	reqQ := prefix + ".raw.req"

	sconn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer sconn.Close()
	sch, err := sconn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := sch.QueueDeclare(reqQ, false, true, true, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := sch.Qos(256, 0, false); err != nil {
		b.Fatal(err)
	}
	reqs, err := sch.Consume(reqQ, "", false, true, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for d := range reqs {
			_ = sch.Publish("", d.ReplyTo, false, false, amqp.Publishing{CorrelationId: d.CorrelationId, Body: d.Body})
			_ = d.Ack(false)
		}
	}()

	cconn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer cconn.Close()
	cch, err := cconn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	rq, err := cch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	replies, err := cch.Consume(rq.Name, "", true, true, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	waiting := map[string]chan []byte{}
	go func() {
		for d := range replies {
			mu.Lock()
			ch := waiting[d.CorrelationId]
			delete(waiting, d.CorrelationId)
			mu.Unlock()
			if ch != nil {
				ch <- d.Body
			}
		}
	}()
	var seq atomic.Int64
	body := []byte(`{"text":"0123456789abcdef0123456789abcdef"}`)
	b.ReportAllocs()
	runInFlight(b, inflight, func() error {
		id := strconv.FormatInt(seq.Add(1), 10)
		ch := make(chan []byte, 1)
		mu.Lock()
		waiting[id] = ch
		mu.Unlock()
		if err := cch.Publish("", reqQ, false, false, amqp.Publishing{CorrelationId: id, ReplyTo: rq.Name, Body: body}); err != nil {
			return err
		}
		select {
		case <-ch:
			return nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("raw reply %s timed out", id)
		}
	})
	sconn.Close()
	swg.Wait()
}
