package vm_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/conf"
	"mplane/errcode"
	"mplane/flow"
	"mplane/server"
	"mplane/server/servertest"
	"mplane/services/host"
	"mplane/services/network"
	"mplane/services/storage"
	"mplane/services/vm"
	"mplane/services/volume"
	"mplane/uid"
)

// The flows a dead node can leave, as the VM service records them: the
// chain names and the JSON of their data are what a node taking over reads
// from flow_records, so they are part of the records' format.
const (
	createChain = "create-vm"
	startChain  = "start-vm"
)

// saveRecord writes a flow record as a node running the flow would have.
func (c *cloud) saveRecord(owner, chain, resource string, state flow.State, applied, total int, step string, data any) string {
	c.t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		c.t.Fatal(err)
	}
	id := uid.New()
	rec := flow.Record{ID: id, Chain: chain, Owner: owner, Resource: resource, State: state, Applied: applied, Total: total, Step: step, Data: b}
	if err := flow.NewGormRecorder(c.DB()).Save(c.ctx, rec); err != nil {
		c.t.Fatal(err)
	}
	return id
}

func (c *cloud) record(id string) flow.Record {
	c.t.Helper()
	rec, err := flow.NewGormRecorder(c.DB()).Get(c.ctx, id)
	if err != nil {
		c.t.Fatal(err)
	}
	return rec
}

