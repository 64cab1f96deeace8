package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/db"
	"mplane/internal/testenv"
)

// TestReserveNeverOvercommits: 4 database handles (4 "nodes") race 200
// one-vCPU reservations on a host with 100 vCPUs: exactly 100 win, the
// available capacity ends at 0 and matches the reservations; releases are
// idempotent and give everything back.
func TestReserveNeverOvercommits(t *testing.T) {
	for _, backend := range testenv.Backends {
		t.Run(backend.Name, func(t *testing.T) {
			dsn := backend.DSN(t)
			var handles []*gorm.DB
			for i := 0; i < 4; i++ {
				gdb, err := db.Open(context.Background(), dsn, db.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = db.Close(gdb) })
				handles = append(handles, gdb)
			}
			if err := Migrate(context.Background(), handles[0]); err != nil {
				t.Fatal(err)
			}
			now := time.Now().UTC()
			h := HostVO{UUID: "h1", Name: "h1", ManagementIP: "10.0.0.1", AgentPort: 7070, HypervisorType: HypervisorKVM,
				State: StateEnabled, Status: StatusConnected, CPUNum: 100, TotalCPUCapacity: 100, AvailableCPUCapacity: 100,
				TotalMemoryCapacity: 100 << 30, AvailableMemoryCapacity: 100 << 30, CreateDate: now, LastOpDate: now}
			if err := handles[0].Create(&h).Error; err != nil {
				t.Fatal(err)
			}
			var won, lost atomic.Int64
			var wg sync.WaitGroup
			for i := 0; i < 200; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					err := Reserve(context.Background(), handles[i%4], "h1", fmt.Sprintf("vm-%d", i), 1, 1<<30)
					switch {
					case err == nil:
						won.Add(1)
					case errors.Is(err, ErrNoCapacity):
						lost.Add(1)
					default:
						t.Errorf("reserve %d: %v", i, err)
					}
				}(i)
			}
			wg.Wait()
			var got HostVO
			handles[0].First(&got, "uuid = ?", "h1")
			var reservations int64
			handles[0].Model(&ReservationVO{}).Count(&reservations)
			if won.Load() != 100 || lost.Load() != 100 || got.AvailableCPUCapacity != 0 || got.AvailableMemoryCapacity != 0 || reservations != 100 {
				t.Fatalf("won %d lost %d, available %d CPU %d memory, %d reservations; want 100/100, 0, 0, 100",
					won.Load(), lost.Load(), got.AvailableCPUCapacity, got.AvailableMemoryCapacity, reservations)
			}
			// Release everything twice: the second time changes nothing.
			for round := 0; round < 2; round++ {
				for i := 0; i < 200; i++ {
					if err := Release(context.Background(), handles[i%4], fmt.Sprintf("vm-%d", i)); err != nil {
						t.Fatal(err)
					}
				}
			}
			handles[0].First(&got, "uuid = ?", "h1")
			if got.AvailableCPUCapacity != 100 || got.AvailableMemoryCapacity != 100<<30 {
				t.Fatalf("after release: %d CPU %d memory available, want all back", got.AvailableCPUCapacity, got.AvailableMemoryCapacity)
			}
			// A Disconnected host takes no reservation.
			handles[0].Model(&HostVO{}).Where("uuid = ?", "h1").Update("status", StatusDisconnected)
			if err := Reserve(context.Background(), handles[1], "h1", "vm-x", 1, 1); !errors.Is(err, ErrNoCapacity) {
				t.Fatalf("reserve on a Disconnected host: %v, want ErrNoCapacity", err)
			}
		})
	}
}

// TestRecordConnectedKeepsReservations: a connect records the agent's
// capacity; a later one moves the available capacity by the change of the
// total and keeps what VMs reserved, also while reservations and releases
// run at the same time (the update is relative to the row, never a stale
// copy of it).
func TestRecordConnectedKeepsReservations(t *testing.T) {
	for _, backend := range testenv.Backends {
		t.Run(backend.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb, err := db.Open(ctx, backend.DSN(t), db.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close(gdb) })
			if err := Migrate(ctx, gdb); err != nil {
				t.Fatal(err)
			}
			now := time.Now().UTC()
			if err := gdb.Create(&HostVO{UUID: "h1", Name: "h1", ManagementIP: "10.0.0.1", AgentPort: 7070, HypervisorType: HypervisorKVM,
				State: StateEnabled, Status: StatusConnecting, CreateDate: now, LastOpDate: now}).Error; err != nil {
				t.Fatal(err)
			}
			s := &Service{db: gdb, log: slog.New(slog.DiscardHandler)}
			load := func() HostVO {
				t.Helper()
				var h HostVO
				if err := gdb.First(&h, "uuid = ?", "h1").Error; err != nil {
					t.Fatal(err)
				}
				return h
			}
			// First connect: what the agent has free (a VM it already runs).
			if err := s.recordConnected(ctx, "h1", protocol.CapacityRsp{CPUNum: 100, TotalMemory: 100 << 30, UsedCPU: 10, UsedMemory: 10 << 30}); err != nil {
				t.Fatal(err)
			}
			h := load()
			if h.Status != StatusConnected || h.CPUNum != 100 || h.TotalCPUCapacity != 100 || h.AvailableCPUCapacity != 90 ||
				h.TotalMemoryCapacity != 100<<30 || h.AvailableMemoryCapacity != 90<<30 {
				t.Fatalf("after the first connect: %+v", h)
			}
			// A reservation, then a connect to a grown host: the growth is
			// added, the reservation kept.
			if err := Reserve(ctx, gdb, "h1", "vm-0", 5, 5<<30); err != nil {
				t.Fatal(err)
			}
			if err := s.recordConnected(ctx, "h1", protocol.CapacityRsp{CPUNum: 200, TotalMemory: 200 << 30}); err != nil {
				t.Fatal(err)
			}
			if h := load(); h.TotalCPUCapacity != 200 || h.AvailableCPUCapacity != 185 || h.TotalMemoryCapacity != 200<<30 || h.AvailableMemoryCapacity != 185<<30 {
				t.Fatalf("after a connect to a grown host: %d/%d CPUs, %d/%d bytes; want 185/200 and 185/200 GiB",
					h.AvailableCPUCapacity, h.TotalCPUCapacity, h.AvailableMemoryCapacity, h.TotalMemoryCapacity)
			}
			if err := Release(ctx, gdb, "vm-0"); err != nil {
				t.Fatal(err)
			}

			// Reservations racing with connects: none is lost.
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < 25; i++ {
						if err := Reserve(ctx, gdb, "h1", fmt.Sprintf("vm-%d-%d", g, i), 1, 1<<30); err != nil {
							t.Errorf("reserve: %v", err)
						}
					}
				}(g)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					if err := s.recordConnected(ctx, "h1", protocol.CapacityRsp{CPUNum: 200, TotalMemory: 200 << 30}); err != nil {
						t.Errorf("record connected: %v", err)
					}
				}
			}()
			wg.Wait()
			if h := load(); h.AvailableCPUCapacity != 90 || h.AvailableMemoryCapacity != 90<<30 {
				t.Fatalf("after 100 reservations racing with connects: %d CPUs, %d bytes free; want 90 and 90 GiB (200 - 10 running - 100 reserved)",
					h.AvailableCPUCapacity, h.AvailableMemoryCapacity)
			}
		})
	}
}
