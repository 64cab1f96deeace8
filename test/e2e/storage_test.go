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
	cl := setupCloud(t, clients[0], 1, 512<<20)
	addHost(t, clients[0], cl, "host1", ag.port)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ps, err := client.CreateAndWait[storage.PrimaryStorageVO](ctx, clients[0], "primary-storage/smp", map[string]any{"name": "smp", "url": url, "zoneUuid": cl.zone})
	if err != nil {
		t.Fatal(err)
	}
	if ps, err = client.CreateAndWait[storage.PrimaryStorageVO](ctx, clients[1], "clusters/"+cl.cluster+"/primary-storage/"+ps.UUID, nil); err != nil {
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
