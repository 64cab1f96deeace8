package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// processInfo is a node's GET /admin/process.
type processInfo struct {
	PID         int     `json:"pid"`
	CPUSeconds  float64 `json:"cpuSeconds"`
	RSSBytes    int64   `json:"rssBytes"`
	MaxRSSBytes int64   `json:"maxRssBytes"`
	Goroutines  int     `json:"goroutines"`
	HeapBytes   int64   `json:"heapBytes"`
}

// busInfo is the part of a node's GET /admin/bus the bench reads.
type busInfo struct {
	Stats struct {
		Handled map[string]int64 `json:"handled"`
	} `json:"stats"`
}

// nodeSnap is one node read at one moment.
type nodeSnap struct {
	proc    processInfo
	handled map[string]int64
	err     error
}

// agentStats is the part of an agent's GET /debug/stats the bench reads.
type agentStats struct {
	Commands   map[string]uint64 `json:"commands"`
	Overlaps   uint64            `json:"overlaps"`
	MaxRunning int               `json:"maxRunning"`
}

// arrival is one entry of an agent's GET /debug/vm-arrivals.
type arrival struct {
	At     time.Time `json:"at"`
	Path   string    `json:"path"`
	VMUUID string    `json:"vmUuid"`
}

// vmMessagePrefix selects the resource messages whose spread is measured.
const vmMessagePrefix = "vm."

// withSession sends session with the requests for a node's operators'
// endpoints (/admin/*, /debug/pprof/*), which a node serves on its API
// listener to admin sessions only; the agents' /debug endpoints get none.
type withSession struct{ session string }

func (t withSession) RoundTrip(req *http.Request) (*http.Response, error) {
	if p := req.URL.Path; (strings.HasPrefix(p, "/admin/") || strings.HasPrefix(p, "/debug/pprof/")) && t.session != "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "OAuth "+t.session)
	}
	return http.DefaultTransport.RoundTrip(req)
}

func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decode: %w", url, err)
	}
	return nil
}

// snapshot reads every node's process and bus counters, in parallel.
func snapshot(ctx context.Context, hc *http.Client, nodes []string) []nodeSnap {
	out := make([]nodeSnap, len(nodes))
	var wg sync.WaitGroup
	for i, base := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s nodeSnap
			var bus busInfo
			if s.err = getJSON(ctx, hc, base+"/admin/process", &s.proc); s.err == nil {
				s.err = getJSON(ctx, hc, base+"/admin/bus", &bus)
			}
			s.handled = map[string]int64{}
			for name, n := range bus.Stats.Handled {
				if strings.HasPrefix(name, vmMessagePrefix) {
					s.handled[name] = n
				}
			}
			out[i] = s
		}()
	}
	wg.Wait()
	return out
}

// nodeDeltas turns two snapshots into the phase's per-node figures and
// the CPU seconds of all nodes.
func nodeDeltas(nodes []string, before, after []nodeSnap) ([]PhaseNode, float64) {
	out := make([]PhaseNode, len(nodes))
	var cpu float64
	var total int64
	for i, url := range nodes {
		pn := PhaseNode{URL: url}
		b, a := before[i], after[i]
		switch {
		case b.err != nil:
			pn.Err = "before the phase: " + b.err.Error()
		case a.err != nil:
			pn.Err = "after the phase: " + a.err.Error()
		case a.proc.PID != b.proc.PID:
			pn.Err = fmt.Sprintf("the process changed during the phase (pid %d, then %d)", b.proc.PID, a.proc.PID)
		default:
			pn.CPUSeconds = a.proc.CPUSeconds - b.proc.CPUSeconds
			pn.HandledByName = map[string]int64{}
			for name, n := range a.handled {
				if d := n - b.handled[name]; d > 0 {
					pn.HandledByName[name] = d
					pn.Handled += d
				}
			}
			cpu += pn.CPUSeconds
			total += pn.Handled
		}
		if a.err == nil {
			pn.RSSBytes, pn.MaxRSSBytes, pn.Goroutines = a.proc.RSSBytes, a.proc.MaxRSSBytes, a.proc.Goroutines
		}
		out[i] = pn
	}
	if total > 0 {
		for i := range out {
			out[i].SharePct = round2(100 * float64(out[i].Handled) / float64(total))
		}
	}
	return out, cpu
}

// agentLatency joins the jobs' VMs with the agents' arrival logs: for each
// succeeded job, the first arrival of path for its VM at or after the call.
func agentLatency(ctx context.Context, hc *http.Client, agents []string, path string, recs []opRecord) (*AgentLatency, []string) {
	var problems []string
	byVM := map[string][]time.Time{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, base := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var list []arrival
			if err := getJSON(ctx, hc, base+"/debug/vm-arrivals", &list); err != nil {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("agent %s: arrivals: %v", base, err))
				mu.Unlock()
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, a := range list {
				if a.Path == path && a.VMUUID != "" {
					byVM[a.VMUUID] = append(byVM[a.VMUUID], a.At)
				}
			}
		}()
	}
	wg.Wait()
	for _, ts := range byVM {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	}
	al := &AgentLatency{Path: path}
	var lat []time.Duration
	for i := range recs {
		r := &recs[i]
		if r.err != nil || r.vmUUID == "" {
			continue
		}
		ts := byVM[r.vmUUID]
		k := sort.Search(len(ts), func(k int) bool { return !ts[k].Before(r.start) })
		if k == len(ts) {
			al.Missing++
			continue
		}
		lat = append(lat, ts[k].Sub(r.start))
	}
	al.Summary = Summarize(lat)
	return al, problems
}

// agentEnds reads every agent's stats.
func agentEnds(ctx context.Context, hc *http.Client, agents []string) []AgentEnd {
	out := make([]AgentEnd, len(agents))
	var wg sync.WaitGroup
	for i, base := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st agentStats
			ae := AgentEnd{URL: base}
			if err := getJSON(ctx, hc, base+"/debug/stats", &st); err != nil {
				ae.Err = err.Error()
			} else {
				ae.Overlaps, ae.MaxRunning, ae.Commands = st.Overlaps, st.MaxRunning, st.Commands
			}
			out[i] = ae
		}()
	}
	wg.Wait()
	return out
}

// profileFile names the CPU profile of a node: <label>-<host_port>-<op>.pprof.
func profileFile(dir, label, node, op string) string {
	host := node
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	host = strings.NewReplacer(":", "_", "/", "_").Replace(strings.Trim(host, "/"))
	if label == "" {
		label = "bench"
	}
	return filepath.Join(dir, fmt.Sprintf("%s-%s-%s.pprof", label, host, op))
}

// profile saves a CPU profile of seconds of a node into file.
func profile(ctx context.Context, node, session string, seconds int, file string) error {
	hc := &http.Client{Transport: withSession{session: session}, Timeout: time.Duration(seconds)*time.Second + time.Minute}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", node, seconds), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readMachine describes this machine from /proc where there is one.
func readMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					m.MemoryBytes = kb * 1024
				}
			}
		}
	}
	return m
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }
