package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"mplane/agents/protocol"
)

// fileInfo is what the agent knows of a volume, image or snapshot file,
// read from its header (no qemu-img needed).
type fileInfo struct {
	abs    string
	format string
	// virtualSize is the guest-visible size; length the file's length;
	// actualSize its allocation on disk.
	virtualSize, length, actualSize int64
	// backingName is the backing file name in a qcow2 header; backing
	// the file it names (absolute, under the root, symlinks resolved).
	// Both are "" when the file has none.
	backingName, backing string
	// snapshots is the qcow2 header's count of internal snapshots.
	snapshots uint32
}

var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// maxChain bounds the backing chains the agent follows.
const maxChain = 32

// inspect reads the file at abs and resolves its backing file, refusing
// one that is not a file under the root. format is what the node says the file is
// (the agent's own answer at creation), authoritative when set: a raw disk
// whose guest wrote a qcow2 header stays raw. When empty the header
// decides. what names the file in errors ("volume", "image"...).
func (a *Agent) inspect(abs, format, what string) (fileInfo, error) {
	info, err := a.readHeader(abs, format, what)
	if err != nil || info.backingName == "" {
		return info, err
	}
	info.backing, err = a.backingPath(abs, info.backingName, what)
	if err != nil {
		return fileInfo{}, err
	}
	return info, nil
}

// readHeader is inspect without resolving the backing file.
func (a *Agent) readHeader(abs, format, what string) (fileInfo, error) {
	fi, err := a.regularFile(abs, what)
	if err != nil {
		return fileInfo{}, err
	}
	info := fileInfo{abs: abs, length: fi.Size(), actualSize: allocated(fi)}
	f, err := os.Open(abs)
	if err != nil {
		return fileInfo{}, fmt.Errorf("%s %s: %w", what, a.relative(abs), err)
	}
	defer f.Close()
	var h [104]byte
	n, err := io.ReadFull(f, h[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fileInfo{}, fmt.Errorf("read %s %s: %w", what, a.relative(abs), err)
	}
	isQcow2 := n >= 72 && string(h[:4]) == string(qcow2Magic)
	switch format {
	case "":
		format = protocol.FormatRaw
		if isQcow2 {
			format = protocol.FormatQcow2
		}
	case protocol.FormatRaw:
	case protocol.FormatQcow2:
		if !isQcow2 {
			return fileInfo{}, fmt.Errorf("%s %s is not a qcow2 file", what, a.relative(abs))
		}
	default:
		return fileInfo{}, fmt.Errorf("unknown format %q: want %s or %s", format, protocol.FormatQcow2, protocol.FormatRaw)
	}
	info.format = format
	if format == protocol.FormatRaw {
		info.virtualSize = info.length
		return info, nil
	}
	be := binary.BigEndian
	version := be.Uint32(h[4:8])
	if version != 2 && version != 3 {
		return fileInfo{}, fmt.Errorf("%s %s: qcow2 version %d is not supported", what, a.relative(abs), version)
	}
	if version == 3 && n >= 80 && be.Uint64(h[72:80])&(1<<2) != 0 {
		return fileInfo{}, fmt.Errorf("%s %s has an external data file: not supported", what, a.relative(abs))
	}
	size := be.Uint64(h[24:32])
	if size > math.MaxInt64 {
		return fileInfo{}, fmt.Errorf("%s %s: bad qcow2 size %d", what, a.relative(abs), size)
	}
	info.virtualSize = int64(size)
	info.snapshots = be.Uint32(h[60:64])
	off, blen := be.Uint64(h[8:16]), be.Uint32(h[16:20])
	if off == 0 {
		return info, nil
	}
	if blen == 0 || blen > 1023 || off > math.MaxInt64-1024 {
		return fileInfo{}, fmt.Errorf("%s %s: bad backing file name in its qcow2 header", what, a.relative(abs))
	}
	name := make([]byte, blen)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return fileInfo{}, fmt.Errorf("%s %s: read its backing file name: %w", what, a.relative(abs), err)
	}
	info.backingName = string(name)
	return info, nil
}

// backingPath resolves the backing file name written in the qcow2 file at
// abs, refusing what qemu would not read as a plain file under the root:
// protocols ("nbd:", "json:{...}"), paths out of the root, missing files.
func (a *Agent) backingPath(abs, name, what string) (string, error) {
	if i := strings.IndexAny(name, ":/"); i >= 0 && name[i] == ':' {
		return "", fmt.Errorf("%s %s: backing file %q is not a plain file path", what, a.relative(abs), name)
	}
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(abs), p)
	}
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: backing file %q is missing: %w", what, a.relative(abs), name, err)
	}
	if !a.within(r) {
		return "", fmt.Errorf("%s %s: backing file %q %w", what, a.relative(abs), name, errEscapes)
	}
	return r, nil
}

// inspectChain inspects abs and every file of its backing chain (each
// backing file by its header), so that nothing qemu-img will open lies
// outside the root. It returns abs's info.
func (a *Agent) inspectChain(abs, format, what string) (fileInfo, error) {
	top, err := a.inspect(abs, format, what)
	if err != nil {
		return fileInfo{}, err
	}
	cur := top
	for depth := 0; cur.backing != ""; depth++ {
		if depth >= maxChain {
			return fileInfo{}, fmt.Errorf("%s %s: backing chain longer than %d files", what, a.relative(abs), maxChain)
		}
		next, err := a.inspect(cur.backing, "", "backing file of "+what)
		if err != nil {
			return fileInfo{}, err
		}
		cur = next
	}
	return top, nil
}

// backingRel is the backing file name to write into a new overlay at
// overlay for the backing file at backing: relative to the overlay's
// directory (the root can move), starting with "./" or "../" so that qemu
// never reads a ':' in it as a protocol.
func backingRel(overlay, backing string) (string, error) {
	r, err := filepath.Rel(filepath.Dir(overlay), backing)
	if err != nil {
		return "", err
	}
	r = filepath.ToSlash(r)
	if !strings.HasPrefix(r, "../") {
		r = "./" + r
	}
	return r, nil
}
