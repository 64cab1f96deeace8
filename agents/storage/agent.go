package storage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// Options configures an Agent. Root is required.
type Options struct {
	// Root is the directory the agent serves; every path in a command is
	// relative to it. Created if missing.
	Root string
	// Listen is the address Run listens on. Default "127.0.0.1:7080".
	Listen string
	// QemuImg is the qemu-img binary: "" looks "qemu-img" up on PATH (none
	// found: raw files only), QemuImgNone works without it even where it
	// is installed, anything else must be an executable.
	QemuImg string
	// Version is what connect and ping report. Default
	// "mplane-storage-agent".
	Version string
	// DownloadRetries is how many times an interrupted download is
	// resumed (a range request from the bytes already written) before it
	// fails. Default 3; negative: never.
	DownloadRetries int
	// DownloadRetryInterval is the pause before a resume. Default 1s.
	DownloadRetryInterval time.Duration
	// StallTimeout is how long a download may receive nothing (headers
	// included) before the attempt is given up as interrupted (and
	// resumed, see DownloadRetries). Default 1 minute.
	StallTimeout time.Duration
	// ProgressInterval is the least time between two progress events of
	// one download (the first and the last are always sent). Default 1s.
	ProgressInterval time.Duration
	// HTTPClient downloads images. Default: a client with its own
	// transport; deadlines come from the commands (timeoutMs).
	HTTPClient *http.Client
	// EventQueue bounds the events waiting to be sent; when full, new
	// events are dropped and logged. Default 1024.
	EventQueue int
	// ShutdownTimeout bounds the graceful part of Run's shutdown. Default
	// 10s.
	ShutdownTimeout time.Duration
	// Logger receives the agent's logs. Default: discard.
	Logger *slog.Logger
	// Server configures the HTTP framework (callback retries, content
	// type...). Its Admit and Logger are set by the agent.
	Server agentserver.Options
}

// Validate reports what is wrong with the options.
func (o Options) Validate() error {
	var errs []error
	if o.Root == "" {
		errs = append(errs, errors.New("root is required: the directory the agent serves"))
	}
	if o.DownloadRetryInterval < 0 || o.ProgressInterval < 0 || o.ShutdownTimeout < 0 || o.StallTimeout < 0 {
		errs = append(errs, errors.New("intervals and timeouts must not be negative"))
	}
	if o.EventQueue < 0 {
		errs = append(errs, fmt.Errorf("event queue %d: must not be negative", o.EventQueue))
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:7080"
	}
	if o.Version == "" {
		o.Version = "mplane-storage-agent"
	}
	if o.DownloadRetries == 0 {
		o.DownloadRetries = 3
	}
	if o.DownloadRetries < 0 {
		o.DownloadRetries = 0
	}
	if o.DownloadRetryInterval == 0 {
		o.DownloadRetryInterval = time.Second
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = time.Second
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = time.Minute
	}
	if o.EventQueue == 0 {
		o.EventQueue = 1024
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Agent is a storage agent serving one directory. Create it with New, serve
// it with Serve or Run, stop it with Shutdown.
//
// Lock order: a command takes its path locks (pathLocks, sorted) first;
// mu (the connection) and the event queue are leaves, never held during
// I/O.
type Agent struct {
	// Lifecycle is Start, Addr and Stop (Serve and Shutdown are the same
	// for a caller that brings its own listener).
	*agentserver.Lifecycle
	opts   Options
	log    *slog.Logger
	root   string // absolute, symlinks resolved
	qemu   qemuImg
	srv    *agentserver.Server
	hs     *http.Server
	dl     *http.Client
	ownTr  *http.Transport
	paths  pathLocks
	events eventQueue

	mu             sync.Mutex
	uuid           string
	sendCommandURL string
	secret         string

	shutdownOnce sync.Once

	// testHookWrap, if set, wraps every file the agent writes itself
	// (tests make writes fail as on a full disk).
	testHookWrap func(f *os.File) outFile
}

// New builds an agent on Options.Root (created if missing), removing the
// temporary files a crashed agent left there. It starts the event sender:
// call Shutdown to release it, even if the agent never served.
func New(opts Options) (*Agent, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("storage agent options: %w", err)
	}
	opts = opts.withDefaults()
	root, err := filepath.Abs(opts.Root)
	if err == nil {
		err = os.MkdirAll(root, 0o755)
	}
	if err == nil {
		root, err = filepath.EvalSymlinks(root)
	}
	if err != nil {
		return nil, fmt.Errorf("storage agent root %q: %w", opts.Root, err)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("storage agent root %q is not a directory", opts.Root)
	}
	q, err := findQemuImg(opts.QemuImg)
	if err != nil {
		return nil, fmt.Errorf("storage agent: %w", err)
	}
	a := &Agent{
		opts: opts,
		log:  opts.Logger.With("component", "storage-agent"),
		root: root,
		qemu: q,
	}
	if n := a.cleanTemps(); n > 0 {
		a.log.Warn("removed temporary files left by an earlier run", "count", n)
	}
	a.dl = opts.HTTPClient
	if a.dl == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		a.ownTr = tr
		a.dl = &http.Client{Transport: tr}
	}
	so := opts.Server
	so.Logger = a.log
	so.Admit = a.admit
	a.srv = agentserver.New(so)
	a.register()
	a.hs = &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	a.events.start(a, opts.EventQueue, so)
	a.log.Info("storage agent ready", "root", root, "qemu_img", q.bin, "qemu_img_version", q.version)
	a.Lifecycle = agentserver.NewLifecycle(opts.Listen, a.Serve, a.Shutdown)
	return a, nil
}

