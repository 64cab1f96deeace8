package vm_test

import (
	"net/http"
	"testing"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/conf"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/server/servertest"
	"mplane/services/vm"
	"mplane/uid"
)

// requireCapacity fails unless every host has the available capacity of
// want, adjusted by the capacity the VM holds on host (none if "").
func (c *cloud) requireCapacity(want snapshot, hostUUID string, cpu, mem int64) {
	c.t.Helper()
	for uuid, a := range c.snapshot().Avail {
		w := want.Avail[uuid]
		if uuid == hostUUID {
			w = [2]int64{w[0] - cpu, w[1] - mem}
		}
		if a != w {
			c.t.Errorf("host %s has %d vCPUs %d bytes available, want %d %d", uuid, a[0], a[1], w[0], w[1])
		}
	}
}

// testLifecycle drives one VM through stop, start, reboot, destroy and
// expunge and checks each one's effects on the VM, its host's capacity,
// its IP and the agent.
func testLifecycle(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{}, kvm.Options{})
	const cpu, mem = 2, int64(2) << 30
	off := c.offering("two", cpu, mem)
	empty := c.snapshot()
	v := c.mustCreate("life", map[string]any{"instanceOfferingUuid": off})
	hostUUID, nic := v.HostUUID, v.VMNics[0]
	c.requireCapacity(empty, hostUUID, cpu, mem)

	// Stop: no host, no capacity, the IP kept.
	s := c.mustAct(v.UUID, "stopVmInstance", nil)
	if s.State != vm.StateStopped || s.HostUUID != "" || s.LastHostUUID != hostUUID {
		t.Fatalf("after stop: state %s host %q last host %q, want Stopped, no host, last host %s", s.State, s.HostUUID, s.LastHostUUID, hostUUID)
	}
	if _, ok := c.reservation(v.UUID); ok {
		t.Error("a Stopped VM holds a reservation")
	}
	c.requireCapacity(empty, "", 0, 0)
	if len(s.VMNics) != 1 || s.VMNics[0].IP != nic.IP || c.usedIPsOwnedBy(nic.UUID) != 1 {
		t.Errorf("after stop: NICs %+v, want the NIC with IP %s kept", s.VMNics, nic.IP)
	}
	if st := c.agentVM(hostUUID, v.UUID); st != protocol.VMStateShutdown {
		t.Errorf("after stop the agent has the VM %q, want %s", st, protocol.VMStateShutdown)
	}

	// Start: back on its last host, with its capacity.
	s = c.mustAct(v.UUID, "startVmInstance", nil)
	if s.State != vm.StateRunning || s.HostUUID != hostUUID || s.LastHostUUID != hostUUID {
		t.Fatalf("after start: state %s host %q last host %q, want Running on %s", s.State, s.HostUUID, s.LastHostUUID, hostUUID)
	}
	if r, ok := c.reservation(v.UUID); !ok || r.HostUUID != hostUUID || r.CPU != cpu || r.Memory != mem {
		t.Errorf("after start: reservation %+v (%v), want %d vCPUs %d bytes on %s", r, ok, cpu, mem, hostUUID)
	}
	c.requireCapacity(empty, hostUUID, cpu, mem)
	if st := c.agentVM(hostUUID, v.UUID); st != protocol.VMStateRunning {
		t.Errorf("after start the agent has the VM %q", st)
	}

	// Reboot: the agent reboots it; nothing else moves.
	beforeReboot := c.snapshot()
	s = c.mustAct(v.UUID, "rebootVmInstance", nil)
	if s.State != vm.StateRunning || s.HostUUID != hostUUID {
		t.Fatalf("after reboot: state %s host %q", s.State, s.HostUUID)
	}
	if n := c.agents[hostUUID].Stats().Commands[protocol.PathRebootVM]; n != 1 {
		t.Errorf("the agent got %d reboots, want 1", n)
	}
	c.requireUnchanged(beforeReboot, "a reboot")

	// Destroy: Destroyed, off the agent, no capacity, no IP, no NIC.
	s = c.mustAct(v.UUID, "destroyVmInstance", nil)
	if s.State != vm.StateDestroyed || s.HostUUID != "" || len(s.VMNics) != 0 {
		t.Fatalf("after destroy: state %s host %q NICs %v", s.State, s.HostUUID, s.VMNics)
	}
	if _, ok := c.reservation(v.UUID); ok {
		t.Error("a Destroyed VM holds a reservation")
	}
	c.requireCapacity(empty, "", 0, 0)
	if n := c.usedIPsOwnedBy(nic.UUID); n != 0 {
		t.Errorf("the destroyed VM's NIC still holds %d IPs", n)
	}
	if hs := c.agentHas(v.UUID); len(hs) != 0 {
		t.Errorf("hosts %v still have the destroyed VM", hs)
	}
	if got := c.mustGet(v.UUID); got.State != vm.StateDestroyed {
		t.Errorf("GET answers state %s, want the Destroyed VM", got.State)
	}

	// Expunge: the row is gone.
	if _, err := c.act(v.UUID, "expungeVmInstance", nil); err != nil {
		t.Fatalf("expunge: %v", err)
	}
	_, err := c.get(v.UUID)
	wantErr(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	after := c.snapshot()
	if after.VMs != empty.VMs || after.NICs != empty.NICs || after.UsedIPs != empty.UsedIPs || after.Reservations != empty.Reservations {
		t.Errorf("after expunge: %+v, want the cloud as before the create %+v", after, empty)
	}
}

