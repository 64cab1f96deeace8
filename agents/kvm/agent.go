package kvm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"path"
	"slices"
	"sync"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/agentserver"
	"mplane/agents/protocol"
	"mplane/agents/storage"
)

// Options configures an Agent. The zero value is a usable agent with no
// state file, no latency and no failures.
type Options struct {
	// Listen is the address Run listens on. Default "127.0.0.1:7070".
	Listen string
	// StateFile, if set, keeps the VMs and the host secret across restarts
	// (written atomically on every change). The connection (host UUID,
	// sendCommandUrl) is not kept: like the Python agent, a restarted agent
	// answers pings without a host UUID until it is connected again.
	StateFile string
	// Latency is added to every command but /host/echo before it acts.
	Latency time.Duration
	// StorageLatency is added before a storage command is handed to its
	// storage (a slow disk): the agent's answer comes that much later.
	StorageLatency time.Duration
	// FailRate is the fraction of async commands that fail with an
	// injected error result (state unchanged), in [0, 1].
	FailRate float64
	// NoCallbackRate is the fraction of async commands that never send a
	// result (a crashed handler), in [0, 1]. Drawn before FailRate.
	NoCallbackRate float64
	// LostReplyRate is the fraction of VM commands (start, stop, reboot,
	// destroy) that act and then never send their result (a lost reply:
	// the command ran, the caller cannot know), in [0, 1].
	LostReplyRate float64
	// FaultPaths limits FailRate, NoCallbackRate and LostReplyRate to these command paths
	// (e.g. "/vm/start"); empty means every async command.
	FaultPaths []string
	// CPUNum and MemoryBytes are the host's capacity. Defaults 32 and 128 GiB.
	CPUNum      int
	MemoryBytes int64
	// Version is what ping reports. Default "mplane-kvm-simulator".
	Version string
	// Seed seeds failure injection; 0 picks a random seed.
	Seed uint64
	// ArrivalLog is how many command arrivals are kept for /debug/arrivals.
	// Default 100000.
	ArrivalLog int
	// OpenDebug serves GET /debug/arrivals without the host secret, for
	// test harnesses that audit an agent's commands without knowing its
	// host's secret. Off, it needs the secret (X-Mplane-Secret) once the
	// agent has one, like a command, and answers 401 without it: the
	// arrivals carry the task UUIDs of the commands still running. The
	// other GET debug endpoints never need it; the POST ones need it
	// either way, as commands do.
	OpenDebug bool
	// ClaimToken, if set, is what a connect must carry (protocol.ClaimHeader)
	// to give the host a secret: the first connect, which claims it, and a
	// connect that replaces the secret (an explicit re-claim, by a cloud
	// that lost it). Without it the first connect from anyone claims the
	// host (the Python agent's behaviour) and only removing the state file
	// frees it again.
	ClaimToken string
	// EventQueue bounds the events waiting to be sent; when full, new
	// events are dropped and counted. Default 1024.
	EventQueue int
	// ShutdownTimeout bounds the graceful part of Run's shutdown. Default 10s.
	ShutdownTimeout time.Duration
	// Logger receives the agent's logs. Default: discard.
	Logger *slog.Logger
	// Server configures the HTTP framework (callback retries, content
	// type...). Its Admit and Logger are set by the agent. The storage
	// agents it mounts (Storage) use it too.
	Server agentserver.Options

	// Storage is the primary storage this host serves, as ZStack's
	// LocalStorage and SharedMountPoint storage are served by kvmagent:
	// primary storage URL (an absolute, clean path, as ZStack's
	// primary storage url, e.g. "/var/lib/mplane/local") -> the directory
	// on this machine that holds it (created if missing; often the same
	// path). New mounts a storage agent (agents/storage) on each; storage
	// commands name theirs in protocol.StorageHeader. Two URLs must not
	// share a directory, nor one directory hold another.
	Storage map[string]string
	// StorageQemuImg is the storage agents' qemu-img (storage.Options
	// QemuImg): "" finds it on PATH (none found: raw files only),
	// storage.QemuImgNone works without it.
	StorageQemuImg string
}