// halfCreated does what a node creating a VM does up to starting it on the
// host, as if it died right after: the VM row (Starting), its capacity on
// the host, an IP and its NIC, the VM running on the agent. It returns the
// VM and the create flow's data at that point.
func (c *cloud) halfCreated(hostUUID string) (vm.VmInstanceVO, map[string]any) {
	c.t.Helper()
	db := c.DB()
	now := time.Now().UTC()
	v := vm.VmInstanceVO{UUID: uid.New(), Name: "half-made", InstanceOfferingUUID: c.Defaults["offering"], ImageUUID: c.Defaults["image"],
		DefaultL3NetworkUUID: c.Defaults["l3"], Type: "UserVm", HypervisorType: "KVM", CPUNum: 1, MemorySize: 1 << 30,
		State: vm.StateStarting, CreateDate: now, LastOpDate: now}
	if err := db.Create(&v).Error; err != nil {
		c.t.Fatal(err)
	}
	if err := host.Reserve(c.ctx, db, hostUUID, v.UUID, int64(v.CPUNum), v.MemorySize); err != nil {
		c.t.Fatal(err)
	}
	nicUUID := uid.New()
	ip, err := network.AllocateIP(c.ctx, db, c.Defaults["l3"], nicUUID, network.AllocateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	nic := vm.VmNicVO{UUID: nicUUID, VMInstanceUUID: v.UUID, L3NetworkUUID: c.Defaults["l3"], IP: ip.IP, Netmask: ip.Netmask,
		Gateway: ip.Gateway, Mac: "fa:00:00:00:00:01", UsedIPUUID: ip.UUID, CreateDate: now}
	if err := db.Create(&nic).Error; err != nil {
		c.t.Fatal(err)
	}
	// Its root volume: the row, the reservation on the host's local
	// storage, the file.
	root, err := volume.RootDisk(c.ctx, db, v.UUID, uid.New(), v.Name, c.Defaults["image"])
	if err != nil {
		c.t.Fatal(err)
	}
	if err := volume.RecordDisks(c.ctx, db, []*volume.Disk{root}); err != nil {
		c.t.Fatal(err)
	}
	if err := storage.Reserve(c.ctx, db, root.Volume.UUID, c.Defaults["ps"], hostUUID, root.Volume.Size); err != nil {
		c.t.Fatal(err)
	}
	if _, err := host.RunStorage(c.ctx, c.Node(), hostUUID, server.DefaultLocalStorageURL, protocol.CreateEmptyVolume,
		protocol.CreateEmptyVolumeCmd{VolumeUUID: root.Volume.UUID, InstallPath: root.Volume.InstallPath, Size: root.Volume.Size}); err != nil {
		c.t.Fatal(err)
	}
	root.Volume.PrimaryStorageUUID, root.Volume.HostUUID, root.URL, root.PSType = c.Defaults["ps"], hostUUID, server.DefaultLocalStorageURL, storage.TypeLocalStorage
	to := volume.TO(root.Volume, server.DefaultLocalStorageURL, storage.TypeLocalStorage)
	if _, err := host.Run(c.ctx, c.Node(), hostUUID, protocol.StartVM,
		protocol.StartVMCmd{VMInstanceUUID: v.UUID, VMName: v.Name, CPUNum: v.CPUNum, Memory: v.MemorySize, RootVolume: &to}); err != nil {
		c.t.Fatal(err)
	}
	v.VMNics = []vm.VmNicVO{nic}
	v.RootVolumeUUID = root.Volume.UUID
	return v, map[string]any{"vm": v, "l3s": []string{c.Defaults["l3"]}, "nicUuids": []string{nicUUID},
		"hosts": []string{hostUUID}, "hostUuid": hostUUID, "disks": []*volume.Disk{root}}
}

// TestRecoverAbandonedFlows: a node dies in the middle of a create and of
// a start. Once it is evicted (its heartbeat is old), the ring changes and
// the node that now owns the VMs rolls both flows back: the half-created
// VM leaves no row, NIC, IP, capacity or VM on the agent behind; the VM
// that was starting gives its capacity back and is Stopped, and can be
// started again. A flow of a node that is alive is left alone.
func TestRecoverAbandonedFlows(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{Configure: func(cfg *conf.Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond // evict the dead node soon
	}}).in(t, kvm.Options{})
	hostUUID := c.mine[0]
	empty := c.snapshot()
	dead := uid.New()

	// A create that died after starting the VM on the host (7 of its 8
	// steps begun).
	half, createData := c.halfCreated(hostUUID)
	if st := c.agentVM(hostUUID, half.UUID); st != protocol.VMStateRunning {
		t.Fatalf("the half-created VM is %q on the agent", st)
	}
	rootFile := filepath.Join(c.dirs[hostUUID], volume.InstallPath(volume.TypeRoot, half.RootVolumeUUID))
	if _, err := os.Stat(rootFile); err != nil {
		t.Fatalf("the half-created VM's root volume: %v", err)
	}
	createRec := c.saveRecord(dead, createChain, half.UUID, flow.Running, 7, 8, "start-on-hypervisor", createData)

	// A start that died after reserving the capacity (2 of 4 steps).
	starting := c.mustCreate("was-starting", nil)
	c.mustAct(starting.UUID, "stopVmInstance", nil)
	if err := c.DB().Model(&vm.VmInstanceVO{}).Where("uuid = ?", starting.UUID).
		Updates(map[string]any{"state": vm.StateStarting, "version": 1000}).Error; err != nil {
		t.Fatal(err)
	}
	if err := host.Reserve(c.ctx, c.DB(), hostUUID, starting.UUID, int64(starting.CPUNum), starting.MemorySize); err != nil {
		t.Fatal(err)
	}
	startRec := c.saveRecord(dead, startChain, starting.UUID, flow.Running, 2, 4, "reserve-capacity", map[string]any{
		"vmUuid": starting.UUID, "name": starting.Name, "cpuNum": starting.CPUNum, "memory": starting.MemorySize,
		"hosts": []string{hostUUID}, "hostUuid": hostUUID})

	// A create this live node is running: not abandoned.
	busy := c.mustCreate("busy", nil)
	liveRec := c.saveRecord(c.Node().UUID(), createChain, busy.UUID, flow.Running, 1, 8, "create-record",
		map[string]any{"vm": busy, "l3s": []string{c.Defaults["l3"]}})

	if got := c.snapshot(); got.VMs != empty.VMs+3 || got.Reservations != empty.Reservations+3 {
		t.Fatalf("setup: %+v", got)
	}

	// The dead node's last heartbeat is long gone: the live node evicts it.
	c.AddDeadNode(t, dead)
	for _, id := range []string{createRec, startRec} {
		eventually(t, func() bool { return c.record(id).State == flow.RolledBack }, "flow record %s rolled back", id)
		if rec := c.record(id); rec.Owner != c.Node().UUID() || rec.Applied != 0 {
			t.Errorf("record %s: owner %s, %d steps applied; want taken over by %s and fully undone", id, rec.Owner, rec.Applied, c.Node().UUID())
		}
	}

	// The half-created VM is gone without a trace.
	if _, err := c.get(half.UUID); err == nil {
		t.Error("the half-created VM still exists")
	}
	if _, ok := c.reservation(half.UUID); ok {
		t.Error("the half-created VM still holds capacity")
	}
	if n := c.usedIPsOwnedBy(half.VMNics[0].UUID); n != 0 {
		t.Errorf("the half-created VM's NIC still holds %d IPs", n)
	}
	var nics int64
	if err := c.DB().Model(&vm.VmNicVO{}).Where("vm_instance_uuid = ?", half.UUID).Count(&nics).Error; err != nil || nics != 0 {
		t.Errorf("%d NICs of the half-created VM left (%v)", nics, err)
	}
	if hs := c.agentHas(half.UUID); len(hs) != 0 {
		t.Errorf("hosts %v still have the half-created VM", hs)
	}
	if _, err := os.Stat(rootFile); !os.IsNotExist(err) {
		t.Errorf("the half-created VM's root volume file is still there (%v)", err)
	}
	if _, ok, err := storage.Reservation(c.ctx, c.DB(), half.RootVolumeUUID); err != nil || ok {
		t.Errorf("the half-created VM's root volume still holds storage (%v)", err)
	}
	var vols int64
	if err := c.DB().Model(&volume.VolumeVO{}).Where("uuid = ?", half.RootVolumeUUID).Count(&vols).Error; err != nil || vols != 0 {
		t.Errorf("the half-created VM's root volume row is still there (%d, %v)", vols, err)
	}

	// The VM that was starting is Stopped without capacity (its state is
	// set once its flow is rolled back).
	eventually(t, func() bool { return c.mustGet(starting.UUID).State != vm.StateStarting }, "the VM that was starting no longer Starting")
	got := c.mustGet(starting.UUID)
	if got.State != vm.StateStopped || got.HostUUID != "" {
		t.Errorf("the VM that was starting is %s on %q, want Stopped without host", got.State, got.HostUUID)
	}
	if _, ok := c.reservation(starting.UUID); ok {
		t.Error("the VM that was starting still holds capacity")
	}

	// The live node's flow is untouched.
	if rec := c.record(liveRec); rec.Owner != c.Node().UUID() || rec.State != flow.Running || rec.Applied != 1 {
		t.Errorf("the live node's record is now %+v", rec)
	}
	if got := c.mustGet(busy.UUID); got.State != vm.StateRunning {
		t.Errorf("the busy VM is %s", got.State)
	}
	// Only the busy VM holds capacity now.
	c.requireCapacity(empty, hostUUID, int64(busy.CPUNum), busy.MemorySize)

	// The recovered VM works.
	if s := c.mustAct(starting.UUID, "startVmInstance", nil); s.State != vm.StateRunning || s.HostUUID != hostUUID {
		t.Errorf("start after recovery: %s on %q", s.State, s.HostUUID)
	}
}

