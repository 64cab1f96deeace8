package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"mplane/conf"
	"mplane/server"
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
			"serves /healthz, /readyz and the admin endpoints under /admin/, and the admin socket in\n" +
			"run_dir (mplane daemon). SIGTERM or SIGINT leave the cluster gracefully (drain, then\n" +
			"exit 0), and so does `mplane daemon ... exit`. Exit code 3 means the node was fenced.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			level := new(slog.LevelVar)
			log := cfg.NewLogger(os.Stderr, level)
			s, err := server.Start(ctx, server.Options{Config: cfg, Logger: log, LogLevel: level, OwnsProcess: true})
			if err != nil {
				return err
			}
			return serveUntilDone(ctx, s, log)
		},
	}
	conf.BindFlags(cmd.Flags())
	return cmd
}

// node is what serveUntilDone runs: a server or an embedded cloud.
type node interface {
	Stop(ctx context.Context) error
	Fenced() <-chan struct{}
	Failed() <-chan error
	ExitRequested() <-chan server.ExitRequest
}

// serveUntilDone runs until ctx ends (graceful leave), the node is fenced,
// an HTTP listener fails, or the admin commands exit or respawn ask for it,
// and stops the node; after respawn it re-executes the binary.
func serveUntilDone(ctx context.Context, s node, log *slog.Logger) error {
	select {
	case <-ctx.Done():
		log.Info("stop requested; leaving the cluster")
		return s.Stop(context.Background())
	case req := <-s.ExitRequested():
		log.Info("exit requested on the admin interface; leaving the cluster", "respawn", req.Respawn)
		err := s.Stop(context.Background())
		if !req.Respawn {
			return err
		}
		if err != nil {
			log.Error("the node did not stop cleanly; respawning anyway", "err", err)
		}
		return server.Respawn()
	case <-s.Fenced():
		_ = s.Stop(context.Background())
		return &exitError{code: exitFenced, err: errors.New("fenced: a peer deleted this node's membership row after missed heartbeats; restart the process to rejoin")}
	case err := <-s.Failed():
		_ = s.Stop(context.Background())
		return fmt.Errorf("http server: %w", err)
	}
}
