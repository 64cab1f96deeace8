package vm_test

import (
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/conf"
	"mplane/flow"
	"mplane/server/servertest"
)

// TestAllocationStrategy: the allocation strategy decides where a create
// goes, from the next create on once changed: LeastUsed (the default) the
// emptier host, MostUsed the busier one as long as the VM fits there, then
// the next. An unknown strategy is refused, naming the valid ones, and
// changes nothing.
func TestAllocationStrategy(t *testing.T) {
	t.Parallel()
	small := kvm.Options{CPUNum: 4, MemoryBytes: 8 << 30}
	c := newCloud(t, servertest.Options{}).in(t, small, small)
	busy, idle := c.mine[0], c.mine[1]
	quarter := c.offering("quarter", 1, 2<<30)
	vms := c.VMs()
	if got := vms.AllocationStrategy(); got != conf.AllocationLeastUsed {
		t.Fatalf("AllocationStrategy() = %q, want the default %s", got, conf.AllocationLeastUsed)
	}
	// busy: half used; idle: empty.
	for _, name := range []string{"pinned-1", "pinned-2"} {
		c.mustCreate(name, map[string]any{"instanceOfferingUuid": quarter, "clusterUuid": nil, "hostUuid": busy})
	}
	createOn := func(strategy, name, want, why string) {
		t.Helper()
		if err := vms.SetAllocationStrategy(strategy); err != nil {
			t.Fatal(err)
		}
		if v := c.mustCreate(name, map[string]any{"instanceOfferingUuid": quarter}); v.HostUUID != want {
			t.Errorf("%s: VM %s placed on %s, want %s (%s)", strategy, name, v.HostUUID, want, why)
		}
	}
	createOn(conf.AllocationLeastUsed, "spread", idle, "the emptier host") // busy 2/4, idle 1/4
	createOn(conf.AllocationMostUsed, "pack-1", busy, "the busier host")   // busy 3/4
	createOn(conf.AllocationMostUsed, "pack-2", busy, "the busier host")   // busy full
	createOn(conf.AllocationMostUsed, "pack-3", idle, "the busier host is full: the most used that fits")

	for _, bad := range []string{"FirstFit", "mostused", ""} {
		err := vms.SetAllocationStrategy(bad)
		if err == nil || !strings.Contains(err.Error(), "LeastUsed, MostUsed, Random") || !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("SetAllocationStrategy(%q) = %v, want an error naming the valid strategies and the value", bad, err)
		}
	}
	if got := vms.AllocationStrategy(); got != conf.AllocationMostUsed {
		t.Errorf("AllocationStrategy() = %q after refused changes, want %s", got, conf.AllocationMostUsed)
	}
	// Random places on a host that fits: only idle is left.
	createOn(conf.AllocationRandom, "any", idle, "the only host with room")
}

// TestFlowRetention: the prune deletes the records of flows that finished
// cleanly (Done, RolledBack) longer than the flow retention ago, under the
// retention set last; unfinished and failed records stay. The prune loop
// follows a shorter retention (every half retention) and prunes by itself.
func TestFlowRetention(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{})
	vms, node := c.VMs(), c.Node().UUID()
	if got, period := vms.FlowRetention(), vms.PrunePeriod(); got != time.Hour || period != 10*time.Minute {
		t.Fatalf("FlowRetention() = %s, PrunePeriod() = %s; want the defaults 1h and 10m", got, period)
	}
	// saved writes a record of this (live) node, last updated age ago.
	saved := func(state flow.State, age time.Duration) string {
		t.Helper()
		id := c.saveRecord(node, createChain, "vm-"+string(state), state, 1, 7, "create-record", map[string]any{})
		if err := c.DB().Model(&flow.RecordVO{}).Where("id = ?", id).Update("updated_at", time.Now().UTC().Add(-age)).Error; err != nil {
			t.Fatal(err)
		}
		return id
	}
	kept := func(id string) bool {
		t.Helper()
		var n int64
		if err := c.DB().Model(&flow.RecordVO{}).Where("id = ?", id).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	prune := func() {
		t.Helper()
		if err := vms.PruneNow(c.ctx); err != nil {
			t.Fatal(err)
		}
	}
	set := func(d time.Duration) {
		t.Helper()
		if err := vms.SetFlowRetention(d); err != nil {
			t.Fatal(err)
		}
	}
	want := func(when string, ids map[string]bool) {
		t.Helper()
		for id, k := range ids {
			if got := kept(id); got != k {
				t.Errorf("%s: record %s kept %v, want %v", when, id, got, k)
			}
		}
	}

	done90m, rolledBack3h := saved(flow.Done, 90*time.Minute), saved(flow.RolledBack, 3*time.Hour)
	running3h, failed3h, fresh := saved(flow.Running, 3*time.Hour), saved(flow.Failed, 3*time.Hour), saved(flow.Done, 0)

	// Longer than the default hour: what finished 90 minutes ago stays.
	set(2 * time.Hour)
	prune()
	want("retention 2h", map[string]bool{done90m: true, rolledBack3h: false, running3h: true, failed3h: true, fresh: true})
	if p := vms.PrunePeriod(); p != 10*time.Minute {
		t.Errorf("PrunePeriod() = %s under a 2h retention, want 10m", p)
	}

	for _, bad := range []time.Duration{0, -time.Minute} {
		if err := vms.SetFlowRetention(bad); err == nil || !strings.Contains(err.Error(), "must be > 0") {
			t.Errorf("SetFlowRetention(%s) = %v, want an error saying it must be > 0", bad, err)
		}
	}
	if got := vms.FlowRetention(); got != 2*time.Hour {
		t.Errorf("FlowRetention() = %s after refused changes, want 2h", got)
	}

	// Shorter: what finished a minute ago goes, the fresh record stays.
	set(time.Minute)
	if p := vms.PrunePeriod(); p != 30*time.Second {
		t.Errorf("PrunePeriod() = %s under a 1m retention, want 30s", p)
	}
	prune()
	want("retention 1m", map[string]bool{done90m: false, running3h: true, failed3h: true, fresh: true})

	// Very short: the loop, restarted every second, prunes by itself.
	set(2 * time.Second)
	if p := vms.PrunePeriod(); p != time.Second {
		t.Errorf("PrunePeriod() = %s under a 2s retention, want 1s", p)
	}
	old := saved(flow.Done, time.Minute)
	eventually(t, func() bool { return !kept(old) && !kept(fresh) }, "the prune loop deleting the finished records older than 2s")
	want("the loop under retention 2s", map[string]bool{running3h: true, failed3h: true})
}
