package storage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// snapshotName is what a snapshot UUID may be: it names an internal qcow2
// snapshot and follows "@" in the snapshot's install path.
var snapshotName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// internalSnapshot splits "<volume path>@<name>", the install path of an
// internal qcow2 snapshot. File snapshots have no "@" in their paths.
func internalSnapshot(installPath string) (volume, name string, ok bool) {
	i := strings.LastIndexByte(installPath, '@')
	if i < 0 {
		return "", "", false
	}
	return installPath[:i], installPath[i+1:], true
}

// Bounds of qemu's qcow2 driver on a snapshot table (QCOW_MAX_SNAPSHOTS,
// QCOW_MAX_SNAPSHOT_EXTRA_DATA).
const (
	maxQcow2Snapshots      = 65536
	maxQcow2SnapshotExtra  = 1024
	qcow2SnapshotEntryHead = 40
)

// qcow2SnapshotSize reads the snapshot table of the qcow2 file at abs
// (docs/interop/qcow2.txt, "Snapshots") and answers the virtual size the
// volume had when its snapshot name was taken (the first of that name, as
// qemu finds it). A snapshot whose entry does not record it (an old one)
// has current, the size qemu gives it too. found is false when there is
// none of that name.
func qcow2SnapshotSize(abs, name string, current int64) (size int64, found bool, err error) {
	f, err := os.Open(abs)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	var h [72]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return 0, false, fmt.Errorf("read its qcow2 header: %w", err)
	}
	if !bytes.Equal(h[:4], qcow2Magic) {
		return 0, false, errors.New("not a qcow2 file")
	}
	be := binary.BigEndian
	n, off := be.Uint32(h[60:64]), be.Uint64(h[64:72])
	switch {
	case n == 0:
		return 0, false, nil
	case n > maxQcow2Snapshots:
		return 0, false, fmt.Errorf("bad qcow2 header: %d snapshots", n)
	case off == 0 || off%8 != 0 || off > math.MaxInt64:
		return 0, false, fmt.Errorf("bad qcow2 header: snapshot table at %d", off)
	}
	r := bufio.NewReader(io.NewSectionReader(f, int64(off), math.MaxInt64-int64(off)))
	pad := 0
	for i := uint32(0); i < n; i++ {
		// Each entry is the fixed part, extra data, ID and name, and
		// starts at a multiple of 8 bytes: the padding is skipped before
		// the next one (the last one's may not be in the file).
		if _, err := r.Discard(pad); err != nil {
			return 0, false, fmt.Errorf("read snapshot %d of its snapshot table: %w", i, err)
		}
		var e [qcow2SnapshotEntryHead]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return 0, false, fmt.Errorf("read snapshot %d of its snapshot table: %w", i, err)
		}
		idLen, nameLen, extraLen := int(be.Uint16(e[12:14])), int(be.Uint16(e[14:16])), be.Uint32(e[36:40])
		if extraLen > maxQcow2SnapshotExtra {
			return 0, false, fmt.Errorf("snapshot %d of its snapshot table: %d bytes of extra data", i, extraLen)
		}
		entry := qcow2SnapshotEntryHead + int(extraLen) + idLen + nameLen
		pad = (8 - entry%8) % 8
		rest := make([]byte, entry-qcow2SnapshotEntryHead)
		if _, err := io.ReadFull(r, rest); err != nil {
			return 0, false, fmt.Errorf("read snapshot %d of its snapshot table: %w", i, err)
		}
		nameAt := int(extraLen) + idLen
		if string(rest[nameAt:nameAt+nameLen]) != name {
			continue
		}
		if extraLen < 16 {
			return current, true, nil
		}
		// Extra data: vm_state_size_large, then disk_size.
		disk := be.Uint64(rest[8:16])
		if disk == 0 || disk > math.MaxInt64 {
			return 0, false, fmt.Errorf("snapshot %q: bad disk size %d in its snapshot table", name, disk)
		}
		return int64(disk), true, nil
	}
	return 0, false, nil
}

