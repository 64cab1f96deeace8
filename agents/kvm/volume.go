package kvm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// The volume types of protocol.VolumeTO.Type (ZStack's VolumeType).
const (
	volumeTypeRoot = "Root"
	volumeTypeData = "Data"
)

// startVolumes checks the volumes of a start command (a root volume is
// required, as kvmagent's start reads cmd.rootVolume) and returns them as
// the VM records them: the root first, then the data volumes by deviceId.
// An empty type is filled in (Root, Data). The files are not looked at
// (checkVolumeFiles).
func startVolumes(cmd protocol.StartVMCmd) ([]protocol.VolumeTO, error) {
	if cmd.RootVolume == nil {
		return nil, errors.New("rootVolume is required: a VM boots from its root volume")
	}
	root := *cmd.RootVolume
	if err := checkVolumeShape(root, "rootVolume"); err != nil {
		return nil, err
	}
	switch root.Type {
	case "":
		root.Type = volumeTypeRoot
	case volumeTypeRoot:
	default:
		return nil, fmt.Errorf("rootVolume %s has type %q: the root volume's type is %s", root.VolumeUUID, root.Type, volumeTypeRoot)
	}
	vols := make([]protocol.VolumeTO, 0, 1+len(cmd.DataVolumes))
	vols = append(vols, root)
	for i, v := range cmd.DataVolumes {
		if err := checkDataVolume(&v, fmt.Sprintf("dataVolumes[%d]", i)); err != nil {
			return nil, err
		}
		vols = append(vols, v)
	}
	slices.SortStableFunc(vols[1:], func(x, y protocol.VolumeTO) int { return cmp.Compare(x.DeviceID, y.DeviceID) })
	for i, v := range vols {
		for _, w := range vols[:i] {
			switch {
			case v.VolumeUUID == w.VolumeUUID:
				return nil, fmt.Errorf("volume %s is given twice", v.VolumeUUID)
			case v.DeviceID == w.DeviceID:
				return nil, fmt.Errorf("volumes %s and %s both have deviceId %d", w.VolumeUUID, v.VolumeUUID, v.DeviceID)
			}
		}
	}
	return vols, nil
}

// checkVolumeShape checks the fields every volume a VM uses needs. what
// names the volume in the command ("rootVolume", "volume").
func checkVolumeShape(v protocol.VolumeTO, what string) error {
	switch {
	case v.VolumeUUID == "":
		return fmt.Errorf("%s.volumeUuid is required", what)
	case v.InstallPath == "":
		return fmt.Errorf("%s.installPath is required: the volume file's path on the host (primary storage url joined with the volume's path in it)", what)
	case v.DeviceID < 0:
		return fmt.Errorf("%s: deviceId %d is negative", what, v.DeviceID)
	}
	return nil
}

// checkDataVolume checks a data volume (of a start or an attach) and fills
// in its type: a data volume is not the root, so its deviceId is 1 or
// more (0 is the root volume's, as in ZStack).
func checkDataVolume(v *protocol.VolumeTO, what string) error {
	if err := checkVolumeShape(*v, what); err != nil {
		return err
	}
	switch v.Type {
	case "":
		v.Type = volumeTypeData
	case volumeTypeData:
	default:
		return fmt.Errorf("%s: volume %s has type %q, want %s (only data volumes are attached and detached; the root volume comes with the start)",
			what, v.VolumeUUID, v.Type, volumeTypeData)
	}
	if v.DeviceID == 0 {
		return fmt.Errorf("%s: data volume %s has deviceId 0, the root volume's; a data volume's deviceId is 1 or more", what, v.VolumeUUID)
	}
	return nil
}

// isRoot reports whether a volume the VM records is its root volume.
func isRoot(v protocol.VolumeTO) bool { return v.Type == volumeTypeRoot }

// checkVolumeFiles checks each volume's file with checkVolumeFile.
func (a *Agent) checkVolumeFiles(vols []protocol.VolumeTO) error {
	for _, v := range vols {
		if err := a.checkVolumeFile(v); err != nil {
			return err
		}
	}
	return nil
}

// checkVolumeFile checks that a volume's file is there when its
// installPath (an absolute path on the host: a primary storage url joined
// with the path inside it) falls under a storage this host serves
// (Options.Storage): the url prefix is replaced by the storage's
// directory, and the result must be a regular file in that directory
// (symbolic links followed, not out of it). A path under no served url is
// not checked: a host with no storage mounted is fully simulated. Paths
// with ".." elements are refused either way: they can not be placed.
// It does file I/O: call it without a.mu.
func (a *Agent) checkVolumeFile(v protocol.VolumeTO) error {
	what := "data volume " + v.VolumeUUID
	if isRoot(v) {
		what = "root volume " + v.VolumeUUID
	}
	p := v.InstallPath
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("%s: installPath %q holds a NUL byte", what, p)
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return fmt.Errorf("%s: installPath %s has a \"..\" element; send the clean path (primary storage url joined with the volume's path)", what, p)
	}
	if !path.IsAbs(p) {
		return nil // not a file of this host's storage (ceph://..., a relative path)
	}
	p = path.Clean(p)
	url, rel, ok := a.servedPath(p)
	if !ok {
		return nil
	}
	sa := a.storages[url]
	if rel == "" {
		return fmt.Errorf("%s: installPath %s is primary storage %s itself, not a volume file in it", what, v.InstallPath, url)
	}
	root := sa.Root()
	full := filepath.Join(root, filepath.FromSlash(rel))
	where := fmt.Sprintf("primary storage %s, directory %s", url, root)
	resolved, err := filepath.EvalSymlinks(full)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %s does not exist on this host (%s)", what, v.InstallPath, where)
	}
	if err != nil {
		return fmt.Errorf("%s: %s: %w", what, v.InstallPath, err)
	}
	if !within(resolved, root) {
		return fmt.Errorf("%s: %s leads out of its primary storage's directory through a symbolic link (%s)", what, v.InstallPath, where)
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", what, v.InstallPath, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: %s is a directory, not a volume file (%s)", what, v.InstallPath, where)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %s is not a volume file (%s; %s)", what, v.InstallPath, fi.Mode().Type(), where)
	}
	return nil
}

// servedPath finds the served storage url that p (absolute, clean) is in,
// the longest if several are, and p's path relative to it ("" for the url
// itself).
func (a *Agent) servedPath(p string) (url, rel string, ok bool) {
	for _, u := range a.storageURLs {
		var r string
		switch {
		case p == u:
			r = ""
		case u == "/":
			r = p[1:]
		case strings.HasPrefix(p, u+"/"):
			r = p[len(u)+1:]
		default:
			continue
		}
		if !ok || len(u) > len(url) {
			url, rel, ok = u, r, true
		}
	}
	return url, rel, ok
}

// withVolume is vols (root first, then data by deviceId) with v added in
// its place; a new slice, so that copies of the VM never see it change.
func withVolume(vols []protocol.VolumeTO, v protocol.VolumeTO) []protocol.VolumeTO {
	out := make([]protocol.VolumeTO, 0, len(vols)+1)
	out = append(out, vols...)
	out = append(out, v)
	slices.SortStableFunc(out, func(x, y protocol.VolumeTO) int {
		rank := func(v protocol.VolumeTO) int {
			if isRoot(v) {
				return -1
			}
			return v.DeviceID
		}
		return cmp.Compare(rank(x), rank(y))
	})
	return out
}

// withoutVolume is vols without the one at i, in a new slice (nil when
// none is left).
func withoutVolume(vols []protocol.VolumeTO, i int) []protocol.VolumeTO {
	if len(vols) == 1 {
		return nil
	}
	out := make([]protocol.VolumeTO, 0, len(vols)-1)
	out = append(out, vols[:i]...)
	return append(out, vols[i+1:]...)
}

