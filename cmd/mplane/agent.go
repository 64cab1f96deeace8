package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/agents/storage"
	"mplane/internal/tlsconf"
)

// newAgentCmd is "mplane agent": the agents mplane ships, each run as its
// own process (cluster mode) on the host it serves.
func newAgentCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent (simulated KVM host, storage)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAgentKVMCmd(), newAgentStorageCmd())
	return cmd
}

func newAgentKVMCmd() *cobra.Command {
	var (
		opts     kvm.Options
		logLevel string
		storages []string
		caFile   string
		tlsCert  string
		tlsKey   string
	)
	cmd := &cobra.Command{
		Use:   "kvm",
		Short: "Run a simulated KVM host agent",
		Long: "Runs a simulated KVM agent speaking ZStack's kvmagent protocol: VM states in\n" +
			"memory (and in --state-file), configurable latency and failure injection,\n" +
			"GET /debug/stats for command counts and serialization overlaps.\n" +
			"\n" +
			"With --storage URL=DIR (repeatable) the agent also serves the host's primary\n" +
			"storage, as kvmagent serves ZStack's LocalStorage and SharedMountPoint storage:\n" +
			"a real storage agent on directory DIR (qcow2 with qemu-img, see --qemu-img) for\n" +
			"the primary storage whose URL is URL (an absolute path, as ZStack's primary\n" +
			"storage url). Storage commands name their storage's URL in the " + protocol.StorageHeader + "\n" +
			"header. --storage DIR alone means URL=DIR, the usual case where the URL is\n" +
			"the directory itself. Example:\n" +
			"  mplane agent kvm --storage /var/lib/mplane/local --storage /mnt/smp=/srv/smp\n" +
			"\n" +
			"Prints the listening address, stops cleanly on SIGINT or SIGTERM.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			var err error
			if opts.Storage, err = parseStorageFlags(storages); err != nil {
				return err
			}
			if err := opts.Validate(); err != nil {
				return err
			}
			if opts.Server.HTTPClient, err = tlsconf.Client(caFile); err != nil {
				return err
			}
			if opts.Server.TLS, err = serverTLS(tlsCert, tlsKey); err != nil {
				return err
			}
			return runKVMAgent(cmd, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Listen, "listen", "127.0.0.1:7070", "address to listen on (port 0 picks a free port)")
	f.StringVar(&opts.StateFile, "state-file", "", "file keeping VM states and the host secret across restarts (none: memory only)")
	f.StringVar(&caFile, "ca-file", "", "PEM certificates to trust, beside the system's, when posting results to a node that serves HTTPS (tls_cert_file)")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM certificate: with --tls-key the agent serves HTTPS (the nodes then need agent_scheme https)")
	f.StringVar(&tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&opts.ClaimToken, "claim-token", os.Getenv("MPLANE_AGENT_CLAIM_TOKEN"), "the token a management node's connect must carry to claim this host (its agent_claim_token); "+
		"default $MPLANE_AGENT_CLAIM_TOKEN; empty: the first connect from anyone claims it")
	f.BoolVar(&opts.OpenDebug, "open-debug", false, "serve GET /debug/arrivals (the commands' task UUIDs) without the host secret, for test harnesses")
	f.DurationVar(&opts.Latency, "latency", 0, "latency added to every command but /host/echo")
	f.DurationVar(&opts.StorageLatency, "storage-latency", 0, "latency added before every storage command (a slow disk)")
	f.Float64Var(&opts.FailRate, "fail-rate", 0, "fraction of async commands answered with an injected failure, in [0,1]")
	f.Float64Var(&opts.NoCallbackRate, "no-callback-rate", 0, "fraction of async commands that never send their result, in [0,1]")
	f.Float64Var(&opts.LostReplyRate, "lost-reply-rate", 0, "fraction of VM commands (start, stop, reboot, destroy) that act and then never send their result, in [0,1]")
	f.StringSliceVar(&opts.FaultPaths, "fault-paths", nil, "limit --fail-rate, --no-callback-rate and --lost-reply-rate to these command paths (comma list, e.g. /vm/start)")
	f.IntVar(&opts.CPUNum, "cpu", 32, "number of CPUs the host reports")
	f.Int64Var(&opts.MemoryBytes, "memory", 128<<30, "memory the host reports, in bytes")
	f.Uint64Var(&opts.Seed, "seed", 0, "seed of failure injection (0: random)")
	f.StringArrayVar(&storages, "storage", nil, "primary storage the host serves: URL=DIR, or DIR for DIR=DIR (repeatable; URL an absolute path)")
	f.StringVar(&opts.StorageQemuImg, "qemu-img", "", `qemu-img binary of the --storage agents ("": found on PATH; "none": raw files only)`)
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// parseStorageFlags reads the --storage flags: "URL=DIR", or "DIR" for
// DIR=DIR (the URL is everything before the first "=").
func parseStorageFlags(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(flags))
	for _, f := range flags {
		u, dir, ok := strings.Cut(f, "=")
		if !ok {
			dir = u
			if !strings.HasPrefix(dir, "/") {
				return nil, fmt.Errorf("--storage %q: a directory alone is also the primary storage's URL, so it must be an absolute path; or give URL=DIR", f)
			}
		}
		if u == "" || dir == "" {
			return nil, fmt.Errorf("--storage %q: want URL=DIR or DIR, e.g. --storage /var/lib/mplane/local", f)
		}
		if prev, dup := out[u]; dup {
			return nil, fmt.Errorf("--storage: URL %s given twice (directories %s and %s); give each primary storage once", u, prev, dir)
		}
		out[u] = dir
	}
	return out, nil
}

func runKVMAgent(cmd *cobra.Command, opts kvm.Options) error {
	a, err := kvm.New(opts)
	if err != nil {
		return err
	}
	return runAgent(cmd, a, opts.Logger, func(addr string) string { return "mplane kvm agent listening on http://" + addr })
}

// agentProcess is what runAgent runs: an agent's lifecycle.
type agentProcess interface {
	Start(ctx context.Context) error
	Addr() string
	Stop(ctx context.Context) error
}

// runAgent starts a, prints where it listens, and stops it on SIGINT or
// SIGTERM.
func runAgent(cmd *cobra.Command, a agentProcess, log *slog.Logger, banner func(addr string) string) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Start(ctx); err != nil {
		_ = a.Stop(context.Background())
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), banner(a.Addr()))
	<-ctx.Done()
	log.Info("stopping", "cause", context.Cause(ctx))
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.Stop(sctx)
}

func newAgentStorageCmd() *cobra.Command {
	var (
		opts     storage.Options
		logLevel string
		caFile   string
		tlsCert  string
		tlsKey   string
	)
	cmd := &cobra.Command{
		Use:   "storage",
		Short: "Run a storage agent on a directory",
		Long: "Runs a storage agent: primary storage (volumes, snapshots, an image cache) or\n" +
			"backup storage (images, served at GET /files/<path>) in --root, qcow2 with\n" +
			"qemu-img, sparse raw files without it. Every path in a command is relative to\n" +
			"--root. Prints the listening address, stops cleanly on SIGINT or SIGTERM.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			if err := opts.Validate(); err != nil {
				return err
			}
			var err error
			if opts.Server.HTTPClient, err = tlsconf.Client(caFile); err != nil {
				return err
			}
			if opts.Server.TLS, err = serverTLS(tlsCert, tlsKey); err != nil {
				return err
			}
			opts.HTTPClient = opts.Server.HTTPClient // downloads trust the same
			return runStorageAgent(cmd, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Root, "root", "", "directory the agent serves (created if missing; required)")
	f.StringVar(&caFile, "ca-file", "", "PEM certificates to trust, beside the system's, when posting results to a node that serves HTTPS (tls_cert_file)")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM certificate: with --tls-key the agent serves HTTPS (the nodes then need agent_scheme https)")
	f.StringVar(&tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&opts.Listen, "listen", "127.0.0.1:7080", "address to listen on (port 0 picks a free port)")
	f.StringVar(&opts.QemuImg, "qemu-img", "", `qemu-img binary ("": found on PATH; "none": raw files only)`)
	f.IntVar(&opts.DownloadRetries, "download-retries", 3, "times an interrupted download is resumed before it fails (negative: never)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	_ = cmd.MarkFlagRequired("root")
	return cmd
}

func runStorageAgent(cmd *cobra.Command, opts storage.Options) error {
	a, err := storage.New(opts)
	if err != nil {
		return err
	}
	return runAgent(cmd, a, opts.Logger, func(addr string) string {
		return fmt.Sprintf("mplane storage agent listening on http://%s (root %s)", addr, a.Root())
	})
}

// serverTLS is the TLS of an agent started with --tls-cert and --tls-key
// (nil without them).
func serverTLS(cert, key string) (*tls.Config, error) {
	switch {
	case cert == "" && key == "":
		return nil, nil
	case cert == "" || key == "":
		return nil, fmt.Errorf("--tls-cert and --tls-key are given together")
	}
	return tlsconf.Server(cert, key)
}