// Validate reports what is wrong with the options.
func (o Options) Validate() error {
	var errs []error
	if o.FailRate < 0 || o.FailRate > 1 {
		errs = append(errs, fmt.Errorf("fail rate %v: must be in [0, 1]", o.FailRate))
	}
	if o.LostReplyRate < 0 || o.LostReplyRate > 1 {
		errs = append(errs, fmt.Errorf("lost-reply rate %v: must be in [0, 1]", o.LostReplyRate))
	}
	if o.NoCallbackRate < 0 || o.NoCallbackRate > 1 {
		errs = append(errs, fmt.Errorf("no-callback rate %v: must be in [0, 1]", o.NoCallbackRate))
	}
	if o.StorageLatency < 0 {
		errs = append(errs, fmt.Errorf("storage latency %v: must not be negative", o.StorageLatency))
	}
	if o.Latency < 0 {
		errs = append(errs, fmt.Errorf("latency %v: must not be negative", o.Latency))
	}
	if o.CPUNum < 0 || o.MemoryBytes < 0 {
		errs = append(errs, errors.New("cpu and memory must not be negative"))
	}
	for _, u := range slices.Sorted(maps.Keys(o.Storage)) {
		if !path.IsAbs(u) || path.Clean(u) != u {
			errs = append(errs, fmt.Errorf("storage URL %q: must be an absolute, clean path such as /var/lib/mplane/local (the primary storage's url)", u))
		}
		if o.Storage[u] == "" {
			errs = append(errs, fmt.Errorf("storage %s: no directory; give the directory on this host that holds it (--storage URL=DIR)", u))
		}
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:7070"
	}
	if o.CPUNum == 0 {
		o.CPUNum = 32
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = 128 << 30
	}
	if o.Version == "" {
		o.Version = "mplane-kvm-simulator"
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	if o.ArrivalLog <= 0 {
		o.ArrivalLog = 100000
	}
	if o.EventQueue <= 0 {
		o.EventQueue = 1024
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Agent is a simulated KVM host agent. Create it with New, serve it with
// Serve or Run, stop it with Shutdown.
//
// Lock order: persistMu before mu before the mounted storage agents'
// connection locks (SetConnection); rngMu, the tracker's and the arrival
// log's locks are leaves. No lock is held during I/O except persistMu (it
// serializes state file writes).
type Agent struct {
	// Lifecycle is Start, Addr and Stop (Serve and Shutdown are the same
	// for a caller that brings its own listener).
	*agentserver.Lifecycle
	opts   Options
	log    *slog.Logger
	srv    *agentserver.Server
	hs     *http.Server        // Serve's: the storage routing, then srv
	client *agentclient.Client // for migrations (sync calls only)

	// storages are the mounted storage agents by primary storage URL
	// (Options.Storage); storageURLs their URLs, sorted. Fixed by New.
	storages    map[string]*storage.Agent
	storageURLs []string

	mu             sync.Mutex
	hostUUID       string
	sendCommandURL string
	secret         string
	// fence is the highest fencing token (protocol.FenceHeader) seen: a
	// command with a lower one comes from a replaced owner and is refused.
	// Not persisted: a restarted agent takes the next token it sees.
	fence   int64
	vms     map[string]*protocol.VM
	version uint64 // bumped by every change to persist

	net netState // the bridges (network.go); its lock is a leaf

	persistMu sync.Mutex
	persisted uint64

	rngMu sync.Mutex
	rng   *rand.Rand

	tracker    tracker
	arrivals   arrivalLog
	vmArrivals arrivalLog
	counters   counters

	events     chan event
	eventsCtx  context.Context
	stopEvents context.CancelFunc
	drain      chan struct{}
	eventsDone chan struct{}

	shutdownOnce sync.Once

	// testHookEntered, if set, runs when a VM command has entered its
	// window (after the overlap accounting, before the latency).
	testHookEntered func(vmUUID, path string)
}

// New builds an agent, loading its state file if there is one. It starts
// the event sender goroutine: call Shutdown to release it, even if the
// agent never served.
func New(opts Options) (*Agent, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("kvm agent options: %w", err)
	}
	opts = opts.withDefaults()
	a := &Agent{
		opts:       opts,
		log:        opts.Logger.With("component", "kvm-agent"),
		vms:        map[string]*protocol.VM{},
		rng:        rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		tracker:    newTracker(),
		arrivals:   newArrivalLog(opts.ArrivalLog),
		vmArrivals: newArrivalLog(opts.ArrivalLog),
		events:     make(chan event, opts.EventQueue),
		drain:      make(chan struct{}),
		eventsDone: make(chan struct{}),
	}
	if err := a.load(); err != nil {
		return nil, err
	}
	if err := a.mountStorage(); err != nil {
		return nil, err
	}
	so := opts.Server
	so.Logger = a.log
	so.Admit = a.admit
	a.srv = agentserver.New(so)
	a.client = agentclient.New(agentclient.Options{Logger: a.log})
	a.register()
	a.hs = &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	a.eventsCtx, a.stopEvents = context.WithCancel(context.Background())
	go a.sendEvents()
	a.Lifecycle = agentserver.NewLifecycle(opts.Listen, a.Serve, a.Shutdown)
	return a, nil
}

func (a *Agent) register() {
	s := a.srv
	s.HandleRaw(protocol.PathEcho, echoHandler{})
	agentserver.HandleSync(s, protocol.PathConnect, a.connect)
	agentserver.HandleAsync(s, protocol.PathPing, a.ping)
	agentserver.HandleAsync(s, protocol.PathCapacity, a.capacity)
	agentserver.HandleAsync(s, protocol.PathStartVM, lossy(a, a.withBridges(a.startVM)))
	agentserver.HandleAsync(s, protocol.PathStopVM, lossy(a, a.stopVM))
	agentserver.HandleAsync(s, protocol.PathRebootVM, lossy(a, a.rebootVM))
	agentserver.HandleAsync(s, protocol.PathDestroyVM, lossy(a, a.destroyVM))
	agentserver.HandleAsync(s, protocol.PathMigrateVM, a.migrateVM)
	agentserver.HandleAsync(s, protocol.PathAttachVolume, a.attachVolume)
	agentserver.HandleAsync(s, protocol.PathDetachVolume, a.detachVolume)
	agentserver.HandleAsync(s, protocol.PathListVMs, a.listVMs)
	agentserver.HandleAsync(s, protocol.PathAttachNic, a.attachNic)
	agentserver.HandleAsync(s, protocol.PathDetachNic, a.detachNic)
	agentserver.HandleSync(s, protocol.PathIncomingVM, a.incomingVM)
	a.registerNetwork(s)
	s.HandleRaw(protocol.PathDebugStats, getOnly(a.serveStats))
	s.HandleRaw(protocol.PathDebugArrivals, getOnly(a.serveArrivals))
	s.HandleRaw(protocol.PathDebugVMArrivals, getOnly(func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, a.VMArrivals()) }))
	s.HandleRaw(protocol.PathDebugVMs, getOnly(func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, a.VMs()) }))
	s.HandleRaw(protocol.PathDebugCrashVM, postOnly(a.serveCrash))
	s.HandleRaw(protocol.PathDebugPowerOffVM, postOnly(a.servePowerOff))
	// Storage commands reach these only when they name no storage this
	// host serves (serveStorage routes the others): an error result.
	for _, p := range protocol.StorageCommandPaths() {
		agentserver.HandleAsync(s, p, a.refuseStorage)
	}
}

