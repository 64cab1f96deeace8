package vm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/conf"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/host"
	"mplane/services/vm"
	"mplane/uid"
)

// poweroff shuts a running VM down from inside the guest, as a user of the
// VM would: the agent reports it with events.
func (c *cloud) poweroff(hostUUID, vmUUID string) {
	c.t.Helper()
	var h host.HostVO
	if err := c.DB().Take(&h, "uuid = ?", hostUUID).Error; err != nil {
		c.t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.VMEvent{VMUUID: vmUUID})
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://%s:%d%s", h.ManagementIP, h.AgentPort, protocol.PathDebugPowerOffVM), bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set(protocol.SecretHeader, h.Secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("poweroff %s: %s", vmUUID, resp.Status)
	}
}

// onAgent runs a VM command on a host's agent directly, behind the
// database's back.
func onAgent[Cmd any](c *cloud, hostUUID string, cmd protocol.Command[Cmd, protocol.VMRsp], body Cmd) {
	c.t.Helper()
	if _, err := host.Run(c.ctx, c.Node(), hostUUID, cmd, body); err != nil {
		c.t.Fatalf("%s on %s: %v", cmd.Path, hostUUID, err)
	}
}

// rootOutside is a root volume outside every storage the agent serves (not
// checked), for a VM started behind the database's back.
func rootOutside() *protocol.VolumeTO {
	return &protocol.VolumeTO{VolumeUUID: uid.New(), InstallPath: "/elsewhere/root.qcow2", DeviceType: "file", Format: "qcow2", Type: "Root"}
}

