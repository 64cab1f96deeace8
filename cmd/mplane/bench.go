package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"mplane/bench"
	"mplane/cmd/mplane/ctl"
)

// envBenchPassword is where `mplane bench` finds the password when
// --password is not given.
const envBenchPassword = "MPLANE_BENCH_PASSWORD"

// benchFlags are the command line of `mplane bench`.
type benchFlags struct {
	urls, agents, nodes, ops string
	account, password        string
	vms, concurrency         int
	setup, submitAll         bool
	output                   string
	profileSeconds           int
	profileDir               string
	wait, webhookListen      string
	label, save              string
	localStorageURL          string
	timeout                  time.Duration
}

func newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a running deployment through its REST API and measure it",
		Long: "Creates --vms VMs through the REST API of a running deployment with --concurrency calls in\n" +
			"flight, then stops, starts and destroys them (--ops), and reports per phase: jobs/s, latency\n" +
			"from the API call to the job's result (p50/p90/p99/max) and to the VM's command at an agent\n" +
			"(--agents), management CPU per VM and vm.* messages handled by each node (--nodes, from\n" +
			"/admin/process and /admin/bus), each node's RSS, and the agents' overlap counters.\n" +
			"Job results come by webhook to a receiver on --webhook-listen (--wait poll to poll instead).\n" +
			"Progress goes to stderr, the report to stdout. Exits 1 if a job failed or an agent saw two\n" +
			"commands on one VM at once.\n\n" +
			"Every VM has a root volume: --setup adds a LocalStorage at --local-storage-url to the bench\n" +
			"cluster, which each agent serves on a directory of its own, and runs the bench image's\n" +
			"backup storage agent in this process until the run ends (a later run restarts it).\n\n" +
			"  mplane agent kvm --listen 127.0.0.1:7071 --storage /mplane/local=/srv/bench/host1 &\n" +
			"  mplane agent kvm --listen 127.0.0.1:7072 --storage /mplane/local=/srv/bench/host2 &\n" +
			"  mplane bench --url http://127.0.0.1:8080 --password secret --setup \\\n" +
			"      --agents http://127.0.0.1:7071,http://127.0.0.1:7072 --vms 1000 --concurrency 64",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := f.options(os.Getenv(envBenchPassword))
			if err != nil {
				return err
			}
			opts.Progress = cmd.ErrOrStderr()
			opts.ProgressTTY = ctl.IsTerminal(cmd.ErrOrStderr())
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			rep, err := bench.Run(ctx, opts)
			if err != nil {
				return err
			}
			return f.report(cmd.OutOrStdout(), rep)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.urls, "url", "http://127.0.0.1:8080", "API base URLs, comma list: calls are spread round-robin over them")
	fl.StringVar(&f.account, "account", bench.DefaultAccount, "account to log in with")
	fl.StringVar(&f.password, "password", "", "password of the account (default: $"+envBenchPassword+")")
	fl.IntVar(&f.vms, "vms", bench.DefaultVMs, "number of VMs")
	fl.IntVar(&f.concurrency, "concurrency", bench.DefaultConcurrency, "API calls in flight (each waits for its job, unless --submit-all)")
	fl.StringVar(&f.agents, "agents", "", "agent base URLs, comma list: API-call-to-agent latency, overlap check, hosts for --setup")
	fl.StringVar(&f.nodes, "nodes", "", "management node base URLs for /admin/process and /admin/bus, comma list (default: --url)")
	fl.StringVar(&f.ops, "ops", strings.Join(bench.AllOps, ","), "phases, in order, comma list; create first")
	fl.BoolVar(&f.setup, "setup", false, "create the bench cloud (zone, cluster, 1 vCPU/256 MiB offering, image, L3 with a /16, local primary storage, the agents as hosts) unless an offering named bench exists")
	fl.StringVar(&f.localStorageURL, "local-storage-url", bench.DefaultLocalStorageURL,
		"the url every --agents host serves its local primary storage at (mplane agent kvm --storage URL=DIR); --setup creates that LocalStorage, where the VMs' root volumes go")
	fl.BoolVar(&f.submitAll, "submit-all", false, "submit every job of a phase (--concurrency calls at a time) before waiting for any")
	fl.StringVarP(&f.output, "output", "o", "table", "report format: table or json")
	fl.StringVar(&f.save, "save", "", "also write the JSON report to this file")
	fl.IntVar(&f.profileSeconds, "profile-seconds", 0, "save a CPU profile of this many seconds of each node from the start of the create phase")
	fl.StringVar(&f.profileDir, "profile-dir", ".", "directory for the CPU profiles")
	fl.StringVar(&f.wait, "wait", bench.WaitWebhook, "how job results are learnt: webhook or poll")
	fl.StringVar(&f.webhookListen, "webhook-listen", bench.DefaultWebhookListen, "address of the webhook receiver; the nodes must reach it")
	fl.StringVar(&f.label, "label", "", "name of the run in the report and the profiles' file names")
	fl.DurationVar(&f.timeout, "timeout", bench.DefaultTimeout, "bound of the whole run")
	cmd.AddCommand(newBenchSummaryCmd())
	return cmd
}

