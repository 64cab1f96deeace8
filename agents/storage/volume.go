package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// volumeRsp describes the file at info.abs; rel is its path as the command
// gave it.
func (a *Agent) volumeRsp(rel string, info fileInfo) protocol.VolumeRsp {
	rsp := protocol.VolumeRsp{
		StorageCapacity: a.capacityNow(),
		InstallPath:     path.Clean(rel),
		Format:          info.format,
		Size:            info.virtualSize,
		ActualSize:      info.actualSize,
	}
	if info.backing != "" {
		rsp.BackingFile = a.relative(info.backing)
	}
	return rsp
}

// described inspects the file a command has just produced.
func (a *Agent) described(rel, abs, format string) (protocol.VolumeRsp, error) {
	info, err := a.inspect(abs, format, "volume")
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	return a.volumeRsp(rel, info), nil
}

func (a *Agent) createEmpty(ctx context.Context, _ *agentserver.Request, cmd protocol.CreateEmptyVolumeCmd) (protocol.VolumeRsp, error) {
	if cmd.Size <= 0 {
		return protocol.VolumeRsp{}, fmt.Errorf("size %d: must be positive (bytes)", cmd.Size)
	}
	format := cmd.Format
	switch format {
	case "":
		format = protocol.FormatRaw
		if a.qemu.ok() {
			format = protocol.FormatQcow2
		}
	case protocol.FormatQcow2:
		if !a.qemu.ok() {
			return protocol.VolumeRsp{}, errors.New("format qcow2 needs qemu-img, which this agent does not have")
		}
	case protocol.FormatRaw:
	default:
		return protocol.VolumeRsp{}, fmt.Errorf("unknown format %q: want %s or %s", format, protocol.FormatQcow2, protocol.FormatRaw)
	}
	abs, err := a.resolve(cmd.InstallPath)
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	defer a.paths.lock(abs)()
	if format == protocol.FormatQcow2 {
		err = a.produce(abs, false, func(tmp string) error { return a.qemu.createQcow2(ctx, tmp, cmd.Size) })
	} else {
		err = a.produceFile(abs, false, func(f outFile) error { return f.Truncate(cmd.Size) })
	}
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("create volume %s: %w", cmd.InstallPath, err)
	}
	return a.described(cmd.InstallPath, abs, format)
}

func (a *Agent) createFromImage(ctx context.Context, _ *agentserver.Request, cmd protocol.CreateVolumeFromImageCmd) (protocol.VolumeRsp, error) {
	if cmd.Size < 0 {
		return protocol.VolumeRsp{}, fmt.Errorf("size %d: must not be negative", cmd.Size)
	}
	img, err := a.resolve(cmd.ImagePath)
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("image: %w", err)
	}
	dst, err := a.resolve(cmd.InstallPath)
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	if img == dst {
		return protocol.VolumeRsp{}, errors.New("imagePath and installPath are the same file")
	}
	// The image is only read: concurrent volumes from one image do not
	// wait for each other.
	defer a.paths.lock(dst)()
	im, err := a.inspectChain(img, cmd.ImageFormat, "image")
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	if cmd.Size != 0 && cmd.Size < im.virtualSize {
		return protocol.VolumeRsp{}, fmt.Errorf("size %d is smaller than the image's virtual size %d", cmd.Size, im.virtualSize)
	}
	format := im.format
	if a.qemu.ok() {
		// A linked clone: a qcow2 overlay whose backing file is the image.
		format = protocol.FormatQcow2
		name, err := backingRel(dst, img)
		if err != nil {
			return protocol.VolumeRsp{}, err
		}
		err = a.produce(dst, false, func(tmp string) error {
			return a.qemu.createOverlay(ctx, tmp, name, im.format, cmd.Size)
		})
		if err != nil {
			return protocol.VolumeRsp{}, fmt.Errorf("create volume %s from image %s: %w", cmd.InstallPath, cmd.ImagePath, err)
		}
		return a.described(cmd.InstallPath, dst, format)
	}
	switch {
	case im.backing != "":
		return protocol.VolumeRsp{}, fmt.Errorf("image %s has a backing file: copying it needs qemu-img", cmd.ImagePath)
	case format == protocol.FormatQcow2 && cmd.Size > im.virtualSize:
		return protocol.VolumeRsp{}, fmt.Errorf("growing the qcow2 image %s to %d bytes needs qemu-img", cmd.ImagePath, cmd.Size)
	}
	// A raw copy is as long as the volume (a hole at the end); a qcow2
	// copy as its image file (its virtual size is in its header).
	length := im.length
	if format == protocol.FormatRaw {
		length = max(cmd.Size, im.length)
	}
	if err := a.copyFile(ctx, im, dst, false, length); err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("create volume %s from image %s: %w", cmd.InstallPath, cmd.ImagePath, err)
	}
	return a.described(cmd.InstallPath, dst, format)
}

