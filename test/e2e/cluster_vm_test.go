package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/db"
	"mplane/flow"
	"mplane/managementnode"
	hostsvc "mplane/services/host"
	"mplane/services/vm"
)

// TestClusterCreates200VMs: three `mplane server` processes on RabbitMQ and
// MariaDB, three agent processes; 200 VMs created with 32 in flight spread
// over the three nodes. Every job succeeds, each VM's create ran on its
// owner, no host is overcommitted, and no agent ever saw two commands for
// one VM at once.
func TestClusterCreates200VMs(t *testing.T) {
	e := newClusterEnv(t)
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret", "MPLANE_HOST_PING_INTERVAL=1s"}
	servers := []*server{e.startServer("A"), e.startServer("B"), e.startServer("C")}
	ring := converged(t, 30*time.Second, servers...)
	dir := t.TempDir()
	const perHostCPU = 70 // 3 x 70 = 210 vCPUs for 200 one-vCPU VMs: tight on purpose
	var agents []*agentProc
	for i := 0; i < 3; i++ {
		agents = append(agents, startAgent(t, fmt.Sprintf("agent%d", i+1), freePort(t), filepath.Join(dir, fmt.Sprintf("a%d.json", i)),
			"--cpu", fmt.Sprint(perHostCPU), "--memory", fmt.Sprint(int64(256)<<30)))
	}
	clients := make([]*client.Client, len(servers))
	for i, s := range servers {
		clients[i] = login(t, s.url, "e2e-secret")
	}
	cl := setupCloud(t, clients[0], 1, 512<<20)
	for i, ag := range agents {
		addHost(t, clients[i%3], cl, fmt.Sprintf("host%d", i+1), ag.port)
	}

	const total, inflight = 200, 32
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vms := make([]vm.VmInstanceVO, total)
	errs := make([]error, total)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < inflight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				vms[i], errs[i] = createVM(ctx, clients[i%3], cl, fmt.Sprintf("vm-%03d", i), nil)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d VMs created with %d in flight over 3 nodes in %v", total, inflight, time.Since(start).Round(time.Millisecond))
	for i := range vms {
		if errs[i] != nil {
			t.Fatalf("create vm %d: %v", i, errs[i])
		}
		if vms[i].State != vm.StateRunning {
			t.Fatalf("vm %d is %s", i, vms[i].State)
		}
	}

	// Each VM's create flow ran on the owner of its UUID.
	members := make([]string, 0, len(ring.Members))
	for _, m := range ring.Members {
		members = append(members, m.UUID)
	}
	r, err := managementnode.BuildRing(ring.Epoch, members)
	if err != nil {
		t.Fatal(err)
	}
	gdb, err := db.Open(context.Background(), e.dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(gdb)
	var records []flow.RecordVO
	if err := gdb.Where("chain = ?", "create-vm").Find(&records).Error; err != nil {
		t.Fatal(err)
	}
	if len(records) != total {
		t.Fatalf("%d create-vm flow records, want %d", len(records), total)
	}
	perNode := map[string]int{}
	for _, rec := range records {
		if rec.Owner != r.Owner(rec.Resource) {
			t.Fatalf("VM %s was created on %s, its owner is %s", rec.Resource, rec.Owner, r.Owner(rec.Resource))
		}
		if rec.State != string(flow.Done) {
			t.Fatalf("flow of VM %s ended %s", rec.Resource, rec.State)
		}
		perNode[rec.Owner]++
	}
	t.Logf("creates per owner node: %v", perNode)

	// No host overcommitted: available capacity never below zero, and it
	// accounts exactly for the reservations.
	var hosts []hostsvc.HostVO
	if err := gdb.Find(&hosts).Error; err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		var reserved struct{ CPU, Memory int64 }
		gdb.Model(&hostsvc.ReservationVO{}).Select("COALESCE(SUM(cpu),0) AS cpu, COALESCE(SUM(memory),0) AS memory").Where("host_uuid = ?", h.UUID).Scan(&reserved)
		if h.AvailableCPUCapacity < 0 || h.AvailableMemoryCapacity < 0 ||
			h.AvailableCPUCapacity != h.TotalCPUCapacity-reserved.CPU || h.AvailableMemoryCapacity != h.TotalMemoryCapacity-reserved.Memory {
			t.Fatalf("host %s: available %d CPU %d mem, total %d/%d, reserved %d/%d", h.UUID, h.AvailableCPUCapacity,
				h.AvailableMemoryCapacity, h.TotalCPUCapacity, h.TotalMemoryCapacity, reserved.CPU, reserved.Memory)
		}
	}
	// One more VM than fits is refused for capacity, not overcommitted.
	full := 0
	for i := 0; i < 15; i++ {
		if _, err := createVM(ctx, clients[0], cl, fmt.Sprintf("extra-%d", i), nil); err != nil {
			full++
		}
	}
	if full != 5 {
		t.Fatalf("%d of 15 extra VMs refused; with %d vCPUs for 210 capacity exactly 5 must be", full, total+15)
	}
	for _, ag := range agents {
		var st kvm.Stats
		if _, err := getJSON(context.Background(), ag.url+protocol.PathDebugStats, &st); err != nil {
			t.Fatal(err)
		}
		if st.Overlaps != 0 {
			t.Fatalf("agent %s saw %d overlapping commands on one VM", ag.name, st.Overlaps)
		}
	}
}
