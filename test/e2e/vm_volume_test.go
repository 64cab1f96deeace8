package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/api/client"
	"mplane/api/jobs"
	"mplane/db"
	"mplane/errcode"
	"mplane/flow"
	"mplane/internal/testenv"
	hostsvc "mplane/services/host"
	"mplane/services/image"
	"mplane/services/network"
	"mplane/services/storage"
	"mplane/services/vm"
	"mplane/services/volume"
)

// filesUnder lists the regular files under dir, relative to dir with
// slashes; none if dir does not exist.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	sort.Strings(out)
	return out
}

// rootFiles are the root volume files of every host directory: host UUID
// -> install paths (relative to the directory, as VolumeVO.InstallPath).
func rootFiles(t *testing.T, hostDirs map[string]string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for h, d := range hostDirs {
		for _, f := range filesUnder(t, filepath.Join(d, "rootVolumes")) {
			out[h] = append(out[h], "rootVolumes/"+f)
		}
	}
	return out
}

// checkRootFile checks the file of a root volume made from the image
// cached at cache: a qcow2 whose backing file is the cache (qemu-img info),
// or without qemu-img a copy as long as the cache.
func checkRootFile(t *testing.T, file, cache string) {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Errorf("root volume file: %v", err)
		return
	}
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		ci, err := os.Stat(cache)
		if err != nil {
			t.Errorf("image cache of %s: %v", file, err)
		} else if fi.Size() != ci.Size() {
			t.Errorf("root volume %s is %d bytes, the image %d (a full copy without qemu-img)", file, fi.Size(), ci.Size())
		}
		return
	}
	out, err := exec.Command(qemuImg, "info", "-U", "--output", "json", file).Output()
	if err != nil {
		t.Errorf("qemu-img info %s: %v", file, err)
		return
	}
	var info struct {
		Format          string `json:"format"`
		BackingFilename string `json:"backing-filename"`
		FullBacking     string `json:"full-backing-filename"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Errorf("qemu-img info %s: %v in %s", file, err, out)
		return
	}
	backing := info.FullBacking
	if backing == "" && info.BackingFilename != "" {
		backing = info.BackingFilename
	}
	if backing != "" && !filepath.IsAbs(backing) {
		backing = filepath.Join(filepath.Dir(file), backing)
	}
	if info.Format != "qcow2" || !sameFile(backing, cache) {
		t.Errorf("root volume %s: format %q, backing file %q; want a qcow2 backed by the image cache %s", file, info.Format, backing, cache)
	}
}

func sameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// localCapacity is the available capacity of a LocalStorage and of each of
// its hosts' directories.
type localCapacity struct {
	ps    int64
	hosts map[string]int64
}

func localCapacityOf(t *testing.T, gdb *gorm.DB, ps string) localCapacity {
	t.Helper()
	var p storage.PrimaryStorageVO
	if err := gdb.Take(&p, "uuid = ?", ps).Error; err != nil {
		t.Fatal(err)
	}
	var refs []storage.LocalStorageHostRefVO
	if err := gdb.Find(&refs, "primary_storage_uuid = ?", ps).Error; err != nil {
		t.Fatal(err)
	}
	c := localCapacity{ps: p.AvailableCapacity, hosts: map[string]int64{}}
	for _, r := range refs {
		c.hosts[r.HostUUID] = r.AvailableCapacity
	}
	return c
}

func checkNoDrift(t *testing.T, gdb *gorm.DB) {
	t.Helper()
	drift, err := storage.CapacityDrift(context.Background(), gdb)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range drift {
		t.Errorf("capacity drift: %s", d)
	}
}

// vmCloud is three `mplane server` processes and three hosts (agent
// processes with extra flags) on the LocalStorage of setupCloud.
type vmCloud struct {
	e        *clusterEnv
	servers  []*server
	clients  []*client.Client
	agents   []*agentProc
	hosts    []hostsvc.HostVO
	hostDirs map[string]string // host UUID -> its LocalStorage directory
	cl       cloud
	gdb      *gorm.DB
}

func newVMCloud(t *testing.T, agentArgs ...string) *vmCloud {
	t.Helper()
	v := &vmCloud{e: newClusterEnv(t), hostDirs: map[string]string{}}
	v.e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret", "MPLANE_HOST_PING_INTERVAL=1s"}
	v.servers = []*server{v.e.startServer("A"), v.e.startServer("B"), v.e.startServer("C")}
	converged(t, 30*time.Second, v.servers...)
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		v.agents = append(v.agents, startAgent(t, fmt.Sprintf("agent%d", i+1), freePort(t), filepath.Join(dir, fmt.Sprintf("a%d.json", i+1)), agentArgs...))
	}
	for _, s := range v.servers {
		v.clients = append(v.clients, login(t, s.url, "e2e-secret"))
	}
	v.cl = setupCloud(t, v.clients[0], 1, 512<<20)
	for i, ag := range v.agents {
		h := addHost(t, v.clients[i%3], v.cl, fmt.Sprintf("host%d", i+1), ag.port)
		v.hosts = append(v.hosts, h)
		v.hostDirs[h.UUID] = ag.localDir
	}
	gdb, err := db.Open(context.Background(), v.e.dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(gdb) })
	v.gdb = gdb
	return v
}

// cachePath is the file of the image's cache in a host's directory.
func (v *vmCloud) cachePath(hostUUID string) string {
	return filepath.Join(v.hostDirs[hostUUID], filepath.FromSlash(storage.CachePath(v.cl.image)))
}

// TestClusterVMRootVolumes: three nodes, three hosts on LocalStorage, 100
// VMs created at once through the three nodes. Every VM runs on its Ready
// root volume, a qcow2 in its host's directory backed by the image cached
// there; destroyed and expunged, they leave no file, no volume row, and
// each host's directory exactly as much room as before but for the cache.
func TestClusterVMRootVolumes(t *testing.T) {
	v := newVMCloud(t, "--cpu", "64")
	gdb, cl := v.gdb, v.cl
	before := localCapacityOf(t, gdb, cl.localPS)
	hostsBefore := capacityOf(t, v.clients[0], cl.l3)
	for _, h := range v.hosts {
		if _, ok := before.hosts[h.UUID]; !ok || before.hosts[h.UUID] <= 0 {
			t.Fatalf("host %s has no measured directory on the LocalStorage: %v", h.UUID, before.hosts)
		}
	}
	var img image.ImageVO
	if err := gdb.Take(&img, "uuid = ?", cl.image).Error; err != nil {
		t.Fatal(err)
	}

	const total = 100
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vms := make([]vm.VmInstanceVO, total)
	errs := make([]error, total)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < total; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vms[i], errs[i] = createVM(ctx, v.clients[i%3], cl, fmt.Sprintf("vm-%03d", i), nil)
		}()
	}
	wg.Wait()
	t.Logf("%d VMs created at once through 3 nodes in %v", total, time.Since(start).Round(time.Millisecond))
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Errorf("create vm %d: %v", i, err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d creates failed", failed, total)
	}
	for i, x := range vms {
		if x.State != vm.StateRunning || x.RootVolumeUUID == "" || len(x.AllVolumes) != 1 || x.AllVolumes[0].UUID != x.RootVolumeUUID ||
			x.AllVolumes[0].Status != volume.StatusReady {
			t.Fatalf("vm %d: state %s, rootVolumeUuid %q, allVolumes %+v; want Running on its Ready root volume", i, x.State, x.RootVolumeUUID, x.AllVolumes)
		}
	}

	// The database agrees, and every file is where its row says.
	perHost := map[string]int{}
	want := map[string]map[string]bool{} // host -> install paths
	for _, x := range vms {
		var row vm.VmInstanceVO
		if err := gdb.Take(&row, "uuid = ?", x.UUID).Error; err != nil {
			t.Fatal(err)
		}
		var root volume.VolumeVO
		if err := gdb.Take(&root, "uuid = ?", row.RootVolumeUUID).Error; err != nil {
			t.Fatalf("root volume of vm %s: %v", x.UUID, err)
		}
		if row.State != vm.StateRunning || root.Status != volume.StatusReady || root.Type != volume.TypeRoot || root.VMInstanceUUID != x.UUID ||
			root.PrimaryStorageUUID != cl.localPS || root.HostUUID != row.HostUUID || root.RootImageUUID != cl.image {
			t.Fatalf("vm %s (%s on %s), root volume %+v: want a Ready root volume of the image on the VM's host's LocalStorage", x.UUID, row.State, row.HostUUID, root)
		}
		if v.hostDirs[row.HostUUID] == "" {
			t.Fatalf("vm %s on unknown host %s", x.UUID, row.HostUUID)
		}
		perHost[row.HostUUID]++
		if want[row.HostUUID] == nil {
			want[row.HostUUID] = map[string]bool{}
		}
		want[row.HostUUID][root.InstallPath] = true
		checkRootFile(t, filepath.Join(v.hostDirs[row.HostUUID], filepath.FromSlash(root.InstallPath)), v.cachePath(row.HostUUID))
	}
	t.Logf("VMs per host: %v", perHost)
	for h, files := range rootFiles(t, v.hostDirs) {
		for _, f := range files {
			if !want[h][f] {
				t.Errorf("host %s: root volume file %s belongs to no VM of the host", h, f)
			}
		}
		if len(files) != len(want[h]) {
			t.Errorf("host %s: %d root volume files for %d VMs", h, len(files), len(want[h]))
		}
	}
	// One cache of the image per host that runs VMs, a full copy.
	var caches []storage.ImageCacheVO
	if err := gdb.Find(&caches).Error; err != nil {
		t.Fatal(err)
	}
	if len(caches) != len(perHost) {
		t.Errorf("%d image caches for VMs on %d hosts", len(caches), len(perHost))
	}
	cached := map[string]int64{} // host -> bytes reserved by its caches
	for _, c := range caches {
		if c.ImageUUID != cl.image || c.PrimaryStorageUUID != cl.localPS || perHost[c.HostUUID] == 0 {
			t.Errorf("image cache %+v: want the image's on a host that runs VMs", c)
		}
		if fi, err := os.Stat(v.cachePath(c.HostUUID)); err != nil || fi.Size() != img.Size {
			t.Errorf("image cache file on host %s: %v (size %d, image %d)", c.HostUUID, err, sizeOf(fi), img.Size)
		}
		var r storage.StorageReservationVO
		if err := gdb.Take(&r, "owner_uuid = ?", c.UUID).Error; err != nil {
			t.Fatalf("reservation of image cache %s: %v", c.UUID, err)
		}
		cached[r.HostUUID] += r.Size
	}
	checkNoDrift(t, gdb)

	// Destroy and expunge every VM, through the three nodes.
	start = time.Now()
	for i := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := v.clients[(i+1)%3]
			if errs[i] = destroyVM(ctx, c, vms[i].UUID); errs[i] != nil {
				errs[i] = fmt.Errorf("destroy: %w", errs[i])
				return
			}
			j, err := c.Action(ctx, "vm-instances", vms[i].UUID, "expungeVmInstance", map[string]any{})
			if err == nil {
				_, err = j.Wait(ctx, nil)
			}
			if err != nil {
				errs[i] = fmt.Errorf("expunge: %w", err)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d VMs destroyed and expunged in %v", total, time.Since(start).Round(time.Millisecond))
	for i, err := range errs {
		if err != nil {
			t.Fatalf("vm %d: %v", i, err)
		}
	}
	for h, files := range rootFiles(t, v.hostDirs) {
		t.Errorf("host %s: root volume files left after expunge: %v", h, files)
	}
	var rows int64
	gdb.Model(&volume.VolumeVO{}).Count(&rows)
	if rows != 0 {
		t.Errorf("%d volume rows left after expunge", rows)
	}
	gdb.Model(&vm.VmInstanceVO{}).Count(&rows)
	if rows != 0 {
		t.Errorf("%d VM rows left after expunge", rows)
	}
	after := localCapacityOf(t, gdb, cl.localPS)
	var allCached int64
	for h, was := range before.hosts {
		allCached += cached[h]
		if after.hosts[h] != was-cached[h] {
			t.Errorf("host %s: %d bytes available on the LocalStorage, want %d (%d before the creates - %d held by the image cache)",
				h, after.hosts[h], was-cached[h], was, cached[h])
		}
	}
	if after.ps != before.ps-allCached {
		t.Errorf("LocalStorage: %d bytes available, want %d (%d before - %d of image caches)", after.ps, before.ps-allCached, before.ps, allCached)
	}
	var left []storage.StorageReservationVO
	gdb.Find(&left)
	if len(left) != len(caches) {
		t.Errorf("%d storage reservations left, want only the %d image caches: %+v", len(left), len(caches), left)
	}
	for _, c := range caches {
		if _, err := os.Stat(v.cachePath(c.HostUUID)); err != nil {
			t.Errorf("image cache on host %s gone with the VMs: %v", c.HostUUID, err)
		}
	}
	hostsAfter := capacityOf(t, v.clients[1], cl.l3)
	for h, cpu := range hostsBefore.cpu {
		if hostsAfter.cpu[h] != cpu || hostsAfter.mem[h] != hostsBefore.mem[h] {
			t.Errorf("host %s: cpu %d mem %d after expunge, want %d %d", h, hostsAfter.cpu[h], hostsAfter.mem[h], cpu, hostsBefore.mem[h])
		}
	}
	checkNoDrift(t, gdb)

	// The image deleted, its caches go too (a node's admin command; the
	// volume service also does it every 10 minutes): every directory has
	// exactly the room it had before the creates.
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	defer dcancel()
	j, err := v.clients[0].Delete(dctx, "images", cl.image, "")
	if err == nil {
		_, err = j.Wait(dctx, nil)
	}
	if err != nil {
		t.Fatalf("delete the image: %v", err)
	}
	r := daemon(t, t.TempDir(), "--run-dir", v.servers[2].runDir, "mplane", "storage", "clean-image-caches")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf(`"removed": %d`, len(caches))) {
		t.Fatalf("clean the image caches: exit %d, %s %s; want %d removed", r.code, r.stdout, r.stderr, len(caches))
	}
	final := localCapacityOf(t, gdb, cl.localPS)
	for h, was := range before.hosts {
		if final.hosts[h] != was {
			t.Errorf("host %s: %d bytes available once the caches went, want %d as before the creates", h, final.hosts[h], was)
		}
		if _, err := os.Stat(v.cachePath(h)); !os.IsNotExist(err) {
			t.Errorf("image cache file on host %s still there (%v)", h, err)
		}
	}
	if final.ps != before.ps {
		t.Errorf("LocalStorage: %d bytes available once the caches went, want %d as before the creates", final.ps, before.ps)
	}
	gdb.Model(&storage.StorageReservationVO{}).Count(&rows)
	if rows != 0 {
		t.Errorf("%d storage reservations left", rows)
	}
	checkNoDrift(t, gdb)
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

// TestClusterVMCreatesSurviveKill: three nodes, three hosts on a slow
// LocalStorage, 100 VM creates in flight through two nodes, and kill -9 of
// the third, which owns a host, while creates are making root volumes or
// starting VMs. Once every create flow has ended: each VM is Running on
// its Ready root volume, whose file exists, or gone; no file without its
// Ready volume, no volume left Creating or Error; the storage's and the
// hosts' capacity is exactly what the Running VMs (and the image caches)
// hold.
func TestClusterVMCreatesSurviveKill(t *testing.T) {
	v := newVMCloud(t, "--cpu", "64", "--storage-latency", "200ms")
	gdb, cl := v.gdb, v.cl
	bus := clientBus(t, v.e)
	// The victim owns host1 (and maybe more); the creates go through the
	// other two.
	hostOwner := map[string]string{}
	for _, h := range v.hosts {
		hostOwner[h.UUID] = probeVia(t, bus, v.servers[0].uuid, h.UUID).NodeUUID
	}
	var victim *server
	var live []*client.Client
	for i, s := range v.servers {
		if s.uuid == hostOwner[v.hosts[0].UUID] {
			victim = s
		} else {
			live = append(live, v.clients[i])
		}
	}
	if victim == nil {
		t.Fatalf("host owner %s is not one of the servers", hostOwner[v.hosts[0].UUID])
	}
	victimHosts := 0
	for _, o := range hostOwner {
		if o == victim.uuid {
			victimHosts++
		}
	}

	const total = 100
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, total)
	took := make([]time.Duration, total)
	noAnswer := make([]bool, total)
	jobUUIDs := make([]string, total)
	for w := 0; w < 24; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				// The outcome of each create is checked in the database,
				// not here: a create cut by the kill may get no answer.
				cctx, ccancel := context.WithTimeout(ctx, 45*time.Second)
				start := time.Now()
				j, err := live[i%2].Create(cctx, "vm-instances", map[string]any{"name": fmt.Sprintf("k-%03d", i),
					"instanceOfferingUuid": cl.offering, "imageUuid": cl.image, "l3NetworkUuids": []string{cl.l3}})
				if err == nil {
					jobUUIDs[i] = j.UUID
					_, err = j.Wait(cctx, nil)
				}
				errs[i], took[i], noAnswer[i] = err, time.Since(start), err != nil && cctx.Err() != nil
				ccancel()
			}
		}()
	}
	// Kill once some VMs run and creates are making root volumes or
	// starting VMs on the victim or on a host it owns.
	var rec flow.RecordVO
	var running int64
	testenv.Eventually(t, 90*time.Second, func() bool {
		gdb.Model(&vm.VmInstanceVO{}).Where("state = ?", vm.StateRunning).Count(&running)
		if running < 5 {
			return false
		}
		var recs []flow.RecordVO
		gdb.Where("chain = ? AND state = ? AND step IN ?", "create-vm", string(flow.Running), []string{"create-volumes", "start-on-hypervisor"}).Find(&recs)
		for _, r := range recs {
			var d struct {
				HostUUID string `json:"hostUuid"`
			}
			_ = json.Unmarshal([]byte(r.Data), &d)
			if r.Owner == victim.uuid || hostOwner[d.HostUUID] == victim.uuid {
				rec = r
				return true
			}
		}
		return false
	}, "creates making root volumes on the victim or its hosts")
	var inFlight int64
	gdb.Model(&flow.RecordVO{}).Where("chain = ? AND state = ?", "create-vm", string(flow.Running)).Count(&inFlight)
	victim.kill()
	killed := time.Now()
	t.Logf("killed %s (owner of %d of 3 hosts) with %d VMs Running and %d creates in flight; VM %s was in %s (flow on %s)",
		victim.name, victimHosts, running, inFlight, rec.Resource, rec.Step, ownerName(v.servers, rec.Owner))
	wg.Wait()
	t.Logf("every create answered or timed out %v after the kill", time.Since(killed).Round(time.Millisecond))
	t.Logf("answers to the creates: %v", tallyAnswers(errs, noAnswer))
	seen := map[errcode.Code]bool{}
	for _, err := range errs {
		if c := errcode.CodeOf(err); err != nil && !seen[c] {
			seen[c] = true
			t.Logf("one create told %s: %v", c, err)
		}
	}

	testenv.Eventually(t, 2*time.Minute, func() bool {
		var n int64
		gdb.Model(&flow.RecordVO{}).Where("chain = ? AND state IN ?", "create-vm", []string{string(flow.Running), string(flow.RollingBack)}).Count(&n)
		return n == 0
	}, "every VM create finished or rolled back")
	t.Logf("every create flow ended %v after the kill", time.Since(killed).Round(time.Millisecond))
	var failedRollbacks []flow.RecordVO
	gdb.Where("chain = ? AND state = ?", "create-vm", string(flow.Failed)).Find(&failedRollbacks)
	for _, r := range failedRollbacks {
		t.Errorf("create of VM %s: %s", r.Resource, r.Error)
	}

	var vms []vm.VmInstanceVO
	if err := gdb.Find(&vms).Error; err != nil {
		t.Fatal(err)
	}
	var vols []volume.VolumeVO
	if err := gdb.Find(&vols).Error; err != nil {
		t.Fatal(err)
	}
	volByUUID := map[string]volume.VolumeVO{}
	for _, x := range vols {
		volByUUID[x.UUID] = x
		switch x.Status {
		case volume.StatusReady:
		default:
			// Creating: a create abandoned half-way; Error: a rollback
			// that could not delete the file. Neither should survive
			// the kill of one node.
			t.Errorf("volume %s (%s of VM %q) is %s", x.UUID, x.Type, x.VMInstanceUUID, x.Status)
		}
	}
	type hostUse struct{ cpu, mem, vms int64 }
	use := map[string]*hostUse{}
	for _, h := range v.hosts {
		use[h.UUID] = &hostUse{}
	}
	want := map[string]map[string]bool{} // host -> root volume install paths
	runningVMs := 0
	for _, x := range vms {
		if x.State != vm.StateRunning {
			t.Errorf("VM %s (%s) is %s: want Running or gone", x.UUID, x.Name, x.State)
			continue
		}
		runningVMs++
		root, ok := volByUUID[x.RootVolumeUUID]
		if !ok || root.Status != volume.StatusReady || root.VMInstanceUUID != x.UUID || root.HostUUID != x.HostUUID {
			t.Errorf("Running VM %s on %s: root volume %q %+v, want Ready on the VM's host", x.UUID, x.HostUUID, x.RootVolumeUUID, root)
			continue
		}
		if use[x.HostUUID] == nil {
			t.Errorf("Running VM %s on unknown host %s", x.UUID, x.HostUUID)
			continue
		}
		u := use[x.HostUUID]
		u.cpu, u.mem, u.vms = u.cpu+int64(x.CPUNum), u.mem+x.MemorySize, u.vms+1
		if want[x.HostUUID] == nil {
			want[x.HostUUID] = map[string]bool{}
		}
		want[x.HostUUID][root.InstallPath] = true
		checkRootFile(t, filepath.Join(v.hostDirs[x.HostUUID], filepath.FromSlash(root.InstallPath)), v.cachePath(x.HostUUID))
	}
	for _, x := range vols {
		if x.Type == volume.TypeRoot && x.Status == volume.StatusReady && !want[x.HostUUID][x.InstallPath] {
			t.Errorf("Ready root volume %s of VM %q is no Running VM's", x.UUID, x.VMInstanceUUID)
		}
	}
	for h, files := range rootFiles(t, v.hostDirs) {
		for _, f := range files {
			if !want[h][f] {
				t.Errorf("orphan file on host %s: %s (no Ready volume of a Running VM)", h, f)
			}
		}
	}
	checkNoDrift(t, gdb)

	// Host capacity: one reservation per Running VM, of its size.
	var hosts []hostsvc.HostVO
	if err := gdb.Find(&hosts).Error; err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		var reserved struct{ CPU, Memory, N int64 }
		gdb.Model(&hostsvc.ReservationVO{}).Select("COALESCE(SUM(cpu),0) AS cpu, COALESCE(SUM(memory),0) AS memory, COUNT(*) AS n").
			Where("host_uuid = ?", h.UUID).Scan(&reserved)
		u := use[h.UUID]
		if reserved.CPU != u.cpu || reserved.Memory != u.mem || reserved.N != u.vms {
			t.Errorf("host %s: %d reservations of %d CPU %d memory, want %d of %d %d (its Running VMs)", h.UUID, reserved.N, reserved.CPU,
				reserved.Memory, u.vms, u.cpu, u.mem)
		}
		if h.AvailableCPUCapacity != h.TotalCPUCapacity-u.cpu || h.AvailableMemoryCapacity != h.TotalMemoryCapacity-u.mem {
			t.Errorf("host %s: available %d CPU %d memory of %d/%d, want what its %d Running VMs leave", h.UUID, h.AvailableCPUCapacity,
				h.AvailableMemoryCapacity, h.TotalCPUCapacity, h.TotalMemoryCapacity, u.vms)
		}
	}
	// Storage: each host's directory holds its VMs' root volumes and the
	// image cache, nothing more.
	var caches []storage.ImageCacheVO
	gdb.Find(&caches)
	isCache := map[string]bool{}
	for _, c := range caches {
		isCache[c.UUID] = true
	}
	var resv []storage.StorageReservationVO
	gdb.Find(&resv)
	for _, r := range resv {
		if isCache[r.OwnerUUID] {
			continue
		}
		x, ok := volByUUID[r.OwnerUUID]
		if !ok || x.Status != volume.StatusReady || r.HostUUID != x.HostUUID || r.PrimaryStorageUUID != cl.localPS {
			t.Errorf("storage reservation %+v: no Ready volume on that host holds it", r)
		}
	}
	if n := len(resv) - len(caches); n != runningVMs {
		t.Errorf("%d volume reservations for %d Running VMs", n, runningVMs)
	}
	var usedIPs int64
	gdb.Model(&network.UsedIpVO{}).Where("l3_network_uuid = ?", cl.l3).Count(&usedIPs)
	if usedIPs != int64(runningVMs) {
		t.Errorf("%d IPs in use for %d Running VMs", usedIPs, runningVMs)
	}
	t.Logf("%d of %d VMs created around the kill (%d Running at the kill)", runningVMs, total, running)

	// What each client was told, against what happened: a create that
	// succeeded has its VM Running; one that failed has none (a create
	// whose runner died is failed once its flow is rolled back, or run
	// again by the new owner; one whose driver died is sent again by a
	// survivor). Only OutcomeUnknown may leave either, and every create is
	// answered within the client's 45 s.
	stateOf := map[string]string{}
	for _, x := range vms {
		stateOf[x.UUID] = x.State
	}
	unsure := 0
	for i, err := range errs {
		if jobUUIDs[i] == "" {
			t.Errorf("create k-%03d was not even submitted: %v", i, err)
			continue
		}
		var job jobs.Job
		if err := gdb.Take(&job, "client_uuid = ? OR uuid = ?", jobUUIDs[i], jobUUIDs[i]).Error; err != nil {
			t.Errorf("job of create k-%03d: %v", i, err)
			continue
		}
		st := stateOf[job.ResourceUUID]
		switch {
		case noAnswer[i]:
			t.Errorf("create k-%03d: no answer after %v (job %s, VM %q)", i, took[i].Round(time.Millisecond), job.State, st)
		case err == nil:
			if st != vm.StateRunning {
				t.Errorf("create k-%03d succeeded but VM %s is %q", i, job.ResourceUUID, st)
			}
		case errcode.CodeOf(err) == errcode.OutcomeUnknown:
			unsure++
			t.Logf("create k-%03d: told %s after %v; VM %s is %q", i, answerOf(err, false), took[i].Round(time.Millisecond), job.ResourceUUID, st)
		case st != "":
			t.Errorf("create k-%03d failed (%v) but VM %s is %s", i, err, job.ResourceUUID, st)
		}
	}
	t.Logf("%d creates were told the outcome is unknown", unsure)
}

// answerOf names what a create was told: ok, its error code, or no
// answer (the test's wait ended first).
func answerOf(err error, noAnswer bool) string {
	switch {
	case err == nil:
		return "ok"
	case noAnswer:
		return "no answer"
	default:
		return string(errcode.CodeOf(err))
	}
}

func tallyAnswers(errs []error, noAnswer []bool) map[string]int {
	out := map[string]int{}
	for i, err := range errs {
		out[answerOf(err, noAnswer[i])]++
	}
	return out
}

func ownerName(servers []*server, uuid string) string {
	for _, s := range servers {
		if s.uuid == uuid {
			return s.name
		}
	}
	return uuid
}