// Handler is the agent's HTTP handler, for mounting it in another server
// (Shutdown still has to be called): storage commands go to the mounted
// storage agent protocol.StorageHeader names, the rest to the agent's own
// endpoints.
func (a *Agent) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt, ok := storageRoute(r.URL.Path); ok {
			a.serveStorage(w, r, rt)
			return
		}
		a.srv.ServeHTTP(w, r)
	})
}

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

// Shutdown stops serving, waits for running commands to finish and deliver
// their results, sends the queued events, and persists the state, all
// within ctx; then it cancels what is left. The mounted storage agents
// shut down alongside. It is idempotent.
func (a *Agent) Shutdown(ctx context.Context) error {
	var err error
	if herr := a.hs.Shutdown(ctx); herr != nil && !errors.Is(herr, http.ErrServerClosed) {
		err = herr
	}
	storageErr := a.shutdownStorage(ctx)
	err = errors.Join(err, a.srv.Shutdown(ctx), <-storageErr)
	a.shutdownOnce.Do(func() {
		close(a.drain)
		a.client.Close()
	})
	select {
	case <-a.eventsDone:
	case <-ctx.Done():
		a.stopEvents()
		<-a.eventsDone // the sender stops at once once its context ends
	}
	a.stopEvents()
	return errors.Join(err, a.persist())
}

// rand01 draws a number in [0, 1).
func (a *Agent) rand01() float64 {
	a.rngMu.Lock()
	defer a.rngMu.Unlock()
	return a.rng.Float64()
}
