package storage

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// errEscapes marks a path refused because it is absolute or leaves the
// root; the file endpoint answers 403 for it.
var errEscapes = errors.New("escapes the storage root")

// resolve maps a command's root-relative path to an absolute path under
// the root. It refuses empty and absolute paths, ".." elements, NUL bytes,
// the root itself, and symbolic links that lead out of the root or nowhere
// (a dangling link would let a write create a file wherever it points).
// Components that do not exist yet are kept as given (nothing to follow).
//
// The check is made when the command runs; the root is the agent's own
// directory, so nobody is expected to swap a component for a link between
// the check and the use.
func (a *Agent) resolve(rel string) (string, error) {
	switch {
	case rel == "":
		return "", errors.New("empty path: paths are relative to the storage root")
	case strings.HasPrefix(rel, "/"):
		return "", fmt.Errorf("path %q is absolute: %w (paths are relative to it)", rel, errEscapes)
	case strings.ContainsRune(rel, 0):
		return "", fmt.Errorf("path %q holds a NUL byte", rel)
	}
	for _, el := range strings.Split(rel, "/") {
		if el == ".." {
			return "", fmt.Errorf("path %q %w (it has a \"..\" element)", rel, errEscapes)
		}
	}
	clean := path.Clean(rel)
	if clean == "." {
		return "", fmt.Errorf("path %q names the storage root itself, not a file", rel)
	}
	comps := strings.Split(clean, "/")
	cur := a.root
	for i, c := range comps {
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			return filepath.Join(append([]string{next}, comps[i+1:]...)...), nil
		}
		if err != nil {
			return "", fmt.Errorf("path %q: %w", rel, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(next)
			if err != nil {
				return "", fmt.Errorf("path %q: symbolic link %s leads nowhere: %w", rel, strings.Join(comps[:i+1], "/"), err)
			}
			if !a.within(target) {
				return "", fmt.Errorf("path %q %w through the symbolic link %s", rel, errEscapes, strings.Join(comps[:i+1], "/"))
			}
			next = target
		}
		cur = next
	}
	return cur, nil
}

// within reports whether abs (absolute, clean, symlinks resolved) is the
// root or under it.
func (a *Agent) within(abs string) bool {
	if a.root == "/" {
		return true
	}
	return abs == a.root || strings.HasPrefix(abs, a.root+string(filepath.Separator))
}

// relative is abs as a root-relative path (for answers and messages).
func (a *Agent) relative(abs string) string {
	r, err := filepath.Rel(a.root, abs)
	if err != nil {
		return abs
	}
	return filepath.ToSlash(r)
}

// tempMarker is in the name of every temporary file the agent writes; New
// removes the ones a crash left behind.
const tempMarker = ".mplane-tmp-"

// tempName is a fresh temporary name in final's directory, hidden, so that
// a rename to final stays in one file system and is atomic.
func tempName(final string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	base := filepath.Base(final)
	if len(base) > 180 {
		base = base[:180]
	}
	return filepath.Join(filepath.Dir(final), "."+base+tempMarker+hex.EncodeToString(b[:]))
}

func isTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempMarker)
}

// cleanTemps removes the temporary files a crashed agent left under the
// root, and returns how many it removed.
func (a *Agent) cleanTemps() int {
	n := 0
	_ = filepath.WalkDir(a.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !d.IsDir() && isTemp(d.Name()) {
			if os.Remove(p) == nil {
				n++
			}
		}
		return nil
	})
	return n
}

// pathLocks serializes the commands on one file: a path is locked from
// before the command looks at it until its result is ready.
type pathLocks struct {
	mu    sync.Mutex
	locks map[string]*pathLock
}

type pathLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks the given absolute paths ("" ignored) in a fixed order, so
// two commands locking the same pair cannot deadlock, and returns the
// unlock.
func (l *pathLocks) lock(paths ...string) (unlock func()) {
	ps := append([]string(nil), paths...)
	sort.Strings(ps)
	ps = compact(ps)
	held := make([]*pathLock, 0, len(ps))
	for _, p := range ps {
		l.mu.Lock()
		if l.locks == nil {
			l.locks = map[string]*pathLock{}
		}
		pl := l.locks[p]
		if pl == nil {
			pl = &pathLock{}
			l.locks[p] = pl
		}
		pl.refs++
		l.mu.Unlock()
		pl.mu.Lock()
		held = append(held, pl)
	}
	return func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i].mu.Unlock()
			l.mu.Lock()
			held[i].refs--
			if held[i].refs == 0 {
				delete(l.locks, ps[i])
			}
			l.mu.Unlock()
		}
	}
}

func compact(sorted []string) []string {
	out := sorted[:0]
	for i, s := range sorted {
		if s != "" && (i == 0 || s != sorted[i-1]) {
			out = append(out, s)
		}
	}
	return out
}
