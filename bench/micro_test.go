package bench

import (
	"strings"
	"testing"
)

const sampleMicro = `goos: linux
goarch: amd64
pkg: mplane/cloudbus
cpu: AMD EPYC
BenchmarkCall/memory/inflight=1-2         	  143913	     16239 ns/op	     61579 calls/s	    2536 B/op	      46 allocs/op
BenchmarkCall/rawamqp/inflight=1-2        	    3031	    695944 ns/op	      1437 calls/s	    4938 B/op	     134 allocs/op
PASS
ok  	mplane/cloudbus	60.1s
pkg: mplane/agents/agentclient
BenchmarkAgentRoundTrip/plain-post-echo/inflight=64-2            	   34615	     32056 ns/op	     31195 calls/s	    6444 B/op	      71 allocs/op
BenchmarkBlockedTasks/pending_on_1_signature-2         	      37	  36844376 ns/op	       515.4 heap-B/task
BenchmarkBroken-2 	 notanumber	 1 ns/op
--- FAIL: BenchmarkOther
`

func TestParseMicro(t *testing.T) {
	ms, err := ParseMicro(strings.NewReader(sampleMicro))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 {
		t.Fatalf("parsed %d benchmarks, want 4: %+v", len(ms), ms)
	}
	raw := ms[1]
	if raw.Package != "mplane/cloudbus" || raw.Name != "BenchmarkCall/rawamqp/inflight=1" {
		t.Errorf("second benchmark %+v", raw)
	}
	if v, ok := raw.Metric("ns/op"); !ok || v != 695944 {
		t.Errorf("ns/op %v %v", v, ok)
	}
	if v, ok := raw.Metric("allocs/op"); !ok || v != 134 {
		t.Errorf("allocs/op %v %v", v, ok)
	}
	if _, ok := raw.Metric("heap-B/task"); ok {
		t.Error("a metric the line does not have")
	}
	post := ms[2]
	if post.Package != "mplane/agents/agentclient" || post.Name != "BenchmarkAgentRoundTrip/plain-post-echo/inflight=64" {
		t.Errorf("third benchmark %+v", post)
	}
	if v, _ := ms[3].Metric("heap-B/task"); v != 515.4 {
		t.Errorf("custom metric %v", v)
	}
}

func TestTrimProcs(t *testing.T) {
	for in, want := range map[string]string{
		"BenchmarkX-2": "BenchmarkX", "BenchmarkX/inflight=64-16": "BenchmarkX/inflight=64",
		"BenchmarkX": "BenchmarkX", "BenchmarkX/a-b": "BenchmarkX/a-b",
	} {
		if got := trimProcs(in); got != want {
			t.Errorf("trimProcs(%q) = %q, want %q", in, got, want)
		}
	}
}
