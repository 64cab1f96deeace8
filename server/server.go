package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"mplane/admin"
	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/api/auth"
	"mplane/api/jobs"
	"mplane/api/portal"
	"mplane/api/quota"
	"mplane/api/route"
	"mplane/api/tenancy"
	"mplane/cloudbus"
	"mplane/conf"
	"mplane/db"
	"mplane/internal/netguard"
	"mplane/internal/tlsconf"
	"mplane/managementnode"
	"mplane/services/cluster"
	"mplane/services/diskoffering"
	"mplane/services/globalconfig"
	hostsvc "mplane/services/host"
	"mplane/services/image"
	"mplane/services/network"
	"mplane/services/offering"
	"mplane/services/resource"
	"mplane/services/storage"
	"mplane/services/vm"
	"mplane/services/volume"
	"mplane/services/zone"
	"mplane/thread"
	"mplane/uid"
)

// Kinds are the simple kinds every node serves, in migration order (an L2
// network's attachments refer to clusters, an L3 network to its L2
// network, an IP range to its L3 network); l2 are the L2 kinds made with
// the node's VNI pool (network.NewL2Kinds(nil) serves to migrate). Adding
// a simple resource is one line here.
func Kinds(l2 network.L2Kinds) []resource.Kind {
	kinds := []resource.Kind{zone.Kind, cluster.Kind, offering.Kind, diskoffering.Kind}
	kinds = append(kinds, l2.All()...)
	return append(kinds, network.L3Kind, network.IPRangeKind)
}

// Options vary between `mplane server`, `mplane run` and tests.
type Options struct {
	Config conf.Config
	Logger *slog.Logger
	// Broker is the in-process broker of a memory:// bus (embedded mode);
	// nil makes one.
	Broker *cloudbus.Broker
	// ExtraKinds are served after Kinds (a test's toy resource).
	ExtraKinds []resource.Kind
	// BcryptCost hashes the admin password made at the first start; 0 is
	// bcrypt's default. Tests use bcrypt.MinCost to start fast.
	BcryptCost int
	// LogLevel is the level Logger was built with (conf.Config.NewLogger):
	// the admin commands `config set log_level` and `log level` set it.
	// Nil: the server filters Logger through a level of its own, which
	// can hide records but not show those Logger itself drops.
	LogLevel *slog.LevelVar
	// OwnsProcess: the node is the process (`mplane server`, `mplane
	// run`), whose owner reads ExitRequested; the admin commands exit and
	// respawn are refused without it.
	OwnsProcess bool
}

// component is the one lifecycle shape of the node's parts: Start, then
// Stop (idempotent), both bounded by their context.
type component interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Server is one management node: its parts, started by Start in
// dependency order and stopped by Stop in reverse.
type Server struct {
	cfg    conf.Config
	log    *slog.Logger
	db     *gorm.DB
	node   *managementnode.Node
	bus    *cloudbus.Bus
	sched  *thread.Scheduler
	agents *agentclient.Client
	hosts  *hostsvc.Service
	vms    *vm.Service
	store  *storage.Service
	images *image.Service
	vols   *volume.Service
	gcs    *globalconfig.Service
	res    *resource.Service
	vnis   *managementnode.IDPool // the cluster's VNIs (network.VNIPool)
	leaks  *network.VNIReconciler // releases the VNIs held for VXLAN networks that do not exist
	l2     network.L2Kinds
	nets   *network.Bridges
	auth   *auth.Service
	quota  *quota.Service
	portal *portal.Portal
	url    string

	// The admin interface (admin.go): its command table, the socket,
	// the live log level and configuration, and the exit requests.
	table       *admin.Table
	asok        *admin.Socket
	level       *slog.LevelVar
	ownsProcess bool
	exiting     atomic.Bool
	exits       chan ExitRequest
	cfgMu       sync.Mutex  // guards live; held while a config set applies (docs/locking.md)
	live        conf.Config // the configuration now

	serveErr chan error
	// started is set once every part runs: /readyz answers ready only
	// then (the node may run in the ring before the API portal serves).
	started atomic.Bool
	// stops run in reverse order at Stop: each part registers its stop
	// once it has started.
	stops []func(ctx context.Context) error
}

