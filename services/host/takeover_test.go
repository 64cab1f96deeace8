package host_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/conf"
	"mplane/errcode"
	"mplane/flow"
	"mplane/internal/testenv"
	"mplane/services/host"
	"mplane/uid"
)

// TestAbandonedAddIsRolledBack: a node dies in the middle of adding a host,
// after writing its row (Connecting) and before its agent answered. The
// host's new owner rolls the add back: no host is left Connecting, which
// no node would ever ping or connect.
func TestAbandonedAddIsRolledBack(t *testing.T) {
	st, ctx := startStack(t, func(c *conf.Config) { c.HeartbeatInterval = 100 * time.Millisecond })
	db := st.DB()
	now := time.Now().UTC()
	h := host.HostVO{UUID: uid.New(), Name: "half-added", ManagementIP: "192.0.2.7", AgentPort: 7070, ZoneUUID: st.Defaults["zone"],
		ClusterUUID: st.Defaults["cluster"], HypervisorType: host.HypervisorKVM, State: host.StateEnabled, Status: host.StatusConnecting,
		Secret: uid.New(), CreateDate: now, LastOpDate: now}
	if err := db.Create(&h).Error; err != nil {
		t.Fatal(err)
	}
	dead := uid.New()
	data, _ := json.Marshal(map[string]any{"host": h})
	rec := flow.Record{ID: uid.New(), Chain: "add-host", Owner: dead, Resource: h.UUID, State: flow.Running, Applied: 2, Total: 2,
		Step: "connect-agent", Data: data}
	recorder := flow.NewGormRecorder(db)
	if err := recorder.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	st.AddDeadNode(t, dead)
	testenv.Eventually(t, time.Minute, func() bool {
		r, err := recorder.Get(ctx, rec.ID)
		return err == nil && r.State == flow.RolledBack
	}, "the abandoned add is rolled back")
	var n int64
	if err := db.Model(&host.HostVO{}).Where("uuid = ?", h.UUID).Count(&n).Error; err != nil || n != 0 {
		t.Fatalf("the half-added host is still there (%d, %v)", n, err)
	}
}

// TestAbandonedReconnectIsRolledBack: a node dies in the middle of
// reconnecting a host (its agent may be half-connected to the dead node).
// The host's new owner rolls the reconnect back, which leaves the host
// Disconnected, and its ping then reconnects it: the host ends Connected
// to its new owner, its reservations kept.
func TestAbandonedReconnectIsRolledBack(t *testing.T) {
	st, ctx := startStack(t, func(c *conf.Config) {
		c.HeartbeatInterval = 100 * time.Millisecond
		fastPing(3)(c)
	})
	a := startAgent(t, "127.0.0.1:0", kvm.Options{CPUNum: 4, MemoryBytes: 8 << 30})
	h := addHost(t, ctx, st, a, "half-reconnected")
	if err := host.Reserve(ctx, st.DB(), h.UUID, "vm-kept", 1, 1<<30); err != nil {
		t.Fatal(err)
	}
	connects := a.commands(protocol.PathConnect)
	dead := uid.New()
	data, _ := json.Marshal(map[string]any{"host": h})
	rec := flow.Record{ID: uid.New(), Chain: "reconnect-host", Owner: dead, Resource: h.UUID, State: flow.Running, Applied: 1, Total: 1,
		Step: "connect-agent", Data: data}
	recorder := flow.NewGormRecorder(st.DB())
	if err := recorder.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	st.AddDeadNode(t, dead)
	testenv.Eventually(t, time.Minute, func() bool {
		r, err := recorder.Get(ctx, rec.ID)
		return err == nil && r.State == flow.RolledBack
	}, "the abandoned reconnect is rolled back")
	testenv.Eventually(t, time.Minute, func() bool {
		return getHost(t, ctx, st, h.UUID).Status == host.StatusConnected && a.commands(protocol.PathConnect) > connects
	}, "the host reconnected by its owner's ping")
	if got := getHost(t, ctx, st, h.UUID); got.AvailableCPUCapacity != 3 || got.AvailableMemoryCapacity != 7<<30 {
		t.Fatalf("after the reconnect: %d CPUs and %d bytes free, want 3 and 7 GiB (the reservation kept)", got.AvailableCPUCapacity, got.AvailableMemoryCapacity)
	}
}

