package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"mplane/errcode"
)

// The names in a run directory: each node's socket is
// mplane-<node uuid>.asok, and LinkName points at the newest one started
// there, so `mplane daemon mplane ...` finds "the" local node.
const (
	LinkName     = "mplane.asok"
	socketPrefix = "mplane-"
	socketSuffix = ".asok"
)

// SocketName is the file name of the socket of a node.
func SocketName(nodeUUID string) string { return socketPrefix + nodeUUID + socketSuffix }

// maxRequest bounds one request line.
const maxRequest = 1 << 20

// Request is one request on the socket (and the body of POST
// /admin/command).
type Request struct {
	// Command is the command's words followed by its arguments. In JSON
	// it is an array of strings, or one string split at white space.
	Command []string `json:"command"`
}

// UnmarshalJSON accepts "command" as an array of strings or one string.
func (r *Request) UnmarshalJSON(b []byte) error {
	var raw struct {
		Command json.RawMessage `json:"command"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	if len(raw.Command) == 0 {
		return errors.New(`"command" is required: {"command": ["status"]}`)
	}
	var one string
	if err := json.Unmarshal(raw.Command, &one); err == nil {
		r.Command = strings.Fields(one)
		return nil
	}
	if err := json.Unmarshal(raw.Command, &r.Command); err != nil {
		return errors.New(`"command" must be an array of strings or a string: {"command": ["config", "set", "log_level", "debug"]}`)
	}
	return nil
}

// Response is one answer on the socket (and of POST /admin/command).
type Response struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *errcode.Error  `json:"error,omitempty"`
}

// answer is what the node writes; Response is what a client reads.
type answer struct {
	OK     bool           `json:"ok"`
	Result any            `json:"result,omitempty"`
	Error  *errcode.Error `json:"error,omitempty"`
}

func answerOf(o *Outcome) answer {
	if o.Err != nil {
		return answer{Error: errcode.From(o.Err)}
	}
	return answer{OK: true, Result: o.Result}
}

// SocketOptions configure a Socket.
type SocketOptions struct {
	// Dir is the run directory; created with mode 0700 if missing.
	Dir string
	// NodeUUID names the socket (SocketName).
	NodeUUID string
	Table    *Table
	Logger   *slog.Logger
}

// Socket serves a Table on a unix socket in a run directory: see the
// package documentation for the protocol and the file modes.
type Socket struct {
	opts SocketOptions
	log  *slog.Logger
	path string

	ctx    context.Context // ends at Stop: the commands' context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection

	mu      sync.Mutex // leaf: guards the fields below
	ln      *net.UnixListener
	conns   map[net.Conn]struct{}
	started bool
	stopped bool
}

// NewSocket builds the socket server; Start listens.
func NewSocket(opts SocketOptions) (*Socket, error) {
	if opts.Dir == "" || opts.NodeUUID == "" || opts.Table == nil {
		return nil, errors.New("admin: SocketOptions.Dir, NodeUUID and Table are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Socket{opts: opts, log: opts.Logger.With("component", "admin-socket"),
		path: filepath.Join(opts.Dir, SocketName(opts.NodeUUID)), conns: map[net.Conn]struct{}{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Path is the socket's path.
func (s *Socket) Path() string { return s.path }

// LinkPath is the path of the run directory's stable link (LinkName).
func (s *Socket) LinkPath() string { return filepath.Join(s.opts.Dir, LinkName) }

// Start creates the run directory if needed, removes the sockets of dead
// nodes there, listens, and points LinkName at the socket.
func (s *Socket) Start(context.Context) error {
	s.mu.Lock()
	if s.started || s.stopped {
		s.mu.Unlock()
		return errors.New("admin: socket already started or stopped")
	}
	s.started = true
	s.mu.Unlock()
	if err := s.prepareDir(); err != nil {
		return err
	}
	s.removeStale()
	ln, err := s.listen()
	if err != nil {
		return err
	}
	if err := s.link(); err != nil {
		ln.Close()
		os.Remove(s.path)
		return err
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		ln.Close()
		s.removeFiles()
		return errors.New("admin: socket stopped while starting")
	}
	s.ln = ln
	s.wg.Add(1)
	s.mu.Unlock()
	go s.accept(ln)
	s.log.Info("admin socket listening", "path", s.path, "link", s.LinkPath())
	return nil
}

// removeFiles removes the socket and the link if it still points at it.
func (s *Socket) removeFiles() error {
	err := os.Remove(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if target, lerr := os.Readlink(s.LinkPath()); lerr == nil && target == SocketName(s.opts.NodeUUID) {
		_ = os.Remove(s.LinkPath())
	}
	return err
}

func (s *Socket) prepareDir() error {
	dir := s.opts.Dir
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create the run directory: %w (set run_dir)", err)
		}
		// MkdirAll's mode is masked by the umask: make it exactly 0700.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("run directory: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("run directory: %w (set run_dir)", err)
	case !fi.IsDir():
		return fmt.Errorf("run directory %s is not a directory (set run_dir)", dir)
	case fi.Mode().Perm()&0o077 != 0:
		s.log.Warn("the run directory is open to other users; the admin socket itself is mode 0600", "dir", dir, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	return nil
}

// removeStale removes the sockets of the naming scheme that nobody
// listens on: those of nodes that died without Stop. A socket appears
// under its name only once it listens (listen), so a starting node's is
// never taken for a dead one.
func (s *Socket) removeStale() {
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, socketPrefix) || !strings.HasSuffix(name, socketSuffix) || e.Type()&fs.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(s.opts.Dir, name)
		conn, err := dialUnix(context.Background(), path, time.Second)
		if err == nil {
			conn.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			if err := os.Remove(path); err == nil {
				s.log.Info("removed a stale admin socket (no node answers on it)", "path", path)
			}
		}
	}
}

// listen binds under a temporary name, makes the socket 0600 whatever the
// umask, then renames it to its name.
func (s *Socket) listen() (*net.UnixListener, error) {
	tmp := filepath.Join(s.opts.Dir, "."+SocketName(s.opts.NodeUUID)+".tmp")
	_ = os.Remove(tmp)
	var ln *net.UnixListener
	err := withShortPath(tmp, func(addr string) error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("admin socket: listen on %s: %w (set run_dir)", tmp, err)
	}
	ln.SetUnlinkOnClose(false) // Stop removes the file under its final name
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// link points LinkName at the socket, replacing the link atomically.
func (s *Socket) link() error {
	tmp := filepath.Join(s.opts.Dir, "."+LinkName+"."+s.opts.NodeUUID+".tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(SocketName(s.opts.NodeUUID), tmp); err != nil {
		return fmt.Errorf("admin socket link: %w", err)
	}
	if err := os.Rename(tmp, s.LinkPath()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("admin socket link: %w", err)
	}
	return nil
}

func (s *Socket) accept(ln *net.UnixListener) {
	defer s.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: wait and retry.
			s.log.Warn("admin socket: accept", "err", err)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

// serve answers the requests of one connection, in order, until the
// client closes it or Stop.
func (s *Socket) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), maxRequest)
	w := bufio.NewWriter(c)
	enc := json.NewEncoder(w)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var req Request
		var o *Outcome
		if err := json.Unmarshal([]byte(line), &req); err != nil {
			o = &Outcome{Err: errcode.New(errcode.MalformedMessage,
				`want one JSON request per line, e.g. {"command": ["status"]}: %v`, err)}
		} else {
			o = s.opts.Table.Exec(s.ctx, req.Command)
		}
		if err := enc.Encode(answerOf(o)); err != nil {
			o.Err = err
			o.Result = nil
			if err := enc.Encode(answerOf(o)); err != nil {
				return
			}
		}
		if err := w.Flush(); err != nil {
			return
		}
		o.Finish()
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		_ = enc.Encode(answer{Error: errcode.New(errcode.MalformedMessage, "request longer than %d bytes", maxRequest)})
		_ = w.Flush()
	}
}

// Stop stops listening, removes the socket file (and the link, if it
// still points at it), ends every connection and the commands running,
// and waits for every goroutine the Socket started. Idempotent.
func (s *Socket) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	ln := s.ln
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()
	var errs []error
	if ln != nil {
		errs = append(errs, ln.Close(), s.removeFiles())
	}
	for _, c := range conns {
		c.Close()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("admin socket: commands still running: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// maxSunPath is the longest path a sockaddr_un holds (108 bytes on Linux
// with the terminating NUL).
const maxSunPath = 107

// withShortPath calls fn with a name of path that fits a sockaddr_un:
// path itself, or on Linux /proc/self/fd/<n>/<base> through a descriptor
// of path's directory, open during fn.
func withShortPath(path string, fn func(addr string) error) error {
	if len(path) <= maxSunPath || runtime.GOOS != "linux" {
		return fn(path)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return fn(fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), filepath.Base(path)))
}

// dialUnix connects to the socket at path, a long one too.
func dialUnix(ctx context.Context, path string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := withShortPath(path, func(addr string) error {
		var err error
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(ctx, "unix", addr)
		return err
	})
	return c, err
}
