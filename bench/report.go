package bench

import (
	"fmt"
	"time"
)

// Report is what one run measured; its JSON form is what -o json prints
// and what Summary reads back.
type Report struct {
	// Label names the run (a scenario of scripts/bench.sh).
	Label    string    `json:"label,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	Config   Config    `json:"config"`
	Phases   []Phase   `json:"phases"`
	// Nodes is each management node at the end of the run.
	Nodes []NodeEnd `json:"nodes"`
	// Agents is each agent at the end of the run.
	Agents []AgentEnd `json:"agents,omitempty"`
	// Profiles are the CPU profiles saved during the create phase.
	Profiles []string `json:"profiles,omitempty"`
	Goals    []Goal   `json:"goals,omitempty"`
	// Problems are measurements that could not be made (a node that did
	// not answer /admin/process, ...); they do not fail the run.
	Problems []string `json:"problems,omitempty"`
}

// Machine is where the benchmark client ran (the scenarios run everything
// on one machine).
type Machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpuModel,omitempty"`
	MemoryBytes int64  `json:"memoryBytes,omitempty"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	GoVersion   string `json:"goVersion"`
}

// Config is what the run was asked to do.
type Config struct {
	APIURLs     []string `json:"apiUrls"`
	NodeURLs    []string `json:"nodeUrls"`
	AgentURLs   []string `json:"agentUrls,omitempty"`
	VMs         int      `json:"vms"`
	Concurrency int      `json:"concurrency"`
	SubmitAll   bool     `json:"submitAll,omitempty"`
	Ops         []string `json:"ops"`
	Wait        string   `json:"wait"`
}

// Phase is one operation applied to every VM.
type Phase struct {
	Op string `json:"op"`
	// Ops is how many jobs were started (or attempted); Succeeded and
	// Failed split them.
	Ops       int `json:"ops"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// FirstErrors are the first few failures, as the client saw them.
	FirstErrors []string `json:"firstErrors,omitempty"`
	// Seconds is from the first call to the last result.
	Seconds float64 `json:"seconds"`
	// OpsPerSecond is Succeeded / Seconds.
	OpsPerSecond float64 `json:"opsPerSecond"`
	// SubmitSeconds is from the first call to the last call's answer: how
	// long accepting every job took (with --submit-all, before most ran).
	SubmitSeconds float64 `json:"submitSeconds"`
	// MaxOutstanding is the most jobs accepted and not yet done at one
	// moment: what the nodes held at once.
	MaxOutstanding int `json:"maxOutstanding"`
	// Accept is from the call to its 202 answer (the job accepted).
	Accept Summary `json:"accept"`
	// Done is from the call to the job's result.
	Done Summary `json:"done"`
	// Agent is from the call to the VM's command at an agent.
	Agent *AgentLatency `json:"agent,omitempty"`
	// CPUSeconds is the management nodes' CPU time during the phase (sum
	// over nodes); CPUMsPerVM divides it by the phase's jobs.
	CPUSeconds float64     `json:"cpuSeconds"`
	CPUMsPerVM float64     `json:"cpuMsPerVm"`
	Nodes      []PhaseNode `json:"nodes"`
}

// AgentLatency is the latency from the API call to the agent command.
type AgentLatency struct {
	// Path is the agent command joined: /vm/start for create and start.
	Path string `json:"path"`
	Summary
	// Missing counts succeeded jobs whose command was not found in the
	// agents' arrival logs (no agents given, or the log rolled over).
	Missing int `json:"missing,omitempty"`
}

// PhaseNode is one management node during a phase.
type PhaseNode struct {
	URL string `json:"url"`
	// Handled counts vm.* messages the node handled during the phase, by
	// name in HandledByName; SharePct is its share of all nodes' Handled.
	Handled       int64            `json:"handled"`
	SharePct      float64          `json:"sharePct"`
	HandledByName map[string]int64 `json:"handledByName,omitempty"`
	CPUSeconds    float64          `json:"cpuSeconds"`
	// RSSBytes is the resident set at the end of the phase, MaxRSSBytes the
	// process's peak so far.
	RSSBytes    int64 `json:"rssBytes"`
	MaxRSSBytes int64 `json:"maxRssBytes"`
	Goroutines  int   `json:"goroutines"`
	// Err says why the node's figures are missing.
	Err string `json:"error,omitempty"`
}

// NodeEnd is a management node at the end of the run.
type NodeEnd struct {
	URL         string  `json:"url"`
	MaxRSSBytes int64   `json:"maxRssBytes"`
	RSSBytes    int64   `json:"rssBytes"`
	HeapBytes   int64   `json:"heapBytes"`
	Goroutines  int     `json:"goroutines"`
	CPUSeconds  float64 `json:"cpuSeconds"`
	Err         string  `json:"error,omitempty"`
}

// AgentEnd is an agent at the end of the run.
type AgentEnd struct {
	URL string `json:"url"`
	// Overlaps counts VM commands that started while another command on
	// the same VM ran: a serialization violation, must stay 0.
	Overlaps   uint64            `json:"overlaps"`
	MaxRunning int               `json:"maxRunning"`
	Commands   map[string]uint64 `json:"commands,omitempty"`
	Err        string            `json:"error,omitempty"`
}

// Goal is one target of the issue, checked against the run.
type Goal struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// Failures lists why the run must exit non-zero: failed jobs, overlaps
// seen by an agent, agents whose overlap counter could not be read.
func (r *Report) Failures() []string {
	var out []string
	for _, p := range r.Phases {
		if p.Failed > 0 {
			out = append(out, fmt.Sprintf("%s: %d of %d jobs failed", p.Op, p.Failed, p.Ops))
		}
	}
	for _, a := range r.Agents {
		switch {
		case a.Err != "":
			out = append(out, fmt.Sprintf("agent %s: cannot read its overlap counter: %s", a.URL, a.Err))
		case a.Overlaps > 0:
			out = append(out, fmt.Sprintf("agent %s saw %d overlapping commands on one VM", a.URL, a.Overlaps))
		}
	}
	return out
}

// Phase returns the phase of op, or nil.
func (r *Report) Phase(op string) *Phase {
	for i := range r.Phases {
		if r.Phases[i].Op == op {
			return &r.Phases[i]
		}
	}
	return nil
}
