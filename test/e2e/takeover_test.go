package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"mplane/db"
	"mplane/flow"
	"mplane/internal/testenv"
	hostsvc "mplane/services/host"
	"mplane/services/network"
	"mplane/services/storage"
	"mplane/services/vm"
	"mplane/services/volume"
)

// TestCreateAbandonedByDeadOwnerIsRolledBack kills the owner of a VM while
// its create flow waits on the hypervisor: the node that takes the VM over
// rolls the flow back (no capacity, IP or volume of that run is left), then
// runs the create again, so the client's job succeeds with exactly one VM,
// whichever node it asks.
func TestCreateAbandonedByDeadOwnerIsRolledBack(t *testing.T) {
	e := newClusterEnv(t)
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret"}
	servers := []*server{e.startServer("A"), e.startServer("B"), e.startServer("C")}
	converged(t, 30*time.Second, servers...)
	ag := startAgent(t, "slow-agent", freePort(t), filepath.Join(t.TempDir(), "a.json"), "--latency", "4s")
	c := login(t, servers[0].url, "e2e-secret")
	cl := setupCloud(t, c, 1, 512<<20)
	h := addHost(t, c, cl, "slow", ag.port)

	gdb, err := db.Open(context.Background(), e.dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(gdb)

	// Submit through a node, then find who owns the VM from its flow record.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job, err := c.Create(ctx, "vm-instances", map[string]any{"name": "orphan", "instanceOfferingUuid": cl.offering,
		"imageUuid": cl.image, "l3NetworkUuids": []string{cl.l3}})
	if err != nil {
		t.Fatal(err)
	}
	var rec flow.RecordVO
	testenv.Eventually(t, 30*time.Second, func() bool {
		return gdb.Where("chain = ? AND step = ?", "create-vm", "start-on-hypervisor").First(&rec).Error == nil
	}, "create flow waiting on the hypervisor")
	var owner *server
	for _, s := range servers {
		if s.uuid == rec.Owner {
			owner = s
		}
	}
	if owner == nil {
		t.Fatalf("flow owner %s is not one of the servers", rec.Owner)
	}
	owner.kill()
	t.Logf("killed %s, owner of VM %s, in step %s", owner.name, rec.Resource, rec.Step)

	// The abandoned run is rolled back, and the job runs again: it ends
	// succeeded, whichever node drove it (a survivor takes an orphaned
	// job over), with one VM Running.
	var survivor *server
	for _, s := range servers {
		if s != owner {
			survivor = s
			break
		}
	}
	sj, err := login(t, survivor.url, "e2e-secret").Job(job.UUID)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer wcancel()
	raw, err := sj.Wait(wctx, nil)
	if err != nil {
		t.Fatalf("the create of a VM whose owner died: %v, want it run again and succeeded", err)
	}
	var v vm.VmInstanceVO
	if err := json.Unmarshal(raw, &v); err != nil || v.UUID != rec.Resource || v.State != vm.StateRunning {
		t.Fatalf("the create answered %s (%v), want VM %s Running", raw, err, rec.Resource)
	}
	var first flow.RecordVO
	if err := gdb.First(&first, "id = ?", rec.ID).Error; err != nil || first.State != string(flow.RolledBack) {
		t.Fatalf("the dead owner's run: %s (%v), want rolled back", first.State, err)
	}
	var done int64
	gdb.Model(&flow.RecordVO{}).Where("resource = ? AND chain = ? AND state = ?", rec.Resource, "create-vm", string(flow.Done)).Count(&done)
	if done != 1 {
		t.Fatalf("%d completed create runs of VM %s, want 1", done, rec.Resource)
	}
	var host hostsvc.HostVO
	if err := gdb.First(&host, "uuid = ?", h.UUID).Error; err != nil {
		t.Fatal(err)
	}
	if host.TotalCPUCapacity-host.AvailableCPUCapacity != int64(v.CPUNum) || host.TotalMemoryCapacity-host.AvailableMemoryCapacity != v.MemorySize {
		t.Fatalf("capacity: %d/%d CPU, %d/%d memory used, want exactly the one VM's", host.TotalCPUCapacity-host.AvailableCPUCapacity,
			host.TotalCPUCapacity, host.TotalMemoryCapacity-host.AvailableMemoryCapacity, host.TotalMemoryCapacity)
	}
	var used int64
	gdb.Model(&network.UsedIpVO{}).Where("l3_network_uuid = ?", cl.l3).Count(&used)
	if used != 1 {
		t.Fatalf("%d IPs allocated, want the one VM's", used)
	}
	// The root volume of the first run (made before the start) is gone,
	// file and row: only the VM's volume of the second run is left.
	var vols []volume.VolumeVO
	gdb.Find(&vols)
	if len(vols) != 1 || vols[0].UUID != v.RootVolumeUUID {
		t.Fatalf("%d volume rows, want only the VM's root volume %s", len(vols), v.RootVolumeUUID)
	}
	if files := filesUnder(t, filepath.Join(ag.localDir, "rootVolumes")); len(files) != 1 {
		t.Fatalf("root volume files %v, want the VM's one", files)
	}
	var resv, caches int64
	gdb.Model(&storage.StorageReservationVO{}).Count(&resv)
	gdb.Model(&storage.ImageCacheVO{}).Count(&caches)
	if resv != caches+1 {
		t.Fatalf("%d storage reservations for %d image caches and one volume", resv, caches)
	}
	checkNoDrift(t, gdb)
}