// TestReconcile: the database follows what the hosts say. Ghosts (Running
// in the database, not on the host) become Stopped and give their capacity
// back, orphans (on the host, not there in the database) are stopped or
// adopted, a command whose reply was lost is settled by asking the host,
// and a transitional state left behind is resolved.
func TestReconcile(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{Configure: func(cfg *conf.Config) {
		cfg.VMCommandTimeout = 2 * time.Second // a lost reply is found out soon
	}})
	vms := c.VMs()

	t.Run("a VM powered off inside its guest is Stopped", func(t *testing.T) {
		c := c.in(t, kvm.Options{})
		empty := c.snapshot()
		v := c.mustCreate("guest-poweroff", nil)
		c.poweroff(v.HostUUID, v.UUID)
		eventually(t, func() bool { return c.mustGet(v.UUID).State == vm.StateStopped }, "VM Stopped after its guest powered off")
		if got := c.mustGet(v.UUID); got.HostUUID != "" || got.LastHostUUID != v.HostUUID {
			t.Errorf("VM on %q, last host %q; want no host, last host %s", got.HostUUID, got.LastHostUUID, v.HostUUID)
		}
		if _, ok := c.reservation(v.UUID); ok {
			t.Error("the powered-off VM still holds capacity")
		}
		c.requireCapacity(empty, v.HostUUID, 0, 0)
		if s := c.mustAct(v.UUID, "startVmInstance", nil); s.State != vm.StateRunning {
			t.Errorf("start after the poweroff: %s", s.State)
		}
	})

	t.Run("a ghost found in the host's list is Stopped", func(t *testing.T) {
		c := c.in(t, kvm.Options{})
		v := c.mustCreate("ghost", nil)
		onAgent(c, v.HostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: v.UUID}) // gone from the host
		before := vms.ReconcileStats().Ghosts
		if err := vms.ReconcileHost(c.ctx, v.HostUUID, "test"); err != nil {
			t.Fatal(err)
		}
		if got := c.mustGet(v.UUID); got.State != vm.StateStopped {
			t.Fatalf("ghost is %s after reconciliation, want Stopped", got.State)
		}
		if _, ok := c.reservation(v.UUID); ok {
			t.Error("the ghost still holds capacity")
		}
		if n := vms.ReconcileStats().Ghosts - before; n != 1 {
			t.Errorf("%d ghosts counted, want 1", n)
		}
	})

	t.Run("orphans are stopped, destroyed or adopted", func(t *testing.T) {
		c := c.in(t, kvm.Options{})
		h := c.mine[0]
		// A VM the database does not have at all.
		stranger := uid.New()
		onAgent(c, h, protocol.StartVM, protocol.StartVMCmd{VMInstanceUUID: stranger, VMName: "stranger", CPUNum: 1, Memory: 1 << 30, RootVolume: rootOutside()})
		// A VM the database has Stopped, running behind its back.
		stopped := c.mustCreate("stopped", nil)
		c.mustAct(stopped.UUID, "stopVmInstance", nil)
		onAgent(c, h, protocol.StartVM, protocol.StartVMCmd{VMInstanceUUID: stopped.UUID, VMName: "stopped", CPUNum: 1, Memory: 1 << 30, RootVolume: rootOutside()})
		// A VM the database has destroyed.
		gone := c.mustCreate("gone", nil)
		c.mustAct(gone.UUID, "destroyVmInstance", nil)
		onAgent(c, h, protocol.StartVM, protocol.StartVMCmd{VMInstanceUUID: gone.UUID, VMName: "gone", CPUNum: 1, Memory: 1 << 30, RootVolume: rootOutside()})

		if err := vms.ReconcileHost(c.ctx, h, "test"); err != nil {
			t.Fatal(err)
		}
		if st := c.agentVM(h, stranger); st != "" {
			t.Errorf("the host still has the unknown VM (%s)", st)
		}
		if st := c.agentVM(h, gone.UUID); st != "" {
			t.Errorf("the host still has the destroyed VM (%s)", st)
		}
		if st := c.agentVM(h, stopped.UUID); st != protocol.VMStateShutdown {
			t.Errorf("the Stopped VM is %q on the host, want stopped there (policy Stop)", st)
		}
		if got := c.mustGet(stopped.UUID); got.State != vm.StateStopped {
			t.Errorf("the Stopped VM is %s in the database", got.State)
		}

		// Policy Adopt: the same VM run behind the database's back is
		// taken as Running there, with its capacity.
		if err := vms.SetOrphanPolicy(vm.OrphanAdopt); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = vms.SetOrphanPolicy(vm.OrphanStop) }()
		onAgent(c, h, protocol.StartVM, protocol.StartVMCmd{VMInstanceUUID: stopped.UUID, VMName: "stopped", CPUNum: 1, Memory: 1 << 30, RootVolume: rootOutside()})
		if err := vms.ReconcileHost(c.ctx, h, "test"); err != nil {
			t.Fatal(err)
		}
		got := c.mustGet(stopped.UUID)
		if r, ok := c.reservation(stopped.UUID); got.State != vm.StateRunning || got.HostUUID != h || !ok || r.HostUUID != h {
			t.Errorf("adopted VM is %s on %q (reservation %v on %q), want Running on %s with its capacity", got.State, got.HostUUID, ok, r.HostUUID, h)
		}
		if err := vms.SetOrphanPolicy("Keep"); err == nil {
			t.Error("an unknown orphan policy was accepted")
		}
	})

	t.Run("a stop whose reply was lost is settled by asking the host", func(t *testing.T) {
		c := c.in(t, kvm.Options{LostReplyRate: 1, FaultPaths: []string{protocol.PathStopVM}})
		v := c.mustCreate("lost-reply", nil)
		got := c.mustAct(v.UUID, "stopVmInstance", nil)
		if got.State != vm.StateStopped || c.agentVM(v.HostUUID, v.UUID) != protocol.VMStateShutdown {
			t.Fatalf("after a stop whose reply was lost: %s in the database, %q on the host; want Stopped on both", got.State, c.agentVM(v.HostUUID, v.UUID))
		}
		if _, ok := c.reservation(v.UUID); ok {
			t.Error("the stopped VM still holds capacity")
		}
	})

	t.Run("a stop that never ran leaves the VM Running", func(t *testing.T) {
		c := c.in(t, kvm.Options{NoCallbackRate: 1, FaultPaths: []string{protocol.PathStopVM}})
		v := c.mustCreate("no-stop", nil)
		_, err := c.act(v.UUID, "stopVmInstance", nil)
		if err == nil {
			t.Fatal("a stop that never ran succeeded")
		}
		if got := c.mustGet(v.UUID); got.State != vm.StateRunning || c.agentVM(v.HostUUID, v.UUID) != protocol.VMStateRunning {
			t.Fatalf("after a stop that never ran: %s in the database, %q on the host; want Running on both", got.State, c.agentVM(v.HostUUID, v.UUID))
		}
	})

	t.Run("a transitional state left behind is resolved", func(t *testing.T) {
		c := c.in(t, kvm.Options{})
		v := c.mustCreate("left-stopping", nil)
		// An owner died after it showed Stopping and before it sent the
		// stop: the host still runs the VM.
		if err := c.DB().Model(&vm.VmInstanceVO{}).Where("uuid = ?", v.UUID).
			Updates(map[string]any{"state": vm.StateStopping, "version": 500, "last_op_date": time.Now().Add(-time.Minute).UTC()}).Error; err != nil {
			t.Fatal(err)
		}
		if err := vms.RepairTransients(c.ctx); err != nil {
			t.Fatal(err)
		}
		if got := c.mustGet(v.UUID); got.State != vm.StateRunning || got.HostUUID != v.HostUUID {
			t.Fatalf("VM left Stopping is %s on %q, want Running on %s (what its host says)", got.State, got.HostUUID, v.HostUUID)
		}
		// The same with the VM gone from the host: Stopped, capacity back.
		onAgent(c, v.HostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: v.UUID})
		if err := c.DB().Model(&vm.VmInstanceVO{}).Where("uuid = ?", v.UUID).
			Updates(map[string]any{"state": vm.StateRebooting, "version": 600, "last_op_date": time.Now().Add(-time.Minute).UTC()}).Error; err != nil {
			t.Fatal(err)
		}
		if err := vms.RepairTransients(c.ctx); err != nil {
			t.Fatal(err)
		}
		if got := c.mustGet(v.UUID); got.State != vm.StateStopped {
			t.Fatalf("VM left Rebooting, gone from its host, is %s, want Stopped", got.State)
		}
		if _, ok := c.reservation(v.UUID); ok {
			t.Error("capacity still held")
		}
	})

	t.Run("a transitional state whose host cannot answer becomes Unknown", func(t *testing.T) {
		c := c.in(t, kvm.Options{})
		v := c.mustCreate("host-gone", nil)
		a := c.agents[v.HostUUID]
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.DB().Model(&vm.VmInstanceVO{}).Where("uuid = ?", v.UUID).
			Updates(map[string]any{"state": vm.StateDestroying, "version": 700, "last_op_date": time.Now().Add(-time.Minute).UTC()}).Error; err != nil {
			t.Fatal(err)
		}
		if err := vms.RepairTransients(c.ctx); err != nil {
			t.Fatal(err)
		}
		got := c.mustGet(v.UUID)
		if got.State != vm.StateUnknown {
			t.Fatalf("VM left Destroying on an unreachable host is %s, want Unknown", got.State)
		}
		if _, ok := c.reservation(v.UUID); !ok {
			t.Error("an Unknown VM gave its capacity back: it may still run")
		}
		// A destroy cannot reach the host: refused, retryable (nothing
		// ran), and the VM stays Unknown.
		_, err := c.act(v.UUID, "destroyVmInstance", nil)
		if !errcode.Has(err, errcode.AgentError) || !errcode.IsRetryable(err) {
			t.Errorf("destroy of an Unknown VM on an unreachable host: %v, want a retryable agent error", err)
		}
		if got := c.mustGet(v.UUID); got.State != vm.StateUnknown {
			t.Errorf("after the refused destroy the VM is %s, want Unknown", got.State)
		}
	})

	t.Run("an agent that took a newer owner's commands refuses this node's", func(t *testing.T) {
		c := c.in(t, kvm.Options{})
		v := c.mustCreate("fenced", nil)
		var h host.HostVO
		if err := c.DB().Take(&h, "uuid = ?", v.HostUUID).Error; err != nil {
			t.Fatal(err)
		}
		// A newer owner (a later ring epoch) pinged the host.
		req := httptest.NewRequest(http.MethodPost, protocol.PathPing, strings.NewReader(`{}`))
		req.Header.Set(protocol.TaskUUIDHeader, uid.New())
		req.Header.Set(protocol.CallbackURLHeader, "http://127.0.0.1:1/nowhere")
		req.Header.Set(protocol.SecretHeader, h.Secret)
		req.Header.Set(protocol.FenceHeader, strconv.FormatInt(c.Node().Ring().Epoch+1000, 10))
		rec := httptest.NewRecorder()
		c.agents[v.HostUUID].Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("ping under a newer token: %d %s", rec.Code, rec.Body)
		}
		_, err := c.act(v.UUID, "stopVmInstance", nil)
		if !errcode.Has(err, errcode.NodeUnavailable) {
			t.Fatalf("stop sent under an older token: %v, want NodeUnavailable", err)
		}
		if got := c.mustGet(v.UUID); got.State != vm.StateRunning || c.agentVM(v.HostUUID, v.UUID) != protocol.VMStateRunning {
			t.Errorf("after the refused stop: %s in the database, %q on the host; want Running on both", got.State, c.agentVM(v.HostUUID, v.UUID))
		}
	})

	t.Run("a job re-run after its node died answers the work it finds done", func(t *testing.T) {
		c := c.in(t, kvm.Options{})
		empty := c.snapshot()
		// A stop that ran on the host; its node died before it wrote
		// anything but Stopping.
		v := c.mustCreate("stopped-by-the-dead", nil)
		onAgent(c, v.HostUUID, protocol.StopVM, protocol.StopVMCmd{UUID: v.UUID})
		if err := c.DB().Model(&vm.VmInstanceVO{}).Where("uuid = ?", v.UUID).Updates(map[string]any{"state": vm.StateStopping, "version": 500}).Error; err != nil {
			t.Fatal(err)
		}
		got, err := vms.RerunOp(c.ctx, "stop", v.UUID)
		if err != nil || got.State != vm.StateStopped {
			t.Fatalf("re-run of the stop: %s, %v; want success, Stopped", got.State, err)
		}
		if _, ok := c.reservation(v.UUID); ok {
			t.Error("the stopped VM still holds capacity")
		}
		// A stop re-run on a VM that still runs stops it.
		w := c.mustCreate("still-running", nil)
		if got, err := vms.RerunOp(c.ctx, "stop", w.UUID); err != nil || got.State != vm.StateStopped || c.agentVM(w.HostUUID, w.UUID) == protocol.VMStateRunning {
			t.Fatalf("re-run of a stop that never ran: %s, %v, agent %q; want it stopped", got.State, err, c.agentVM(w.HostUUID, w.UUID))
		}
		// A destroy that completed: its re-run succeeds.
		c.mustAct(w.UUID, "destroyVmInstance", nil)
		if got, err := vms.RerunOp(c.ctx, "destroy", w.UUID); err != nil || got.State != vm.StateDestroyed {
			t.Fatalf("re-run of a completed destroy: %s, %v; want success", got.State, err)
		}
		// Without the re-run mark the same call is refused.
		if _, err := c.act(v.UUID, "stopVmInstance", nil); errcode.CodeOf(err) != errcode.InvalidState {
			t.Fatalf("a stop of a Stopped VM: %v, want InvalidState", err)
		}
		c.requireCapacity(empty, v.HostUUID, 0, 0)
	})

	t.Run("destroying a stopped VM removes it from its last host", func(t *testing.T) {
		c := c.in(t, kvm.Options{})
		v := c.mustCreate("stopped-destroyed", nil)
		c.mustAct(v.UUID, "stopVmInstance", nil)
		if st := c.agentVM(v.HostUUID, v.UUID); st != protocol.VMStateShutdown {
			t.Fatalf("stopped VM is %q on its host", st)
		}
		c.mustAct(v.UUID, "destroyVmInstance", nil)
		if st := c.agentVM(v.HostUUID, v.UUID); st != "" {
			t.Errorf("the destroyed VM's definition is still on its last host (%s)", st)
		}
	})
}
