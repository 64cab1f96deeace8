package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"mplane/cmd/mplane/ctl"
	"mplane/conf"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mplane",
		Short:         "mplane is an IaaS management plane",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd(), newConfigCmd(), newServerCmd(), newAgentCmd(), ctl.NewCommand(), newRunCmd(), newBenchCmd(), newDaemonCmd(), newAdminCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version
			if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" {
				v = "dev (" + bi.GoVersion + ")"
			}
			fmt.Fprintln(cmd.OutOrStdout(), "mplane", v)
			return nil
		},
	}
}

// loadConfig reads the configuration the way every command does: defaults,
// then --config / MPLANE_CONFIG, then MPLANE_* variables, then flags.
func loadConfig(fs *pflag.FlagSet) (conf.Config, error) {
	return conf.Load("", os.Environ(), fs)
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Validate the configuration and print the effective settings",
		Long: "Loads the configuration (defaults < config file < MPLANE_* environment < flags),\n" +
			"reports every problem with what to fix, and prints the effective settings\n" +
			"with secrets redacted.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			lines := []string{}
			for _, a := range cfg.LogValue().Group() {
				lines = append(lines, fmt.Sprintf("%s: %s", a.Key, a.Value.String()))
			}
			sort.Strings(lines)
			fmt.Fprintln(cmd.OutOrStdout(), strings.Join(lines, "\n"))
			return nil
		},
	}
	conf.BindFlags(cmd.Flags())
	return cmd
}