// options turns the flags into bench.Options and validates them;
// envPassword is used when --password is empty.
func (f benchFlags) options(envPassword string) (bench.Options, error) {
	o := bench.Options{
		APIURLs: bench.SplitList(f.urls), AgentURLs: bench.SplitList(f.agents), NodeURLs: bench.SplitList(f.nodes),
		Ops: strings.Split(strings.ReplaceAll(f.ops, " ", ""), ","), Account: f.account, Password: f.password,
		VMs: f.vms, Concurrency: f.concurrency, Setup: f.setup, SubmitAll: f.submitAll, Wait: f.wait,
		WebhookListen: f.webhookListen, ProfileSeconds: f.profileSeconds, ProfileDir: f.profileDir,
		Label: f.label, Timeout: f.timeout, LocalStorageURL: f.localStorageURL,
	}
	if o.Password == "" {
		o.Password = envPassword
	}
	var errs []error
	if f.output != "table" && f.output != "json" {
		errs = append(errs, fmt.Errorf("-o/--output must be table or json, got %q", f.output))
	}
	// Zero means "default" to bench.Options (which reports negative
	// values); on the command line it is a mistake.
	if f.vms == 0 {
		errs = append(errs, errors.New("--vms must be at least 1, got 0"))
	}
	if f.concurrency == 0 {
		errs = append(errs, errors.New("--concurrency must be at least 1, got 0"))
	}
	if f.timeout == 0 {
		errs = append(errs, errors.New("--timeout must be positive, got 0s"))
	}
	if err := o.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return bench.Options{}, fmt.Errorf("invalid arguments:\n%w", err)
	}
	return o, nil
}

// report prints rep, saves it, and fails the command as the report says.
func (f benchFlags) report(out io.Writer, rep *bench.Report) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if f.save != "" {
		if err := os.WriteFile(f.save, data, 0o644); err != nil {
			return fmt.Errorf("save the report: %w", err)
		}
	}
	if f.output == "json" {
		_, err = out.Write(data)
	} else {
		err = bench.WriteTable(out, rep)
	}
	if err != nil {
		return err
	}
	if fails := rep.Failures(); len(fails) > 0 {
		return &exitError{code: 1, err: errors.New("benchmark failed: " + strings.Join(fails, "; "))}
	}
	return nil
}

func newBenchSummaryCmd() *cobra.Command {
	var micro string
	var notes []string
	var took time.Duration
	cmd := &cobra.Command{
		Use:   "summary REPORT.json...",
		Short: "Print a markdown summary of saved reports and of micro benchmark output",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var reports []*bench.Report
			for _, path := range args {
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				var r bench.Report
				if err := json.Unmarshal(data, &r); err != nil {
					return fmt.Errorf("%s: not a bench report: %w", path, err)
				}
				reports = append(reports, &r)
			}
			var ms []bench.Micro
			if micro != "" {
				f, err := os.Open(micro)
				if err != nil {
					return err
				}
				defer f.Close()
				if ms, err = bench.ParseMicro(f); err != nil {
					return fmt.Errorf("%s: %w", micro, err)
				}
			}
			return bench.WriteSummary(cmd.OutOrStdout(), reports, ms, took, notes...)
		},
	}
	cmd.Flags().StringVar(&micro, "micro", "", "output of `go test -bench` (the micro benchmarks) to take the baselines from")
	cmd.Flags().DurationVar(&took, "took", 0, "how long the whole benchmark run took, to print")
	cmd.Flags().StringArrayVar(&notes, "note", nil, "a line to print under the machine line (repeatable)")
	return cmd
}
