package network

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/internal/testenv"
	"mplane/managementnode"
	"mplane/services/resource"
	"mplane/uid"
)

// TestVNIReconcile: VNIs held in the cluster's pool for VXLAN networks that
// do not exist — a create that died between the allocation and its row, a
// delete that died between the row and the release — are released once
// their allocation is older than the grace, each logged; a network's own
// VNI and a fresh allocation (a create writing its row) are kept. A run
// that finds nothing releases nothing, and the released VNIs are taken
// again.
func TestVNIReconcile(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			gdb, z := openL2(t, b.DSN(t))
			vnis := startVNIPool(t, gdb)
			pool := newPool(t, gdb, z, [2]int{100, 199})
			live, err := createVxlan(ctx, gdb, vnis, uid.New(), vxlanParams("live", pool.UUID, 0))
			if err != nil || *live.Vni != 100 {
				t.Fatalf("create: %+v, %v", live, err)
			}
			// A create that died after its allocation: no row.
			crashed := uid.New()
			if id, err := vnis.AllocateIn(ctx, vniSubmission(crashed), 100, 199, 0, crashed); err != nil || id != 101 {
				t.Fatalf("allocate for the crashed create: %d, %v", id, err)
			}
			// A delete that died after the row's delete.
			deleted, err := createVxlan(ctx, gdb, vnis, uid.New(), vxlanParams("deleted", pool.UUID, 0))
			if err != nil || *deleted.Vni != 102 {
				t.Fatalf("create: %+v, %v", deleted, err)
			}
			if err := gdb.Where("uuid = ?", deleted.UUID).Delete(&L2NetworkVO{}).Error; err != nil {
				t.Fatal(err)
			}
			// A create writing its row right now.
			fresh := uid.New()
			if id, err := vnis.AllocateIn(ctx, vniSubmission(fresh), 100, 199, 0, fresh); err != nil || id != 103 {
				t.Fatalf("allocate for the fresh create: %d, %v", id, err)
			}
			// The first two allocations are an hour old.
			age(t, gdb, 101, time.Hour)
			age(t, gdb, 102, time.Hour)

			var logs syncBuffer
			r, err := NewVNIReconciler(VNIReconcileOptions{DB: gdb, Pool: vnis, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			released, err := r.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := vnisOf(released); !slices.Equal(got, []int{101, 102}) || released[0].Holder != crashed || released[1].Holder != deleted.UUID {
				t.Fatalf("released %+v, want 101 of %s and 102 of %s", released, crashed, deleted.UUID)
			}
			for _, id := range []int{101, 102} {
				if h, held := vnis.Holder(id); held {
					t.Fatalf("vni %d still held by %s", id, h)
				}
			}
			for id, holder := range map[int]string{100: live.UUID, 103: fresh} {
				if h, _ := vnis.Holder(id); h != holder {
					t.Fatalf("vni %d held by %q, want %s", id, h, holder)
				}
			}
			for _, want := range []string{"released a leaked vni", "vni=101", "l2_network_uuid=" + crashed, "vni=102", "l2_network_uuid=" + deleted.UUID} {
				if !strings.Contains(logs.String(), want) {
					t.Fatalf("log %q does not say %q", logs.String(), want)
				}
			}
			if again, err := r.Reconcile(ctx); err != nil || len(again) != 0 {
				t.Fatalf("a second run: %+v, %v; want nothing", again, err)
			}
			// Past the grace, the fresh one goes too.
			later, err := NewVNIReconciler(VNIReconcileOptions{DB: gdb, Pool: vnis, Now: func() time.Time { return time.Now().Add(time.Hour) }})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := later.Reconcile(ctx); err != nil || !slices.Equal(vnisOf(got), []int{103}) {
				t.Fatalf("an hour later: %+v, %v; want 103", got, err)
			}
			// The released VNIs are free: the next creates take them.
			for _, want := range []int{101, 102} {
				n, err := createVxlan(ctx, gdb, vnis, uid.New(), vxlanParams("again", pool.UUID, 0))
				if err != nil || *n.Vni != want {
					t.Fatalf("create after the reconcile: %+v, %v; want vni %d", n, err, want)
				}
			}
			// The network's own VNI survives every run.
			if h, _ := vnis.Holder(100); h != live.UUID {
				t.Fatalf("vni 100 held by %q, want %s", h, live.UUID)
			}
			if err := deleteL2(ctx, gdb, vnis, resource.DeleteReq{UUID: live.UUID}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestVNIReconcilerRuns: Start runs the reconcile at once (on the node
// that owns the VNI pool only) and Stop, idempotent, ends it.
func TestVNIReconcilerRuns(t *testing.T) {
	ctx := context.Background()
	gdb, _ := openL2(t, testenv.SQLiteDSN(t))
	vnis := startVNIPool(t, gdb)
	leak := func() (int, string) {
		t.Helper()
		holder := uid.New()
		id, err := vnis.AllocateIn(ctx, vniSubmission(holder), MinVNI, MaxVNI, 0, holder)
		if err != nil {
			t.Fatal(err)
		}
		return id, holder
	}
	hour := func() time.Time { return time.Now().Add(time.Hour) }

	notMine, err := NewVNIReconciler(VNIReconcileOptions{DB: gdb, Pool: vnis, Owner: owner(false), Now: hour})
	if err != nil {
		t.Fatal(err)
	}
	id, holder := leak()
	notMine.runOnce(ctx)
	if h, _ := vnis.Holder(id); h != holder {
		t.Fatalf("a node that does not own the pool released vni %d", id)
	}

	mine, err := NewVNIReconciler(VNIReconcileOptions{DB: gdb, Pool: vnis, Owner: owner(true), Now: hour, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := mine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mine.Start(ctx); err == nil {
		t.Fatal("a second Start succeeded")
	}
	testenv.Eventually(t, 10*time.Second, func() bool { _, held := vnis.Holder(id); return !held }, "the run at Start releases vni %d", id)
	for i := 0; i < 2; i++ {
		if err := mine.Stop(ctx); err != nil {
			t.Fatalf("stop #%d: %v", i+1, err)
		}
	}
	if _, err := NewVNIReconciler(VNIReconcileOptions{DB: gdb}); err == nil {
		t.Fatal("a reconciler without a pool")
	}
}

type owner bool

func (o owner) IsMine(string) bool { return bool(o) }

// age makes the allocation of vni d older.
func age(t *testing.T, gdb *gorm.DB, vni int, d time.Duration) {
	t.Helper()
	var e managementnode.IDPoolEntryVO
	if err := gdb.Where("pool = ? AND id = ?", VNIPool, vni).Take(&e).Error; err != nil {
		t.Fatal(err)
	}
	if err := gdb.Model(&managementnode.OperationVO{}).Where("seq = ?", e.Seq).Update("created_at", time.Now().Add(-d)).Error; err != nil {
		t.Fatal(err)
	}
}

func vnisOf(ls []LeakedVNI) []int {
	out := make([]int, len(ls))
	for i, l := range ls {
		out[i] = l.VNI
	}
	return out
}

// syncBuffer is a bytes.Buffer a logger may write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