// attachVolume plugs a data volume into a running VM, as kvmagent's
// attach_data_volume: the VM must be running; attaching a volume that is
// already attached succeeds and changes nothing.
func (a *Agent) attachVolume(ctx context.Context, req *agentserver.Request, cmd protocol.AttachVolumeCmd) (protocol.VMRsp, error) {
	id := cmd.VMInstanceUUID
	if id == "" {
		return protocol.VMRsp{}, errors.New("vmInstanceUuid is required")
	}
	vol := cmd.Volume
	if err := checkDataVolume(&vol, "volume"); err != nil {
		return protocol.VMRsp{}, err
	}
	defer a.enterVM(id, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	// First the VM (a repeated attach needs no file check), then the file
	// without the lock, then the VM again: it may have changed meanwhile.
	for checked := false; ; checked = true {
		a.mu.Lock()
		vm := a.vms[id]
		if err := mustRun(vm, id, "attach", vol.InstallPath, "to"); err != nil {
			state := stateOf(vm)
			a.mu.Unlock()
			return protocol.VMRsp{VMState: state}, err
		}
		if slices.ContainsFunc(vm.Volumes, func(v protocol.VolumeTO) bool { return v.VolumeUUID == vol.VolumeUUID }) {
			a.mu.Unlock()
			return protocol.VMRsp{VMState: vm.State}, nil // attached before
		}
		if i := slices.IndexFunc(vm.Volumes, func(v protocol.VolumeTO) bool { return v.DeviceID == vol.DeviceID }); i >= 0 {
			other := vm.Volumes[i].VolumeUUID
			a.mu.Unlock()
			return protocol.VMRsp{VMState: vm.State}, fmt.Errorf("unable to attach volume %s to vm[uuid:%s] at deviceId %d: volume %s is there",
				vol.VolumeUUID, id, vol.DeviceID, other)
		}
		if !checked {
			a.mu.Unlock()
			if err := a.checkVolumeFile(vol); err != nil {
				return protocol.VMRsp{VMState: protocol.VMStateRunning}, err
			}
			continue
		}
		vm.Volumes = withVolume(vm.Volumes, vol)
		a.version++
		state := vm.State
		a.mu.Unlock()
		return protocol.VMRsp{VMState: state}, a.committed()
	}
}

// detachVolume unplugs a data volume from a running VM, as kvmagent's
// detach_data_volume: the VM must be running; a volume that is not
// attached succeeds ("detached before"); the root volume never detaches.
func (a *Agent) detachVolume(ctx context.Context, req *agentserver.Request, cmd protocol.AttachVolumeCmd) (protocol.VMRsp, error) {
	id := cmd.VMInstanceUUID
	if id == "" {
		return protocol.VMRsp{}, errors.New("vmInstanceUuid is required")
	}
	vol := cmd.Volume
	if vol.VolumeUUID == "" {
		return protocol.VMRsp{}, errors.New("volume.volumeUuid is required")
	}
	if vol.Type == volumeTypeRoot || vol.DeviceID == 0 {
		return protocol.VMRsp{}, rootDetachError(vol.VolumeUUID, id)
	}
	defer a.enterVM(id, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	a.mu.Lock()
	vm := a.vms[id]
	if err := mustRun(vm, id, "detach", vol.InstallPath, "from"); err != nil {
		state := stateOf(vm)
		a.mu.Unlock()
		return protocol.VMRsp{VMState: state}, err
	}
	i := slices.IndexFunc(vm.Volumes, func(v protocol.VolumeTO) bool { return v.VolumeUUID == vol.VolumeUUID })
	if i < 0 {
		a.mu.Unlock()
		return protocol.VMRsp{VMState: vm.State}, nil // detached before
	}
	if isRoot(vm.Volumes[i]) {
		a.mu.Unlock()
		return protocol.VMRsp{VMState: vm.State}, rootDetachError(vol.VolumeUUID, id)
	}
	vm.Volumes = withoutVolume(vm.Volumes, i)
	a.version++
	state := vm.State
	a.mu.Unlock()
	return protocol.VMRsp{VMState: state}, a.committed()
}

func rootDetachError(volUUID, vmUUID string) error {
	return fmt.Errorf("volume %s is the root volume (deviceId 0, type %s) of vm[uuid:%s]: a VM cannot run without its root volume; only data volumes detach",
		volUUID, volumeTypeRoot, vmUUID)
}

// mustRun is kvmagent's refusal of a volume change on a VM that is not
// running (op "attach" or "detach", prep "to" or "from").
func mustRun(vm *protocol.VM, vmUUID, op, installPath, prep string) error {
	if vm == nil {
		return fmt.Errorf("unable to %s volume[%s] %s vm[uuid:%s], this host has no such vm", op, installPath, prep, vmUUID)
	}
	if vm.State != protocol.VMStateRunning {
		return fmt.Errorf("unable to %s volume[%s] %s vm[uuid:%s], vm must be running or paused (it is %s)", op, installPath, prep, vmUUID, vm.State)
	}
	return nil
}

func stateOf(vm *protocol.VM) string {
	if vm == nil {
		return ""
	}
	return vm.State
}

// cloneVM copies a VM with its slices, so that the copy shares nothing
// with the agent's record.
func cloneVM(vm *protocol.VM) protocol.VM {
	c := *vm
	c.Volumes = slices.Clone(vm.Volumes)
	c.NICs = slices.Clone(vm.NICs)
	return c
}
