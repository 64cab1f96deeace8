package vm_test

import (
	"sync"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/vm"
)

// parallel runs the actions on the VM at once and returns their errors, in
// order.
func (c *cloud) parallel(uuid string, actions ...string) []error {
	errs := make([]error, len(actions))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, a := range actions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if a == "delete" {
				errs[i] = c.del(uuid)
				return
			}
			_, errs[i] = c.act(uuid, a, nil)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// slowHost adds a host whose agent takes a while for every command, so
// that commands on one VM that were not serialized would overlap there
// (the agent counts overlaps).
func (c *cloud) slowHost() (*kvm.Agent, string) {
	c.t.Helper()
	a, h := c.addAgent("slow", kvm.Options{Latency: 15 * time.Millisecond})
	return a, h.UUID
}

// testConcurrentRebootsSerialized: reboots of one VM sent at once all
// succeed, one after the other: the agent never sees two at a time.
func testConcurrentRebootsSerialized(t *testing.T, c *cloud) {
	c = c.in(t)
	a, h := c.slowHost()
	v := c.mustCreate("rebooted", nil)
	const n = 8
	actions := make([]string, n)
	for i := range actions {
		actions[i] = "rebootVmInstance"
	}
	for i, err := range c.parallel(v.UUID, actions...) {
		if err != nil {
			t.Errorf("reboot %d: %v", i, err)
		}
	}
	st := a.Stats()
	if st.Commands[protocol.PathRebootVM] != n || st.Overlaps != 0 {
		t.Errorf("agent: %d reboots, %d overlaps; want %d reboots one at a time", st.Commands[protocol.PathRebootVM], st.Overlaps, n)
	}
	if got := c.mustGet(v.UUID); got.State != vm.StateRunning || got.HostUUID != h {
		t.Errorf("after the reboots: %s on %q", got.State, got.HostUUID)
	}
}

// testConcurrentStopStart: stops and starts racing on one VM each either
// succeed or are refused as InvalidState; the successful ones alternate,
// and the VM ends consistent: Running with a host, capacity and a running
// VM on the agent, or Stopped with none of them.
func testConcurrentStopStart(t *testing.T, c *cloud) {
	c = c.in(t)
	a, h := c.slowHost()
	v := c.mustCreate("raced", nil)
	running := true
	for round := range 4 {
		errs := c.parallel(v.UUID, "stopVmInstance", "startVmInstance", "stopVmInstance", "startVmInstance", "rebootVmInstance")
		var stops, starts int
		for i, err := range errs {
			switch {
			case err == nil && i%2 == 0 && i < 4:
				stops++
			case err == nil && i%2 == 1:
				starts++
			case err != nil && errcode.CodeOf(err) != errcode.InvalidState:
				t.Errorf("round %d: operation %d: %v, want success or SYS.1006", round, i, err)
			}
		}
		// Successful stops and starts alternate from the state the round
		// began in.
		d := stops - starts
		if running && d != 0 && d != 1 || !running && d != 0 && d != -1 {
			t.Errorf("round %d from running=%v: %d stops and %d starts succeeded", round, running, stops, starts)
		}
		running = running && d == 0 || !running && d == -1
		got := c.mustGet(v.UUID)
		_, reserved := c.reservation(v.UUID)
		onAgent := c.agentVM(h, v.UUID)
		switch {
		case running && got.State == vm.StateRunning && got.HostUUID == h && reserved && onAgent == protocol.VMStateRunning:
		case !running && got.State == vm.StateStopped && got.HostUUID == "" && !reserved && onAgent == protocol.VMStateShutdown:
		default:
			t.Fatalf("round %d: expected running=%v, got state %s host %q reserved %v agent %q", round, running, got.State, got.HostUUID, reserved, onAgent)
		}
	}
	if st := a.Stats(); st.Overlaps != 0 {
		t.Errorf("the agent saw %d overlapping commands on the VM", st.Overlaps)
	}
}

// testConcurrentDestroy: a destroy racing with reboots and a stop wins
// once; the others ran before it or are refused; the VM ends Destroyed
// with nothing held.
func testConcurrentDestroy(t *testing.T, c *cloud) {
	c = c.in(t)
	a, _ := c.slowHost()
	empty := c.snapshot()
	v := c.mustCreate("doomed", nil)
	errs := c.parallel(v.UUID, "delete", "rebootVmInstance", "rebootVmInstance", "delete", "stopVmInstance")
	destroyed := 0
	for i, err := range errs {
		switch {
		case err == nil && (i == 0 || i == 3):
			destroyed++
		case err != nil && errcode.CodeOf(err) != errcode.InvalidState:
			t.Errorf("operation %d: %v, want success or SYS.1006", i, err)
		}
	}
	if destroyed != 1 {
		t.Errorf("%d destroys succeeded, want exactly 1", destroyed)
	}
	got := c.mustGet(v.UUID)
	if got.State != vm.StateDestroyed || len(got.VMNics) != 0 {
		t.Errorf("after the race: %+v", got)
	}
	c.requireCapacity(empty, "", 0, 0)
	if n := c.usedIPsOwnedBy(v.VMNics[0].UUID); n != 0 {
		t.Errorf("%d IPs still held", n)
	}
	if st := a.Stats(); st.Overlaps != 0 || st.VMs[protocol.VMStateRunning] != 0 {
		t.Errorf("agent: %d overlaps, VMs %v; want none, and no VM running", st.Overlaps, st.VMs)
	}
}

// TestConcurrency: operations sent at once on one VM run one at a time,
// on one stack.
func TestConcurrency(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{})
	for _, tc := range []struct {
		name string
		test func(*testing.T, *cloud)
	}{
		{"RebootsSerialized", testConcurrentRebootsSerialized},
		{"StopStart", testConcurrentStopStart},
		{"Destroy", testConcurrentDestroy},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, c) })
	}
}
