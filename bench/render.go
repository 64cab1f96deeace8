package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints a report for a person: the run, a line per phase, the
// nodes, the agents, the goals, and what went wrong.
func WriteTable(w io.Writer, r *Report) error {
	ew := &errWriter{w: w}
	mode := "closed loop"
	if r.Config.SubmitAll {
		mode = "every job submitted at once"
	}
	title := "mplane bench"
	if r.Label != "" {
		title += " " + r.Label
	}
	ew.printf("%s: %d VMs, %d calls in flight, %s, results by %s\n", title, r.Config.VMs, r.Config.Concurrency, mode, r.Config.Wait)
	ew.printf("API %s; nodes %s; agents %s\n", strings.Join(r.Config.APIURLs, ", "), strings.Join(r.Config.NodeURLs, ", "), orNone(r.Config.AgentURLs))
	ew.printf("machine: %s\n\n", r.Machine.String())

	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tjobs\tok\tfailed\tseconds\tjobs/s\tdone p50\tp90\tp99\tmax ms\tagent p50\tp99 ms\tCPU ms/VM\t")
	for _, p := range r.Phases {
		agent50, agent99 := "-", "-"
		if p.Agent != nil && p.Agent.Count > 0 {
			agent50, agent99 = f1(p.Agent.P50), f1(p.Agent.P99)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t\n", p.Op, p.Ops, p.Succeeded, p.Failed, p.Seconds,
			p.OpsPerSecond, f1(p.Done.P50), f1(p.Done.P90), f1(p.Done.P99), f1(p.Done.Max), agent50, agent99, p.CPUMsPerVM)
	}
	_ = tw.Flush()
	if r.Config.SubmitAll {
		for _, p := range r.Phases {
			ew.printf("%s: every job accepted (202) %.2f s after the first call; accept p50 %s ms, p99 %s ms; at most %d jobs accepted and not done at once\n",
				p.Op, p.SubmitSeconds, f1(p.Accept.P50), f1(p.Accept.P99), p.MaxOutstanding)
		}
	}

	ew.printf("\nvm.* messages handled per node (share), resident set:\n")
	tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	head := "node"
	for _, p := range r.Phases {
		head += "\t" + p.Op
	}
	fmt.Fprintln(tw, head+"\tpeak RSS\tRSS at end\tCPU s\t")
	for i, n := range r.Nodes {
		line := n.URL
		for _, p := range r.Phases {
			if i < len(p.Nodes) && p.Nodes[i].Err == "" {
				line += fmt.Sprintf("\t%d (%.1f%%)", p.Nodes[i].Handled, p.Nodes[i].SharePct)
			} else {
				line += "\t-"
			}
		}
		if n.Err != "" {
			line += "\t-\t-\t-\t" + n.Err
		} else {
			line += fmt.Sprintf("\t%s\t%s\t%.1f\t", FormatBytes(n.MaxRSSBytes), FormatBytes(n.RSSBytes), n.CPUSeconds)
		}
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()

	if len(r.Agents) > 0 {
		ew.printf("\nagents:\n")
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "agent\toverlaps\tmax running\tcommands\t")
		for _, a := range r.Agents {
			if a.Err != "" {
				fmt.Fprintf(tw, "%s\t?\t?\t%s\t\n", a.URL, a.Err)
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t\n", a.URL, a.Overlaps, a.MaxRunning, formatCounts(a.Commands))
		}
		_ = tw.Flush()
	}
	if len(r.Goals) > 0 {
		ew.printf("\ngoals:\n")
		for _, g := range r.Goals {
			ew.printf("  %-7s %s: %s (target %s)\n", metWord(g.Met), g.Name, g.Measured, g.Target)
		}
	}
	for _, p := range r.Phases {
		if len(p.FirstErrors) > 0 {
			ew.printf("\n%s: %d failed; the first ones:\n", p.Op, p.Failed)
			for _, e := range p.FirstErrors {
				ew.printf("  %s\n", e)
			}
		}
	}
	if len(r.Profiles) > 0 {
		ew.printf("\nCPU profiles (create phase): %s\n", strings.Join(r.Profiles, " "))
	}
	if len(r.Problems) > 0 {
		ew.printf("\nmeasurement problems:\n")
		for _, p := range r.Problems {
			ew.printf("  %s\n", p)
		}
	}
	if f := r.Failures(); len(f) > 0 {
		ew.printf("\nFAILED: %s\n", strings.Join(f, "; "))
	}
	return ew.err
}

// WriteSummary prints the markdown summary of several runs (in order) and
// of the micro benchmarks run beside them; took (if not zero) is how long
// everything took, notes are printed under the machine line.
func WriteSummary(w io.Writer, reports []*Report, micro []Micro, took time.Duration, notes ...string) error {
	ew := &errWriter{w: w}
	ew.printf("# mplane benchmark results\n\n")
	if len(reports) > 0 {
		r := reports[0]
		ew.printf("Machine: %s. Run %s", r.Machine.String(), r.Started.UTC().Format("2006-01-02 15:04 UTC"))
		if took > 0 {
			ew.printf(", whole run %s", took.Round(time.Second))
		}
		ew.printf(".\n\n")
	}
	for _, n := range notes {
		ew.printf("%s\n\n", n)
	}
	if len(micro) > 0 {
		writeBaselines(ew, micro)
	}
	if len(reports) > 0 {
		ew.printf("## End-to-end scenarios\n\n")
		ew.printf("| scenario | VMs | in flight | phase | jobs/s | done p50 / p90 / p99 / max (ms) | API→agent p50 / p99 (ms) | CPU ms/VM | failed |\n")
		ew.printf("|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range reports {
			inflight := fmt.Sprint(r.Config.Concurrency)
			if r.Config.SubmitAll {
				inflight = "all (" + inflight + " calls)"
			}
			for _, p := range r.Phases {
				agent := "-"
				if p.Agent != nil && p.Agent.Count > 0 {
					agent = f1(p.Agent.P50) + " / " + f1(p.Agent.P99)
				}
				ew.printf("| %s | %d | %s | %s | %.1f | %s / %s / %s / %s | %s | %.2f | %d |\n", labelOf(r), r.Config.VMs, inflight, p.Op,
					p.OpsPerSecond, f1(p.Done.P50), f1(p.Done.P90), f1(p.Done.P99), f1(p.Done.Max), agent, p.CPUMsPerVM, p.Failed)
			}
		}
		ew.printf("\n### Management nodes\n\n")
		ew.printf("| scenario | node | vm.* messages, create (share) | vm.* messages, all phases (share) | peak RSS | RSS at end |\n|---|---|---|---|---|---|\n")
		for _, r := range reports {
			all := make([]int64, len(r.Nodes))
			var total int64
			for _, p := range r.Phases {
				for i, pn := range p.Nodes {
					if i < len(all) {
						all[i] += pn.Handled
						total += pn.Handled
					}
				}
			}
			c := r.Phase(OpCreate)
			for i, n := range r.Nodes {
				create := "-"
				if c != nil && i < len(c.Nodes) && c.Nodes[i].Err == "" {
					create = fmt.Sprintf("%d (%.1f%%)", c.Nodes[i].Handled, c.Nodes[i].SharePct)
				}
				share := 0.0
				if total > 0 {
					share = 100 * float64(all[i]) / float64(total)
				}
				ew.printf("| %s | %s | %s | %d (%.1f%%) | %s | %s |\n", labelOf(r), n.URL, create, all[i], share, FormatBytes(n.MaxRSSBytes), FormatBytes(n.RSSBytes))
			}
		}
		ew.printf("\n### Goals\n\n| scenario | goal | target | measured | met |\n|---|---|---|---|---|\n")
		for _, r := range reports {
			for _, g := range r.Goals {
				ew.printf("| %s | %s | %s | %s | %s |\n", labelOf(r), g.Name, g.Target, g.Measured, metWord(g.Met))
			}
		}
		ew.printf("\n### Checks\n\n")
		for _, r := range reports {
			var overlaps uint64
			for _, a := range r.Agents {
				overlaps += a.Overlaps
			}
			status := "ok"
			if f := r.Failures(); len(f) > 0 {
				status = "FAILED: " + strings.Join(f, "; ")
			}
			ew.printf("- %s: %s; agents' overlap counters total %d", labelOf(r), status, overlaps)
			if r.Config.SubmitAll {
				for _, p := range r.Phases {
					ew.printf("; %s: all %d jobs accepted %.1f s after the first call (accept p99 %s ms), at most %d accepted and not done at once",
						p.Op, p.Ops, p.SubmitSeconds, f1(p.Accept.P99), p.MaxOutstanding)
				}
			}
			if len(r.Profiles) > 0 {
				ew.printf("; CPU profiles: %s", strings.Join(r.Profiles, ", "))
			}
			if len(r.Problems) > 0 {
				ew.printf("; measurement problems: %s", strings.Join(r.Problems, "; "))
			}
			ew.printf("\n")
		}
	}
	return ew.err
}

// baseline names the micro benchmarks the end-to-end figures are read
// against.
var baselines = []struct{ pkg, name, unit, what string }{
	{"mplane/cloudbus", "BenchmarkCall/rawamqp/inflight=1", "ns/op", "raw amqp091 request/reply, 1 in flight (latency)"},
	{"mplane/cloudbus", "BenchmarkCall/amqp/inflight=1", "ns/op", "mplane bus Call over RabbitMQ, 1 in flight (latency)"},
	{"mplane/cloudbus", "BenchmarkCall/rawamqp/inflight=64", "calls/s", "raw amqp091 request/reply, 64 in flight"},
	{"mplane/cloudbus", "BenchmarkCall/amqp/inflight=64", "calls/s", "mplane bus Call over RabbitMQ, 64 in flight"},
	{"mplane/cloudbus", "BenchmarkCall/memory/inflight=1", "ns/op", "mplane bus Call in memory, 1 in flight (latency)"},
	{"mplane/agents/agentclient", "BenchmarkAgentRoundTrip/plain-post-echo/inflight=1", "ns/op", "plain net/http POST, 1 in flight (latency)"},
	{"mplane/agents/agentclient", "BenchmarkAgentRoundTrip/async-ping-callback/inflight=1", "ns/op", "agent async command + callback, 1 in flight (latency)"},
	{"mplane/agents/agentclient", "BenchmarkAgentRoundTrip/plain-post-echo/inflight=64", "calls/s", "plain net/http POST, 64 in flight"},
	{"mplane/agents/agentclient", "BenchmarkAgentRoundTrip/async-ping-callback/inflight=64", "calls/s", "agent async command + callback, 64 in flight"},
}

func writeBaselines(ew *errWriter, micro []Micro) {
	find := func(pkg, name string) *Micro {
		for i := range micro {
			if micro[i].Name == name && (micro[i].Package == "" || micro[i].Package == pkg) {
				return &micro[i]
			}
		}
		return nil
	}
	ew.printf("## Machine baselines (micro benchmarks of the same run)\n\n| baseline | figure |\n|---|---|\n")
	for _, b := range baselines {
		m := find(b.pkg, b.name)
		if m == nil {
			continue
		}
		v, ok := m.Metric(b.unit)
		if !ok {
			continue
		}
		fig := fmt.Sprintf("%.0f %s", v, b.unit)
		if b.unit == "ns/op" {
			fig = fmt.Sprintf("%.1f µs", v/1e3)
		}
		ew.printf("| %s | %s |\n", b.what, fig)
	}
	ew.printf("\n<details><summary>every micro benchmark</summary>\n\n| package | benchmark | figures |\n|---|---|---|\n")
	for _, m := range micro {
		var figs []string
		for _, x := range m.Metrics {
			figs = append(figs, fmt.Sprintf("%g %s", x.Value, x.Unit))
		}
		ew.printf("| %s | %s | %s |\n", m.Package, m.Name, strings.Join(figs, ", "))
	}
	ew.printf("\n</details>\n\n")
}

func (m Machine) String() string {
	s := fmt.Sprintf("%d CPUs", m.CPUs)
	if m.CPUModel != "" {
		s += " (" + m.CPUModel + ")"
	}
	if m.MemoryBytes > 0 {
		s += ", " + FormatBytes(m.MemoryBytes)
	}
	return s + fmt.Sprintf(", %s/%s, %s", m.OS, m.Arch, m.GoVersion)
}

func labelOf(r *Report) string {
	if r.Label != "" {
		return r.Label
	}
	return "bench"
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }

func formatCounts(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }
