package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/api/jobs"
	"mplane/db"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
	hostsvc "mplane/services/host"
	"mplane/services/network"
	"mplane/services/storage"
	"mplane/services/vm"
	"mplane/uid"
)

// The chaos suite (docs/reliability.md): three `mplane server` processes,
// three agent processes, the suite's own RabbitMQ node and MariaDB server,
// a mixed load of VM operations through every node, and one fault at a
// time. After each fault an audit: every job terminal within 30 s of the
// fault's end, no VM left in a transitional state, capacity and IPs equal
// to what live VMs hold, no VM running on a host that the database does
// not have running there (orphan) or the reverse (ghost), no overlapping
// commands on any agent, every node not faulted alive. Results go to a
// report (MPLANE_CHAOS_REPORT, or chaos-report.json in the test's
// directory).
//
// `make test` runs the short variant: kill-node and database-outage-10s,
// once each. `make chaos` (MPLANE_CHAOS=full) runs every scenario five
// times.

type chaosScenario struct {
	name  string
	short bool
	// inject runs the fault and returns once it is over; it marks the
	// servers it takes down in c.down.
	inject func(t *testing.T, c *chaosCluster)
}

var chaosScenarios = []chaosScenario{
	{name: "kill-node", short: true, inject: func(t *testing.T, c *chaosCluster) {
		c.markDown(1)
		c.servers[1].kill()
	}},
	{name: "freeze-node", inject: func(t *testing.T, c *chaosCluster) {
		// Frozen beyond the eviction threshold (3 x 500 ms): evicted
		// meanwhile, it must act on nothing when it resumes, and exit.
		c.markDown(2)
		p := c.servers[2].cmd.Process
		_ = p.Signal(syscall.SIGSTOP)
		time.Sleep(6 * time.Second)
		c.markFenced(2) // evicted by now: from here on it must not act
		_ = p.Signal(syscall.SIGCONT)
		select {
		case <-c.servers[2].done:
		case <-time.After(30 * time.Second):
			c.problem("the frozen node did not exit within 30 s of resuming (fenced nodes exit)")
		}
	}},
	{name: "broker-restart", inject: func(t *testing.T, c *chaosCluster) {
		c.mq.crash()
		time.Sleep(2 * time.Second)
		c.mq.up()
	}},
	{name: "connection-drops", inject: func(t *testing.T, c *chaosCluster) {
		// The broker stays up; every connection to it is closed, twice.
		c.mq.dropConnections(t)
		time.Sleep(2 * time.Second)
		c.mq.dropConnections(t)
	}},
	{name: "database-restart", inject: func(t *testing.T, c *chaosCluster) {
		c.db.crash()
		c.db.up()
	}},
	{name: "database-outage-10s", short: true, inject: func(t *testing.T, c *chaosCluster) {
		c.db.crash()
		time.Sleep(10 * time.Second)
		c.db.up()
	}},
	{name: "agent-restart", inject: func(t *testing.T, c *chaosCluster) {
		a := c.agents[0]
		a.kill()
		time.Sleep(2 * time.Second)
		c.agents[0] = startAgent(t, "agent1-again", a.port, a.stateFile, a.args...)
	}},
}

// chaosResult is one scenario's line of the report.
type chaosResult struct {
	Scenario string         `json:"scenario"`
	Round    int            `json:"round"`
	Ops      int            `json:"ops"`
	Answers  map[string]int `json:"answers"` // "ok" or the error code, by count
	Unknown  int            `json:"outcomeUnknown"`
	// RecoverySeconds: from the fault's end to the first operation that
	// succeeded after it on what the fault hit (the VMs of the faulted
	// node, any VM for the other faults). ConvergeSeconds: to every job terminal and no
	// VM transitional, orphaned or ghost.
	RecoverySeconds float64  `json:"recoverySeconds"`
	ConvergeSeconds float64  `json:"convergeSeconds"`
	Violations      []string `json:"violations"`
	// Failures: each operation that failed, with its error (the answers
	// other than "ok", told apart).
	Failures []string `json:"failures,omitempty"`
}