// copyFile makes a sparse copy of src at dst, length bytes long (longer
// than src: a hole at the end).
func (a *Agent) copyFile(ctx context.Context, src fileInfo, dst string, replace bool, length int64) error {
	if err := a.ensureSpace(src.actualSize, "a copy of "+a.relative(src.abs)); err != nil {
		return err
	}
	in, err := os.Open(src.abs)
	if err != nil {
		return err
	}
	defer in.Close()
	return a.produceFile(dst, replace, func(f outFile) error {
		if err := copySparse(ctx, f, in, src.length); err != nil {
			return err
		}
		if length > src.length {
			return f.Truncate(length)
		}
		return nil
	})
}

// cloneVolume copies a volume or a snapshot: SrcPath is a volume, a file
// snapshot (a plain file, copied as a volume is) or an internal snapshot,
// "<volume>@<name>" (cloneInternalSnapshot).
func (a *Agent) cloneVolume(ctx context.Context, _ *agentserver.Request, cmd protocol.CloneVolumeCmd) (protocol.VolumeRsp, error) {
	if volRel, name, internal := internalSnapshot(cmd.SrcPath); internal {
		return a.cloneInternalSnapshot(ctx, cmd, volRel, name)
	}
	src, err := a.resolve(cmd.SrcPath)
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("source: %w", err)
	}
	dst, err := a.resolve(cmd.InstallPath)
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	if src == dst {
		return protocol.VolumeRsp{}, errors.New("srcPath and installPath are the same file")
	}
	defer a.paths.lock(src, dst)()
	info, err := a.inspectChain(src, cmd.Format, "volume")
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	switch {
	case info.format == protocol.FormatQcow2 && a.qemu.ok():
		// Flattened: the clone does not depend on the source's backing chain.
		err = a.produce(dst, false, func(tmp string) error { return a.qemu.convert(ctx, src, info.format, tmp) })
	case info.backing != "":
		return protocol.VolumeRsp{}, fmt.Errorf("volume %s has a backing file: cloning it needs qemu-img", cmd.SrcPath)
	default:
		err = a.copyFile(ctx, info, dst, false, info.length)
	}
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("clone volume %s to %s: %w", cmd.SrcPath, cmd.InstallPath, err)
	}
	return a.described(cmd.InstallPath, dst, info.format)
}

