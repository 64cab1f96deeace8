package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"mplane/conf"
	"mplane/server"
)

func newRunCmd() *cobra.Command {
	var hosts, agentPort int
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a whole single-node cloud in this process (the embedded default)",
		Long: "Starts one management node on the in-process bus and a SQLite file under data_dir,\n" +
			"simulated KVM hosts on loopback ports (added as hosts), and a default zone, cluster,\n" +
			"instance offering, image, L2 network (no VLAN, on eth0, attached to the cluster) and an\n" +
			"L3 network on it with an IP range, then prints the API URL and how to log in. State\n" +
			"survives restarts (same data_dir). Stop with Ctrl-C.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			if hosts < 0 || hosts > 64 {
				return fmt.Errorf("--hosts must be between 0 and 64, got %d", hosts)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			level := new(slog.LevelVar)
			log := cfg.NewLogger(os.Stderr, level)
			e, err := server.StartEmbedded(ctx, server.EmbeddedOptions{Options: server.Options{Config: cfg, Logger: log, LogLevel: level, OwnsProcess: true},
				Hosts: hosts, AgentPort: agentPort})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "\nmplane is running: %d simulated hosts, a default zone, cluster, offering, image, L2 and L3 network.\n", hosts)
			fmt.Fprintf(out, "  API:    %s/v1   (ZStack REST conventions; also under /zstack/v1)\n", e.URL())
			fmt.Fprintf(out, "  login:  mplane ctl login --url %s --account admin\n", e.URL())
			fmt.Fprintf(out, "          (password: printed above at the first start, or admin_password)\n")
			fmt.Fprintf(out, "  then:   mplane ctl create vm --name vm1 --offering <uuid> --image <uuid> --l3 <uuid>\n")
			fmt.Fprintf(out, "          (mplane ctl list offerings / images / l3s show the defaults)\n")
			fmt.Fprintf(out, "  admin:  mplane daemon --run-dir %s mplane help\n", cfg.RunDirectory())
			fmt.Fprintf(out, "  data:   %s   stop with Ctrl-C\n\n", cfg.DataDir)
			return serveUntilDone(ctx, e, log)
		},
	}
	conf.BindFlags(cmd.Flags())
	cmd.Flags().IntVar(&hosts, "hosts", 3, "number of simulated KVM hosts to run in this process")
	cmd.Flags().IntVar(&agentPort, "agent-port", 7071, "loopback port of the first simulated host's agent (the next hosts use the following ports; 0: any free ports)")
	return cmd
}
