package thread

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"
)

func TestSnapshot(t *testing.T) {
	clk := newFakeClock()
	s := New(Options{Clock: clk})
	defer drain(t, s)

	gate := make(chan struct{})
	t0 := clk.Now()
	// Submitted out of order: Snapshot sorts by signature.
	for _, name := range []string{"b1", "b2", "b3"} {
		submit(t, s, Task{Signature: "host-b", Name: name, Level: 2, Timeout: time.Hour}, blocker(nil, name, gate))
	}
	clk.Advance(2 * time.Second)
	submit(t, s, Task{Signature: "host-a", Name: "a1", Timeout: time.Hour}, blocker(nil, "a1", gate))
	for _, name := range []string{"b4", "b5"} {
		submit(t, s, Task{Signature: "host-b", Name: name, Level: 2, Timeout: time.Hour}, blocker(nil, name, gate))
	}
	clk.Advance(3 * time.Second)

	snap := s.Snapshot()
	if len(snap) != 2 || snap[0].Signature != "host-a" || snap[1].Signature != "host-b" {
		t.Fatalf("snapshot signatures: %+v", snap)
	}
	a, b := snap[0], snap[1]
	if a.Level != 1 || a.Pending != 0 || a.OldestPendingAge != 0 || len(a.Running) != 1 ||
		a.Running[0] != (RunningTask{Name: "a1", Started: t0.Add(2 * time.Second), Deadline: t0.Add(2*time.Second + time.Hour)}) {
		t.Fatalf("host-a: %+v", a)
	}
	wantRunning := []RunningTask{
		{Name: "b1", Started: t0, Deadline: t0.Add(time.Hour)},
		{Name: "b2", Started: t0, Deadline: t0.Add(time.Hour)},
	}
	// b3 has waited 5s, b4 and b5 3s.
	if b.Level != 2 || b.Pending != 3 || b.OldestPendingAge != 5*time.Second || !slices.Equal(b.Running, wantRunning) {
		t.Fatalf("host-b: %+v", b)
	}

	data, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var decoded []map[string]any
	if err := json.Unmarshal(data, &decoded); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"level", "oldest_pending_age_ns", "pending", "running", "signature"}
	if got := slices.Sorted(maps.Keys(decoded[1])); !slices.Equal(got, wantKeys) {
		t.Fatalf("queue JSON keys %v, want %v", got, wantKeys)
	}
	running := decoded[1]["running"].([]any)[0].(map[string]any)
	if got := slices.Sorted(maps.Keys(running)); !slices.Equal(got, []string{"deadline", "name", "started", "timed_out"}) {
		t.Fatalf("running task JSON keys %v", got)
	}

	close(gate)
	eventually(t, "an empty snapshot", func() bool { return len(s.Snapshot()) == 0 })
}