// testDestroy: destroying a Running or a Stopped VM, by the action or by
// DELETE, leaves it Destroyed with its capacity and IPs given back.
func testDestroy(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	empty := c.snapshot()
	for _, tc := range []struct {
		name    string
		stopped bool
		destroy func(uuid string) error
	}{
		{"Running by action", false, func(uuid string) error { _, err := c.act(uuid, "destroyVmInstance", nil); return err }},
		{"Running by DELETE", false, c.del},
		{"Stopped by action", true, func(uuid string) error { _, err := c.act(uuid, "destroyVmInstance", nil); return err }},
		{"Stopped by DELETE", true, c.del},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := c.mustCreate("to-destroy", nil)
			if tc.stopped {
				c.mustAct(v.UUID, "stopVmInstance", nil)
			}
			if err := tc.destroy(v.UUID); err != nil {
				t.Fatal(err)
			}
			got := c.mustGet(v.UUID)
			if got.State != vm.StateDestroyed || got.HostUUID != "" || len(got.VMNics) != 0 {
				t.Errorf("after destroy: %+v", got)
			}
			if n := c.usedIPsOwnedBy(v.VMNics[0].UUID); n != 0 {
				t.Errorf("%d IPs still held", n)
			}
			if _, ok := c.reservation(v.UUID); ok {
				t.Error("capacity still reserved")
			}
			// A Running VM is destroyed on its agent. A Stopped one has no
			// host any more: the agent keeps it as it was, Shutdown.
			for _, h := range c.agentHas(v.UUID) {
				if st := c.agentVM(h, v.UUID); !tc.stopped || st != protocol.VMStateShutdown {
					t.Errorf("host %s still has the VM %s", h, st)
				}
			}
			c.requireCapacity(empty, "", 0, 0)
		})
	}
}

// testStopTypes: grace (the default) and cold stop a VM; any other type is
// refused at the edge with 400 and the VM keeps running.
func testStopTypes(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	for _, tc := range []struct {
		name string
		body any
	}{
		{"default", map[string]any{}},
		{"grace", map[string]any{"type": "grace"}},
		{"cold", map[string]any{"type": "cold"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := c.mustCreate("stop-"+tc.name, nil)
			s := c.mustAct(v.UUID, "stopVmInstance", tc.body)
			if s.State != vm.StateStopped {
				t.Errorf("state %s after a %s stop", s.State, tc.name)
			}
			if st := c.agentVM(v.HostUUID, v.UUID); st != protocol.VMStateShutdown {
				t.Errorf("the agent has the VM %q after a %s stop", st, tc.name)
			}
		})
	}
	v := c.mustCreate("keeps-running", nil)
	for _, tc := range []struct {
		name string
		body any
		says []string
	}{
		{"unknown type", map[string]any{"type": "warm"}, []string{"stopVmInstance.type", "grace or cold", "warm"}},
		{"wrong JSON type", map[string]any{"type": 1}, []string{"stopVmInstance.type"}},
		{"unknown field", map[string]any{"force": true}, []string{"force"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.snapshot()
			_, err := c.Client.Action(c.ctx, "vm-instances", v.UUID, "stopVmInstance", tc.body)
			wantErr(t, err, http.StatusBadRequest, errcode.InvalidArgument, tc.says...)
			c.requireUnchanged(before, "a refused stop")
		})
	}
}

