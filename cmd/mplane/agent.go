package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"mplane/agents/kvm"
	"mplane/agents/storage"
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
	)
	cmd := &cobra.Command{
		Use:   "kvm",
		Short: "Run a simulated KVM host agent",
		Long: "Runs a simulated KVM agent speaking ZStack's kvmagent protocol: VM states in\n" +
			"memory (and in --state-file), configurable latency and failure injection,\n" +
			"GET /debug/stats for command counts and serialization overlaps.\n" +
			"Prints the listening address, stops cleanly on SIGINT or SIGTERM.",
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
			return runKVMAgent(cmd, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Listen, "listen", "127.0.0.1:7070", "address to listen on (port 0 picks a free port)")
	f.StringVar(&opts.StateFile, "state-file", "", "file keeping VM states and the host secret across restarts (none: memory only)")
	f.DurationVar(&opts.Latency, "latency", 0, "latency added to every command but /host/echo")
	f.Float64Var(&opts.FailRate, "fail-rate", 0, "fraction of async commands answered with an injected failure, in [0,1]")
	f.Float64Var(&opts.NoCallbackRate, "no-callback-rate", 0, "fraction of async commands that never send their result, in [0,1]")
	f.StringSliceVar(&opts.FaultPaths, "fault-paths", nil, "limit --fail-rate and --no-callback-rate to these command paths (comma list, e.g. /vm/start)")
	f.IntVar(&opts.CPUNum, "cpu", 32, "number of CPUs the host reports")
	f.Int64Var(&opts.MemoryBytes, "memory", 128<<30, "memory the host reports, in bytes")
	f.Uint64Var(&opts.Seed, "seed", 0, "seed of failure injection (0: random)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
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
			return runStorageAgent(cmd, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Root, "root", "", "directory the agent serves (created if missing; required)")
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
