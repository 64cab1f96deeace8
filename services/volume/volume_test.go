package volume_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	agent "mplane/agents/storage"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/storage"
	"mplane/services/volume"
)

const psURL = "/t/local"

type cloud struct {
	st    *servertest.Stack
	ctx   context.Context
	ps    storage.PrimaryStorageVO
	dirs  map[string]string // host UUID -> its directory
	hosts []*servertest.Host
}

type hostOpt struct {
	raw  bool
	wrap func(http.Handler) http.Handler
}

// newCloud starts a stack whose hosts each have a local directory, and a
// LocalStorage attached to the default cluster.
func newCloud(t *testing.T, hosts ...hostOpt) *cloud {
	t.Helper()
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	c := &cloud{st: st, ctx: ctx, dirs: map[string]string{}}
	for _, o := range hosts {
		dir := t.TempDir()
		ko := kvm.Options{Storage: map[string]string{psURL: dir}}
		if o.raw {
			ko.StorageQemuImg = agent.QemuImgNone
		}
		h := st.AddHost(t, servertest.AgentOptions{Agent: ko, Wrap: o.wrap})
		c.dirs[h.UUID] = dir
		c.hosts = append(c.hosts, h)
	}
	ps, err := client.CreateAndWait[storage.PrimaryStorageVO](ctx, st.Client, "primary-storage/local-storage",
		map[string]any{"name": "local", "url": psURL, "zoneUuid": st.Defaults["zone"]})
	if err != nil {
		t.Fatal(err)
	}
	if c.ps, err = client.CreateAndWait[storage.PrimaryStorageVO](ctx, st.Client, "clusters/"+st.Defaults["cluster"]+"/primary-storage/"+ps.UUID, nil); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cloud) create(path string, params map[string]any) (volume.VolumeVO, error) {
	return client.CreateAndWait[volume.VolumeVO](c.ctx, c.st.Client, path, params)
}

func (c *cloud) file(v volume.VolumeVO) string {
	return filepath.Join(c.dirs[v.HostUUID], v.InstallPath)
}

func (c *cloud) checkCapacity(t *testing.T) {
	t.Helper()
	d, err := storage.CapacityDrift(c.ctx, c.st.DB())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range d {
		t.Errorf("capacity drift: %s", x)
	}
}

