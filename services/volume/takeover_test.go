package volume_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"mplane/flow"
	"mplane/internal/testenv"
	"mplane/services/storage"
	"mplane/services/volume"
	"mplane/uid"
)

// TestTakeover: a create-volume flow whose owner died after reserving and
// making the file is rolled back by the node that owns the volume now:
// no row, no reservation, no file.
func TestTakeover(t *testing.T) {
	c := newCloud(t, hostOpt{raw: true})
	db := c.st.DB()
	h := c.hosts[0].UUID
	now := time.Now().UTC()
	v := volume.VolumeVO{UUID: uid.New(), Name: "half", Type: volume.TypeData, Size: 4 << 20, State: volume.StateEnabled,
		Status: volume.StatusCreating, CreateDate: now, LastOpDate: now}
	v.InstallPath = volume.InstallPath(volume.TypeData, v.UUID)
	if err := db.Create(&v).Error; err != nil {
		t.Fatal(err)
	}
	if err := storage.Reserve(c.ctx, db, v.UUID, c.ps.UUID, h, v.Size); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(c.dirs[h], filepath.FromSlash(v.InstallPath))
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	dead := uid.New()
	data, _ := json.Marshal(map[string]any{"volume": v, "req": map[string]any{"uuid": v.UUID, "source": volume.SourceBlank, "size": v.Size}})
	rec := flow.Record{ID: uid.New(), Chain: "create-volume", Owner: dead, Resource: v.UUID, State: flow.Running, Applied: 2, Total: 3,
		Step: "place-and-create", Data: data}
	recorder := flow.NewGormRecorder(db)
	if err := recorder.Save(c.ctx, rec); err != nil {
		t.Fatal(err)
	}
	c.st.AddDeadNode(t, dead)
	testenv.Eventually(t, time.Minute, func() bool {
		r, err := recorder.Get(c.ctx, rec.ID)
		return err == nil && r.State == flow.RolledBack
	}, "the abandoned volume create is rolled back")
	if _, err := volume.Load(c.ctx, db, v.UUID); err == nil {
		t.Error("the volume row is left")
	}
	if _, found, _ := storage.Reservation(c.ctx, db, v.UUID); found {
		t.Error("the reservation is left")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the file is left: %v", err)
	}
	c.checkCapacity(t)
}

// TestTakeoverOfASnapshot: a node dies while taking a snapshot, after its
// row and reservation were written and the agent made the file. The
// volume's new owner rolls it back: no snapshot row, reservation or file
// is left, and the volume's capacity is as before.
func TestTakeoverOfASnapshot(t *testing.T) {
	c := newCloud(t, hostOpt{raw: true})
	db := c.st.DB()
	h := c.hosts[0].UUID
	v, err := c.create("volumes/data", map[string]any{"name": "snapped", "diskSize": 4 << 20, "hostUuid": h})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	snap := volume.VolumeSnapshotVO{UUID: uid.New(), Name: "half", VolumeUUID: v.UUID, VolumeType: v.Type, PrimaryStorageUUID: v.PrimaryStorageUUID,
		TreeUUID: v.UUID, Size: v.Size, State: volume.StateEnabled, Status: volume.StatusCreating, CreateDate: now, LastOpDate: now}
	if err := storage.Reserve(c.ctx, db, snap.UUID, v.PrimaryStorageUUID, h, v.Size); err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&snap).Error; err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(c.dirs[h], "snapshots", "vol-"+v.UUID, snap.UUID)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	dead := uid.New()
	data, _ := json.Marshal(map[string]any{"volume": v, "snapshot": snap})
	rec := flow.Record{ID: uid.New(), Chain: "create-volume-snapshot", Owner: dead, Resource: v.UUID, State: flow.Running, Applied: 2, Total: 3,
		Step: "take-snapshot", Data: data}
	recorder := flow.NewGormRecorder(db)
	if err := recorder.Save(c.ctx, rec); err != nil {
		t.Fatal(err)
	}
	c.st.AddDeadNode(t, dead)
	testenv.Eventually(t, time.Minute, func() bool {
		r, err := recorder.Get(c.ctx, rec.ID)
		return err == nil && r.State == flow.RolledBack
	}, "the abandoned snapshot is rolled back")
	if n := c.countRows(t, &volume.VolumeSnapshotVO{}, "uuid = ?", snap.UUID); n != 0 {
		t.Error("the snapshot row is left")
	}
	if _, found, _ := storage.Reservation(c.ctx, db, snap.UUID); found {
		t.Error("the snapshot's reservation is left")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the snapshot file is left: %v", err)
	}
	if got := c.getVolume(t, v.UUID); got.Status != volume.StatusReady {
		t.Errorf("the volume is %s, want Ready", got.Status)
	}
	c.checkCapacity(t)
}