// TestRecoverFlowsThisNodeLeftBehind: a flow record of this very node that
// no run here holds any more (its last writes failed, e.g. the database
// was down longer than the rollback's retries) is rolled back by the
// periodic takeover pass, without any ring change.
func TestRecoverFlowsThisNodeLeftBehind(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{}).in(t, kvm.Options{})
	hostUUID := c.mine[0]
	empty := c.snapshot()
	v := c.mustCreate("left-starting", nil)
	c.mustAct(v.UUID, "stopVmInstance", nil)
	if err := c.DB().Model(&vm.VmInstanceVO{}).Where("uuid = ?", v.UUID).
		Updates(map[string]any{"state": vm.StateStarting, "version": 1000}).Error; err != nil {
		t.Fatal(err)
	}
	if err := host.Reserve(c.ctx, c.DB(), hostUUID, v.UUID, int64(v.CPUNum), v.MemorySize); err != nil {
		t.Fatal(err)
	}
	id := c.saveRecord(c.Node().UUID(), startChain, v.UUID, flow.RollingBack, 2, 4, "reserve-capacity", map[string]any{
		"vmUuid": v.UUID, "name": v.Name, "cpuNum": v.CPUNum, "memory": v.MemorySize,
		"hosts": []string{hostUUID}, "hostUuid": hostUUID})
	if err := c.DB().Model(&flow.RecordVO{}).Where("id = ?", id).Update("updated_at", time.Now().Add(-time.Hour).UTC()).Error; err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return c.record(id).State == flow.RolledBack }, "the left-behind record rolled back")
	eventually(t, func() bool { return c.mustGet(v.UUID).State == vm.StateStopped }, "the VM Stopped again")
	if _, ok := c.reservation(v.UUID); ok {
		t.Error("the VM still holds capacity")
	}
	c.requireCapacity(empty, hostUUID, 0, 0)
}