func (a *Agent) createSnapshot(ctx context.Context, _ *agentserver.Request, cmd protocol.CreateSnapshotCmd) (protocol.SnapshotRsp, error) {
	if !snapshotName.MatchString(cmd.SnapshotUUID) {
		return protocol.SnapshotRsp{}, fmt.Errorf("snapshotUuid %q: want 1 to 128 letters, digits, '.', '_' or '-'", cmd.SnapshotUUID)
	}
	vol, err := a.resolve(cmd.VolumeInstallPath)
	if err != nil {
		return protocol.SnapshotRsp{}, fmt.Errorf("volume: %w", err)
	}
	// The snapshot's file, if the volume is snapshotted to one; its path
	// is checked when it is needed. Both paths are locked together, in
	// the locks' order.
	snap, snapErr := "", error(nil)
	if cmd.InstallPath != "" {
		snap, snapErr = a.resolve(cmd.InstallPath)
	}
	defer a.paths.lock(vol, snap)()
	info, err := a.inspectChain(vol, cmd.Format, "volume")
	if err != nil {
		return protocol.SnapshotRsp{}, err
	}
	if info.format == protocol.FormatQcow2 && a.qemu.ok() {
		names, err := a.qemu.snapshotNames(ctx, vol)
		if err != nil {
			return protocol.SnapshotRsp{}, err
		}
		if slices.Contains(names, cmd.SnapshotUUID) {
			return protocol.SnapshotRsp{}, fmt.Errorf("volume %s already has a snapshot %s", cmd.VolumeInstallPath, cmd.SnapshotUUID)
		}
		if err := a.qemu.snapshot(ctx, "c", cmd.SnapshotUUID, vol); err != nil {
			return protocol.SnapshotRsp{}, fmt.Errorf("snapshot volume %s: %w", cmd.VolumeInstallPath, err)
		}
		after, err := a.inspect(vol, info.format, "volume")
		if err != nil {
			return protocol.SnapshotRsp{}, err
		}
		return protocol.SnapshotRsp{
			StorageCapacity: a.capacityNow(),
			InstallPath:     path.Clean(cmd.VolumeInstallPath) + "@" + cmd.SnapshotUUID,
			Internal:        true,
			Format:          after.format,
			Size:            after.virtualSize,
			ActualSize:      after.actualSize,
		}, nil
	}
	// A file of its own: a sparse copy of the volume.
	switch {
	case cmd.InstallPath == "":
		return protocol.SnapshotRsp{}, fmt.Errorf("installPath is required: volume %s is snapshotted to a file", cmd.VolumeInstallPath)
	case strings.Contains(cmd.InstallPath, "@"):
		return protocol.SnapshotRsp{}, fmt.Errorf("snapshot installPath %q: must not contain '@'", cmd.InstallPath)
	case info.backing != "":
		return protocol.SnapshotRsp{}, fmt.Errorf("volume %s has a backing file: snapshotting it needs qemu-img", cmd.VolumeInstallPath)
	}
	if snapErr != nil {
		return protocol.SnapshotRsp{}, snapErr
	}
	if snap == vol {
		return protocol.SnapshotRsp{}, errors.New("installPath is the volume itself")
	}
	if err := a.copyFile(ctx, info, snap, false, info.length); err != nil {
		return protocol.SnapshotRsp{}, fmt.Errorf("snapshot volume %s to %s: %w", cmd.VolumeInstallPath, cmd.InstallPath, err)
	}
	fi, err := os.Stat(snap)
	if err != nil {
		return protocol.SnapshotRsp{}, err
	}
	return protocol.SnapshotRsp{
		StorageCapacity: a.capacityNow(),
		InstallPath:     path.Clean(cmd.InstallPath),
		Format:          info.format,
		Size:            info.virtualSize,
		ActualSize:      allocated(fi),
	}, nil
}