func (c *cloud) reserved(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := c.st.DB().Model(&storage.StorageReservationVO{}).Select("COALESCE(SUM(size),0)").Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func (c *cloud) wait(j *client.Job, err error) error {
	if err != nil {
		return err
	}
	_, err = j.Wait(c.ctx, nil)
	return err
}

// TestVolumeLifecycle: a blank volume on real files through every
// operation: clone, snapshot, revert (content checked), a volume from the
// snapshot, resize, delete, recover, expunge; capacity exact throughout
// and back to zero at the end.
func TestVolumeLifecycle(t *testing.T) {
	for _, raw := range []bool{true, false} {
		name := "qcow2"
		if raw {
			name = "raw"
		}
		t.Run(name, func(t *testing.T) {
			c := newCloud(t, hostOpt{raw: raw})
			v, err := c.create("volumes/data", map[string]any{"name": "data-1", "diskSize": 8 << 20})
			if err != nil {
				t.Fatal(err)
			}
			wantFmt := protocol.FormatQcow2
			if raw {
				wantFmt = protocol.FormatRaw
			}
			if v.Status != volume.StatusReady || v.Size != 8<<20 || v.Format != wantFmt || v.PrimaryStorageUUID != c.ps.UUID || v.HostUUID != c.hosts[0].UUID {
				t.Fatalf("created volume %+v", v)
			}
			if _, err := os.Stat(c.file(v)); err != nil {
				t.Fatalf("volume file: %v", err)
			}
			if got := c.reserved(t); got != 8<<20 {
				t.Errorf("reserved %d, want %d", got, 8<<20)
			}
			c.checkCapacity(t)

			clone, err := c.create("volumes/data/from/volumes/"+v.UUID, map[string]any{"name": "clone"})
			if err != nil {
				t.Fatal(err)
			}
			if clone.HostUUID != v.HostUUID || clone.Size != v.Size {
				t.Errorf("clone %+v of %+v", clone, v)
			}
			if _, err := os.Stat(c.file(clone)); err != nil {
				t.Fatalf("clone file: %v", err)
			}

			if raw {
				// Content: write, snapshot, overwrite, revert, read back.
				write(t, c.file(v), 'A')
			}
			snap, err := client.CreateAndWait[volume.VolumeSnapshotVO](c.ctx, c.st.Client, "volumes/"+v.UUID+"/volume-snapshots", map[string]any{"name": "s1"})
			if err != nil {
				t.Fatal(err)
			}
			if snap.Status != volume.StatusReady || snap.VolumeUUID != v.UUID || snap.PrimaryStorageInstallPath == "" || !snap.Latest {
				t.Fatalf("snapshot %+v", snap)
			}
			if raw {
				write(t, c.file(v), 'B')
			}
			if _, err := client.ActionAndWait[volume.VolumeVO](c.ctx, c.st.Client, "volume-snapshots", snap.UUID, "revertVolumeFromSnapshot", nil); err != nil {
				t.Fatal(err)
			}
			if raw {
				expect(t, c.file(v), 'A')
			}
			fromSnap, err := c.create("volumes/data/from/volume-snapshots/"+snap.UUID, map[string]any{"name": "from-snap"})
			if err != nil {
				t.Fatal(err)
			}
			if fromSnap.Size != v.Size || fromSnap.HostUUID != v.HostUUID {
				t.Errorf("volume from a snapshot %+v", fromSnap)
			}
			if raw {
				expect(t, c.file(fromSnap), 'A')
			}
			c.expunge(t, fromSnap.UUID)
			c.checkCapacity(t)

			grown, err := client.ActionAndWait[volume.VolumeVO](c.ctx, c.st.Client, "volumes", v.UUID, "resizeDataVolume", map[string]any{"size": 16 << 20})
			if err != nil || grown.Size != 16<<20 {
				t.Fatalf("resize: %+v, %v", grown, err)
			}
			if raw {
				if fi, err := os.Stat(c.file(v)); err != nil || fi.Size() != 16<<20 {
					t.Errorf("resized file: %v, %v", fi, err)
				}
			}
			_, err = client.ActionAndWait[volume.VolumeVO](c.ctx, c.st.Client, "volumes", v.UUID, "resizeDataVolume", map[string]any{"size": 1 << 20})
			if !errcode.Has(err, errcode.InvalidArgument) {
				t.Errorf("shrink: %v, want %s", err, errcode.InvalidArgument)
			}
			c.checkCapacity(t)

			// Delete keeps the file; expunge needs a delete first.
			_, err = client.ActionAndWait[struct{}](c.ctx, c.st.Client, "volumes", clone.UUID, "expungeDataVolume", nil)
			if !errcode.Has(err, errcode.InvalidState) {
				t.Errorf("expunge a Ready volume: %v, want %s", err, errcode.InvalidState)
			}
			if err := c.wait(c.st.Client.Delete(c.ctx, "volumes", clone.UUID, "")); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(c.file(clone)); err != nil {
				t.Errorf("a Deleted volume's file is gone: %v", err)
			}
			if r, err := client.ActionAndWait[volume.VolumeVO](c.ctx, c.st.Client, "volumes", clone.UUID, "recoverDataVolume", nil); err != nil || r.Status != volume.StatusReady {
				t.Errorf("recover: %+v, %v", r, err)
			}
			for _, u := range []string{clone.UUID, v.UUID} {
				c.expunge(t, u)
			}
			for _, f := range []string{c.file(v), c.file(clone)} {
				if _, err := os.Stat(f); !os.IsNotExist(err) {
					t.Errorf("file %s after the expunge: %v", f, err)
				}
			}
			if got := c.reserved(t); got != 0 {
				t.Errorf("reserved %d after expunging everything, want 0", got)
			}
			var nsnap int64
			c.st.DB().Model(&volume.VolumeSnapshotVO{}).Count(&nsnap)
			if nsnap != 0 {
				t.Errorf("%d snapshots left", nsnap)
			}
			c.checkCapacity(t)
			ps, _ := storage.LoadPrimary(c.ctx, c.st.DB(), c.ps.UUID)
			if ps.AvailableCapacity != c.ps.AvailableCapacity {
				t.Errorf("available %d at the end, %d at the start", ps.AvailableCapacity, c.ps.AvailableCapacity)
			}
		})
	}
}

func (c *cloud) expunge(t *testing.T, uuid string) {
	t.Helper()
	if err := c.wait(c.st.Client.Delete(c.ctx, "volumes", uuid, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ActionAndWait[struct{}](c.ctx, c.st.Client, "volumes", uuid, "expungeDataVolume", nil); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path string, b byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{b}, 4096), 1<<20); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, path string, b byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, 4096)
	if _, err := f.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{b}, 4096)) {
		t.Errorf("%s holds %q..., want %q", path, got[:8], b)
	}
}