// Start builds and starts every part of a node; on error it stops what it
// started.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	cfg, log := opts.Config, opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	level := opts.LogLevel
	if level == nil {
		level = new(slog.LevelVar)
		if l, err := conf.ParseLevel(cfg.LogLevel); err == nil {
			level.Set(l)
		}
		log = slog.New(&levelFilter{h: log.Handler(), level: level})
	}
	broker := opts.Broker
	if broker == nil && cfg.BusURL == "memory://" {
		broker = cloudbus.NewBroker()
	}
	// The tables need no VNI pool; the kinds served get the node's below.
	kinds := append(Kinds(network.NewL2Kinds(nil)), opts.ExtraKinds...)
	nodeUUID := uid.New()
	startCtx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	s := &Server{cfg: cfg, log: log, serveErr: make(chan error, 1), level: level, live: cfg,
		ownsProcess: opts.OwnsProcess, exits: make(chan ExitRequest, 1)}
	defer func() {
		if err != nil {
			_ = s.stop(context.Background())
		}
	}()

	if s.db, err = db.Open(startCtx, cfg.DatabaseURL(), db.Options{Logger: log}); err != nil {
		return nil, err
	}
	s.onStop(func(context.Context) error { return db.Close(s.db) })
	if err := migrate(startCtx, s.db, kinds); err != nil {
		return nil, err
	}
	generated, err := auth.EnsureAdminCost(startCtx, s.db, cfg.AdminPassword, opts.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("create the admin account: %w", err)
	}
	if generated != "" {
		// Printed once, at the first start, on stdout for the operator.
		fmt.Printf("admin account created; password: %s (change it, or set admin_password before the first start)\n", generated)
	} else if cfg.AdminPassword != "" && !auth.AdminPasswordIs(startCtx, s.db, cfg.AdminPassword) {
		log.Warn("admin_password differs from the admin account's password and is not applied: it sets the password at the first start only; " +
			"change it with updateAccount (mplane ctl), or offline with `mplane admin reset-password`")
	}

	if s.bus, err = cloudbus.New(cloudbus.Options{URL: cfg.BusURL, Broker: broker, Namespace: cfg.BusPrefix, NodeUUID: nodeUUID,
		Logger: log, DefaultTimeout: cfg.CallTimeout}); err != nil {
		return nil, err
	}
	if err := s.bus.Start(startCtx); err != nil {
		return nil, err
	}
	s.onStop(s.bus.Stop)

	ln, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (set api_listen / --api-listen to a free address)", cfg.APIListen, err)
	}
	host, _, _ := net.SplitHostPort(cfg.AdvertiseAddr())
	port := ln.Addr().(*net.TCPAddr).Port
	s.url = "http://" + net.JoinHostPort(host, strconv.Itoa(port))
	var apiTLS *tls.Config
	if cfg.TLSCertFile != "" {
		if apiTLS, err = tlsconf.Server(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			ln.Close()
			return nil, err
		}
		s.url = "https://" + net.JoinHostPort(host, strconv.Itoa(port))
	}

	s.sched = thread.New(thread.Options{Logger: log})
	s.onStop(func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return s.sched.Stop(ctx)
	})
	if s.node, err = managementnode.New(managementnode.Options{
		DB: s.db, Bus: s.bus, Scheduler: s.sched, Logger: log, Host: host, APIPort: port,
		HeartbeatInterval: cfg.HeartbeatInterval, HeartbeatThreshold: cfg.HeartbeatThreshold,
		ResyncInterval: cfg.RingResyncInterval, DrainTimeout: cfg.DrainTimeout,
	}); err != nil {
		ln.Close()
		return nil, err
	}
	// Every write checks the node's lease first: a node paused past it
	// writes nothing before it knows it is still a member.
	if err := s.node.FenceWrites(s.db); err != nil {
		ln.Close()
		return nil, err
	}
	// Before the node starts, the same on every node: the cluster's VNIs,
	// allocated through the sequencer (VXLAN networks' creates).
	if s.vnis, err = managementnode.NewIDPool(s.node, network.VNIPool, network.MinVNI, network.MaxVNI); err != nil {
		ln.Close()
		return nil, err
	}
	s.l2 = network.NewL2Kinds(s.vnis)
	if s.leaks, err = network.NewVNIReconciler(network.VNIReconcileOptions{DB: s.db, Pool: s.vnis, Owner: s.node, Logger: log}); err != nil {
		ln.Close()
		return nil, err
	}
	kinds = append(Kinds(s.l2), opts.ExtraKinds...)
	agentHTTP, err := agentClient(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if agentHTTP != nil {
		s.onStop(func(context.Context) error { agentHTTP.CloseIdleConnections(); return nil })
	}
	s.agents = agentclient.New(agentclient.Options{CallbackURL: s.url + protocol.DefaultCallbackPath, Logger: log, HTTPClient: agentHTTP})
	s.onStop(func(context.Context) error { s.agents.Close(); return nil })
	if s.hosts, err = hostsvc.New(hostsvc.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Agents: s.agents, Logger: log,
		EventURL: s.url + protocol.DefaultEventPath, PingInterval: cfg.HostPingInterval,
		MaxPingFailures: cfg.HostPingMaxFailures, ChainLevel: cfg.HostChainLevel, ClaimToken: cfg.AgentClaimToken, AgentScheme: cfg.AgentScheme,
		AddressPolicy: agentPolicy(cfg)}); err != nil {
		ln.Close()
		return nil, err
	}
	if s.nets, err = network.NewBridges(network.BridgesOptions{DB: s.db, Node: s.node, Scheduler: s.sched, Logger: log}); err != nil {
		ln.Close()
		return nil, err
	}
	s.hosts.OnConnected(func(ctx context.Context, h hostsvc.HostVO) { s.nets.Reconnected(ctx, h.UUID) })
	s.hosts.OnDelete(network.HostDeleted)
	if s.store, err = storage.New(storage.Options{AgentScheme: cfg.AgentScheme, DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Hosts: s.hosts, Agents: s.agents,
		Logger: log, EventURL: s.url + StorageEventPath}); err != nil {
		ln.Close()
		return nil, err
	}
	if s.images, err = image.New(image.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Storage: s.store, Logger: log}); err != nil {
		ln.Close()
		return nil, err
	}
	if s.vols, err = volume.New(volume.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Storage: s.store, Logger: log,
		DetachFromVM: vm.DetachFromVM(s.node)}); err != nil {
		ln.Close()
		return nil, err
	}
	timeouts, err := cfg.VMCommandTimeoutsMap()
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("vm_command_timeouts: %w", err)
	}
	if s.vms, err = vm.New(vm.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Logger: log, IPAM: networkIPAM{db: s.db, bridges: s.nets}, Volumes: s.vols,
		AllocationStrategy: cfg.VMAllocationStrategy, FlowRetention: cfg.FlowRetention, OrphanPolicy: cfg.VMOrphanPolicy,
		AgentTimeout: cfg.VMCommandTimeout, CommandTimeouts: timeouts, ReconcileInterval: cfg.VMReconcileInterval}); err != nil {
		ln.Close()
		return nil, err
	}
	// Agent truth: a host that (re)connects and a VM state event get the
	// host's VM list compared with the database.
	s.hosts.OnConnected(func(ctx context.Context, h hostsvc.HostVO) { s.vms.HostConnected(ctx, h.UUID) })
	s.hosts.OnAgentEvent(s.vms.AgentEvent)
	// Before the node starts: New registers the configurations' part in
	// the cluster transactions (managementnode.Node.RegisterTxn).
	if s.gcs, err = globalconfig.New(globalconfig.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Logger: log,
		Definitions: globalConfigs(), Check: s.checkSetting, Apply: s.applySetting}); err != nil {
		ln.Close()
		return nil, err
	}
	if s.res, err = resource.New(resource.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Logger: log, Kinds: kinds}); err != nil {
		ln.Close()
		return nil, err
	}
	s.auth = auth.New(s.db, auth.Options{Logger: log.With("component", "auth"), SessionTTL: cfg.SessionTTL})
	s.quota = quota.New(s.db)
	if err := s.quota.SetDefaults(cfg.QuotaDefaults); err != nil {
		return nil, fmt.Errorf("quota_defaults: %w", err)
	}
	// What the API serves: every service's declared resources.
	var resources []route.Resource
	resources = append(resources, s.res.API()...)
	resources = append(resources, s.hosts.API()...)
	resources = append(resources, s.vms.API()...)
	resources = append(resources, s.store.API()...)
	resources = append(resources, s.images.API()...)
	resources = append(resources, s.gcs.API()...)
	resources = append(resources, s.vols.API()...)
	if s.portal, err = portal.New(portal.Options{DB: s.db, Bus: s.bus, Node: s.node, Scheduler: s.sched, Jobs: jobs.NewStore(s.db),
		Logger: log, Resources: resources, JobTimeout: cfg.JobTimeout, JobRetention: cfg.JobRetention, Purge: s.auth.PurgeExpired,
		Quota: s.quota, WebhookPolicy: webhookPolicy(cfg), AccountSubmitRate: float64(cfg.AccountSubmitRate)}); err != nil {
		ln.Close()
		return nil, err
	}

	if s.table, err = s.adminTable(); err != nil {
		ln.Close()
		return nil, err
	}
	if s.asok, err = admin.NewSocket(admin.SocketOptions{Dir: cfg.RunDirectory(), NodeUUID: nodeUUID, Table: s.table, Logger: log}); err != nil {
		ln.Close()
		return nil, err
	}

	// Serve HTTP first: connecting hosts needs the agents' callbacks.
	apiHandler, adminHandler := s.routes()
	var api net.Listener = newLimitListener(ln, apiMaxConnections)
	if apiTLS != nil {
		// Outermost, so that the server sees TLS connections (r.TLS).
		api = tls.NewListener(api, apiTLS)
	}
	s.serveHTTP(api, apiServer(apiHandler))
	if cfg.AdminListen != "" {
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w (set admin_listen / --admin-listen to a free address, or empty)", cfg.AdminListen, err)
		}
		s.serveHTTP(aln, adminServer(adminHandler))
	}
	// The admin socket last: its commands use every part. The global
	// configurations after the hosts and the VMs, whose Start sets the
	// ping interval and the flow prune period of their options, so that a
	// changed global value wins.
	for _, c := range []component{s.node, s.nets, s.hosts, s.store, s.images, s.vols, s.vms, s.gcs, s.res, s.leaks, s.portal, s.asok} {
		if err := c.Start(startCtx); err != nil {
			return nil, fmt.Errorf("start %T: %w", c, err)
		}
		s.onStop(c.Stop)
	}
	s.started.Store(true)
	log.Info("management node running", "node_uuid", nodeUUID, "api", s.url,
		"bus_prefix", cfg.BusPrefix, "epoch", s.node.Ring().Epoch, "admin_socket", s.asok.Path())
	return s, nil
}