// cloneInternalSnapshot clones the content the qcow2 volume at volRel had
// when its internal snapshot name was taken (cmd.SrcPath is
// "<volRel>@<name>"): flattened and standalone, of the snapshot's virtual
// size, written through a temporary file as every clone. The volume file
// is the one locked and is only read: it and its snapshots are unchanged.
func (a *Agent) cloneInternalSnapshot(ctx context.Context, cmd protocol.CloneVolumeCmd, volRel, name string) (protocol.VolumeRsp, error) {
	if !snapshotName.MatchString(name) {
		return protocol.VolumeRsp{}, fmt.Errorf("snapshot %q: bad snapshot name %q", cmd.SrcPath, name)
	}
	switch cmd.Format {
	case "", protocol.FormatQcow2:
	default:
		return protocol.VolumeRsp{}, fmt.Errorf("snapshot %s: format %q: an internal snapshot is in a %s volume", cmd.SrcPath, cmd.Format, protocol.FormatQcow2)
	}
	vol, err := a.resolve(volRel)
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("source: %w", err)
	}
	dst, err := a.resolve(cmd.InstallPath)
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	if vol == dst {
		return protocol.VolumeRsp{}, errors.New("srcPath's volume and installPath are the same file")
	}
	defer a.paths.lock(vol, dst)()
	info, err := a.inspectChain(vol, protocol.FormatQcow2, "volume")
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("snapshot %s: %w", cmd.SrcPath, err)
	}
	if !a.qemu.ok() {
		return protocol.VolumeRsp{}, fmt.Errorf("cloning the internal snapshot %s needs qemu-img", cmd.SrcPath)
	}
	names, err := a.qemu.snapshotNames(ctx, vol)
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	if !slices.Contains(names, name) {
		return protocol.VolumeRsp{}, fmt.Errorf("snapshot %s not found: volume %s has no snapshot %q", cmd.SrcPath, volRel, name)
	}
	size, found, err := qcow2SnapshotSize(vol, name, info.virtualSize)
	switch {
	case err != nil:
		return protocol.VolumeRsp{}, fmt.Errorf("volume %s: %w", volRel, err)
	case !found:
		return protocol.VolumeRsp{}, fmt.Errorf("volume %s: snapshot %q listed by qemu-img is not in its snapshot table", volRel, name)
	}
	err = a.produce(dst, false, func(tmp string) error {
		if err := a.qemu.convertSnapshot(ctx, vol, name, tmp); err != nil {
			return err
		}
		if size != info.virtualSize {
			// The volume was grown since: the clone has the snapshot's size.
			return a.qemu.setSize(ctx, tmp, protocol.FormatQcow2, size)
		}
		return nil
	})
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("clone snapshot %s to %s: %w", cmd.SrcPath, cmd.InstallPath, err)
	}
	return a.described(cmd.InstallPath, dst, protocol.FormatQcow2)
}

func (a *Agent) resizeVolume(ctx context.Context, _ *agentserver.Request, cmd protocol.ResizeVolumeCmd) (protocol.VolumeRsp, error) {
	if cmd.Size <= 0 {
		return protocol.VolumeRsp{}, fmt.Errorf("size %d: must be positive (bytes)", cmd.Size)
	}
	abs, err := a.resolve(cmd.InstallPath)
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	defer a.paths.lock(abs)()
	info, err := a.inspectChain(abs, cmd.Format, "volume")
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	switch {
	case cmd.Size < info.virtualSize:
		return protocol.VolumeRsp{}, fmt.Errorf("shrinking volume %s from %d to %d bytes refused: volumes only grow", cmd.InstallPath, info.virtualSize, cmd.Size)
	case cmd.Size == info.virtualSize:
		return a.volumeRsp(cmd.InstallPath, info), nil
	case info.format == protocol.FormatQcow2:
		if !a.qemu.ok() {
			return protocol.VolumeRsp{}, fmt.Errorf("resizing the qcow2 volume %s needs qemu-img", cmd.InstallPath)
		}
		err = a.qemu.resize(ctx, abs, info.format, cmd.Size)
	default:
		// Growing a raw file: a hole at the end, in one system call.
		if err = os.Truncate(abs, cmd.Size); err == nil {
			err = syncPath(abs)
		}
	}
	if err != nil {
		return protocol.VolumeRsp{}, fmt.Errorf("resize volume %s: %w", cmd.InstallPath, err)
	}
	return a.described(cmd.InstallPath, abs, info.format)
}

func (a *Agent) volumeInfo(_ context.Context, _ *agentserver.Request, cmd protocol.VolumeInfoCmd) (protocol.VolumeRsp, error) {
	abs, err := a.resolve(cmd.InstallPath)
	if err != nil {
		return protocol.VolumeRsp{}, err
	}
	defer a.paths.lock(abs)()
	return a.described(cmd.InstallPath, abs, cmd.Format)
}

// deleter is the handler of the idempotent deletes of volumes and images.
func (a *Agent) deleter(what string) agentserver.Func[protocol.DeleteCmd, protocol.StorageRsp] {
	return func(_ context.Context, _ *agentserver.Request, cmd protocol.DeleteCmd) (protocol.StorageRsp, error) {
		abs, err := a.resolve(cmd.InstallPath)
		if err != nil {
			return protocol.StorageRsp{}, err
		}
		unlock := a.paths.lock(abs)
		err = a.removeFile(abs, what)
		unlock()
		if err != nil {
			return protocol.StorageRsp{}, err
		}
		return protocol.StorageRsp{StorageCapacity: a.capacityNow()}, nil
	}
}
