package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	agentclient "mplane/agents/client"
	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/conf"
	"mplane/db"
	"mplane/errcode"
	"mplane/managementnode"
	hostsvc "mplane/services/host"
	"mplane/thread"
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

// server is one management node process: its parts, built by runServer.
type server struct {
	cfg    conf.Config
	log    *slog.Logger
	node   *managementnode.Node
	bus    *cloudbus.Bus
	sched  *thread.Scheduler
	agents *agentclient.Client
	hosts  *hostsvc.Service
}

func runServer(ctx context.Context, cfg conf.Config, log *slog.Logger) error {
	nodeUUID := strings.ReplaceAll(uuid.NewString(), "-", "")
	startCtx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()

	gdb, err := db.Open(startCtx, cfg.DatabaseURL(), db.Options{Logger: log})
	if err != nil {
		return err
	}
	defer func() { _ = db.Close(gdb) }()

	bus, err := cloudbus.New(cloudbus.Options{URL: cfg.BusURL, Namespace: cfg.BusPrefix, NodeUUID: nodeUUID,
		Logger: log, DefaultTimeout: cfg.CallTimeout})
	if err != nil {
		return err
	}
	if err := bus.Start(startCtx); err != nil {
		return err
	}
	defer func() { _ = bus.Close() }()

	ln, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (set api_listen / --api-listen to a free address)", cfg.APIListen, err)
	}
	host, _, _ := net.SplitHostPort(cfg.AdvertiseAddr())
	port := ln.Addr().(*net.TCPAddr).Port

	sched := thread.New(thread.Options{Logger: log})
	node, err := managementnode.New(managementnode.Options{
		DB: gdb, Bus: bus, Scheduler: sched, Logger: log, Host: host, APIPort: port,
		HeartbeatInterval: cfg.HeartbeatInterval, HeartbeatThreshold: cfg.HeartbeatThreshold,
		ResyncInterval: cfg.RingResyncInterval, DrainTimeout: cfg.DrainTimeout,
	})
	if err != nil {
		ln.Close()
		return err
	}
	base := "http://" + net.JoinHostPort(host, strconv.Itoa(port))
	agents := agentclient.New(agentclient.Options{CallbackURL: base + protocol.DefaultCallbackPath, Logger: log})
	defer agents.Close()
	hosts, err := hostsvc.New(hostsvc.Options{DB: gdb, Bus: bus, Node: node, Scheduler: sched, Agents: agents, Logger: log,
		EventURL: base + protocol.DefaultEventPath, PingInterval: cfg.HostPingInterval,
		MaxPingFailures: cfg.HostPingMaxFailures, ChainLevel: cfg.HostChainLevel})
	if err != nil {
		ln.Close()
		return err
	}
	s := &server{cfg: cfg, log: log, node: node, bus: bus, sched: sched, agents: agents, hosts: hosts}
	// Serve HTTP first: connecting hosts needs the agents' callbacks.
	httpSrv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	shutdownHTTP := func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = httpSrv.Shutdown(shutCtx)
	}
	if err := node.Start(startCtx); err != nil {
		shutdownHTTP()
		return fmt.Errorf("join the cluster: %w", err)
	}
	if err := hosts.Start(startCtx); err != nil {
		_ = node.Stop(context.Background())
		shutdownHTTP()
		return fmt.Errorf("start the host service: %w", err)
	}
	defer hosts.Stop()
	log.Info("management node running", "node_uuid", nodeUUID, "api", base,
		"bus_prefix", cfg.BusPrefix, "epoch", node.Ring().Epoch)

	var result error
	select {
	case <-ctx.Done():
		log.Info("stop requested; leaving the cluster")
		stopCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout+10*time.Second)
		defer cancel()
		if err := node.Stop(stopCtx); err != nil {
			result = fmt.Errorf("leave the cluster: %w", err)
		}
	case <-node.Fenced():
		_ = node.Stop(context.Background())
		result = &exitError{code: exitFenced, err: errors.New("fenced: a peer deleted this node's membership row after missed heartbeats; restart the process to rejoin")}
	case err := <-serveErr:
		_ = node.Stop(context.Background())
		result = fmt.Errorf("http server: %w", err)
	}
	shutdownHTTP()
	return result
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
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
	mux.Handle("GET /admin/", s.node.AdminHandler())
	mux.HandleFunc("POST /admin/probe", s.probe)
	mux.Handle(protocol.DefaultCallbackPath, s.agents.CallbackHandler())
	mux.Handle(protocol.DefaultEventPath, s.hosts.EventHandler())
	return mux
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
