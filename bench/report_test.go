package bench

import (
	"bytes"
	"strings"
	"testing"
)

// sampleReport is a 3-node run with every section filled.
func sampleReport() *Report {
	nodes := []string{"http://n1:8080", "http://n2:8080", "http://n3:8080"}
	phase := func(op string, handled ...int64) Phase {
		p := Phase{Op: op, Ops: 90, Succeeded: 90, Seconds: 1.5, OpsPerSecond: 60,
			Done:       Summary{Count: 90, P50: 10, P90: 20, P99: 30, Max: 40, Mean: 12},
			Agent:      &AgentLatency{Path: agentPath[op], Summary: Summary{Count: 90, P50: 4, P99: 45}},
			CPUSeconds: 0.27, CPUMsPerVM: 3}
		for i, h := range handled {
			p.Nodes = append(p.Nodes, PhaseNode{URL: nodes[i], Handled: h, SharePct: 100 * float64(h) / 90})
		}
		return p
	}
	return &Report{
		Label:   "c-test",
		Machine: Machine{CPUs: 2, CPUModel: "Test CPU", MemoryBytes: 8 << 30, OS: "linux", Arch: "amd64", GoVersion: "go1.26"},
		Config:  Config{APIURLs: nodes, NodeURLs: nodes, AgentURLs: []string{"http://a1:7070"}, VMs: 90, Concurrency: 64, Ops: AllOps, Wait: WaitWebhook},
		Phases:  []Phase{phase(OpCreate, 30, 31, 29), phase(OpStop, 30, 30, 30), phase(OpStart, 32, 28, 30), phase(OpDestroy, 30, 30, 30)},
		Nodes: []NodeEnd{{URL: nodes[0], MaxRSSBytes: 100 << 20, RSSBytes: 90 << 20}, {URL: nodes[1], MaxRSSBytes: 110 << 20},
			{URL: nodes[2], MaxRSSBytes: 120 << 20}},
		Agents: []AgentEnd{{URL: "http://a1:7070", Commands: map[string]uint64{"/vm/start": 180, "/vm/stop": 90}}},
	}
}

func TestFailures(t *testing.T) {
	r := sampleReport()
	if f := r.Failures(); len(f) != 0 {
		t.Fatalf("clean run has failures %v", f)
	}
	r.Phases[1].Failed, r.Phases[1].Succeeded = 2, 88
	r.Agents = append(r.Agents, AgentEnd{URL: "http://a2:7070", Overlaps: 3}, AgentEnd{URL: "http://a3:7070", Err: "connection refused"})
	got := strings.Join(r.Failures(), "\n")
	for _, want := range []string{"stop: 2 of 90 jobs failed", "a2:7070 saw 3 overlapping", "a3:7070: cannot read its overlap counter"} {
		if !strings.Contains(got, want) {
			t.Errorf("failures %q lack %q", got, want)
		}
	}
}

