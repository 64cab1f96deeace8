package kvm

import (
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"mplane/agents/protocol"
	"mplane/agents/storage"
	"mplane/errcode"
)

// volHost is a KVM agent serving one primary storage (urlA) from a
// temporary directory, driven over HTTP by a management node.
type volHost struct {
	t   *testing.T
	m   *mgmt
	a   *testAgent
	dir string
}

func newVolHost(t *testing.T, opts Options) *volHost {
	t.Helper()
	h := &volHost{t: t, m: newMgmt(t), dir: t.TempDir()}
	opts.Storage = map[string]string{urlA: h.dir}
	opts.StorageQemuImg = storage.QemuImgNone
	h.a = startAgent(t, opts)
	return h
}

// vol is a volume of primary storage urlA at rel, as the node sends it.
func vol(uuid, rel string, deviceID int, typ string) protocol.VolumeTO {
	return protocol.VolumeTO{VolumeUUID: uuid, InstallPath: path.Join(urlA, rel), DeviceID: deviceID, DeviceType: "file",
		Format: protocol.FormatRaw, UseVirtio: true, CacheMode: "none", Type: typ}
}

func rootVol(uuid string) protocol.VolumeTO {
	return vol(uuid, "rootVolumes/"+uuid+"/"+uuid+".raw", 0, volumeTypeRoot)
}

func dataVol(uuid string, deviceID int) protocol.VolumeTO {
	return vol(uuid, "dataVolumes/"+uuid+"/"+uuid+".raw", deviceID, volumeTypeData)
}

// create makes the file of volume v in the storage's directory.
func (h *volHost) create(v protocol.VolumeTO) {
	h.t.Helper()
	p := filepath.Join(h.dir, strings.TrimPrefix(v.InstallPath, urlA+"/"))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("disk"), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *volHost) call(p string, cmd any) error {
	h.t.Helper()
	var rsp protocol.VMRsp
	err := h.m.client.Call(h.t.Context(), h.a.url, p, cmd, &rsp)
	if err == nil && !rsp.Success {
		h.t.Fatalf("%s: no error but answer %+v", p, rsp)
	}
	return err
}

func (h *volHost) must(p string, cmd any) {
	h.t.Helper()
	if err := h.call(p, cmd); err != nil {
		h.t.Fatalf("%s: %v", p, err)
	}
}

// refused checks that the command failed with an error result saying
// each of want.
func (h *volHost) refused(p string, cmd any, want ...string) {
	h.t.Helper()
	err := h.call(p, cmd)
	if !errcode.Has(err, errcode.AgentError) {
		h.t.Fatalf("%s: %v, want an error result", p, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			h.t.Errorf("%s: %v\nwant it to say %q", p, err, w)
		}
	}
}

// listed is the VM as /vm/list shows it (nil when it is not listed).
func (h *volHost) listed(uuid string) *protocol.VM {
	h.t.Helper()
	var list protocol.ListVMsRsp
	if err := h.m.client.Call(h.t.Context(), h.a.url, protocol.PathListVMs, struct{}{}, &list); err != nil {
		h.t.Fatal(err)
	}
	for _, vm := range list.VMs {
		if vm.UUID == uuid {
			return &vm
		}
	}
	return nil
}

// volumeUUIDs lists a VM's volumes as uuid@deviceId, in order.
func volumeUUIDs(vm *protocol.VM) []string {
	if vm == nil {
		return nil
	}
	var out []string
	for _, v := range vm.Volumes {
		out = append(out, v.VolumeUUID+"@"+strconv.Itoa(v.DeviceID))
	}
	return out
}

func start(vmUUID string, root *protocol.VolumeTO, data ...protocol.VolumeTO) protocol.StartVMCmd {
	if data == nil {
		data = []protocol.VolumeTO{}
	}
	return protocol.StartVMCmd{VMInstanceUUID: vmUUID, VMName: "vm-" + vmUUID, CPUNum: 1, Memory: 1 << 20, BootDev: []string{"hd"},
		RootVolume: root, DataVolumes: data, Nics: []protocol.NicTO{}}
}

func attach(vmUUID string, v protocol.VolumeTO) protocol.AttachVolumeCmd {
	return protocol.AttachVolumeCmd{VMInstanceUUID: vmUUID, Volume: v}
}

