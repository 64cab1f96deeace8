package storage

import (
	"errors"
	"os"
	"syscall"
)

// Linux's lseek whence values for sparse files (not in package syscall).
const (
	seekData = 3
	seekHole = 4
)

// dataExtent is the first extent of data at or after off in f, as
// [start, end), end at most size; start is size when only a hole is left.
// Where the file system does not tell, everything is data.
func dataExtent(f *os.File, off, size int64) (start, end int64) {
	fd := int(f.Fd())
	start, err := syscall.Seek(fd, off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return size, size
	}
	if err != nil {
		return off, size
	}
	if start >= size {
		return size, size
	}
	end, err = syscall.Seek(fd, start, seekHole)
	if err != nil || end > size {
		end = size
	}
	return start, end
}

// statfs reports the file system of path: total bytes, and bytes available
// to an unprivileged user.
func statfs(path string) (total, available int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	bs := int64(st.Frsize)
	if bs == 0 {
		bs = int64(st.Bsize)
	}
	return int64(st.Blocks) * bs, int64(st.Bavail) * bs, nil
}
