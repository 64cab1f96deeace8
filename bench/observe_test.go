package bench

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestNodeDeltas(t *testing.T) {
	nodes := []string{"http://n1", "http://n2", "http://n3"}
	before := []nodeSnap{
		{proc: processInfo{PID: 1, CPUSeconds: 10}, handled: map[string]int64{"vm.CreateVmInstance": 5}},
		{proc: processInfo{PID: 2, CPUSeconds: 20}, handled: map[string]int64{}},
		{proc: processInfo{PID: 3, CPUSeconds: 30}, handled: map[string]int64{}},
	}
	after := []nodeSnap{
		{proc: processInfo{PID: 1, CPUSeconds: 12.5, RSSBytes: 100, MaxRSSBytes: 200}, handled: map[string]int64{"vm.CreateVmInstance": 35, "vm.StopVmInstance": 30}},
		{proc: processInfo{PID: 2, CPUSeconds: 21}, handled: map[string]int64{"vm.CreateVmInstance": 40}},
		{err: errors.New("connection refused")},
	}
	got, cpu := nodeDeltas(nodes, before, after)
	if cpu != 3.5 {
		t.Errorf("cpu %v, want 3.5 (the unreachable node left out)", cpu)
	}
	if got[0].Handled != 60 || got[0].HandledByName["vm.StopVmInstance"] != 30 || got[0].SharePct != 60 || got[0].MaxRSSBytes != 200 {
		t.Errorf("node 1 %+v", got[0])
	}
	if got[1].Handled != 40 || got[1].SharePct != 40 {
		t.Errorf("node 2 %+v", got[1])
	}
	if got[2].Err == "" || got[2].Handled != 0 {
		t.Errorf("node 3 %+v", got[2])
	}
	// A restarted node (another pid) has no delta.
	after[1].proc.PID = 9
	if got, _ := nodeDeltas(nodes, before, after); got[1].Err == "" {
		t.Errorf("restarted node %+v", got[1])
	}
}

func TestAgentLatencyJoinsFirstArrivalAfterTheCall(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Two agents; vm2 moved between them (stop/start on another host).
	a1 := []arrival{
		{At: at(-500), Path: "/vm/start", VMUUID: "vm1"}, // an earlier phase
		{At: at(3), Path: "/vm/start", VMUUID: "vm1"},
		{At: at(9), Path: "/vm/start", VMUUID: "vm1"}, // later: not the first
		{At: at(4), Path: "/vm/stop", VMUUID: "vm2"},  // another command
	}
	a2 := []arrival{{At: at(7), Path: "/vm/start", VMUUID: "vm2"}}
	serve := func(list []arrival) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(list) }))
	}
	s1, s2 := serve(a1), serve(a2)
	defer s1.Close()
	defer s2.Close()
	recs := []opRecord{
		{vmUUID: "vm1", start: t0},
		{vmUUID: "vm2", start: t0},
		{vmUUID: "vm3", start: t0},                                // never arrived
		{vmUUID: "vm1", start: t0, err: errors.New("job failed")}, // failures are left out
	}
	al, problems := agentLatency(context.Background(), http.DefaultClient, []string{s1.URL, s2.URL, "http://127.0.0.1:1"}, "/vm/start", recs)
	if len(problems) != 1 {
		t.Errorf("problems %v, want the unreachable agent", problems)
	}
	if al.Count != 2 || al.P50 != 3 || al.Max != 7 || al.Missing != 1 {
		t.Errorf("latency %+v, want 2 samples 3 and 7 ms, 1 missing", al)
	}
}

func TestProfileFile(t *testing.T) {
	if got := profileFile("/tmp/p", "c-3nodes", "http://127.0.0.1:8081/", "create"); got != "/tmp/p/c-3nodes-127.0.0.1_8081-create.pprof" {
		t.Errorf("profileFile = %s", got)
	}
	if got := profileFile(".", "", "http://h:1", "create"); got != "bench-h_1-create.pprof" {
		t.Errorf("profileFile = %s", got)
	}
}