func (a *Agent) deleteSnapshot(ctx context.Context, _ *agentserver.Request, cmd protocol.DeleteCmd) (protocol.StorageRsp, error) {
	volRel, name, internal := internalSnapshot(cmd.InstallPath)
	if !internal {
		return a.deleter("snapshot")(ctx, nil, cmd)
	}
	if !snapshotName.MatchString(name) {
		return protocol.StorageRsp{}, fmt.Errorf("snapshot %q: bad snapshot name %q", cmd.InstallPath, name)
	}
	vol, err := a.resolve(volRel)
	if err != nil {
		return protocol.StorageRsp{}, err
	}
	defer a.paths.lock(vol)()
	if _, err := os.Lstat(vol); errors.Is(err, fs.ErrNotExist) {
		// The volume went, and its snapshots with it.
		return protocol.StorageRsp{StorageCapacity: a.capacityNow()}, nil
	}
	if _, err := a.inspectChain(vol, protocol.FormatQcow2, "volume"); err != nil {
		return protocol.StorageRsp{}, err
	}
	if !a.qemu.ok() {
		return protocol.StorageRsp{}, fmt.Errorf("deleting the internal snapshot %s needs qemu-img", cmd.InstallPath)
	}
	names, err := a.qemu.snapshotNames(ctx, vol)
	if err != nil {
		return protocol.StorageRsp{}, err
	}
	if slices.Contains(names, name) {
		if err := a.qemu.snapshot(ctx, "d", name, vol); err != nil {
			return protocol.StorageRsp{}, fmt.Errorf("delete snapshot %s: %w", cmd.InstallPath, err)
		}
	}
	return protocol.StorageRsp{StorageCapacity: a.capacityNow()}, nil
}

func (a *Agent) revertVolume(ctx context.Context, _ *agentserver.Request, cmd protocol.RevertVolumeCmd) (protocol.VolumeRsp, error) {
	vol, err := a.resolve(cmd.VolumeInstallPath)
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("volume: %w", err)
	}
	if cmd.SnapshotInstallPath == "" {
		return protocol.VolumeRsp{}, errors.New("snapshotInstallPath is required")
	}
	if volRel, name, internal := internalSnapshot(cmd.SnapshotInstallPath); internal {
		if path.Clean(volRel) != path.Clean(cmd.VolumeInstallPath) {
			return protocol.VolumeRsp{}, fmt.Errorf("snapshot %s is not a snapshot of volume %s", cmd.SnapshotInstallPath, cmd.VolumeInstallPath)
		}
		defer a.paths.lock(vol)()
		format := cmd.Format
		if format == "" {
			format = protocol.FormatQcow2
		}
		info, err := a.inspectChain(vol, format, "volume")
		if err != nil {
			return protocol.VolumeRsp{}, err
		}
		if !a.qemu.ok() {
			return protocol.VolumeRsp{}, fmt.Errorf("reverting to the internal snapshot %s needs qemu-img", cmd.SnapshotInstallPath)
		}
		names, err := a.qemu.snapshotNames(ctx, vol)
		if err != nil {
			return protocol.VolumeRsp{}, err
		}
		if !slices.Contains(names, name) {
			return protocol.VolumeRsp{}, fmt.Errorf("snapshot %s not found", cmd.SnapshotInstallPath)
		}
		if err := a.qemu.snapshot(ctx, "a", name, vol); err != nil {
			return protocol.VolumeRsp{}, fmt.Errorf("revert volume %s: %w", cmd.VolumeInstallPath, err)
		}
		return a.described(cmd.VolumeInstallPath, vol, info.format)
	}
	snap, err := a.resolve(cmd.SnapshotInstallPath)
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("snapshot: %w", err)
	}
	if snap == vol {
		return protocol.VolumeRsp{}, errors.New("snapshotInstallPath is the volume itself")
	}
	defer a.paths.lock(vol, snap)()
	vi, err := a.inspect(vol, cmd.Format, "volume")
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	si, err := a.inspectChain(snap, vi.format, "snapshot")
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	if si.backing != "" {
		return protocol.VolumeRsp{}, fmt.Errorf("snapshot %s has a backing file: not a snapshot this agent made", cmd.SnapshotInstallPath)
	}
	// The volume is replaced whole, atomically: a crash leaves the old
	// content or the snapshot's, never a mix.
	if err := a.copyFile(ctx, si, vol, true, si.length); err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("revert volume %s to %s: %w", cmd.VolumeInstallPath, cmd.SnapshotInstallPath, err)
	}
	return a.described(cmd.VolumeInstallPath, vol, vi.format)
}
