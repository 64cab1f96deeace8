package storage

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"mplane/db"
	"mplane/internal/testenv"
)

// TestRecomputeLosesNothingUnderLoad: reservations, releases and resizes
// (one volume's, by several at once) on a LocalStorage's two hosts race the
// recomputes of its capacities (a host's directory measured again, its
// totals summed), on MariaDB at mplane's isolation level. No reservation is lost or counted twice: no drift
// afterwards.
func TestRecomputeLosesNothingUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gdb, err := db.Open(ctx, testenv.MySQLDSN(t), db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	if err := gdb.AutoMigrate(Models()...); err != nil {
		t.Fatal(err)
	}
	const ps, total = "ps-recompute", int64(1 << 40)
	hosts := []string{"host-a", "host-b"}
	now := time.Now().UTC()
	if err := gdb.Create(&PrimaryStorageVO{UUID: ps, Name: ps, ZoneUUID: "zone", URL: "/local", Type: TypeLocalStorage,
		State: StateEnabled, Status: StatusConnected, CreateDate: now, LastOpDate: now}).Error; err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if err := setMeasured(ctx, gdb, ps, h, total, total); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	const rounds = 150
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				owner := fmt.Sprintf("vol-%d-%d", w, i)
				if err := Reserve(ctx, gdb, owner, ps, hosts[i%2], int64(4096*(i+1))); err != nil {
					errs <- fmt.Errorf("reserve %s: %w", owner, err)
					return
				}
				if i%3 == 0 {
					if err := Release(ctx, gdb, owner); err != nil {
						errs <- fmt.Errorf("release %s: %w", owner, err)
						return
					}
				}
			}
		}()
	}
	// One volume grown and shrunk by several at once.
	if err := Reserve(ctx, gdb, "vol-shared", ps, hosts[0], 4096); err != nil {
		t.Fatal(err)
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds * 2 {
				if err := Resize(ctx, gdb, "vol-shared", int64(4096*(1+(w*rounds+i)%7))); err != nil {
					errs <- fmt.Errorf("resize: %w", err)
					return
				}
			}
		}()
	}
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds / 2 {
				if err := setMeasured(ctx, gdb, ps, h, total, total-int64(i)); err != nil {
					errs <- fmt.Errorf("measure %s: %w", h, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	drift, err := CapacityDrift(ctx, gdb)
	if err != nil {
		t.Fatal(err)
	}
	if len(drift) > 0 {
		t.Fatalf("capacity drift after the race: %v", drift)
	}
}
