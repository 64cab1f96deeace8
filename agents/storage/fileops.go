package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// blockSize is the granularity of sparse writes: a block of zeros is
// skipped (left a hole), anything else written.
const blockSize = 4096

var zeroBlock [blockSize]byte

func isZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

// outFile is a file being written. *os.File is one; tests wrap it to make
// writes fail (a full disk).
type outFile interface {
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
	Sync() error
	Close() error
}

// sparseWriter writes a stream into a new (empty) file at increasing
// offsets, seeking over the blocks that hold only zeros; finish sets the
// file's length, so trailing zeros are a hole too.
type sparseWriter struct {
	f   outFile
	off int64
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	run := -1 // start in p of the data run not yet written
	for i := 0; i < len(p); {
		n := blockSize - int((w.off+int64(i))%blockSize)
		n = min(n, len(p)-i)
		if isZero(p[i : i+n]) {
			if run >= 0 {
				if _, err := w.f.WriteAt(p[run:i], w.off+int64(run)); err != nil {
					return 0, err
				}
				run = -1
			}
		} else if run < 0 {
			run = i
		}
		i += n
	}
	if run >= 0 {
		if _, err := w.f.WriteAt(p[run:], w.off+int64(run)); err != nil {
			return 0, err
		}
	}
	w.off += int64(len(p))
	return len(p), nil
}

func (w *sparseWriter) finish() error { return w.f.Truncate(w.off) }

// copySparse copies the first size bytes of src into dst (a new, empty
// file): it skips the source's holes (SEEK_DATA/SEEK_HOLE) and does not
// write blocks of zeros, so the copy is as sparse as cp --sparse=always
// makes it. It checks ctx between chunks.
func copySparse(ctx context.Context, dst outFile, src *os.File, size int64) error {
	w := &sparseWriter{f: dst}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		start, end := dataExtent(src, off, size)
		if start >= size {
			break
		}
		for pos := start; pos < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := int(min(int64(len(buf)), end-pos))
			m, err := src.ReadAt(buf[:n], pos)
			if m > 0 {
				w.off = pos
				if _, werr := w.Write(buf[:m]); werr != nil {
					return werr
				}
				pos += int64(m)
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("source shrank to %d bytes while being copied (expected %d)", pos, size)
			}
			if err != nil {
				return err
			}
		}
		off = end
	}
	w.off = size
	return w.finish()
}

// openNew creates path for writing; it must not exist.
func (a *Agent) openNew(path string) (outFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	if a.testHookWrap != nil {
		return a.testHookWrap(f), nil
	}
	return f, nil
}

// produce creates final through a temporary file in its directory: fill
// writes the temporary (by name: it may run qemu-img on it), then the
// agent fsyncs it, moves it to final and fsyncs the directory. When
// replace is false, an existing final is an error and is left alone. On
// any failure the temporary is removed and final is untouched: a reader
// finds the complete new file or none (or the old one).
func (a *Agent) produce(final string, replace bool, fill func(tmp string) error) error {
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return fmt.Errorf("create directory of %s: %w", a.relative(final), err)
	}
	if !replace {
		if _, err := os.Lstat(final); err == nil {
			return fmt.Errorf("%s already exists", a.relative(final))
		}
	}
	tmp := tempName(final)
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmp)
		}
	}()
	if err := fill(tmp); err != nil {
		return err
	}
	if err := syncPath(tmp); err != nil {
		return fmt.Errorf("sync %s: %w", a.relative(final), err)
	}
	if err := a.commit(tmp, final, replace); err != nil {
		return err
	}
	done = true
	return nil
}

// produceFile is produce for content written by the agent itself: write
// gets the new temporary file, opened.
func (a *Agent) produceFile(final string, replace bool, write func(f outFile) error) error {
	return a.produce(final, replace, func(tmp string) error {
		f, err := a.openNew(tmp)
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return err
		}
		return f.Close()
	})
}

// commit moves tmp to final. Without replace it hard-links (which fails if
// final exists, atomically) then removes tmp; on a file system without
// hard links it checks and renames (the path lock keeps other commands of
// this agent away).
func (a *Agent) commit(tmp, final string, replace bool) error {
	if replace {
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("move into place %s: %w", a.relative(final), err)
		}
		return syncPath(filepath.Dir(final))
	}
	err := os.Link(tmp, final)
	switch {
	case err == nil:
		_ = os.Remove(tmp)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s already exists", a.relative(final))
	default:
		if _, serr := os.Lstat(final); serr == nil {
			return fmt.Errorf("%s already exists", a.relative(final))
		}
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("move into place %s: %w", a.relative(final), err)
		}
	}
	return syncPath(filepath.Dir(final))
}

// syncPath fsyncs a file or a directory by name.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// allocated is what a file occupies on disk (its allocated blocks).
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// regularFile stats abs and requires a regular file; what names the file
// in the error ("volume", "image", "snapshot").
func (a *Agent) regularFile(abs, what string) (fs.FileInfo, error) {
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s %s not found", what, a.relative(abs))
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, a.relative(abs), err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, a.relative(abs))
	}
	return fi, nil
}

// removeFile deletes abs; a missing file is fine, a directory refused.
func (a *Agent) removeFile(abs, what string) error {
	fi, err := os.Lstat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, a.relative(abs), err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%s %s is a directory; refusing to delete it", what, a.relative(abs))
	}
	if err := os.Remove(abs); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s %s: %w", what, a.relative(abs), err)
	}
	return syncPath(filepath.Dir(abs))
}

// ensureSpace fails when need bytes are more than the root's file system
// has available.
func (a *Agent) ensureSpace(need int64, what string) error {
	c, err := a.capacity()
	if err != nil {
		return err
	}
	if need > c.AvailableCapacity {
		return fmt.Errorf("not enough space for %s: %d bytes needed, %d available", what, need, c.AvailableCapacity)
	}
	return nil
}