func TestChaos(t *testing.T) {
	full := os.Getenv("MPLANE_CHAOS") == "full"
	rounds := 1
	if full {
		rounds = 5
	}
	// MPLANE_CHAOS_SCENARIOS=a,b runs only those scenarios (each once,
	// or five times with MPLANE_CHAOS=full).
	only := map[string]bool{}
	for _, n := range strings.Split(os.Getenv("MPLANE_CHAOS_SCENARIOS"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			only[n] = true
		}
	}
	pdb := startPrivateDB(t)
	pmq := startPrivateMQ(t)
	var results []chaosResult
	for round := 1; round <= rounds; round++ {
		for _, sc := range chaosScenarios {
			if len(only) > 0 && !only[sc.name] || len(only) == 0 && !full && !sc.short {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d", sc.name, round), func(t *testing.T) {
				res := runChaos(t, pdb, pmq, sc)
				res.Round = round
				results = append(results, res)
				t.Logf("%s round %d: %d operations, answers %v, recovery %.1fs, converged %.1fs, %d violations",
					sc.name, round, res.Ops, res.Answers, res.RecoverySeconds, res.ConvergeSeconds, len(res.Violations))
				for _, f := range res.Failures {
					t.Logf("failed: %s", f)
				}
				for _, v := range res.Violations {
					t.Error(v)
				}
			})
		}
	}
	path := os.Getenv("MPLANE_CHAOS_REPORT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "chaos-report.json")
	}
	data, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Errorf("write the chaos report: %v", err)
	}
	t.Logf("chaos report: %s", path)
}

type chaosCluster struct {
	t       *testing.T
	e       *clusterEnv
	db      *privateDB
	mq      *privateMQ
	servers []*server
	clients []*client.Client
	agents  []*agentProc
	hosts   []hostsvc.HostVO
	cl      cloud
	gdb     *gorm.DB

	mu   sync.Mutex
	down map[int]bool
	// fenced: the UUIDs of nodes evicted while they lived (frozen), and
	// from when they must have done nothing.
	fenced map[string]time.Time
	// ring is the ring of the three servers; victim, the UUID of the
	// server a scenario faults ("" when it faults something else): its
	// VMs are the ones whose recovery is measured.
	ring   *managementnode.Ring
	victim string
	// problems are violations found while the fault ran.
	problems []string
}

func (c *chaosCluster) markDown(i int) {
	c.mu.Lock()
	c.down[i] = true
	c.victim = c.servers[i].uuid
	c.mu.Unlock()
}

// problem records a violation the fault itself found.
func (c *chaosCluster) problem(format string, args ...any) {
	c.mu.Lock()
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *chaosCluster) victimUUID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.victim
}

func (c *chaosCluster) markFenced(i int) {
	c.mu.Lock()
	c.fenced[c.servers[i].uuid] = time.Now()
	c.mu.Unlock()
}

// auditFencing lists what fenced nodes did after their fencing: commands
// an agent took from them (refused ones are what fencing is for) and flow
// records they wrote.
func (c *chaosCluster) auditFencing() []string {
	var out []string
	for uuid, since := range c.fenced {
		for i, ag := range c.agents {
			var arrivals []kvm.Arrival
			code, err := getJSON(context.Background(), ag.url+protocol.PathDebugArrivals, &arrivals)
			if err != nil || code != 200 {
				out = append(out, fmt.Sprintf("read the arrivals of agent %d: %d %v", i+1, code, err))
				continue
			}
			for _, a := range arrivals {
				if a.Node == uuid && !a.Refused && !a.At.Before(since) {
					out = append(out, fmt.Sprintf("agent %d took %s (fence %s) from fenced node %s %v after its fencing",
						i+1, a.Path, a.Fence, uuid, a.At.Sub(since).Round(time.Millisecond)))
				}
			}
		}
		var n int64
		if err := c.gdb.Model(&flow.RecordVO{}).Where("owner = ? AND updated_at >= ?", uuid, since.UTC()).Count(&n).Error; err != nil {
			out = append(out, fmt.Sprintf("read flow records: %v", err))
		} else if n > 0 {
			out = append(out, fmt.Sprintf("fenced node %s wrote %d flow records after its fencing", uuid, n))
		}
	}
	return out
}

