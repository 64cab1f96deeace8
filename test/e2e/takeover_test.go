package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/db"
	"mplane/errcode"
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
// rolls the flow back, so no VM row, reserved capacity or IP is left.
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

	testenv.Eventually(t, 60*time.Second, func() bool {
		var n int64
		gdb.Model(&vm.VmInstanceVO{}).Where("uuid = ?", rec.Resource).Count(&n)
		var got flow.RecordVO
		gdb.First(&got, "id = ?", rec.ID)
		return n == 0 && got.State == string(flow.RolledBack)
	}, "abandoned create rolled back by the new owner")
	var host hostsvc.HostVO
	if err := gdb.First(&host, "uuid = ?", h.UUID).Error; err != nil {
		t.Fatal(err)
	}
	if host.AvailableCPUCapacity != host.TotalCPUCapacity || host.AvailableMemoryCapacity != host.TotalMemoryCapacity {
		t.Fatalf("capacity leaked: %d/%d CPU, %d/%d memory", host.AvailableCPUCapacity, host.TotalCPUCapacity,
			host.AvailableMemoryCapacity, host.TotalMemoryCapacity)
	}
	var used int64
	gdb.Model(&network.UsedIpVO{}).Where("l3_network_uuid = ?", cl.l3).Count(&used)
	if used != 0 {
		t.Fatalf("%d IPs still allocated", used)
	}
	// The root volume made before the start: its file, row and room on
	// the storage are gone too (the image cache stays).
	var vols int64
	gdb.Model(&volume.VolumeVO{}).Count(&vols)
	if vols != 0 {
		t.Fatalf("%d volume rows left", vols)
	}
	if files := filesUnder(t, filepath.Join(ag.localDir, "rootVolumes")); len(files) != 0 {
		t.Fatalf("root volume files left: %v", files)
	}
	var resv, caches int64
	gdb.Model(&storage.StorageReservationVO{}).Count(&resv)
	gdb.Model(&storage.ImageCacheVO{}).Count(&caches)
	if resv != caches {
		t.Fatalf("%d storage reservations for %d image caches", resv, caches)
	}
	checkNoDrift(t, gdb)
	// The job ends failed, retryable, saying the work was rolled back,
	// whichever node drove it: a survivor takes an orphaned job over.
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
	wctx, wcancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer wcancel()
	_, err = sj.Wait(wctx, nil)
	if err == nil {
		t.Fatal("the create of a rolled-back VM reported success")
	}
	if e := errcode.From(err); e.Code != errcode.NodeUnavailable || !e.Retryable || !strings.Contains(e.Details, "rolled back") {
		t.Fatalf("the create's job: %v, want a retryable SYS.1012 saying its work was rolled back", err)
	}
}
