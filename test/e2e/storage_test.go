package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/db"
	"mplane/errcode"
	"mplane/flow"
	"mplane/internal/testenv"
	"mplane/services/storage"
	"mplane/services/volume"
)

// TestClusterVolumeCapacityRace: two `mplane server` processes on RabbitMQ
// and MariaDB, one agent process serving a shared primary storage
// directory; 200 volume creates spread over both nodes at once against
// room for 150. Exactly 150 succeed, every other one fails with a capacity
// error, nothing is overcommitted, and every created volume's file exists.
func TestClusterVolumeCapacityRace(t *testing.T) {
	e := newClusterEnv(t)
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret", "MPLANE_HOST_PING_INTERVAL=1s"}
	servers := []*server{e.startServer("A"), e.startServer("B")}
	converged(t, 30*time.Second, servers...)
	dir, shared := t.TempDir(), t.TempDir()
	const url = "/e2e/shared"
	ag := startAgent(t, "agent1", freePort(t), filepath.Join(dir, "a1.json"), "--storage", url+"="+shared)
	clients := []*client.Client{login(t, servers[0].url, "e2e-secret"), login(t, servers[1].url, "e2e-secret")}
	cl := setupCloud(t, clients[0], 1, 512<<20, withoutLocalStorage)
	addHost(t, clients[0], cl, "host1", ag.port)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ps, err := client.CreateAndWait[storage.PrimaryStorageVO](ctx, clients[0], "primary-storage/smp", map[string]any{"name": "smp", "url": url, "zoneUuid": cl.zone})
	if err != nil {
		t.Fatal(err)
	}
	if ps, err = client.CreateAndWait[storage.PrimaryStorageVO](ctx, clients[1], "clusters/"+cl.cluster+"/primary-storage/"+ps.UUID, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	size := ps.TotalCapacity / 150

	const total = 200
	vols := make([]volume.VolumeVO, total)
	errs := make([]error, total)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				vols[i], errs[i] = client.CreateAndWait[volume.VolumeVO](ctx, clients[i%2], "volumes/data",
					map[string]any{"name": fmt.Sprintf("race-%d", i), "diskSize": size})
			}
		}()
	}
	wg.Wait()
	ok, full := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
			if _, serr := os.Stat(filepath.Join(shared, vols[i].InstallPath)); serr != nil {
				t.Errorf("volume %s has no file: %v", vols[i].UUID, serr)
			}
		case errcode.Has(err, errcode.CapacityExhausted):
			full++
		default:
			t.Errorf("create %d: %v", i, err)
		}
	}
	if ok != 150 || full != 50 {
		t.Errorf("%d volumes created, %d refused for capacity; want 150 and 50", ok, full)
	}

	gdb, err := db.Open(context.Background(), e.dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(gdb)
	drift, err := storage.CapacityDrift(ctx, gdb)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range drift {
		t.Errorf("capacity drift: %s", d)
	}
	var after storage.PrimaryStorageVO
	if err := gdb.Take(&after, "uuid = ?", ps.UUID).Error; err != nil {
		t.Fatal(err)
	}
	if after.AvailableCapacity < 0 || after.AvailableCapacity != ps.TotalCapacity-150*size {
		t.Errorf("available %d, want %d (total %d - 150 x %d)", after.AvailableCapacity, ps.TotalCapacity-150*size, ps.TotalCapacity, size)
	}
	var rows int64
	gdb.Model(&volume.VolumeVO{}).Count(&rows)
	if rows != 150 {
		t.Errorf("%d volume rows, want 150 (a refused create leaves none)", rows)
	}
}