// TestAbandonedDeleteIsRolledBack: a node dies in the middle of deleting a
// host, after disabling it and before deleting its row. The host's new
// owner rolls the delete back: the host is Enabled again (VMs are placed
// on it), not left Disabled by a delete nobody finishes; the delete's job,
// run again, deletes it.
func TestAbandonedDeleteIsRolledBack(t *testing.T) {
	st, ctx := startStack(t, func(c *conf.Config) { c.HeartbeatInterval = 100 * time.Millisecond })
	a := startAgent(t, "127.0.0.1:0", kvm.Options{})
	h := addHost(t, ctx, st, a, "half-deleted")
	if err := st.DB().Model(&host.HostVO{}).Where("uuid = ?", h.UUID).Update("state", host.StateDisabled).Error; err != nil {
		t.Fatal(err)
	}
	dead := uid.New()
	data, _ := json.Marshal(map[string]any{"uuid": h.UUID, "state": host.StateEnabled})
	rec := flow.Record{ID: uid.New(), Chain: "delete-host", Owner: dead, Resource: h.UUID, State: flow.Running, Applied: 1, Total: 2,
		Step: "disable-host", Data: data}
	recorder := flow.NewGormRecorder(st.DB())
	if err := recorder.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	st.AddDeadNode(t, dead)
	testenv.Eventually(t, time.Minute, func() bool {
		r, err := recorder.Get(ctx, rec.ID)
		return err == nil && r.State == flow.RolledBack
	}, "the abandoned delete is rolled back")
	if got := getHost(t, ctx, st, h.UUID); got.State != host.StateEnabled {
		t.Fatalf("host %s after the abandoned delete was rolled back, want Enabled", got.State)
	}
	if err := deleteAndWait(ctx, st.Client, "hosts", h.UUID, ""); err != nil {
		t.Fatalf("delete again: %v", err)
	}
	if n := hostRows(t, st, a); n != 0 {
		t.Fatalf("%d rows after the delete run again", n)
	}
}

// TestCommandsOfAnAgentThatWentAwayFailAtOnce: an agent that dies while it
// runs a command never sends its result; the host's ping finds its address
// refusing connections and fails the command at once, saying it may have
// run, instead of holding its caller to the command's deadline.
func TestCommandsOfAnAgentThatWentAwayFailAtOnce(t *testing.T) {
	st, ctx := startStack(t, fastPing(1000))
	a := startAgent(t, "127.0.0.1:0", kvm.Options{NoCallbackRate: 1, FaultPaths: []string{protocol.PathStartVM}})
	h := addHost(t, ctx, st, a, "dying")
	done := make(chan error, 1)
	started := time.Now()
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		_, err := host.Run(cctx, st.Node(), h.UUID, protocol.StartVM, protocol.StartVMCmd{VMInstanceUUID: "vm-lost", CPUNum: 1, Memory: 1 << 20,
			RootVolume: simRoot("vm-lost")})
		done <- err
	}()
	testenv.Eventually(t, 30*time.Second, func() bool { return a.commands(protocol.PathStartVM) == 1 }, "the start reached the agent")
	a.stop(t)
	select {
	case err := <-done:
		if errcode.CodeOf(err) != errcode.AgentError || !strings.Contains(err.Error(), "went away") {
			t.Fatalf("the command of the agent that went away: %v, want AgentError saying it went away", err)
		}
		t.Logf("failed %v after it was sent (its deadline: 2m)", time.Since(started).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("the command of an agent that went away still waits 30 s later")
	}
}
