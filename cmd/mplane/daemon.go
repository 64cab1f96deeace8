package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"mplane/admin"
	"mplane/errcode"
)

func newDaemonCmd() *cobra.Command {
	var (
		output  string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "daemon [flags] NODE COMMAND [ARGS...]",
		Short: "Run an admin command on a node of this machine, through its admin socket",
		Long: "Talks to a running node's admin socket (in the style of Ceph's `ceph daemon`). NODE is\n" +
			"a socket path, \"mplane\" (the node started last in the run directory), or a prefix of a\n" +
			"node UUID; the run directory is the node's run_dir (--run-dir, MPLANE_RUN_DIR, or\n" +
			"<data_dir>/run: --data-dir, MPLANE_DATA_DIR, --config). `mplane daemon mplane help` lists\n" +
			"the commands: status, ring, queues, bus, flows, config show, config set KEY VALUE,\n" +
			"log level LEVEL, profile cpu SECONDS FILE, heap FILE, respawn, exit...\n" +
			"The answer is printed as indented JSON (-o text: plain text); a failed command exits 1\n" +
			"with the node's error.",
		Example: "  mplane daemon mplane status\n" +
			"  mplane daemon --data-dir /var/lib/mplane 3f2a config set log_level debug\n" +
			"  mplane daemon /var/lib/mplane/run/mplane.asok profile cpu 30 /tmp/cpu.prof",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return errors.New(`want NODE COMMAND [ARGS...], e.g. "mplane daemon mplane status" ("mplane daemon mplane help" lists the commands)`)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "json" && output != "text" {
				return fmt.Errorf("--output must be json or text, got %q", output)
			}
			target, words := args[0], args[1:]
			path := target
			if !strings.Contains(target, "/") {
				cfg, err := loadConfig(cmd.Flags())
				if err != nil {
					return fmt.Errorf("invalid configuration (needed to find the run directory):\n%w", err)
				}
				if path, err = admin.Resolve(cfg.RunDirectory(), target); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			res, err := admin.Call(ctx, path, words)
			if err != nil {
				if e, ok := errors.AsType[*errcode.Error](err); ok {
					msg := e.Details
					if msg == "" {
						msg = e.Description
					}
					return fmt.Errorf("%s (%s)", msg, e.Code)
				}
				return err
			}
			return printAnswer(cmd.OutOrStdout(), output, words, res)
		},
	}
	cmd.Flags().SetInterspersed(false) // everything after NODE is the command's
	cmd.Flags().StringVarP(&output, "output", "o", "json", "json (indented) or text")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: no limit; profile cpu takes its SECONDS)")
	cmd.Flags().String("run-dir", "", "the node's run directory (env MPLANE_RUN_DIR); default <data-dir>/run")
	cmd.Flags().String("data-dir", "", "the node's data directory (env MPLANE_DATA_DIR), when --run-dir is not given")
	cmd.Flags().String("config", "", "the node's YAML config file, to read run_dir and data_dir from (env MPLANE_CONFIG)")
	return cmd
}

// printAnswer prints a command's result: indented JSON, or text.
func printAnswer(w io.Writer, output string, words []string, res json.RawMessage) error {
	if output == "json" {
		var buf bytes.Buffer
		if err := json.Indent(&buf, res, "", "  "); err != nil {
			return fmt.Errorf("malformed answer: %w", err)
		}
		buf.WriteByte('\n')
		_, err := w.Write(buf.Bytes())
		return err
	}
	if words[0] == "help" {
		var h admin.Help
		if err := json.Unmarshal(res, &h); err == nil {
			tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
			for _, c := range h.Commands {
				fmt.Fprintf(tw, "%s\t%s\n", c.Usage, c.Description)
			}
			return tw.Flush()
		}
	}
	dec := json.NewDecoder(bytes.NewReader(res))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("malformed answer: %w", err)
	}
	var b strings.Builder
	writeText(&b, v, "")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeText renders a JSON value as indented "key: value" lines.
func writeText(b *strings.Builder, v any, indent string) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			b.WriteString(indent + "{}\n")
			return
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if scalar(x[k]) {
				fmt.Fprintf(b, "%s%s: %s\n", indent, k, scalarText(x[k]))
				continue
			}
			fmt.Fprintf(b, "%s%s:\n", indent, k)
			writeText(b, x[k], indent+"  ")
		}
	case []any:
		if len(x) == 0 {
			b.WriteString(indent + "[]\n")
			return
		}
		for _, e := range x {
			if scalar(e) {
				fmt.Fprintf(b, "%s- %s\n", indent, scalarText(e))
				continue
			}
			b.WriteString(indent + "-\n")
			writeText(b, e, indent+"  ")
		}
	default:
		b.WriteString(indent + scalarText(v) + "\n")
	}
}

func scalar(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return true
}

func scalarText(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return x
	case map[string]any:
		return "{}"
	case []any:
		return "[]"
	}
	return fmt.Sprint(v)
}
