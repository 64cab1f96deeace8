package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/api/auth"
	"mplane/api/jobs"
	"mplane/api/portal"
	"mplane/api/rest"
	"mplane/cloudbus"
	"mplane/conf"
	"mplane/db"
	"mplane/errcode"
	"mplane/managementnode"
	hostsvc "mplane/services/host"
	"mplane/services/resource"
	"mplane/services/vm"
	"mplane/thread"
	"mplane/uid"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitFenced is the exit code of a node whose membership row was deleted by
// a peer.
const exitFenced = 3

func newServerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run one management node in cluster mode (RabbitMQ + MariaDB)",
		Long: "Starts one management node: it joins the cluster through the database, consumes its\n" +
			"queues on the message bus, takes its share of resources on the consistent-hash ring and\n" +
			"serves /healthz, /readyz and the admin endpoints under /admin/. SIGTERM or SIGINT leave\n" +
			"the cluster gracefully (drain, then exit 0). Exit code 3 means the node was fenced.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runServer(ctx, cfg, cfg.Logger(os.Stderr))
		},
	}
	conf.BindFlags(cmd.Flags())
	return cmd
}

// server is one management node process: its parts, built by startServer
// in dependency order and stopped in reverse.
type server struct {
	cfg      conf.Config
	log      *slog.Logger
	db       *gorm.DB
	node     *managementnode.Node
	bus      *cloudbus.Bus
	sched    *thread.Scheduler
	agents   *agentclient.Client
	hosts    *hostsvc.Service
	vms      *vm.Service
	auth     *auth.Service
	portal   *portal.Portal
	ipam     networkIPAM
	base     string // this node's URL
	serveErr chan error
	closers  []func()
}

// serverOptions vary between `mplane server` and `mplane run`.
type serverOptions struct {
	// broker is the in-process broker of the memory:// bus (run).
	broker *cloudbus.Broker
}

func runServer(ctx context.Context, cfg conf.Config, log *slog.Logger) error {
	s, err := startServer(ctx, cfg, log, serverOptions{})
	if err != nil {
		return err
	}
	return s.serveUntilDone(ctx)
}

// startServer builds and starts every part of a node; on error it stops
// what it started.
func startServer(ctx context.Context, cfg conf.Config, log *slog.Logger, opts serverOptions) (_ *server, err error) {
	nodeUUID := uid.New()
	startCtx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	s := &server{cfg: cfg, log: log, serveErr: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	if s.db, err = db.Open(startCtx, cfg.DatabaseURL(), db.Options{Logger: log}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = db.Close(s.db) })
	if err := migrate(startCtx, s.db); err != nil {
		return nil, err
	}
	generated, err := auth.EnsureAdmin(startCtx, s.db, cfg.AdminPassword)
	if err != nil {
		return nil, fmt.Errorf("create the admin account: %w", err)
	}
	if generated != "" {
		// Printed once, at the first start, on stdout for the operator.
		fmt.Printf("admin account created; password: %s (change it, or set admin_password before the first start)\n", generated)
	}

	if s.bus, err = cloudbus.New(cloudbus.Options{URL: cfg.BusURL, Broker: opts.broker, Namespace: cfg.BusPrefix, NodeUUID: nodeUUID,
		Logger: log, DefaultTimeout: cfg.CallTimeout}); err != nil {
		return nil, err
	}
	if err := s.bus.Start(startCtx); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = s.bus.Close() })

	ln, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (set api_listen / --api-listen to a free address)", cfg.APIListen, err)
	}
	host, _, _ := net.SplitHostPort(cfg.AdvertiseAddr())
	port := ln.Addr().(*net.TCPAddr).Port
	s.base = "http://" + net.JoinHostPort(host, strconv.Itoa(port))

	s.sched = thread.New(thread.Options{Logger: log})
	if s.node, err = managementnode.New(managementnode.Options{
		DB: s.db, Bus: s.bus, Scheduler: s.sched, Logger: log, Host: host, APIPort: port,
		HeartbeatInterval: cfg.HeartbeatInterval, HeartbeatThreshold: cfg.HeartbeatThreshold,
		ResyncInterval: cfg.RingResyncInterval, DrainTimeout: cfg.DrainTimeout,
	}); err != nil {
		ln.Close()
		return nil, err
	}
	s.agents = agentclient.New(agentclient.Options{CallbackURL: s.base + protocol.DefaultCallbackPath, Logger: log})
	s.closers = append(s.closers, s.agents.Close)
	if s.hosts, err = hostsvc.New(hostsvc.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Agents: s.agents, Logger: log,
		EventURL: s.base + protocol.DefaultEventPath, PingInterval: cfg.HostPingInterval,
		MaxPingFailures: cfg.HostPingMaxFailures, ChainLevel: cfg.HostChainLevel}); err != nil {
		ln.Close()
		return nil, err
	}
	s.ipam = networkIPAM{db: s.db}
	if s.vms, err = vm.New(vm.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Logger: log, IPAM: s.ipam}); err != nil {
		ln.Close()
		return nil, err
	}
	resources, err := resource.New(resource.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Logger: log, Kinds: kinds})
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.auth = auth.New(s.db, auth.Options{})
	jobStore := jobs.NewStore(s.db)
	if s.portal, err = portal.New(portal.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Jobs: jobStore,
		IPAM: s.ipam, Logger: log}); err != nil {
		ln.Close()
		return nil, err
	}

	// Serve HTTP first: connecting hosts needs the agents' callbacks.
	apiHandler, adminHandler := s.routes()
	s.serveHTTP(ln, apiHandler)
	if cfg.AdminListen != "" {
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w (set admin_listen / --admin-listen to a free address, or empty)", cfg.AdminListen, err)
		}
		s.serveHTTP(aln, adminHandler)
	}
	if err := s.node.Start(startCtx); err != nil {
		return nil, fmt.Errorf("join the cluster: %w", err)
	}
	s.closers = append(s.closers, func() { _ = s.node.Stop(context.Background()) })
	for _, svc := range []interface{ Start(context.Context) error }{s.hosts, s.vms, resources, s.portal} {
		if err := svc.Start(startCtx); err != nil {
			return nil, fmt.Errorf("start %T: %w", svc, err)
		}
	}
	s.closers = append(s.closers, s.hosts.Stop, s.vms.Stop)
	log.Info("management node running", "node_uuid", nodeUUID, "api", s.base,
		"bus_prefix", cfg.BusPrefix, "epoch", s.node.Ring().Epoch)
	return s, nil
}