// testStateMachineRefusals: an operation the VM's state does not allow is
// refused with SYS.1006 naming the state, and changes nothing.
func testStateMachineRefusals(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	running := c.mustCreate("running", nil).UUID
	stopped := c.mustCreate("stopped", nil).UUID
	c.mustAct(stopped, "stopVmInstance", nil)
	destroyed := c.mustCreate("destroyed", nil).UUID
	c.mustAct(destroyed, "destroyVmInstance", nil)
	tests := []struct {
		vm, action string
	}{
		{running, "startVmInstance"},
		{running, "expungeVmInstance"},
		{stopped, "stopVmInstance"},
		{stopped, "rebootVmInstance"},
		{stopped, "expungeVmInstance"},
		{destroyed, "startVmInstance"},
		{destroyed, "stopVmInstance"},
		{destroyed, "rebootVmInstance"},
		{destroyed, "destroyVmInstance"},
		{destroyed, "delete"},
	}
	for _, tc := range tests {
		state := c.mustGet(tc.vm).State
		t.Run(tc.action+" "+state, func(t *testing.T) {
			before := c.snapshot()
			var err error
			if tc.action == "delete" {
				err = c.del(tc.vm)
			} else {
				_, err = c.act(tc.vm, tc.action, nil)
			}
			wantErr(t, err, jobFailed, errcode.InvalidState, "it is "+state)
			c.requireUnchanged(before, "a refused "+tc.action)
		})
	}
}

// testMissingVM: every call on a VM that does not exist is 404, at the
// API edge and on the owner.
func testMissingVM(t *testing.T, c *cloud) {
	c = c.in(t, kvm.Options{})
	missing := uid.New()
	for _, action := range []string{"startVmInstance", "stopVmInstance", "rebootVmInstance", "destroyVmInstance", "expungeVmInstance"} {
		t.Run(action, func(t *testing.T) {
			_, err := c.Client.Action(c.ctx, "vm-instances", missing, action, map[string]any{})
			wantErr(t, err, http.StatusNotFound, errcode.ResourceNotFound, missing)
		})
	}
	t.Run("DELETE", func(t *testing.T) {
		_, err := c.Client.Delete(c.ctx, "vm-instances", missing, "")
		wantErr(t, err, http.StatusNotFound, errcode.ResourceNotFound, missing)
	})
	t.Run("GET", func(t *testing.T) {
		_, err := c.get(missing)
		wantErr(t, err, http.StatusNotFound, errcode.ResourceNotFound, missing)
	})
	t.Run("on the owner", func(t *testing.T) {
		req := vm.OpReq{UUID: missing}
		calls := map[string]func() error{
			"start":   func() error { _, err := managementnode.CallOwner(c.ctx, c.Node(), vm.MsgStart, req); return err },
			"stop":    func() error { _, err := managementnode.CallOwner(c.ctx, c.Node(), vm.MsgStop, req); return err },
			"reboot":  func() error { _, err := managementnode.CallOwner(c.ctx, c.Node(), vm.MsgReboot, req); return err },
			"destroy": func() error { _, err := managementnode.CallOwner(c.ctx, c.Node(), vm.MsgDestroy, req); return err },
			"expunge": func() error { _, err := managementnode.CallOwner(c.ctx, c.Node(), vm.MsgExpunge, req); return err },
		}
		for op, call := range calls {
			if err := call(); err == nil || errcode.CodeOf(err) != errcode.ResourceNotFound {
				t.Errorf("%s of a missing VM on its owner: %v, want SYS.1005", op, err)
			}
		}
	})
	t.Run("unknown action", func(t *testing.T) {
		v := c.mustCreate("exists", nil)
		_, err := c.Client.Action(c.ctx, "vm-instances", v.UUID, "migrateVmInstance", map[string]any{})
		wantErr(t, err, http.StatusBadRequest, errcode.InvalidArgument, "migrateVmInstance", "startVmInstance")
	})
}

// testAgentFailuresKeepTheVM: when the agent fails a stop, reboot or
// destroy, the operation fails with the agent's error and the VM is
// Running as before, with its capacity and its IP.
func testAgentFailuresKeepTheVM(t *testing.T, c *cloud) {
	c = c.in(t)
	a, h := c.addAgent("flaky", kvm.Options{FailRate: 1,
		FaultPaths: []string{protocol.PathStopVM, protocol.PathRebootVM, protocol.PathDestroyVM}})
	v := c.mustCreate("survivor", nil)
	if v.HostUUID != h.UUID {
		t.Fatalf("VM on %s, want the only host %s", v.HostUUID, h.UUID)
	}
	ops := []struct{ action, path string }{
		{"stopVmInstance", protocol.PathStopVM},
		{"rebootVmInstance", protocol.PathRebootVM},
		{"destroyVmInstance", protocol.PathDestroyVM},
	}
	for i, op := range ops {
		t.Run(op.action, func(t *testing.T) {
			before := c.snapshot()
			_, err := c.act(v.UUID, op.action, nil)
			wantErr(t, err, jobFailed, errcode.AgentError, op.path, "injected")
			c.requireUnchanged(before, "a failed "+op.action)
			if got := c.mustGet(v.UUID); got.State != vm.StateRunning || got.HostUUID != h.UUID || len(got.VMNics) != 1 {
				t.Errorf("after a failed %s: %+v, want Running on %s with its NIC", op.action, got, h.UUID)
			}
			if st := c.agentVM(h.UUID, v.UUID); st != protocol.VMStateRunning {
				t.Errorf("the agent has the VM %q", st)
			}
			if n := a.Stats().InjectedFailures; n != uint64(i+1) {
				t.Errorf("%d injected failures, want %d", n, i+1)
			}
		})
	}
}