// TestClusterVolumeCreatesSurviveKill: three nodes, volume creates in
// flight on a slow disk, and kill -9 in the middle of the node that owns
// the host (every storage command goes through it, so every create in
// flight fails and rolls back while the ring moves): afterwards no volume is left Creating, every Ready volume
// has its file and every file a Ready volume, and the storage's capacity
// is exactly what the volumes reserve.
func TestClusterVolumeCreatesSurviveKill(t *testing.T) {
	e := newClusterEnv(t)
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret", "MPLANE_HOST_PING_INTERVAL=1s"}
	servers := []*server{e.startServer("A"), e.startServer("B"), e.startServer("C")}
	converged(t, 30*time.Second, servers...)
	dir, shared := t.TempDir(), t.TempDir()
	const url = "/e2e/shared"
	ag := startAgent(t, "agent1", freePort(t), filepath.Join(dir, "a1.json"), "--storage", url+"="+shared, "--storage-latency", "300ms")
	var clients []*client.Client
	for _, s := range servers {
		clients = append(clients, login(t, s.url, "e2e-secret"))
	}
	cl := setupCloud(t, clients[0], 1, 512<<20, withoutLocalStorage)
	h := addHost(t, clients[0], cl, "host1", ag.port)
	// The victim owns the host; the creates go through the other two.
	owner := probeVia(t, clientBus(t, e), servers[0].uuid, h.UUID).NodeUUID
	var victim *server
	var live []*client.Client
	for i, s := range servers {
		if s.uuid == owner {
			victim = s
		} else {
			live = append(live, clients[i])
		}
	}
	if victim == nil {
		t.Fatalf("host owner %s is not one of the servers", owner)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ps, err := client.CreateAndWait[storage.PrimaryStorageVO](ctx, clients[0], "primary-storage/smp", map[string]any{"name": "smp", "url": url, "zoneUuid": cl.zone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = client.CreateAndWait[storage.PrimaryStorageVO](ctx, clients[0], "clusters/"+cl.cluster+"/primary-storage/"+ps.UUID, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	gdb, err := db.Open(context.Background(), e.dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(gdb)

	const total = 60
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 12; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				// Through the two nodes that live: the outcome of each
				// create is checked in the database, not here.
				cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
				_, _ = client.CreateAndWait[volume.VolumeVO](cctx, live[i%2], "volumes/data", map[string]any{"name": fmt.Sprintf("k-%d", i), "diskSize": 1 << 20})
				ccancel()
			}
		}()
	}
	// Kill the host's owner once some volumes exist and creates are making
	// their files.
	var rec flow.RecordVO
	testenv.Eventually(t, 60*time.Second, func() bool {
		var ready int64
		gdb.Model(&volume.VolumeVO{}).Where("status = ?", volume.StatusReady).Count(&ready)
		return ready >= 5 && gdb.Where("chain = ? AND step = ? AND state = ?", "create-volume", "place-and-create", string(flow.Running)).
			First(&rec).Error == nil
	}, "creates making their files")
	victim.kill()
	t.Logf("killed %s, the host's owner, while volume %s was in %s", victim.name, rec.Resource, rec.Step)
	wg.Wait()

	testenv.Eventually(t, 90*time.Second, func() bool {
		var n int64
		gdb.Model(&flow.RecordVO{}).Where("chain = ? AND state IN ?", "create-volume", []string{string(flow.Running), string(flow.RollingBack)}).Count(&n)
		return n == 0
	}, "every volume create finished or rolled back")
	var vols []volume.VolumeVO
	if err := gdb.Find(&vols).Error; err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, v := range vols {
		if v.Status != volume.StatusReady {
			t.Errorf("volume %s is %s", v.UUID, v.Status)
			continue
		}
		want[v.InstallPath] = true
	}
	got := map[string]bool{}
	_ = filepath.WalkDir(filepath.Join(shared, "dataVolumes"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(shared, p)
			got[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	for p := range got {
		if !want[p] {
			t.Errorf("orphan file %s", p)
		}
	}
	for p := range want {
		if !got[p] {
			t.Errorf("Ready volume without its file: %s", p)
		}
	}
	drift, err := storage.CapacityDrift(ctx, gdb)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range drift {
		t.Errorf("capacity drift: %s", d)
	}
	var reserved int64
	gdb.Model(&storage.StorageReservationVO{}).Where("primary_storage_uuid = ?", ps.UUID).Select("COALESCE(SUM(size),0)").Scan(&reserved)
	if reserved != int64(len(want))<<20 {
		t.Errorf("%d bytes reserved for %d volumes of 1 MiB", reserved, len(want))
	}
	t.Logf("%d of %d volumes created around the kill", len(want), total)
}
