package volume_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/image"
	"mplane/services/storage"
	"mplane/services/vm"
	"mplane/services/volume"
)

// createVM creates a VM on host (the default offering, image and L3) with
// extra params, and waits for it.
func (c *cloud) createVM(t *testing.T, name, hostUUID string, extra map[string]any) (vm.VmInstanceVO, error) {
	t.Helper()
	p := map[string]any{"name": name, "instanceOfferingUuid": c.st.Defaults["offering"], "imageUuid": c.st.Defaults["image"],
		"l3NetworkUuids": []string{c.st.Defaults["l3"]}, "hostUuid": hostUUID}
	for k, v := range extra {
		p[k] = v
	}
	return client.CreateAndWait[vm.VmInstanceVO](c.ctx, c.st.Client, "vm-instances", p)
}

func (c *cloud) vmAction(t *testing.T, uuid, action string) vm.VmInstanceVO {
	t.Helper()
	v, err := client.ActionAndWait[vm.VmInstanceVO](c.ctx, c.st.Client, "vm-instances", uuid, action, map[string]any{})
	if err != nil {
		t.Fatalf("%s VM %s: %v", action, uuid, err)
	}
	return v
}

func (c *cloud) getVM(t *testing.T, uuid string) vm.VmInstanceVO {
	t.Helper()
	raw, err := c.st.Client.Get(c.ctx, "vm-instances", uuid)
	if err != nil {
		t.Fatal(err)
	}
	var v vm.VmInstanceVO
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (c *cloud) getVolume(t *testing.T, uuid string) volume.VolumeVO {
	t.Helper()
	raw, err := c.st.Client.Get(c.ctx, "volumes", uuid)
	if err != nil {
		t.Fatal(err)
	}
	var v volume.VolumeVO
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// agentVolumes are the volume UUIDs the VM has on its host's agent, in
// the agent's order.
func (c *cloud) agentVolumes(t *testing.T, hostUUID, vmUUID string) []string {
	t.Helper()
	for _, h := range c.hosts {
		if h.UUID != hostUUID {
			continue
		}
		for _, v := range h.Agent.VMs() {
			if v.UUID == vmUUID {
				var out []string
				for _, vol := range v.Volumes {
					if want := path.Join(psURL, "rootVolumes"); vol.Type == volume.TypeRoot && !strings.HasPrefix(vol.InstallPath, want) {
						t.Errorf("root volume %s at %s on the agent, want under %s", vol.VolumeUUID, vol.InstallPath, want)
					}
					out = append(out, vol.VolumeUUID)
				}
				return out
			}
		}
	}
	return nil
}

func (c *cloud) attach(volUUID, vmUUID string) (volume.VolumeVO, error) {
	return client.CreateAndWait[volume.VolumeVO](c.ctx, c.st.Client, "volumes/"+volUUID+"/vm-instances/"+vmUUID, map[string]any{})
}

func (c *cloud) detach(volUUID string) error {
	return c.wait(c.st.Client.Delete(c.ctx, "volumes/"+volUUID, "vm-instances", ""))
}

func (c *cloud) countRows(t *testing.T, model any, where string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := c.st.DB().Model(model).Where(where, args...).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// cacheReserved is what the image caches hold.
func (c *cloud) cacheReserved(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := c.st.DB().Model(&storage.ImageCacheVO{}).Select("COALESCE(SUM(actual_size),0)").Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// TestVMRootVolume: a VM gets a root volume made from its image on the
// primary storage of its host (a qcow2 linked clone of the cached image,
// or a full copy without qemu-img), started with the VM; destroy keeps it,
// expunge removes the file, the row and the capacity.
func TestVMRootVolume(t *testing.T) {
	for _, raw := range []bool{false, true} {
		name := "qcow2"
		if raw {
			name = "raw"
		}
		t.Run(name, func(t *testing.T) {
			c := newCloud(t, hostOpt{raw: raw})
			h := c.hosts[0].UUID
			v, err := c.createVM(t, "with-root", h, nil)
			if err != nil {
				t.Fatal(err)
			}
			if v.RootVolumeUUID == "" || len(v.AllVolumes) != 1 {
				t.Fatalf("VM %s: root volume %q, volumes %+v; want one root volume", v.UUID, v.RootVolumeUUID, v.AllVolumes)
			}
			root := v.AllVolumes[0]
			if root.UUID != v.RootVolumeUUID || root.Type != volume.TypeRoot || root.Status != volume.StatusReady || root.VMInstanceUUID != v.UUID ||
				root.DeviceID == nil || *root.DeviceID != 0 || root.PrimaryStorageUUID != c.ps.UUID || root.HostUUID != h || root.RootImageUUID != c.st.Defaults["image"] {
				t.Fatalf("root volume %+v", root)
			}
			if got := c.getVM(t, v.UUID); got.RootVolumeUUID != root.UUID || len(got.AllVolumes) != 1 || got.AllVolumes[0].Status != volume.StatusReady {
				t.Fatalf("queried VM: root %q, volumes %+v", got.RootVolumeUUID, got.AllVolumes)
			}
			file := c.file(root)
			if _, err := os.Stat(file); err != nil {
				t.Fatalf("root volume file: %v", err)
			}
			if raw {
				// Without qemu-img: a full copy of the cached image.
				var cache storage.ImageCacheVO
				if err := c.st.DB().Take(&cache, "image_uuid = ?", c.st.Defaults["image"]).Error; err != nil {
					t.Fatal(err)
				}
				got, err1 := os.ReadFile(file)
				want, err2 := os.ReadFile(filepath.Join(c.dirs[h], cache.InstallPath))
				if err1 != nil || err2 != nil || string(got) != string(want) || root.Format != cache.Format {
					t.Errorf("root volume %s (%s): not a copy of the cached image (%s) (%v, %v)", file, root.Format, cache.Format, err1, err2)
				}
			} else {
				out, err := exec.Command("qemu-img", "info", "--output", "json", file).Output()
				if err != nil {
					t.Fatal(err)
				}
				var info struct {
					Format  string `json:"format"`
					Backing string `json:"backing-filename"`
				}
				if err := json.Unmarshal(out, &info); err != nil {
					t.Fatal(err)
				}
				if info.Format != "qcow2" || !strings.Contains(info.Backing, "imagecache/"+c.st.Defaults["image"]) {
					t.Errorf("root volume file %s: %+v, want a qcow2 whose backing file is the cached image", file, info)
				}
			}
			if got := c.agentVolumes(t, h, v.UUID); len(got) != 1 || got[0] != root.UUID {
				t.Errorf("the agent started the VM with volumes %v, want [%s]", got, root.UUID)
			}
			if got, want := c.reserved(t), root.Size+c.cacheReserved(t); got != want {
				t.Errorf("reserved %d, want the root volume's %d and the cache's", got, root.Size)
			}
			c.checkCapacity(t)

			// A second VM reuses the cached image.
			v2, err := c.createVM(t, "second", h, nil)
			if err != nil {
				t.Fatal(err)
			}
			if n := c.countRows(t, &storage.ImageCacheVO{}, "image_uuid = ?", c.st.Defaults["image"]); n != 1 {
				t.Errorf("%d caches of the image, want 1", n)
			}

			c.vmAction(t, v.UUID, "destroyVmInstance")
			if _, err := os.Stat(file); err != nil {
				t.Errorf("destroy removed the root volume: %v", err)
			}
			if err := c.wait(c.st.Client.Action(c.ctx, "vm-instances", v.UUID, "expungeVmInstance", map[string]any{})); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(file); !os.IsNotExist(err) {
				t.Errorf("expunge left the root volume file (%v)", err)
			}
			if n := c.countRows(t, &volume.VolumeVO{}, "uuid = ?", root.UUID); n != 0 {
				t.Errorf("expunge left the root volume's row")
			}
			if got, want := c.reserved(t), v2.AllVolumes[0].Size+c.cacheReserved(t); got != want {
				t.Errorf("after expunge: reserved %d, want %d (the second VM's root and the cache)", got, want)
			}
			c.checkCapacity(t)
		})
	}
}

// TestVMDataVolumes: data volumes made with the VM (dataDiskOfferingUuids)
// and attached afterwards reach the hypervisor, at the next device; a
// stopped VM gets them at its start; detach takes them off; an attached
// volume is deleted only with Enforcing; a volume on another host's local
// storage, a root volume or an unknown VM are refused with 4xx codes.
func TestVMDataVolumes(t *testing.T) {
	c := newCloud(t, hostOpt{}, hostOpt{})
	h, other := c.hosts[0].UUID, c.hosts[1].UUID
	off, err := client.CreateAndWait[struct{ UUID string }](c.ctx, c.st.Client, "disk-offerings", map[string]any{"name": "1M", "diskSize": 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.createVM(t, "with-data", h, map[string]any{"dataDiskOfferingUuids": []string{off.UUID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.AllVolumes) != 2 || v.AllVolumes[1].Type != volume.TypeData || v.AllVolumes[1].DeviceID == nil || *v.AllVolumes[1].DeviceID != 1 ||
		v.AllVolumes[1].DiskOfferingUUID != off.UUID || v.AllVolumes[1].Size != 1<<20 || v.AllVolumes[1].Status != volume.StatusReady {
		t.Fatalf("VM volumes %+v; want the root and a 1 MiB data volume at device 1", v.AllVolumes)
	}
	for _, vol := range v.AllVolumes {
		if _, err := os.Stat(c.file(vol)); err != nil {
			t.Errorf("volume %s: %v", vol.UUID, err)
		}
	}
	if got := c.agentVolumes(t, h, v.UUID); len(got) != 2 {
		t.Errorf("agent volumes %v, want 2", got)
	}

	data, err := c.create("volumes/data", map[string]any{"name": "extra", "diskSize": 2 << 20, "hostUuid": h})
	if err != nil {
		t.Fatal(err)
	}
	att, err := c.attach(data.UUID, v.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if att.VMInstanceUUID != v.UUID || att.DeviceID == nil || *att.DeviceID != 2 {
		t.Fatalf("attached volume %+v, want on VM %s at device 2", att, v.UUID)
	}
	if got := c.agentVolumes(t, h, v.UUID); len(got) != 3 || got[2] != data.UUID {
		t.Errorf("agent volumes after attach %v, want the new one third", got)
	}
	if again, err := c.attach(data.UUID, v.UUID); err != nil || again.VMInstanceUUID != v.UUID {
		t.Errorf("attach again: %+v, %v; want the same attachment", again, err)
	}

	// Refusals.
	far, err := c.create("volumes/data", map[string]any{"name": "far", "diskSize": 1 << 20, "hostUuid": other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.attach(far.UUID, v.UUID); !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), other) {
		t.Errorf("attach a volume on another host's local storage: %v, want %s naming the host", err, errcode.InvalidArgument)
	}
	if _, err := c.attach(v.RootVolumeUUID, v.UUID); err != nil {
		t.Errorf("attaching the root volume to its own VM is a no-op: %v", err)
	}
	v2, err := c.createVM(t, "neighbour", h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.attach(v2.RootVolumeUUID, v.UUID); !errcode.Has(err, errcode.InvalidState) {
		t.Errorf("attach another VM's root volume: %v, want %s", err, errcode.InvalidState)
	}
	if _, err := c.attach(data.UUID, v2.UUID); !errcode.Has(err, errcode.InvalidState) || !strings.Contains(err.Error(), v.UUID) {
		t.Errorf("attach a volume attached elsewhere: %v, want %s naming its VM", err, errcode.InvalidState)
	}
	if _, err := c.attach(data.UUID, "0123456789abcdef0123456789abcdef"); client.StatusCode(err) != http.StatusBadRequest {
		t.Errorf("attach to an unknown VM: %v, want 400", err)
	}
	err = c.wait(c.st.Client.Delete(c.ctx, "volumes", data.UUID, ""))
	if !errcode.Has(err, errcode.InvalidState) || !strings.Contains(err.Error(), "Enforcing") {
		t.Errorf("delete an attached volume: %v, want %s mentioning Enforcing", err, errcode.InvalidState)
	}
	if err := c.detach(v.RootVolumeUUID); !errcode.Has(err, errcode.InvalidState) {
		t.Errorf("detach a root volume: %v, want %s", err, errcode.InvalidState)
	}

	// Detach, then Enforcing delete of an attached one.
	if err := c.detach(data.UUID); err != nil {
		t.Fatal(err)
	}
	if got := c.getVolume(t, data.UUID); got.VMInstanceUUID != "" || got.DeviceID != nil {
		t.Errorf("detached volume %+v", got)
	}
	if got := c.agentVolumes(t, h, v.UUID); len(got) != 2 {
		t.Errorf("agent volumes after detach %v, want 2", got)
	}
	if _, err := c.attach(data.UUID, v.UUID); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(c.st.Client.Delete(c.ctx, "volumes", data.UUID, client.DeleteEnforcing)); err != nil {
		t.Fatalf("Enforcing delete of an attached volume: %v", err)
	}
	if got := c.getVolume(t, data.UUID); got.Status != volume.StatusDeleted || got.VMInstanceUUID != "" {
		t.Errorf("after the Enforcing delete: %+v, want Deleted and detached", got)
	}
	if got := c.agentVolumes(t, h, v.UUID); len(got) != 2 {
		t.Errorf("agent volumes after the Enforcing delete %v, want 2", got)
	}

	// A snapshot of an attached volume reverts only while its VM is
	// stopped; a detach naming another VM is refused.
	snapped := v.AllVolumes[1].UUID
	snap, err := client.CreateAndWait[volume.VolumeSnapshotVO](c.ctx, c.st.Client, "volumes/"+snapped+"/volume-snapshots", map[string]any{"name": "s1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.st.Client.Action(c.ctx, "volume-snapshots", snap.UUID, "revertVolumeFromSnapshot", map[string]any{})
	if !errcode.Has(err, errcode.InvalidState) || client.StatusCode(err) >= 500 || !strings.Contains(err.Error(), "stop the VM") {
		t.Errorf("revert the volume of a running VM: %v, want a 4xx %s saying to stop the VM", err, errcode.InvalidState)
	}
	err = c.wait(c.st.Client.Delete(c.ctx, "volumes/"+snapped, "vm-instances", "", client.QueryParam("vmUuid", v2.UUID)))
	if !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), v.UUID) {
		t.Errorf("detach naming another VM: %v, want %s naming the volume's VM", err, errcode.InvalidArgument)
	}

	// A stopped VM: the attach is recorded, the start brings it; a revert
	// works.
	c.vmAction(t, v.UUID, "stopVmInstance")
	if err := c.wait(c.st.Client.Action(c.ctx, "volume-snapshots", snap.UUID, "revertVolumeFromSnapshot", map[string]any{})); err != nil {
		t.Errorf("revert the volume of a stopped VM: %v", err)
	}
	late, err := c.create("volumes/data", map[string]any{"name": "late", "diskSize": 1 << 20, "hostUuid": h})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.attach(late.UUID, v.UUID); err != nil {
		t.Fatal(err)
	}
	started := c.vmAction(t, v.UUID, "startVmInstance")
	if started.HostUUID != h {
		t.Errorf("the VM started on %s, want %s (its volumes are on that host's local storage)", started.HostUUID, h)
	}
	if got := c.agentVolumes(t, h, v.UUID); len(got) != 3 || got[2] != late.UUID {
		t.Errorf("agent volumes after the start %v, want the late volume third", got)
	}

	// Expunge: the root goes, the data volumes stay, detached.
	c.vmAction(t, v.UUID, "destroyVmInstance")
	if err := c.wait(c.st.Client.Action(c.ctx, "vm-instances", v.UUID, "expungeVmInstance", map[string]any{})); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{v.AllVolumes[1].UUID, late.UUID} {
		if got := c.getVolume(t, u); got.Status != volume.StatusReady || got.VMInstanceUUID != "" {
			t.Errorf("data volume %s after the VM's expunge: %+v, want Ready and detached", u, got)
		}
	}
	if n := c.countRows(t, &volume.VolumeVO{}, "uuid = ?", v.RootVolumeUUID); n != 0 {
		t.Errorf("the root volume outlived its VM's expunge")
	}
	c.checkCapacity(t)
}

// TestVMCreateRollsBackVolumes: a host whose storage fails to make the
// root volume fails the VM's create with every trace removed: no VM, no
// volume row, no reservation, no file.
func TestVMCreateRollsBackVolumes(t *testing.T) {
	var failed atomic.Int64
	fail := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == protocol.PathVolumeCreateFromImage {
				failed.Add(1)
				http.Error(w, "injected: disk controller failure", http.StatusInternalServerError)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	c := newCloud(t, hostOpt{wrap: fail})
	h := c.hosts[0].UUID
	_, err := c.createVM(t, "doomed", h, nil)
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), "create-volumes") || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("create: %v; want an agent error of step create-volumes with the injected failure", err)
	}
	if failed.Load() == 0 {
		t.Fatal("the failing storage was never asked")
	}
	if n := c.countRows(t, &vm.VmInstanceVO{}, "name = ?", "doomed"); n != 0 {
		t.Errorf("%d VM rows left", n)
	}
	if n := c.countRows(t, &volume.VolumeVO{}, "type = ?", volume.TypeRoot); n != 0 {
		t.Errorf("%d root volume rows left", n)
	}
	if got, want := c.reserved(t), c.cacheReserved(t); got != want {
		t.Errorf("reserved %d, want only the image cache's %d", got, want)
	}
	if es, _ := os.ReadDir(filepath.Join(c.dirs[h], "rootVolumes")); len(es) != 0 {
		t.Errorf("root volume files left: %v", es)
	}
	c.checkCapacity(t)
}

// TestImageCacheCleanup: the cache of a deleted image stays while a
// linked clone of it is left on that storage, and goes (file, capacity,
// row) once the last one is expunged.
func TestImageCacheCleanup(t *testing.T) {
	c := newCloud(t, hostOpt{})
	h := c.hosts[0].UUID
	content := bytes.Repeat([]byte("template "), 1<<13)
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(content) }))
	t.Cleanup(src.Close)
	img, err := client.CreateAndWait[image.ImageVO](c.ctx, c.st.Client, "images", map[string]any{"name": "tmpl", "url": src.URL + "/t.raw",
		"format": "raw", "mediaType": "DataVolumeTemplate", "backupStorageUuids": []string{c.st.DefaultBackupStorage(t)}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.create("volumes/data/from/data-volume-templates/"+img.UUID, map[string]any{"name": "from-tmpl", "hostUuid": h})
	if err != nil {
		t.Fatal(err)
	}
	if v.RootImageUUID != img.UUID {
		t.Errorf("volume from the template: rootImageUuid %q, want %s", v.RootImageUUID, img.UUID)
	}
	var cache storage.ImageCacheVO
	if err := c.st.DB().Take(&cache, "image_uuid = ?", img.UUID).Error; err != nil {
		t.Fatal(err)
	}
	cacheFile := filepath.Join(c.dirs[h], cache.InstallPath)
	vols := c.st.Volumes()

	// The image still exists: its cache stays.
	if n, err := vols.CleanImageCaches(c.ctx); err != nil || n != 0 {
		t.Fatalf("clean while the image exists: %d removed, %v", n, err)
	}
	if err := c.wait(c.st.Client.Delete(c.ctx, "images", img.UUID, "")); err != nil {
		t.Fatal(err)
	}
	// Deleted, but the volume is a linked clone of the cache.
	if n, err := vols.CleanImageCaches(c.ctx); err != nil || n != 0 {
		t.Fatalf("clean while a volume needs the cache: %d removed, %v", n, err)
	}
	if _, err := os.Stat(cacheFile); err != nil {
		t.Fatalf("the cache file went while a volume needs it: %v", err)
	}
	if err := c.wait(c.st.Client.Delete(c.ctx, "volumes", v.UUID, "")); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(c.st.Client.Action(c.ctx, "volumes", v.UUID, "expungeDataVolume", map[string]any{})); err != nil {
		t.Fatal(err)
	}
	if n, err := vols.CleanImageCaches(c.ctx); err != nil || n != 1 {
		t.Fatalf("clean after the last volume went: %d removed, %v; want 1", n, err)
	}
	if _, err := os.Stat(cacheFile); !os.IsNotExist(err) {
		t.Errorf("the cache file is still there (%v)", err)
	}
	if n := c.countRows(t, &storage.ImageCacheVO{}, "image_uuid = ?", img.UUID); n != 0 {
		t.Errorf("the cache row is still there")
	}
	if _, held, err := storage.Reservation(c.ctx, c.st.DB(), cache.UUID); err != nil || held {
		t.Errorf("the cache still holds capacity (%v)", err)
	}
	c.checkCapacity(t)
}

// TestAttachAcrossZones: a volume of another zone's storage is refused
// with a 4xx naming both zones.
func TestAttachAcrossZones(t *testing.T) {
	c := newCloud(t, hostOpt{})
	mk := func(path string, params map[string]any) string {
		t.Helper()
		r, err := client.CreateAndWait[struct{ UUID string }](c.ctx, c.st.Client, path, params)
		if err != nil {
			t.Fatalf("create %s: %v", path, err)
		}
		return r.UUID
	}
	zone := mk("zones", map[string]any{"name": "far-zone"})
	cluster := mk("clusters", map[string]any{"name": "far-cluster", "zoneUuid": zone, "hypervisorType": "KVM"})
	ps := mk("primary-storage/local-storage", map[string]any{"name": "far-local", "url": psURL, "zoneUuid": zone})
	mk("clusters/"+cluster+"/primary-storage/"+ps, map[string]any{})
	a := c.st.StartAgent(t, servertest.AgentOptions{Agent: kvm.Options{Storage: map[string]string{psURL: t.TempDir()}}})
	farHost := mk("hosts/kvm", map[string]any{"name": "far-host", "managementIp": a.IP, "agentPort": a.Port, "clusterUuid": cluster})

	v, err := c.createVM(t, "near", c.hosts[0].UUID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.ZoneUUID != c.st.Defaults["zone"] {
		t.Errorf("VM zone %q, want its host's %s", v.ZoneUUID, c.st.Defaults["zone"])
	}
	far, err := c.create("volumes/data", map[string]any{"name": "far", "diskSize": 1 << 20, "primaryStorageUuid": ps, "hostUuid": farHost})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.attach(far.UUID, v.UUID)
	if !errcode.Has(err, errcode.InvalidArgument) || client.StatusCode(err) != http.StatusBadRequest || !strings.Contains(err.Error(), zone) {
		t.Errorf("attach a volume of another zone: %v, want 400 %s naming zone %s", err, errcode.InvalidArgument, zone)
	}
	if got := c.getVolume(t, far.UUID); got.VMInstanceUUID != "" {
		t.Errorf("the refused attach left the volume on VM %s", got.VMInstanceUUID)
	}
}

// TestCreateOnStoppedHost: a create whose host's agent is down (the host
// not yet seen Disconnected) fails at once and leaves nothing: the agent
// never saw the command, so there is no file to wait for.
func TestCreateOnStoppedHost(t *testing.T) {
	c := newCloud(t, hostOpt{})
	h := c.hosts[0]
	if err := h.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := c.create("volumes/data", map[string]any{"name": "nowhere", "diskSize": 1 << 20, "hostUuid": h.UUID})
	if !errcode.Has(err, errcode.AgentError) {
		t.Fatalf("create on a stopped host: %v, want %s", err, errcode.AgentError)
	}
	if n := c.countRows(t, &volume.VolumeVO{}, "name = ?", "nowhere"); n != 0 {
		t.Errorf("%d volume rows left (kept as Error: the create waited for a file that cannot exist)", n)
	}
	if got := c.reserved(t); got != 0 {
		t.Errorf("reserved %d, want 0", got)
	}
	c.checkCapacity(t)
}

// TestVMCreateOnStoppedHost: a VM create pinned to a host whose agent is
// down fails at once and leaves no VM, volume or reservation.
func TestVMCreateOnStoppedHost(t *testing.T) {
	c := newCloud(t, hostOpt{})
	h := c.hosts[0]
	if err := h.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := c.createVM(t, "nowhere", h.UUID, nil)
	if !errcode.Has(err, errcode.AgentError) {
		t.Fatalf("create on a stopped host: %v, want %s", err, errcode.AgentError)
	}
	if n := c.countRows(t, &vm.VmInstanceVO{}, "name = ?", "nowhere"); n != 0 {
		t.Errorf("%d VM rows left", n)
	}
	if n := c.countRows(t, &volume.VolumeVO{}, "1 = 1"); n != 0 {
		t.Errorf("%d volume rows left (an Error root volume: the rollback waited for a file that cannot exist)", n)
	}
	if got := c.reserved(t); got != 0 {
		t.Errorf("reserved %d, want 0", got)
	}
	c.checkCapacity(t)
}