// migrate creates every table, in dependency order.
func migrate(ctx context.Context, gdb *gorm.DB, kinds []resource.Kind) error {
	steps := []func(context.Context, *gorm.DB) error{
		managementnode.Migrate,
		func(ctx context.Context, gdb *gorm.DB) error { return resource.Migrate(ctx, gdb, kinds) },
		network.Migrate,
		hostsvc.Migrate,
		storage.Migrate,
		image.Migrate,
		volume.Migrate,
		vm.Migrate,
		globalconfig.Migrate,
		auth.Migrate,
		tenancy.Migrate,
		quota.Migrate,
		jobs.Migrate,
	}
	for _, m := range steps {
		if err := m(ctx, gdb); err != nil {
			return fmt.Errorf("create tables: %w", err)
		}
	}
	return nil
}

// URL is this node's API base URL (http://host:port).
func (s *Server) URL() string { return s.url }

// Volumes is the node's volume service.
func (s *Server) Volumes() *volume.Service { return s.vols }

// VMs is the node's VM service.
func (s *Server) VMs() *vm.Service { return s.vms }

// GlobalConfigs is the node's global configuration service.
func (s *Server) GlobalConfigs() *globalconfig.Service { return s.gcs }

// VNIs is the node's copy of the cluster's VNI pool.
func (s *Server) VNIs() *managementnode.IDPool { return s.vnis }