func TestEvaluateGoals(t *testing.T) {
	goals := func(r *Report) map[string]Goal {
		m := map[string]Goal{}
		for _, g := range EvaluateGoals(r) {
			m[g.Name] = g
		}
		return m
	}
	t.Run("three nodes under load", func(t *testing.T) {
		g := goals(sampleReport())
		if _, ok := g["VM creates per second, one node"]; ok {
			t.Error("the one-node throughput goal applied to 3 nodes")
		}
		share, ok := g["share of vm.* messages per node"]
		if !ok || !share.Met || share.Measured != "33.9% / 33.1% / 33.1%" {
			t.Errorf("share goal %+v", share)
		}
		if p99 := g["API call to agent /vm/start, p99 with 64 in flight"]; !p99.Met || p99.Measured != "45.0 ms" {
			t.Errorf("p99 goal %+v", p99)
		}
		if p50 := g["API call to agent /vm/start, p50"]; !p50.Met {
			t.Errorf("p50 goal %+v", p50)
		}
		if cpu := g["management CPU per VM create"]; !cpu.Met || cpu.Measured != "3.00 ms" {
			t.Errorf("cpu goal %+v", cpu)
		}
	})
	t.Run("uneven spread", func(t *testing.T) {
		r := sampleReport()
		r.Phases[0].Nodes[0].Handled = 60 // create: 60 / 31 / 29
		if share := goals(r)["share of vm.* messages per node"]; share.Met {
			t.Errorf("share goal met with an uneven spread: %+v", share)
		}
	})
	t.Run("one node, idle", func(t *testing.T) {
		r := sampleReport()
		r.Config.NodeURLs, r.Config.Concurrency = r.Config.NodeURLs[:1], 1
		for i := range r.Phases {
			r.Phases[i].Nodes = r.Phases[i].Nodes[:1]
		}
		g := goals(r)
		if _, ok := g["VM creates per second, one node"]; ok {
			t.Error("throughput goal applied with one call in flight")
		}
		if idle := g["API call to agent /vm/start, p99 idle"]; idle.Met || idle.Target != "<= 20 ms" {
			t.Errorf("idle p99 goal %+v (p99 45 ms must miss 20 ms)", idle)
		}
		if _, ok := g["share of vm.* messages per node"]; ok {
			t.Error("share goal applied to one node")
		}
	})
	t.Run("one node, throughput", func(t *testing.T) {
		r := sampleReport()
		r.Config.NodeURLs = r.Config.NodeURLs[:1]
		r.Phases[0].OpsPerSecond = 250
		if tp := goals(r)["VM creates per second, one node"]; !tp.Met || tp.Measured != "250/s" {
			t.Errorf("throughput goal %+v", tp)
		}
	})
	t.Run("submit all", func(t *testing.T) {
		r := sampleReport()
		r.Config.SubmitAll = true
		r.Nodes[2].MaxRSSBytes = 2 << 30
		r.Phases[0].MaxOutstanding = 70
		g := goals(r)
		if rss := g["peak RSS of a node"]; rss.Met || rss.Measured != "2.00 GiB (at most 70 jobs accepted and not done at once)" {
			t.Errorf("rss goal %+v", rss)
		}
		if end := g["90 creates submitted at once all end"]; !end.Met {
			t.Errorf("end goal %+v", end)
		}
		if _, ok := g["API call to agent /vm/start, p50"]; ok {
			t.Error("agent latency goal applied to submit-all (queueing by design)")
		}
	})
	t.Run("no create phase", func(t *testing.T) {
		if g := EvaluateGoals(&Report{}); g != nil {
			t.Errorf("goals %v without a create phase", g)
		}
	})
	t.Run("missing node figures skip CPU", func(t *testing.T) {
		r := sampleReport()
		r.Phases[0].Nodes[1].Err = "connection refused"
		g := goals(r)
		if _, ok := g["management CPU per VM create"]; ok {
			t.Error("CPU goal evaluated without every node's figures")
		}
		if _, ok := g["share of vm.* messages per node"]; ok {
			t.Error("share goal evaluated without every node's figures")
		}
	})
}

func TestWriteTable(t *testing.T) {
	r := sampleReport()
	r.Phases[0].Failed, r.Phases[0].FirstErrors = 1, []string{"create vm-instances: HTTP 503: SYS.1000"}
	r.Problems = []string{"CPU profile of http://n2:8080: refused"}
	r.Goals = EvaluateGoals(r)
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"mplane bench c-test: 90 VMs, 64 calls in flight, closed loop, results by webhook",
		"2 CPUs (Test CPU), 8.00 GiB",
		"create", "destroy", "30 (33.3%)", "100.0 MiB", "/vm/start 180, /vm/stop 90",
		"share of vm.* messages per node", "SYS.1000", "refused", "FAILED: create: 1 of 90 jobs failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteSummary(t *testing.T) {
	micro, err := ParseMicro(strings.NewReader(sampleMicro))
	if err != nil {
		t.Fatal(err)
	}
	r := sampleReport()
	r.Goals = EvaluateGoals(r)
	var b bytes.Buffer
	if err := WriteSummary(&b, []*Report{r}, micro, 0); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# mplane benchmark results",
		"| raw amqp091 request/reply, 1 in flight (latency) | 695.9 µs |",
		"| plain net/http POST, 64 in flight | 31195 calls/s |",
		"| c-test | 90 | 64 | create | 60.0 | 10.0 / 20.0 / 30.0 / 40.0 | 4.0 / 45.0 | 3.00 | 0 |",
		"| c-test | http://n1:8080 | 30 (33.3%) | 122 (33.9%) | 100.0 MiB |",
		"| c-test | share of vm.* messages per node |",
		"- c-test: ok; agents' overlap counters total 0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {87 << 20, "87.0 MiB"},
		{1 << 30, "1.00 GiB"}, {16 << 40, "16.00 TiB"},
	} {
		if got := FormatBytes(tt.n); got != tt.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