// pick is a client of a server the load may use now, at random.
func (c *chaosCluster) pick(avoid int) (int, *client.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var up []int
	for i := range c.servers {
		if !c.down[i] && i != avoid {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		for i := range c.servers {
			if !c.down[i] {
				up = append(up, i)
			}
		}
	}
	i := up[rand.IntN(len(up))]
	return i, c.clients[i]
}

func runChaos(t *testing.T, pdb *privateDB, pmq *privateMQ, sc chaosScenario) chaosResult {
	e := &clusterEnv{t: t, amqpURL: pmq.url, prefix: "chaos" + uid.New()[:8], dsn: pdb.newDatabase(t), interval: 500 * time.Millisecond}
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret", "MPLANE_HOST_PING_INTERVAL=1s",
		"MPLANE_VM_RECONCILE_INTERVAL=3s", "MPLANE_VM_COMMAND_TIMEOUT=20s", "MPLANE_CALL_TIMEOUT=20s"}
	c := &chaosCluster{t: t, e: e, db: pdb, mq: pmq, down: map[int]bool{}, fenced: map[string]time.Time{}}
	c.servers = []*server{e.startServer("A"), e.startServer("B"), e.startServer("C")}
	converged(t, 60*time.Second, c.servers...)
	ring, err := managementnode.BuildRing(0, []string{c.servers[0].uuid, c.servers[1].uuid, c.servers[2].uuid})
	if err != nil {
		t.Fatal(err)
	}
	c.ring = ring
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		c.agents = append(c.agents, startAgent(t, fmt.Sprintf("agent%d", i+1), freePort(t), filepath.Join(dir, fmt.Sprintf("a%d.json", i+1))))
	}
	for _, s := range c.servers {
		c.clients = append(c.clients, login(t, s.url, "e2e-secret"))
	}
	c.cl = setupCloud(t, c.clients[0], 1, 256<<20)
	for i, ag := range c.agents {
		c.hosts = append(c.hosts, addHost(t, c.clients[i%3], c.cl, fmt.Sprintf("host%d", i+1), ag.port))
	}
	gdb, err := db.Open(context.Background(), e.dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	c.gdb = gdb

	// The load: workers that each create a VM, stop, start and destroy it,
	// again and again, through any live node.
	l := &chaosLoad{c: c, answers: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() { defer wg.Done(); l.worker(stop) }()
	}
	time.Sleep(4 * time.Second)
	faultStart := time.Now()
	sc.inject(t, c)
	faultEnd := time.Now()
	l.setFaultEnd(faultEnd)
	t.Logf("fault %s lasted %v", sc.name, faultEnd.Sub(faultStart).Round(10*time.Millisecond))
	time.Sleep(5 * time.Second)
	close(stop)
	wg.Wait()

	res := chaosResult{Scenario: sc.name, Ops: l.ops, Answers: l.answers, Unknown: l.unknown, Failures: l.failures}
	if !l.firstOK.IsZero() {
		res.RecoverySeconds = l.firstOK.Sub(faultEnd).Seconds()
	}
	violate := func(format string, args ...any) {
		res.Violations = append(res.Violations, fmt.Sprintf(format, args...))
	}
	for _, n := range l.noAnswer {
		violate("an operation got no answer: %s", n)
	}
	c.mu.Lock()
	for _, p := range c.problems {
		violate("%s", p)
	}
	c.mu.Unlock()

	// Every job terminal within 30 s of the fault's end.
	var processing int64
	ok := waitFor(faultEnd.Add(30*time.Second), func() bool {
		c.gdb.Model(&jobs.Job{}).Where("state = ?", jobs.Processing).Count(&processing)
		return processing == 0
	})
	if !ok {
		violate("%d jobs still processing 30 s after the fault ended", processing)
	}
	// Then the VMs converge: none transitional, none orphaned or ghost.
	var problems []string
	if !waitFor(time.Now().Add(45*time.Second), func() bool { problems = c.audit(); return len(problems) == 0 }) {
		for _, p := range problems {
			violate("%s", p)
		}
	}
	res.ConvergeSeconds = time.Since(faultEnd).Seconds()
	// Capacity and IPs equal what live VMs hold; no overlapping commands;
	// every node that was not faulted alive.
	for _, p := range c.auditCapacity() {
		violate("%s", p)
	}
	for _, p := range c.auditFencing() {
		violate("%s", p)
	}
	for i, s := range c.servers {
		if !c.down[i] && s.exited() {
			violate("node %s exited (code %d) although it was not faulted", s.name, s.exitCode())
		}
	}
	return res
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(deadline time.Time, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

type chaosLoad struct {
	c *chaosCluster

	mu       sync.Mutex
	ops      int
	answers  map[string]int
	unknown  int
	noAnswer []string
	failures []string
	faultEnd time.Time
	firstOK  time.Time
}

func (l *chaosLoad) setFaultEnd(t time.Time) {
	l.mu.Lock()
	l.faultEnd = t
	l.mu.Unlock()
}

func (l *chaosLoad) record(what, uuid string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops++
	switch {
	case err == nil:
		l.answers["ok"]++
		// Recovery: the first success after the fault on what the fault
		// hit (the faulted node's VMs; any VM for the other faults).
		if victim := l.c.victimUUID(); !l.faultEnd.IsZero() && l.firstOK.IsZero() && (victim == "" || (uuid != "" && l.c.ring.Owner(uuid) == victim)) {
			l.firstOK = time.Now()
		}
	case errcode.CodeOf(err) == errcode.OutcomeUnknown:
		l.unknown++
		l.answers[string(errcode.OutcomeUnknown)]++
	case client.StatusCode(err) == 0 && !errors.As(err, new(*errcode.Error)):
		l.noAnswer = append(l.noAnswer, fmt.Sprintf("%s: %v", what, err))
		l.answers["no answer"]++
	default:
		l.answers[string(errcode.CodeOf(err))]++
	}
	if err != nil {
		l.failures = append(l.failures, fmt.Sprintf("%s: %.600s", what, err))
	}
}

// do sends one operation with a job UUID of its own through a live node
// and waits for its outcome; when that node stops answering (killed,
// frozen), the same request (same X-Job-UUID: the job runs once) goes to
// another node and is waited for there.
func (l *chaosLoad) do(what, uuid string, send func(ctx context.Context, c *client.Client, id client.CallOption) (*client.Job, error)) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	id := client.JobUUID(uid.New())
	avoid := -1
	for {
		i, c := l.c.pick(avoid)
		actx, acancel := context.WithTimeout(ctx, 20*time.Second)
		j, err := send(actx, c, id)
		submitted := err == nil
		var out json.RawMessage
		if err == nil {
			out, err = j.Wait(actx, nil)
		}
		acancel()
		if !submitted && errcode.IsRetryable(err) && ctx.Err() == nil {
			// Refused at the edge before it was accepted (that node is
			// fenced, or its database unavailable): another node.
			avoid = i
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var e *errcode.Error
		if err != nil && client.StatusCode(err) == 0 && !errors.As(err, &e) && ctx.Err() == nil {
			avoid = i // that node did not answer: ask another
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if errcode.IsRetryable(err) && !errcode.Has(err, errcode.NodeUnavailable) && ctx.Err() == nil {
			// Failed retryably, nothing of it left (the database
			// unavailable at the edge or during the run): send it again,
			// same X-Job-UUID, which runs the job again.
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if uuid == "" && err == nil {
			var v struct {
				UUID string `json:"uuid"`
			}
			_ = json.Unmarshal(out, &v)
			uuid = v.UUID
		}
		l.record(what, uuid, err)
		return out, err
	}
}

func (l *chaosLoad) worker(stop <-chan struct{}) {
	cl := l.c.cl
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		raw, err := l.do("create", "", func(ctx context.Context, c *client.Client, id client.CallOption) (*client.Job, error) {
			return c.Create(ctx, "vm-instances", map[string]any{"name": fmt.Sprintf("chaos-%s", uid.New()[:8]),
				"instanceOfferingUuid": cl.offering, "imageUuid": cl.image, "l3NetworkUuids": []string{cl.l3}}, id)
		})
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var v vm.VmInstanceVO
		if json.Unmarshal(raw, &v) != nil || v.UUID == "" {
			continue
		}
		for _, action := range []string{"stopVmInstance", "startVmInstance"} {
			if _, err := l.do(action, v.UUID, func(ctx context.Context, c *client.Client, id client.CallOption) (*client.Job, error) {
				return c.Action(ctx, "vm-instances", v.UUID, action, map[string]any{}, id)
			}); err != nil {
				break
			}
		}
		_, _ = l.do("destroy", v.UUID, func(ctx context.Context, c *client.Client, id client.CallOption) (*client.Job, error) {
			return c.Delete(ctx, "vm-instances", v.UUID, "", id)
		})
	}
}

// agentVMs is what an agent process runs, by VM UUID (state).
func agentVMs(url string) (map[string]string, error) {
	var vms []protocol.VM
	code, err := getJSON(context.Background(), url+protocol.PathDebugVMs, &vms)
	if err != nil || code != 200 {
		return nil, fmt.Errorf("GET %s%s: %d %v", url, protocol.PathDebugVMs, code, err)
	}
	out := map[string]string{}
	for _, v := range vms {
		out[v.UUID] = v.State
	}
	return out, nil
}

// audit lists what is wrong with the VMs now: transitional states,
// orphans, ghosts, overlapping commands.
func (c *chaosCluster) audit() []string {
	var out []string
	var rows []vm.VmInstanceVO
	if err := c.gdb.Select("uuid", "state", "host_uuid").Find(&rows).Error; err != nil {
		return []string{fmt.Sprintf("read VMs: %v", err)}
	}
	byUUID := map[string]vm.VmInstanceVO{}
	for _, v := range rows {
		byUUID[v.UUID] = v
		switch v.State {
		case vm.StateStarting, vm.StateStopping, vm.StateRebooting, vm.StateDestroying, vm.StateUnknown:
			// Unknown too: an outcome nobody could learn at the time is
			// settled by reconciliation once the host answers.
			out = append(out, fmt.Sprintf("VM %s left %s", v.UUID, v.State))
		}
	}
	for i, h := range c.hosts {
		on, err := agentVMs(c.agents[i].url)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		for uuid, st := range on {
			v, ok := byUUID[uuid]
			if st == protocol.VMStateRunning && (!ok || v.State != vm.StateRunning || v.HostUUID != h.UUID) {
				out = append(out, fmt.Sprintf("orphan: VM %s runs on %s, the database has it %q on %q", uuid, h.Name, v.State, v.HostUUID))
			}
		}
		for _, v := range rows {
			if v.State == vm.StateRunning && v.HostUUID == h.UUID && on[v.UUID] != protocol.VMStateRunning {
				out = append(out, fmt.Sprintf("ghost: VM %s Running on %s in the database, %q there", v.UUID, h.Name, on[v.UUID]))
			}
		}
		var st kvm.Stats
		if code, err := getJSON(context.Background(), c.agents[i].url+protocol.PathDebugStats, &st); err == nil && code == 200 && st.Overlaps != 0 {
			out = append(out, fmt.Sprintf("%d overlapping commands on %s", st.Overlaps, h.Name))
		}
	}
	sort.Strings(out)
	return out
}

// auditCapacity compares each host's available CPU and memory, the
// reservations and the used IPs with what live VMs hold.
func (c *chaosCluster) auditCapacity() []string {
	var out []string
	var hosts []hostsvc.HostVO
	c.gdb.Find(&hosts)
	var resv []hostsvc.ReservationVO
	c.gdb.Find(&resv)
	var running []vm.VmInstanceVO
	c.gdb.Where("state = ?", vm.StateRunning).Find(&running)
	held := map[string]string{}
	for _, v := range running {
		held[v.UUID] = v.HostUUID
	}
	cpu, mem := map[string]int64{}, map[string]int64{}
	for _, r := range resv {
		cpu[r.HostUUID] += r.CPU
		mem[r.HostUUID] += r.Memory
		if held[r.VMUUID] != r.HostUUID {
			out = append(out, fmt.Sprintf("reservation of VM %s on host %s: no VM Running there holds it", r.VMUUID, r.HostUUID))
		}
	}
	if len(resv) != len(running) {
		out = append(out, fmt.Sprintf("%d reservations for %d Running VMs", len(resv), len(running)))
	}
	for _, h := range hosts {
		if h.TotalCPUCapacity-h.AvailableCPUCapacity != cpu[h.UUID] || h.TotalMemoryCapacity-h.AvailableMemoryCapacity != mem[h.UUID] {
			out = append(out, fmt.Sprintf("host %s: %d/%d CPU and %d/%d memory available for %d CPU and %d memory reserved", h.Name,
				h.AvailableCPUCapacity, h.TotalCPUCapacity, h.AvailableMemoryCapacity, h.TotalMemoryCapacity, cpu[h.UUID], mem[h.UUID]))
		}
	}
	var usedIPs, nics int64
	c.gdb.Model(&network.UsedIpVO{}).Where("l3_network_uuid = ?", c.cl.l3).Count(&usedIPs)
	c.gdb.Model(&vm.VmNicVO{}).Count(&nics)
	if usedIPs != nics {
		out = append(out, fmt.Sprintf("%d IPs in use for %d NICs", usedIPs, nics))
	}
	drift, err := storageDrift(c.gdb)
	if err != nil {
		out = append(out, err.Error())
	}
	out = append(out, drift...)
	return out
}

// storageDrift lists the primary storages whose available capacity is not
// their total less the reservations.
func storageDrift(gdb *gorm.DB) ([]string, error) {
	drift, err := storage.CapacityDrift(context.Background(), gdb)
	if err != nil {
		return nil, fmt.Errorf("storage capacity drift: %w", err)
	}
	var out []string
	for _, d := range drift {
		out = append(out, "storage capacity drift: "+d.String())
	}
	return out, nil
}
