package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"mplane/errcode"
)

// Resolve finds the socket target names in the run directory dir:
//
//   - a path (it contains a "/"): itself;
//   - a file of dir: "mplane.asok", "mplane-<uuid>.asok";
//   - NAME for the file NAME.asok: "mplane" is the newest node started
//     in dir (LinkName);
//   - a prefix of a node UUID: the one node whose socket matches.
func Resolve(dir, target string) (string, error) {
	if target == "" {
		return "", errors.New("no node given: name a socket path, \"mplane\" (the newest node of the run directory) or a node UUID prefix")
	}
	if strings.Contains(target, "/") {
		return target, nil
	}
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("run directory %s does not exist: no node runs with this run_dir (give the node's --run-dir or --data-dir, or a socket path)", dir)
		}
		return "", fmt.Errorf("run directory: %w", err)
	}
	for _, name := range []string{target, target + socketSuffix} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name), nil
		}
	}
	sockets := socketsIn(dir)
	var match []string
	for _, name := range sockets {
		if strings.HasPrefix(name, socketPrefix+target) {
			match = append(match, name)
		}
	}
	switch {
	case len(match) == 1:
		return filepath.Join(dir, match[0]), nil
	case len(match) > 1:
		return "", fmt.Errorf("%q names several nodes in %s: %s; give more of the UUID", target, dir, strings.Join(match, ", "))
	case len(sockets) == 0:
		return "", fmt.Errorf("no admin socket in %s: no node runs with this run_dir (give the node's --run-dir or --data-dir, or a socket path)", dir)
	}
	return "", fmt.Errorf("no admin socket %q in %s; there: %s (or \"mplane\", the newest)", target, dir, strings.Join(sockets, ", "))
}

// socketsIn lists the node sockets of dir.
func socketsIn(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, socketPrefix) && strings.HasSuffix(n, socketSuffix) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Call sends one request to the socket at path and returns the command's
// result. A command's failure is the node's *errcode.Error; not reaching
// the node is an error saying so. ctx bounds the whole call.
func Call(ctx context.Context, path string, words []string) (json.RawMessage, error) {
	c, err := dialUnix(ctx, path, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to the admin socket %s: %w (is the node running?)", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	req, err := json.Marshal(Request{Command: words})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(append(req, '\n')); err != nil {
		return nil, callErr(ctx, path, err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, callErr(ctx, path, err)
	}
	var rsp Response
	if err := json.Unmarshal(line, &rsp); err != nil {
		return nil, fmt.Errorf("admin socket %s: malformed answer: %w", path, err)
	}
	if !rsp.OK {
		if rsp.Error == nil {
			return nil, errcode.New(errcode.Internal, "the node answered neither a result nor an error")
		}
		return nil, rsp.Error
	}
	return rsp.Result, nil
}

func callErr(ctx context.Context, path string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("admin socket %s: %w", path, ctx.Err())
	}
	return fmt.Errorf("admin socket %s: the node closed the connection without an answer: %w", path, err)
}