// serveHTTP serves h on ln until close; a failure ends serveUntilDone.
func (s *server) serveHTTP(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case s.serveErr <- err:
			default:
			}
		}
	}()
	s.closers = append(s.closers, func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutCtx)
	})
}

// close stops what was started, in reverse order.
func (s *server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// serveUntilDone runs until ctx ends (graceful leave), the node is fenced,
// or the HTTP server fails.
func (s *server) serveUntilDone(ctx context.Context) error {
	defer s.close()
	select {
	case <-ctx.Done():
		s.log.Info("stop requested; leaving the cluster")
		stopCtx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout+10*time.Second)
		defer cancel()
		if err := s.node.Stop(stopCtx); err != nil {
			return fmt.Errorf("leave the cluster: %w", err)
		}
		return nil
	case <-s.node.Fenced():
		return &exitError{code: exitFenced, err: errors.New("fenced: a peer deleted this node's membership row after missed heartbeats; restart the process to rejoin")}
	case err := <-s.serveErr:
		return fmt.Errorf("http server: %w", err)
	}
}

// routes builds the API handler and the admin handler. With admin_listen
// empty both are served on the API listener; otherwise the admin endpoints
// (/admin/*, /debug/pprof/*) only on admin_listen. /healthz and /readyz are
// on both.
func (s *server) routes() (api, admin http.Handler) {
	health := func(mux *http.ServeMux) {
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"status":"ok"}`)
		})
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			st := s.node.Status()
			if st.State != managementnode.StateRunning || !s.node.Ring().Has(s.node.UUID()) {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, `{"status":"not ready","state":%q}`+"\n", st.State)
				return
			}
			fmt.Fprintf(w, `{"status":"ready","epoch":%d}`+"\n", st.Epoch)
		})
	}
	adminMux := http.NewServeMux()
	health(adminMux)
	adminRoutes := func(mux *http.ServeMux) {
		mux.Handle("GET /admin/", s.node.AdminHandler())
		mux.HandleFunc("POST /admin/probe", s.probe)
		mux.HandleFunc("GET /admin/process", serveProcess)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	adminRoutes(adminMux)

	mux := http.NewServeMux()
	health(mux)
	if s.cfg.AdminListen == "" {
		adminRoutes(mux)
	}
	mux.Handle(protocol.DefaultCallbackPath, s.agents.CallbackHandler())
	mux.Handle(protocol.DefaultEventPath, s.hosts.EventHandler())
	v1 := http.NewServeMux()
	rest.Handle(v1, "PUT /accounts/login", s.auth.LoginHandler())
	rest.Handle(v1, "DELETE /accounts/sessions/{uuid}", s.auth.LogoutHandler())
	s.portal.Register(v1)
	guarded := s.auth.Middleware(v1, auth.PublicPatterns()...)
	for _, prefix := range rest.Prefixes() {
		mux.Handle(prefix+"/", guarded)
	}
	return mux, adminMux
}

// probe asks the owner of a resource to identify itself, through this
// node's ring: POST /admin/probe?resource=<uuid>[&sleepMs=N].
func (s *server) probe(w http.ResponseWriter, r *http.Request) {
	res := r.URL.Query().Get("resource")
	if res == "" {
		writeError(w, errcode.New(errcode.InvalidArgument, "query parameter resource is required: POST /admin/probe?resource=<uuid>"))
		return
	}
	var sleep time.Duration
	if v := r.URL.Query().Get("sleepMs"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			writeError(w, errcode.New(errcode.InvalidArgument, "sleepMs must be a non-negative integer, got %q", v))
			return
		}
		sleep = time.Duration(ms) * time.Millisecond
	}
	rep, err := s.node.Probe(r.Context(), res, sleep)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"nodeUuid":%q,"epoch":%d,"hops":%d}`+"\n", rep.NodeUUID, rep.Epoch, rep.Hops)
}