// TestStartRequiresRootVolume: a start without a usable root volume is
// refused before anything runs, whatever storage the host serves.
func TestStartRequiresRootVolume(t *testing.T) {
	h := newVolHost(t, Options{})
	r := rootVol("r1")
	noUUID, noPath, dataType := r, r, r
	noUUID.VolumeUUID, noPath.InstallPath, dataType.Type = "", "", volumeTypeData
	d0 := dataVol("d1", 0)
	for _, tc := range []struct {
		name string
		cmd  protocol.StartVMCmd
		want string
	}{
		{"no rootVolume", start("v1", nil), "rootVolume is required: a VM boots from its root volume"},
		{"no volumeUuid", start("v1", &noUUID), "rootVolume.volumeUuid is required"},
		{"no installPath", start("v1", &noPath), "rootVolume.installPath is required"},
		{"root of type Data", start("v1", &dataType), `rootVolume r1 has type "Data"`},
		{"data volume at deviceId 0", start("v1", &r, d0), "data volume d1 has deviceId 0"},
		{"two data volumes at one deviceId", start("v1", &r, dataVol("d1", 1), dataVol("d2", 1)), "volumes d1 and d2 both have deviceId 1"},
		{"one volume twice", start("v1", &r, dataVol("r1", 1)), "volume r1 is given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.refused(protocol.PathStartVM, tc.cmd, tc.want)
			if s := h.a.vmState("v1"); s != "" {
				t.Fatalf("refused start left the VM %q", s)
			}
		})
	}
}

// TestStartChecksVolumeFiles: volumes on a storage the host serves must
// have their file in its directory; the VM then records its volumes (root
// first, data by deviceId) and NICs, and /vm/list shows them.
func TestStartChecksVolumeFiles(t *testing.T) {
	h := newVolHost(t, Options{})
	root, d1, d2 := rootVol("r1"), dataVol("d1", 1), dataVol("d2", 2)

	h.refused(protocol.PathStartVM, start("v1", &root),
		"root volume r1: "+root.InstallPath+" does not exist on this host", h.dir)
	h.create(root)
	h.create(d2)
	h.refused(protocol.PathStartVM, start("v1", &root, d2, d1), "data volume d1: "+d1.InstallPath+" does not exist on this host")
	if h.a.vmState("v1") != "" || h.listed("v1") != nil {
		t.Fatal("a refused start made the VM")
	}

	// Paths that leave the directory, or name no file.
	outside := filepath.Join(t.TempDir(), "elsewhere.raw")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(h.dir, "link.raw")); err != nil {
		t.Fatal(err)
	}
	dotdot, link, dir, top := root, vol("r1", "link.raw", 0, volumeTypeRoot), vol("r1", "rootVolumes", 0, volumeTypeRoot), root
	dotdot.InstallPath = urlA + "/rootVolumes/../rootVolumes/r1/r1.raw"
	top.InstallPath = urlA
	for _, tc := range []struct {
		v    protocol.VolumeTO
		want string
	}{
		{dotdot, `has a ".." element`},
		{link, "leads out of its primary storage's directory"},
		{dir, "is a directory, not a volume file"},
		{top, "is primary storage " + urlA + " itself"},
	} {
		h.refused(protocol.PathStartVM, start("v1", &tc.v), "root volume r1", tc.want)
	}

	h.create(d1)
	nics := []protocol.NicTO{
		{UUID: "n2", Mac: "fa:00:00:00:00:02", L3NetworkUUID: "l3", DeviceID: 1},
		{UUID: "n1", Mac: "fa:00:00:00:00:01", IP: "10.0.0.2", L3NetworkUUID: "l3", DeviceID: 0},
	}
	cmd := start("v1", &root, d2, d1)
	cmd.Nics = nics
	h.must(protocol.PathStartVM, cmd)
	got := h.listed("v1")
	if got == nil || got.State != protocol.VMStateRunning {
		t.Fatalf("listed %+v, want v1 Running", got)
	}
	if want := []protocol.VolumeTO{root, d1, d2}; !reflect.DeepEqual(got.Volumes, want) {
		t.Errorf("listed volumes\n got %+v\nwant %+v", got.Volumes, want)
	}
	if want := []protocol.NicTO{nics[1], nics[0]}; !reflect.DeepEqual(got.NICs, want) {
		t.Errorf("listed NICs %+v, want %+v (by deviceId)", got.NICs, want)
	}

	// Starting the running VM again changes nothing, checks nothing.
	if err := os.Remove(filepath.Join(h.dir, "dataVolumes/d2/d2.raw")); err != nil {
		t.Fatal(err)
	}
	h.must(protocol.PathStartVM, start("v1", &root, d2))
	if got := volumeUUIDs(h.listed("v1")); !reflect.DeepEqual(got, []string{"r1@0", "d1@1", "d2@2"}) {
		t.Errorf("volumes after a repeated start %v, want unchanged", got)
	}
	// Stopped, it starts again with the volumes of the new start, whose
	// files are checked again.
	h.must(protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1"})
	h.refused(protocol.PathStartVM, start("v1", &root, d2), "data volume d2", "does not exist on this host")
	h.must(protocol.PathStartVM, start("v1", &root, d1))
	if got := volumeUUIDs(h.listed("v1")); !reflect.DeepEqual(got, []string{"r1@0", "d1@1"}) {
		t.Errorf("volumes after a new start %v, want r1 and d1", got)
	}

	// A volume under no storage the host serves is not checked.
	elsewhere := protocol.VolumeTO{VolumeUUID: "r2", InstallPath: "/var/lib/mplane/local-ab/r2.qcow2", Type: volumeTypeRoot}
	h.must(protocol.PathStartVM, start("v2", &elsewhere))
	if got := volumeUUIDs(h.listed("v2")); !reflect.DeepEqual(got, []string{"r2@0"}) {
		t.Errorf("v2 volumes %v", got)
	}
	if st := h.a.Stats(); st.Overlaps != 0 {
		t.Errorf("overlaps %d", st.Overlaps)
	}
}