// TestRecoverAbandonedNicAttach: a node dies in the middle of attaching a
// NIC to a stopped VM, after its IP was allocated and its row written.
// The VM's new owner rolls the attach back: no NIC row, no IP left, and
// the VM keeps only the NIC it had.
func TestRecoverAbandonedNicAttach(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{Configure: func(cfg *conf.Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond // evict the dead node soon
	}}).in(t, kvm.Options{})
	v := c.mustCreate("nic-half-attached", nil)
	c.mustAct(v.UUID, "stopVmInstance", nil)
	dead := uid.New()
	nicUUID := uid.New()
	ip, err := network.AllocateIP(c.ctx, c.DB(), c.Defaults["l3"], nicUUID, network.AllocateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nic := vm.VmNicVO{UUID: nicUUID, VMInstanceUUID: v.UUID, L3NetworkUUID: c.Defaults["l3"], IP: ip.IP, Netmask: ip.Netmask,
		Gateway: ip.Gateway, Mac: "fa:00:00:00:00:02", UsedIPUUID: ip.UUID, DeviceID: 1, CreateDate: time.Now().UTC()}
	if err := c.DB().Create(&nic).Error; err != nil {
		t.Fatal(err)
	}
	id := c.saveRecord(dead, "attach-nic", v.UUID, flow.Running, 2, 3, "record-nic", map[string]any{"vmUuid": v.UUID, "nic": nic})
	c.AddDeadNode(t, dead)
	eventually(t, func() bool { return c.record(id).State == flow.RolledBack }, "the abandoned attach rolled back")
	var nics int64
	if err := c.DB().Model(&vm.VmNicVO{}).Where("uuid = ?", nicUUID).Count(&nics).Error; err != nil || nics != 0 {
		t.Errorf("the half-attached NIC is still there (%d, %v)", nics, err)
	}
	if n := c.usedIPsOwnedBy(nicUUID); n != 0 {
		t.Errorf("the half-attached NIC still holds %d IPs", n)
	}
	if got := c.mustGet(v.UUID); len(got.VMNics) != len(v.VMNics) {
		t.Errorf("the VM has %d NICs, want its %d", len(got.VMNics), len(v.VMNics))
	}
}