// failCreates makes a host's agent refuse every volume create.
func failCreates(n *atomic.Int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == protocol.PathVolumeCreateEmpty {
				n.Add(1)
				http.Error(w, "injected: disk controller failure", http.StatusInternalServerError)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// TestReschedule: a storage whose agent fails creates makes the create land
// on the next candidate; with every candidate failing, the job fails
// naming every attempt, with no capacity and no file left.
func TestReschedule(t *testing.T) {
	var failed atomic.Int64
	c := newCloud(t, hostOpt{wrap: failCreates(&failed)}, hostOpt{})
	bad, good := c.hosts[0].UUID, c.hosts[1].UUID
	for i := range 4 {
		v, err := c.create("volumes/data", map[string]any{"name": "v", "diskSize": 4 << 20})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if v.HostUUID != good {
			t.Fatalf("volume on host %s, want the working host %s", v.HostUUID, good)
		}
	}
	if failed.Load() == 0 {
		t.Errorf("the failing host was never tried (its directory has the most room after the first create)")
	}
	c.checkCapacity(t)

	// Pinned to the failing host: every attempt fails.
	before := failed.Load()
	_, err := c.create("volumes/data", map[string]any{"name": "v", "diskSize": 4 << 20, "hostUuid": bad})
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), "injected: disk controller failure") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("create on the failing host: %v; want an agent error naming the host and the failure", err)
	}
	if failed.Load() != before+1 {
		t.Errorf("%d attempts on the one candidate, want 1", failed.Load()-before)
	}
	entries, _ := os.ReadDir(filepath.Join(c.dirs[bad], "dataVolumes"))
	for _, e := range entries {
		files, _ := os.ReadDir(filepath.Join(c.dirs[bad], "dataVolumes", e.Name()))
		if len(files) > 0 {
			t.Errorf("file left on the failing host: %s/%s", e.Name(), files[0].Name())
		}
	}
	if got := c.reserved(t); got != 4*(4<<20) {
		t.Errorf("reserved %d, want the 4 good volumes' %d", got, 4*(4<<20))
	}
	var n int64
	c.st.DB().Model(&volume.VolumeVO{}).Count(&n)
	if n != 4 {
		t.Errorf("%d volume rows, want 4", n)
	}
	c.checkCapacity(t)
}

// TestCapacityRace: 60 creates at once against a storage with room for 40:
// exactly 40 succeed, the rest fail with a capacity error.
func TestCapacityRace(t *testing.T) {
	c := newCloud(t, hostOpt{raw: true})
	size := c.ps.TotalCapacity / 40
	var ok, full atomic.Int64
	var wg sync.WaitGroup
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.create("volumes/data", map[string]any{"name": "race", "diskSize": size})
			switch {
			case err == nil:
				ok.Add(1)
			case errcode.Has(err, errcode.CapacityExhausted):
				full.Add(1)
			default:
				t.Errorf("create: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 40 || full.Load() != 20 {
		t.Errorf("%d created, %d refused for capacity; want 40 and 20", ok.Load(), full.Load())
	}
	c.checkCapacity(t)
}

// TestVolumeBadInput: malformed or impossible requests get 4xx with a code.
func TestVolumeBadInput(t *testing.T) {
	c := newCloud(t, hostOpt{raw: true})
	for _, tc := range []struct {
		name, path string
		params     map[string]any
	}{
		{"negative size", "volumes/data", map[string]any{"name": "x", "diskSize": -1}},
		{"no size", "volumes/data", map[string]any{"name": "x"}},
		{"size and offering", "volumes/data", map[string]any{"name": "x", "diskSize": 1, "diskOfferingUuid": "0123456789abcdef0123456789abcdef"}},
		{"unknown offering", "volumes/data", map[string]any{"name": "x", "diskOfferingUuid": "0123456789abcdef0123456789abcdef"}},
		{"unknown storage", "volumes/data", map[string]any{"name": "x", "diskSize": 1 << 20, "primaryStorageUuid": "0123456789abcdef0123456789abcdef"}},
		{"unknown host", "volumes/data", map[string]any{"name": "x", "diskSize": 1 << 20, "hostUuid": "0123456789abcdef0123456789abcdef"}},
		{"no name", "volumes/data", map[string]any{"diskSize": 1 << 20}},
		{"unknown snapshot", "volumes/data/from/volume-snapshots/0123456789abcdef0123456789abcdef", map[string]any{"name": "x"}},
		{"unknown volume", "volumes/data/from/volumes/0123456789abcdef0123456789abcdef", map[string]any{"name": "x"}},
		{"snapshot of unknown volume", "volumes/0123456789abcdef0123456789abcdef/volume-snapshots", map[string]any{"name": "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.st.Client.Create(c.ctx, tc.path, tc.params)
			if s := client.StatusCode(err); s < 400 || s >= 500 {
				t.Errorf("%v, want a 4xx", err)
			}
		})
	}
	// Bigger than any storage: a capacity error naming the filters.
	_, err := c.create("volumes/data", map[string]any{"name": "huge", "diskSize": c.ps.TotalCapacity + 1})
	if !errcode.Has(err, errcode.CapacityExhausted) || !strings.Contains(err.Error(), "bytes available: 1 -> 0") {
		t.Errorf("too big: %v, want %s naming the capacity filter", err, errcode.CapacityExhausted)
	}
	v, err := c.create("volumes/data", map[string]any{"name": "v", "diskSize": 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.ActionAndWait[volume.VolumeVO](c.ctx, c.st.Client, "volumes", v.UUID, "resizeDataVolume", map[string]any{"size": -5})
	if client.StatusCode(err) != 400 {
		t.Errorf("negative resize: %v, want 400", err)
	}
	_, err = client.ActionAndWait[volume.VolumeVO](c.ctx, c.st.Client, "volumes", v.UUID, "resizeDataVolume", map[string]any{"size": c.ps.TotalCapacity * 2})
	if !errcode.Has(err, errcode.CapacityExhausted) {
		t.Errorf("resize past the capacity: %v, want %s", err, errcode.CapacityExhausted)
	}
	c.checkCapacity(t)
}