// testStartWithoutCapacity: a Stopped VM (on shared storage, so it may
// start on any host of its cluster) whose host was taken meanwhile cannot
// start where nothing is free (SYS.1015), nor on a host whose agent fails
// the start (rolled back: no reservation there); it stays Stopped, and
// starts on its last host once that is free again.
func testStartWithoutCapacity(t *testing.T, c *cloud) {
	c = c.inShared(t)
	_, small := c.addAgent("one-cpu", kvm.Options{CPUNum: 1})
	v1 := c.mustCreate("first", nil)
	c.mustAct(v1.UUID, "stopVmInstance", nil)
	v2 := c.mustCreate("takes-the-cpu", nil)
	if v1.HostUUID != small.UUID || v2.HostUUID != small.UUID {
		t.Fatalf("VMs on %s and %s, want both on the only host %s", v1.HostUUID, v2.HostUUID, small.UUID)
	}

	stopped := func(what string) {
		t.Helper()
		got := c.mustGet(v1.UUID)
		if got.State != vm.StateStopped || got.HostUUID != "" {
			t.Errorf("after %s: state %s host %q, want Stopped without host", what, got.State, got.HostUUID)
		}
		if _, ok := c.reservation(v1.UUID); ok {
			t.Errorf("after %s the VM holds capacity", what)
		}
	}
	before := c.snapshot()
	_, err := c.act(v1.UUID, "startVmInstance", nil)
	wantErr(t, err, jobFailed, errcode.CapacityExhausted, "allocate-host")
	stopped("a start without capacity")
	c.requireUnchanged(before, "a start without capacity")

	broken, bad := c.addAgent("fails-starts", kvm.Options{FailRate: 1, FaultPaths: []string{protocol.PathStartVM}})
	before = c.snapshot()
	_, err = c.act(v1.UUID, "startVmInstance", nil)
	wantErr(t, err, jobFailed, errcode.AgentError, "start-on-hypervisor", bad.UUID)
	stopped("a start the agent failed")
	c.requireUnchanged(before, "a start the agent failed")
	if n := broken.Stats().InjectedFailures; n != 1 {
		t.Errorf("the failing host got %d failed starts, want 1", n)
	}

	if err := c.del(v2.UUID); err != nil {
		t.Fatal(err)
	}
	got := c.mustAct(v1.UUID, "startVmInstance", nil)
	if got.State != vm.StateRunning || got.HostUUID != small.UUID {
		t.Errorf("after its host was freed: state %s on %q, want Running on its last host %s", got.State, got.HostUUID, small.UUID)
	}
}

// TestOperations: start, stop, reboot, destroy and expunge through the
// actions of /v1/vm-instances and DELETE, on one stack.
func TestOperations(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{})
	for _, tc := range []struct {
		name string
		test func(*testing.T, *cloud)
	}{
		{"Lifecycle", testLifecycle},
		{"Destroy", testDestroy},
		{"StopTypes", testStopTypes},
		{"StateMachineRefusals", testStateMachineRefusals},
		{"MissingVM", testMissingVM},
		{"AgentFailuresKeepTheVM", testAgentFailuresKeepTheVM},
		{"StartWithoutCapacity", testStartWithoutCapacity},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, c) })
	}
}

// TestPerCommandTimeout: vm_command_timeouts bounds one command apart from
// the others. A stop whose agent never answers ends after the stop's own
// 1 s (not the 5 m default); the host, asked, still runs the VM, so the
// stop fails and the VM stays Running. A start on the same agent is not
// affected.
func TestPerCommandTimeout(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{Configure: func(cfg *conf.Config) {
		cfg.VMCommandTimeouts = "stop=1s"
	}}).in(t, kvm.Options{NoCallbackRate: 1, FaultPaths: []string{protocol.PathStopVM}})
	v := c.mustCreate("slow-stop", nil)
	_, err := c.act(v.UUID, "stopVmInstance", nil)
	if err == nil {
		t.Fatal("a stop whose agent never answered succeeded")
	}
	if got := c.mustGet(v.UUID); got.State != vm.StateRunning {
		t.Errorf("VM %s after the stop timed out, want Running (the host still runs it)", got.State)
	}
	if st := c.agentVM(v.HostUUID, v.UUID); st != protocol.VMStateRunning {
		t.Errorf("the agent has the VM %q", st)
	}
}
