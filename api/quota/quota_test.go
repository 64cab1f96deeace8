package quota_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/api/quota"
	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
)

type vmRow struct {
	UUID string `gorm:"column:uuid;primaryKey;size:32"`
}

func (vmRow) TableName() string { return "vm_instances" }

func openDB(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	gdb, err := db.Open(context.Background(), dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	return gdb
}

func migrated(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	gdb := openDB(t, dsn)
	if err := quota.Migrate(context.Background(), gdb); err != nil {
		t.Fatal(err)
	}
	if err := gdb.AutoMigrate(&vmRow{}); err != nil {
		t.Fatal(err)
	}
	if err := gdb.Exec("CREATE TABLE IF NOT EXISTS api_jobs (uuid VARCHAR(64) PRIMARY KEY, state VARCHAR(16))").Error; err != nil {
		t.Fatal(err)
	}
	return gdb
}

const tenant = "7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e"

func vmUUID(i int) string { return fmt.Sprintf("%032x", i+1) }

// Two nodes (two connection pools on one database) reserve 100 VMs at once
// against a quota of 40: exactly 40 reservations hold.
func TestReserveIsAtomicAcrossNodes(t *testing.T) {
	for name, dsn := range map[string]string{"sqlite": testenv.SQLiteDSN(t), "mysql": testenv.MySQLDSN(t)} {
		t.Run(name, func(t *testing.T) {
			first := migrated(t, dsn)
			nodes := []*quota.Service{quota.New(first), quota.New(openDB(t, dsn))}
			if _, err := nodes[0].Set(context.Background(), tenant, quota.VMNum, 40); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			outcomes := map[string]int{}
			for i := 0; i < 100; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := nodes[i%2].Reserve(context.Background(), tenant, vmUUID(i), "vm_instances", "job-"+vmUUID(i),
						map[string]int64{quota.VMNum: 1, quota.VMCPUNum: 1})
					mu.Lock()
					defer mu.Unlock()
					outcomes[string(errcode.CodeOf(err))]++
					if err != nil && errcode.CodeOf(err) != errcode.QuotaExceeded {
						t.Errorf("reserve %d: %v", i, err)
					}
				}()
			}
			wg.Wait()
			if outcomes[""] != 40 || outcomes[string(errcode.QuotaExceeded)] != 60 {
				t.Fatalf("outcomes %v, want 40 reserved and 60 refused", outcomes)
			}
			u, err := nodes[1].Usages(context.Background(), tenant)
			if err != nil || u[0].Name != quota.VMNum || u[0].Used != 40 || u[0].Total != 40 || u[1].Used != 40 {
				t.Fatalf("usages %+v %v", u, err)
			}
		})
	}
}

func TestClaimsFollowTheResources(t *testing.T) {
	gdb := migrated(t, testenv.SQLiteDSN(t))
	s := quota.New(gdb)
	ctx := context.Background()
	if err := s.SetDefaults("vm.num=2,vm.cpuNum=8"); err != nil {
		t.Fatal(err)
	}
	reserve := func(i int, cpu int64) error {
		return s.Reserve(ctx, tenant, vmUUID(i), "vm_instances", "job-"+vmUUID(i), map[string]int64{quota.VMNum: 1, quota.VMCPUNum: cpu})
	}
	if err := reserve(0, 4); err != nil {
		t.Fatal(err)
	}
	if err := reserve(0, 4); err != nil {
		t.Fatalf("a retry of the same resource: %v", err)
	}
	err := reserve(1, 5)
	if errcode.CodeOf(err) != errcode.QuotaExceeded || errcode.From(err).Details !=
		"quota vm.cpuNum exceeded: the account uses 4 of 8 and this needs 5 more; free some, or ask an admin to raise it (updateQuota)" {
		t.Fatalf("past vm.cpuNum: %v", err)
	}
	if errcode.CodeOf(err).HTTPStatus() != 403 {
		t.Errorf("QuotaExceeded is HTTP %d, want 403", errcode.CodeOf(err).HTTPStatus())
	}
	if err := reserve(1, 4); err != nil {
		t.Fatal(err)
	}
	// VM 0 was created; VM 1's create failed (no row): settling its job
	// releases its claims, not VM 0's.
	if err := gdb.Create(&vmRow{UUID: vmUUID(0)}).Error; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := s.Settle(ctx, "job-"+vmUUID(i), vmUUID(i)); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := s.Usages(ctx, tenant)
	if u[0].Used != 1 || u[1].Used != 4 {
		t.Fatalf("usages after one create failed: %+v", u)
	}
	// VM 0 is deleted by a job of its own: settling it releases the rest.
	if err := gdb.Delete(&vmRow{UUID: vmUUID(0)}).Error; err != nil {
		t.Fatal(err)
	}
	if n, err := s.Settle(ctx, "delete-job", vmUUID(0)); err != nil || n != 2 {
		t.Fatalf("settle of the delete released %d (%v), want 2", n, err)
	}
	// A claim whose release was lost: the sweeper frees it once its job is
	// over, and keeps the claim of a create still processing.
	if err := reserve(2, 1); err != nil {
		t.Fatal(err)
	}
	if err := reserve(3, 1); err != nil {
		t.Fatal(err)
	}
	gdb.Exec("INSERT INTO api_jobs (uuid, state) VALUES (?, 'processing'), (?, 'failed')", "job-"+vmUUID(2), "job-"+vmUUID(3))
	if n, err := s.Sweep(ctx, time.Hour); err != nil || n != 2 {
		t.Fatalf("sweep released %d (%v), want VM 3's 2 claims", n, err)
	}
	u, _ = s.Usages(ctx, tenant)
	if u[0].Used != 1 {
		t.Fatalf("usages after the sweep: %+v, want the create in progress only", u)
	}
	if _, err := s.Set(ctx, tenant, "vm.gpus", 1); errcode.CodeOf(err) != errcode.InvalidArgument {
		t.Errorf("an unknown quota: %v", err)
	}
	if err := s.SetDefaults("vm.num=-1"); err == nil {
		t.Error("a negative default accepted")
	}
}

// A create whose job failed while its row still existed (its rollback had
// not ended) is released once the row is gone, by SettleFailed.
func TestSettleFailedReleasesLateRollbacks(t *testing.T) {
	gdb := migrated(t, testenv.SQLiteDSN(t))
	s := quota.New(gdb)
	ctx := context.Background()
	if err := s.Reserve(ctx, tenant, vmUUID(7), "vm_instances", "job-7", map[string]int64{quota.VMNum: 1}); err != nil {
		t.Fatal(err)
	}
	if err := gdb.Create(&vmRow{UUID: vmUUID(7)}).Error; err != nil {
		t.Fatal(err)
	}
	gdb.Exec("ALTER TABLE api_jobs ADD COLUMN updated_at DATETIME")
	gdb.Exec("INSERT INTO api_jobs (uuid, state, updated_at) VALUES ('job-7', 'failed', ?)", time.Now().UTC())
	if n, _ := s.Settle(ctx, "job-7", vmUUID(7)); n != 0 {
		t.Fatalf("settled %d while the row exists", n)
	}
	if err := gdb.Delete(&vmRow{UUID: vmUUID(7)}).Error; err != nil { // the rollback ends
		t.Fatal(err)
	}
	if n, err := s.SettleFailed(ctx, time.Hour); err != nil || n != 1 {
		t.Fatalf("SettleFailed released %d (%v), want 1", n, err)
	}
}