// TestRecoverAbandonedStopAndReboot: a node dies in the middle of a stop
// (its command ran: the host has the VM stopped) and of a reboot (its
// command never left: the VM runs). The VMs' new owner rolls both flows
// back and asks the host: the stopped VM is Stopped without capacity, the
// other Running as it was.
func TestRecoverAbandonedStopAndReboot(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{Configure: func(cfg *conf.Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond // evict the dead node soon
	}}).in(t, kvm.Options{})
	hostUUID := c.mine[0]
	dead := uid.New()
	stopped := c.mustCreate("stopped-by-the-dead", nil)
	onAgent(c, stopped.HostUUID, protocol.StopVM, protocol.StopVMCmd{UUID: stopped.UUID})
	rebooting := c.mustCreate("reboot-never-sent", nil)
	left := func(v vm.VmInstanceVO, state, chain string) string {
		if err := c.DB().Model(&vm.VmInstanceVO{}).Where("uuid = ?", v.UUID).Updates(map[string]any{"state": state, "version": 700}).Error; err != nil {
			t.Fatal(err)
		}
		v.State, v.Version = state, 700
		return c.saveRecord(dead, chain, v.UUID, flow.Running, 2, 3, strings.TrimSuffix(chain, "-vm")+"-on-host",
			map[string]any{"vm": v, "prev": vm.StateRunning})
	}
	stopRec := left(stopped, vm.StateStopping, "stop-vm")
	rebootRec := left(rebooting, vm.StateRebooting, "reboot-vm")
	c.AddDeadNode(t, dead)
	for _, id := range []string{stopRec, rebootRec} {
		eventually(t, func() bool { return c.record(id).State == flow.RolledBack }, "flow record %s rolled back", id)
	}
	eventually(t, func() bool { return c.mustGet(stopped.UUID).State == vm.StateStopped }, "the VM the dead node stopped is Stopped")
	if _, ok := c.reservation(stopped.UUID); ok {
		t.Error("the stopped VM still holds capacity")
	}
	if got := c.mustGet(rebooting.UUID); got.State != vm.StateRunning || got.HostUUID != hostUUID {
		t.Errorf("the VM whose reboot never left is %s on %q, want Running on %s", got.State, got.HostUUID, hostUUID)
	}
	if _, ok := c.reservation(rebooting.UUID); !ok {
		t.Error("the running VM lost its capacity")
	}
}

// TestRecoverAbandonedExpunge: a node dies expunging a Destroyed VM, after
// Expunging and before its row went. The VM's new owner puts it back to
// Destroyed (not left Expunging, refused by nothing but finished by
// nobody); expunging it again removes it and its root volume.
func TestRecoverAbandonedExpunge(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{Configure: func(cfg *conf.Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond // evict the dead node soon
	}}).in(t, kvm.Options{})
	dead := uid.New()
	v := c.mustCreate("expunged-by-the-dead", nil)
	if err := c.del(v.UUID); err != nil {
		t.Fatal(err)
	}
	v = c.mustGet(v.UUID)
	if v.State != vm.StateDestroyed {
		t.Fatalf("VM %s after its destroy, want Destroyed", v.State)
	}
	if err := c.DB().Model(&vm.VmInstanceVO{}).Where("uuid = ?", v.UUID).Updates(map[string]any{"state": vm.StateExpunging, "version": 700}).Error; err != nil {
		t.Fatal(err)
	}
	v.State, v.Version = vm.StateExpunging, 700
	rec := c.saveRecord(dead, "expunge-vm", v.UUID, flow.Running, 2, 3, "expunge-on-host", map[string]any{"vm": v, "prev": vm.StateDestroyed})
	c.AddDeadNode(t, dead)
	eventually(t, func() bool { return c.record(rec).State == flow.RolledBack }, "flow record %s rolled back", rec)
	if got := c.mustGet(v.UUID); got.State != vm.StateDestroyed {
		t.Fatalf("VM %s after the abandoned expunge was rolled back, want Destroyed", got.State)
	}
	if _, err := c.act(v.UUID, "expungeVmInstance", nil); err != nil {
		t.Fatalf("expunge again: %v", err)
	}
	if _, err := c.get(v.UUID); errcode.CodeOf(err) != errcode.ResourceNotFound {
		t.Fatalf("VM after the second expunge: %v, want not found", err)
	}
	var vols int64
	if err := c.DB().Table("volumes").Where("vm_instance_uuid = ? OR uuid = ?", v.UUID, v.RootVolumeUUID).Count(&vols).Error; err != nil {
		t.Fatal(err)
	}
	if vols != 0 {
		t.Errorf("%d volumes of the expunged VM left", vols)
	}
}