func (a *Agent) register() {
	s := a.srv
	s.HandleRaw(protocol.PathStorageEcho, echoHandler{})
	agentserver.HandleSync(s, protocol.PathStorageConnect, a.connect)
	agentserver.HandleAsync(s, protocol.PathStoragePing, a.ping)
	agentserver.HandleAsync(s, protocol.PathStorageCapacity, a.capacityCmd)
	agentserver.HandleAsync(s, protocol.PathVolumeCreateEmpty, a.createEmpty)
	agentserver.HandleAsync(s, protocol.PathVolumeCreateFromImage, a.createFromImage)
	agentserver.HandleAsync(s, protocol.PathVolumeClone, a.cloneVolume)
	agentserver.HandleAsync(s, protocol.PathVolumeResize, a.resizeVolume)
	agentserver.HandleAsync(s, protocol.PathVolumeDelete, a.deleter("volume"))
	agentserver.HandleAsync(s, protocol.PathVolumeInfo, a.volumeInfo)
	agentserver.HandleAsync(s, protocol.PathVolumeRevert, a.revertVolume)
	agentserver.HandleAsync(s, protocol.PathSnapshotCreate, a.createSnapshot)
	agentserver.HandleAsync(s, protocol.PathSnapshotDelete, a.deleteSnapshot)
	agentserver.HandleAsync(s, protocol.PathImageDownload, a.downloadImage)
	agentserver.HandleAsync(s, protocol.PathImageFetch, a.fetchImage)
	agentserver.HandleAsync(s, protocol.PathImageDelete, a.deleter("image"))
}

// Handler is the agent's HTTP handler: the file endpoint (PathFiles) and
// the commands.
func (a *Agent) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, protocol.PathFiles) {
			a.serveFile(w, r)
			return
		}
		a.srv.ServeHTTP(w, r)
	})
}

// Root is the directory the agent serves (absolute, symlinks resolved).
func (a *Agent) Root() string { return a.root }

// HasQemuImg reports whether the agent works with qemu-img (qcow2).
func (a *Agent) HasQemuImg() bool { return a.qemu.ok() }

// Serve serves the agent on l until Shutdown; it returns nil then. With
// Options.Server.TLS it serves HTTPS.
func (a *Agent) Serve(l net.Listener) error {
	if a.opts.Server.TLS != nil {
		l = tls.NewListener(l, a.opts.Server.TLS)
	}
	err := a.hs.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, lets running commands finish and
// deliver their results and sends the queued events, within ctx; then it
// cancels what is left (an interrupted command leaves no partial file).
// It is idempotent.
func (a *Agent) Shutdown(ctx context.Context) error {
	var errs []error
	if err := a.hs.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	errs = append(errs, a.srv.Shutdown(ctx))
	a.events.stop(ctx)
	a.shutdownOnce.Do(func() {
		if a.ownTr != nil {
			a.ownTr.CloseIdleConnections()
		}
	})
	return errors.Join(errs...)
}
