package bench

import (
	"fmt"
	"math"
	"strings"
)

// The targets.
const (
	goalCreatesPerSecond = 200  // one node, cluster mode
	goalAgentP50Ms       = 5.0  // API call to agent command
	goalAgentP99IdleMs   = 20.0 // ... with one call in flight
	goalAgentP99LoadMs   = 50.0 // ... with 64 in flight
	goalLoadConcurrency  = 64   // "under load"
	goalCPUMsPerCreate   = 5.0  // management CPU per VM create
	goalShareTolerance   = 0.15 // of a node's fair share of vm.* messages
	goalPeakRSSBytes     = 1 << 30
)

// EvaluateGoals checks the run against the targets that apply to it:
// create throughput on one node (closed loop, several in flight), the
// API-call-to-agent latency (p50 always, p99 idle with one in flight and
// under load with 64 or more), management CPU per create, the spread of
// VM messages over several nodes, and for --submit-all that every job
// ended and the peak RSS of each node.
func EvaluateGoals(r *Report) []Goal {
	c := r.Phase(OpCreate)
	if c == nil {
		return nil
	}
	cfg := r.Config
	var out []Goal
	if len(cfg.NodeURLs) == 1 && !cfg.SubmitAll && cfg.Concurrency > 1 {
		out = append(out, Goal{Name: "VM creates per second, one node", Target: fmt.Sprintf(">= %d/s", goalCreatesPerSecond),
			Measured: fmt.Sprintf("%.0f/s", c.OpsPerSecond), Met: c.OpsPerSecond >= goalCreatesPerSecond})
	}
	if a := c.Agent; a != nil && a.Count > 0 && !cfg.SubmitAll {
		out = append(out, Goal{Name: "API call to agent /vm/start, p50", Target: fmt.Sprintf("<= %g ms", goalAgentP50Ms),
			Measured: fmt.Sprintf("%.1f ms", a.P50), Met: a.P50 <= goalAgentP50Ms})
		switch {
		case cfg.Concurrency == 1:
			out = append(out, Goal{Name: "API call to agent /vm/start, p99 idle", Target: fmt.Sprintf("<= %g ms", goalAgentP99IdleMs),
				Measured: fmt.Sprintf("%.1f ms", a.P99), Met: a.P99 <= goalAgentP99IdleMs})
		case cfg.Concurrency >= goalLoadConcurrency:
			out = append(out, Goal{Name: fmt.Sprintf("API call to agent /vm/start, p99 with %d in flight", cfg.Concurrency),
				Target: fmt.Sprintf("<= %g ms", goalAgentP99LoadMs), Measured: fmt.Sprintf("%.1f ms", a.P99), Met: a.P99 <= goalAgentP99LoadMs})
		}
	}
	if complete(c.Nodes) {
		out = append(out, Goal{Name: "management CPU per VM create", Target: fmt.Sprintf("<= %g ms", goalCPUMsPerCreate),
			Measured: fmt.Sprintf("%.2f ms", c.CPUMsPerVM), Met: c.CPUMsPerVM <= goalCPUMsPerCreate})
	}
	if n := len(cfg.NodeURLs); n > 1 {
		if g, ok := shareGoal(r, n); ok {
			out = append(out, g)
		}
	}
	if cfg.SubmitAll {
		out = append(out, Goal{Name: fmt.Sprintf("%d creates submitted at once all end", c.Ops), Target: "every job succeeds",
			Measured: fmt.Sprintf("%d succeeded, %d failed", c.Succeeded, c.Failed), Met: c.Failed == 0 && c.Succeeded == c.Ops})
		var peak int64
		ok := len(r.Nodes) > 0
		for _, n := range r.Nodes {
			ok = ok && n.Err == ""
			peak = max(peak, n.MaxRSSBytes)
		}
		if ok {
			out = append(out, Goal{Name: "peak RSS of a node", Target: "< 1 GiB",
				Measured: fmt.Sprintf("%s (at most %d jobs accepted and not done at once)", FormatBytes(peak), c.MaxOutstanding), Met: peak < goalPeakRSSBytes})
		}
	}
	return out
}

// complete reports whether every node's figures are there.
func complete(nodes []PhaseNode) bool {
	for _, n := range nodes {
		if n.Err != "" {
			return false
		}
	}
	return len(nodes) > 0
}

// shareGoal checks each node's share of the vm.* messages of the whole
// run against a fair 1/n, within ±15% of it.
func shareGoal(r *Report, n int) (Goal, bool) {
	handled := make([]int64, n)
	var total int64
	for _, p := range r.Phases {
		if !complete(p.Nodes) || len(p.Nodes) != n {
			return Goal{}, false
		}
		for i, pn := range p.Nodes {
			handled[i] += pn.Handled
			total += pn.Handled
		}
	}
	if total == 0 {
		return Goal{}, false
	}
	fair := 1 / float64(n)
	met := true
	shares := make([]string, n)
	for i, h := range handled {
		s := float64(h) / float64(total)
		met = met && math.Abs(s-fair) <= goalShareTolerance*fair
		shares[i] = fmt.Sprintf("%.1f%%", 100*s)
	}
	return Goal{Name: "share of vm.* messages per node", Target: fmt.Sprintf("%.1f%% ± %.1f pts each", 100*fair, 100*goalShareTolerance*fair),
		Measured: strings.Join(shares, " / "), Met: met}, true
}

// FormatBytes prints n in binary units: "512 B", "87.3 MiB", "1.02 GiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	prec := 1
	if exp >= 2 { // GiB and up: two decimals
		prec = 2
	}
	return fmt.Sprintf("%.*f %ciB", prec, v, "KMGTP"[exp])
}