// TestAttachDetachVolume: attach and detach on a running VM only, both
// idempotent, the root volume never detached, the files of attached volumes
// checked.
func TestAttachDetachVolume(t *testing.T) {
	h := newVolHost(t, Options{})
	root, d1, d2 := rootVol("r1"), dataVol("d1", 1), dataVol("d2", 2)
	h.create(root)

	h.refused(protocol.PathAttachVolume, attach("v1", d1), "unable to attach volume["+d1.InstallPath+"] to vm[uuid:v1]", "no such vm")
	h.must(protocol.PathStartVM, start("v1", &root))
	h.must(protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1"})
	h.create(d1)
	h.refused(protocol.PathAttachVolume, attach("v1", d1), "unable to attach volume["+d1.InstallPath+"] to vm[uuid:v1], vm must be running or paused")
	h.refused(protocol.PathDetachVolume, attach("v1", d1), "unable to detach volume["+d1.InstallPath+"] from vm[uuid:v1], vm must be running or paused")
	if got := volumeUUIDs(h.listed("v1")); !reflect.DeepEqual(got, []string{"r1@0"}) {
		t.Fatalf("volumes of the stopped VM %v, want the root only", got)
	}

	h.must(protocol.PathStartVM, start("v1", &root))
	h.refused(protocol.PathAttachVolume, attach("v1", d2), "data volume d2: "+d2.InstallPath+" does not exist on this host")
	h.create(d2)
	h.must(protocol.PathAttachVolume, attach("v1", d2))
	h.must(protocol.PathAttachVolume, attach("v1", d1))
	h.must(protocol.PathAttachVolume, attach("v1", d1)) // again: no duplicate
	got := h.listed("v1")
	if want := []protocol.VolumeTO{root, d1, d2}; got == nil || !reflect.DeepEqual(got.Volumes, want) {
		t.Fatalf("listed %+v\nwant volumes %+v", got, want)
	}
	other := dataVol("d3", 2)
	h.create(other)
	h.refused(protocol.PathAttachVolume, attach("v1", other), "at deviceId 2: volume d2 is there")
	h.refused(protocol.PathAttachVolume, attach("v1", rootVol("r9")), `volume r9 has type "Root"`)
	h.refused(protocol.PathAttachVolume, attach("v1", vol("d4", "d4", 0, "")), "deviceId 0, the root volume's")

	// The root volume does not detach: said by the command or known by
	// the VM.
	h.refused(protocol.PathDetachVolume, attach("v1", root), "volume r1 is the root volume", "vm[uuid:v1]")
	asData := root
	asData.Type, asData.DeviceID = volumeTypeData, 7
	h.refused(protocol.PathDetachVolume, attach("v1", asData), "volume r1 is the root volume")

	h.must(protocol.PathDetachVolume, attach("v1", d1))
	h.must(protocol.PathDetachVolume, attach("v1", d1)) // detached before
	h.must(protocol.PathDetachVolume, attach("v1", dataVol("never", 5)))
	if got := volumeUUIDs(h.listed("v1")); !reflect.DeepEqual(got, []string{"r1@0", "d2@2"}) {
		t.Fatalf("volumes after detach %v, want r1 and d2", got)
	}
	// A detached volume attaches again, at another deviceId.
	d1.DeviceID = 3
	h.must(protocol.PathAttachVolume, attach("v1", d1))
	if got := volumeUUIDs(h.listed("v1")); !reflect.DeepEqual(got, []string{"r1@0", "d2@2", "d1@3"}) {
		t.Fatalf("volumes after re-attach %v", got)
	}

	st := h.a.Stats()
	if st.Commands[protocol.PathAttachVolume] != 10 || st.Commands[protocol.PathDetachVolume] != 6 || st.Overlaps != 0 {
		t.Errorf("stats: %v, %d overlaps; want 10 attaches, 6 detaches, no overlap", st.Commands, st.Overlaps)
	}
	var onVM int
	for _, ar := range h.a.VMArrivals() {
		if ar.VMUUID == "v1" && (ar.Path == protocol.PathAttachVolume || ar.Path == protocol.PathDetachVolume) {
			onVM++
		}
	}
	// The shape checks (3 refused commands) come before the VM's window.
	if onVM != 13 {
		t.Errorf("%d attach/detach arrivals on v1, want 13", onVM)
	}
}

// TestVolumeCommandFailureInjection: attach and detach go through the
// agent's failure injection; an injected failure changes nothing.
func TestVolumeCommandFailureInjection(t *testing.T) {
	h := newVolHost(t, Options{FailRate: 1, FaultPaths: []string{protocol.PathAttachVolume, protocol.PathDetachVolume}})
	root, d1 := rootVol("r1"), dataVol("d1", 1)
	h.create(root)
	h.create(d1)
	h.must(protocol.PathStartVM, start("v1", &root, d1))
	h.refused(protocol.PathDetachVolume, attach("v1", d1), "injected failure")
	h.refused(protocol.PathAttachVolume, attach("v1", dataVol("d2", 2)), "injected failure")
	if got := volumeUUIDs(h.listed("v1")); !reflect.DeepEqual(got, []string{"r1@0", "d1@1"}) {
		t.Fatalf("volumes %v after injected failures, want unchanged", got)
	}
	if n := h.a.Stats().InjectedFailures; n != 2 {
		t.Errorf("InjectedFailures %d, want 2", n)
	}
}

// TestVolumesSurviveRestart: the state file keeps each VM's volumes and
// NICs, attaches and detaches included.
func TestVolumesSurviveRestart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "kvm.json")
	dir := t.TempDir()
	opts := Options{StateFile: state, Storage: map[string]string{urlA: dir}, StorageQemuImg: storage.QemuImgNone, Server: fastServer()}
	m := newMgmt(t)
	first, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	url, stop := serve(t, first)
	h := &volHost{t: t, m: m, a: &testAgent{Agent: first, url: url}, dir: dir}
	root, d1, d2, d3 := rootVol("r1"), dataVol("d1", 1), dataVol("d2", 2), dataVol("d3", 3)
	for _, v := range []protocol.VolumeTO{root, d1, d2, d3} {
		h.create(v)
	}
	cmd := start("v1", &root, d1)
	cmd.Nics = []protocol.NicTO{{UUID: "n1", Mac: "fa:00:00:00:00:01", IP: "10.0.0.2", Netmask: "255.255.255.0", L3NetworkUUID: "l3", UseVirtio: true}}
	h.must(protocol.PathStartVM, cmd)
	h.must(protocol.PathAttachVolume, attach("v1", d3))
	h.must(protocol.PathAttachVolume, attach("v1", d2))
	h.must(protocol.PathDetachVolume, attach("v1", d1))
	before := first.VMs()
	if got := volumeUUIDs(&before[0]); !reflect.DeepEqual(got, []string{"r1@0", "d2@2", "d3@3"}) {
		t.Fatalf("volumes before the restart %v", got)
	}
	// Every change is persisted when answered, before any shutdown.
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(data); !strings.Contains(s, `"volumeUuid": "d3"`) || strings.Contains(s, `"volumeUuid": "d1"`) || !strings.Contains(s, `"mac": "fa:00:00:00:00:01"`) {
		t.Errorf("state file before shutdown:\n%s\nwant d3 and the NIC, not d1", s)
	}
	stop()

	b := startAgent(t, opts)
	after := b.VMs()
	if !reflect.DeepEqual(after, before) {
		t.Fatalf("after restart VMs\n %+v\nwant\n %+v", after, before)
	}
	h.a = b
	if got := h.listed("v1"); got == nil || !reflect.DeepEqual(got.Volumes, before[0].Volumes) || !reflect.DeepEqual(got.NICs, cmd.Nics) {
		t.Errorf("listed after restart %+v", got)
	}
	h.must(protocol.PathDetachVolume, attach("v1", d3))
	if got := volumeUUIDs(h.listed("v1")); !reflect.DeepEqual(got, []string{"r1@0", "d2@2"}) {
		t.Errorf("volumes after a detach on the restarted agent %v", got)
	}
}

// TestVMsReturnsCopies: what VMs returns shares nothing with the agent.
func TestVMsReturnsCopies(t *testing.T) {
	h := newVolHost(t, Options{})
	root := rootVol("r1")
	h.create(root)
	h.must(protocol.PathStartVM, start("v1", &root))
	vms := h.a.VMs()
	vms[0].Volumes[0].VolumeUUID = "changed"
	if got := h.a.VMs()[0].Volumes[0].VolumeUUID; got != "r1" {
		t.Fatalf("the agent's VM changed through a copy: %q", got)
	}
}