// L2 are the L2 network kinds the node serves, for their typed messages.
func (s *Server) L2() network.L2Kinds { return s.l2 }

// Bridges makes the L2 networks' bridges on the hosts (Realize before a
// VM starts on a host).
func (s *Server) Bridges() *network.Bridges { return s.nets }

// DB is the node's database handle.
func (s *Server) DB() *gorm.DB { return s.db }

// Auth is the node's accounts and sessions service.
func (s *Server) Auth() *auth.Service { return s.auth }

// Node is the node's membership.
func (s *Server) Node() *managementnode.Node { return s.node }

// Bus is the node's message bus.
func (s *Server) Bus() *cloudbus.Bus { return s.bus }

// Fenced is closed when a peer fenced this node: it must exit.
func (s *Server) Fenced() <-chan struct{} { return s.node.Fenced() }

// Failed receives an error if an HTTP listener stops serving.
func (s *Server) Failed() <-chan error { return s.serveErr }

func (s *Server) onStop(fn func(ctx context.Context) error) { s.stops = append(s.stops, fn) }

// Stop leaves the cluster gracefully (the node drains, bounded by the drain
// timeout) and stops every part, in reverse order. It is idempotent.
func (s *Server) Stop(ctx context.Context) error {
	var err error
	if s.node != nil {
		stopCtx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout+10*time.Second)
		err = s.node.Stop(stopCtx)
		cancel()
		if err != nil {
			err = fmt.Errorf("leave the cluster: %w", err)
		}
	}
	return errors.Join(err, s.stop(ctx))
}

func (s *Server) stop(ctx context.Context) error {
	var errs []error
	for i := len(s.stops) - 1; i >= 0; i-- {
		if err := s.stops[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.stops = nil
	return errors.Join(errs...)
}

// serveHTTP serves srv on ln until Stop; a failure is reported on Failed.
func (s *Server) serveHTTP(ln net.Listener, srv *http.Server) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case s.serveErr <- err:
			default:
			}
		}
	}()
	s.onStop(func(ctx context.Context) error {
		shutCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := srv.Shutdown(shutCtx)
		if err != nil {
			// A connection still busy past the grace (an agent's request
			// in flight): close it rather than fail the stop.
			s.log.Warn("http server: closing connections still open after the shutdown grace", "err", err)
			err = srv.Close()
		}
		<-done
		return err
	})
}

// Endpoints lists the REST routes this node serves from declared resources.
func (s *Server) Endpoints() []portal.Endpoint { return s.portal.Endpoints() }

// webhookPolicy is what an X-Web-Hook may reach: anything but the node's
// own and link-local addresses (netguard.Internal), unless webhook_allow
// names them.
func webhookPolicy(cfg conf.Config) netguard.Policy {
	allow, _ := netguard.ParsePrefixes(cfg.WebhookAllow) // checked by conf.Validate
	return netguard.Policy{Allow: allow, Default: netguard.Internal}
}

// agentPolicy is where the node's agents may be: agent_networks, or
// anywhere.
func agentPolicy(cfg conf.Config) netguard.Policy {
	nets, _ := netguard.ParsePrefixes(cfg.AgentNetworks) // checked by conf.Validate
	return netguard.Only(nets, "is not in agent_networks")
}

// agentClient is the HTTP client of the node's agent calls when they need
// one of their own: agents over HTTPS with a private CA (agent_ca_file),
// or agent_networks, enforced on every address dialled. Nil for the
// agent client's default.
func agentClient(cfg conf.Config) (*http.Client, error) {
	if cfg.AgentCAFile == "" && cfg.AgentNetworks == "" {
		return nil, nil
	}
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	if cfg.AgentCAFile != "" {
		var err error
		if hc, err = tlsconf.Client(cfg.AgentCAFile); err != nil {
			return nil, fmt.Errorf("agent_ca_file: %w", err)
		}
	}
	tr := hc.Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost = 64
	tr.DialContext = agentPolicy(cfg).DialContext(30 * time.Second)
	return hc, nil
}
