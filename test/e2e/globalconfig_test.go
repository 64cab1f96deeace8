package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/internal/testenv"
	"mplane/managementnode"
)

// gcInventory is a global configuration as the API answers it.
type gcInventory struct {
	Category string `json:"category"`
	Name     string `json:"name"`
	Value    string `json:"value"`
	Version  int64  `json:"version"`
}

func updateGlobalConfig(ctx context.Context, c *client.Client, category, name, value string) (gcInventory, error) {
	return client.ActionAndWait[gcInventory](ctx, c, "global-configurations/"+category, name, "updateGlobalConfig", map[string]any{"value": value})
}

// nodeSetting is a setting's value on a node, from its admin socket's
// `config show`.
func nodeSetting(t *testing.T, s *server, key string) string {
	t.Helper()
	r := daemon(t, t.TempDir(), "--run-dir", s.runDir, "mplane", "config", "show")
	if r.code != 0 {
		t.Fatalf("config show on %s: exit %d: %s", s.name, r.code, r.stderr)
	}
	var out struct {
		Settings []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		} `json:"settings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("config show on %s: %v", s.name, err)
	}
	for _, st := range out.Settings {
		if st.Key == key {
			return st.Value
		}
	}
	t.Fatalf("config show on %s has no %s", s.name, key)
	return ""
}

// pingGaps are the intervals between the /host/ping commands an agent got
// since since.
func pingGaps(t *testing.T, agentURL string, since time.Time) []time.Duration {
	t.Helper()
	var at []time.Time
	for _, a := range agentArrivals(t, agentURL) {
		if a.Path == protocol.PathPing && a.At.After(since) {
			at = append(at, a.At)
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]))
	}
	return gaps
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestClusterGlobalConfig: three `mplane server` processes. An
// updateGlobalConfig through any node is applied on all three before its
// job succeeds (each node's admin `config show`), and takes effect (the
// pings a host's agent gets come at the new interval); a node that
// rejects at stage aborts it with nothing changed anywhere, the error
// naming that node; 20 concurrent updates through the three nodes are each
// applied in one order or refused retryably, and every node ends with the
// value of the last one applied.
func TestClusterGlobalConfig(t *testing.T) {
	e := newClusterEnv(t)
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret", "MPLANE_HOST_PING_INTERVAL=3s"}
	a, b := e.startServer("A"), e.startServer("B")
	// C refuses any change of host/ping.maxFailures at stage.
	e.extraEnv = append(e.extraEnv, "MPLANE_TEST_GLOBALCONFIG_REJECT=host/ping.maxFailures")
	c := e.startServer("C")
	servers := []*server{a, b, c}
	converged(t, 30*time.Second, servers...)
	var clients []*client.Client
	for _, s := range servers {
		clients = append(clients, login(t, s.url, "e2e-secret"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A host, pinged every 3 s.
	cl := setupCloud(t, clients[0], 1, 512<<20)
	ag := startAgent(t, "agent1", freePort(t), filepath.Join(t.TempDir(), "a1.json"))
	addHost(t, clients[0], cl, "host1", ag.port)
	start := time.Now()
	testenv.Eventually(t, 30*time.Second, func() bool { return len(pingGaps(t, ag.url, start)) >= 2 }, "pings every 3 s")
	before := median(pingGaps(t, ag.url, start))

	// The update through B: every node applied it when the job ends.
	inv, err := updateGlobalConfig(ctx, clients[1], "host", "ping.interval", "500ms")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Value != "500ms" || inv.Version != 1 {
		t.Fatalf("updated: %+v, want 500ms at version 1", inv)
	}
	for _, s := range servers {
		if got := nodeSetting(t, s, "host_ping_interval"); got != "500ms" {
			t.Errorf("node %s: host_ping_interval %s once the update succeeded, want 500ms", s.name, got)
		}
	}
	changed := time.Now()
	testenv.Eventually(t, 30*time.Second, func() bool { return len(pingGaps(t, ag.url, changed.Add(time.Second))) >= 4 }, "pings at the new interval")
	after := median(pingGaps(t, ag.url, changed.Add(time.Second)))
	t.Logf("ping interval on the agent: %v before, %v after the update", before, after)
	if before < 2*time.Second || after > time.Second {
		t.Errorf("the agent was pinged every %v before and %v after; want about 3s and 500ms", before, after)
	}

	// C rejects: nothing changes anywhere.
	_, err = updateGlobalConfig(ctx, clients[0], "host", "ping.maxFailures", "7")
	if err == nil || !strings.Contains(err.Error(), c.uuid) || !strings.Contains(err.Error(), "MPLANE_TEST_GLOBALCONFIG_REJECT") {
		t.Fatalf("an update node C rejects: %v; want an error naming C (%s) and its reason", err, c.uuid)
	}
	for _, s := range servers {
		if got := nodeSetting(t, s, "host_ping_max_failures"); got != "3" {
			t.Errorf("node %s: host_ping_max_failures %s after the aborted update, want 3", s.name, got)
		}
	}
	raw, _, err := clients[2].Query(ctx, "global-configurations", client.Query{Q: []string{"category=host", "name=ping.maxFailures"}})
	if err != nil || len(raw) != 1 {
		t.Fatalf("query: %d rows, %v", len(raw), err)
	}
	var row gcInventory
	if err := json.Unmarshal(raw[0], &row); err != nil {
		t.Fatal(err)
	}
	if row.Value != "3" || row.Version != 0 {
		t.Errorf("the aborted update left %+v in the database, want 3 at version 0", row)
	}

	// 20 concurrent updates through the three nodes.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var applied []gcInventory
	refused := 0
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := fmt.Sprintf("%ds", i+1)
			inv, err := updateGlobalConfig(ctx, clients[i%3], "host", "ping.interval", v)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				applied = append(applied, inv)
			case errcode.IsRetryable(err) || errcode.Has(err, errcode.Conflict):
				refused++
			default:
				t.Errorf("update %s: %v (neither applied nor refused retryably)", v, err)
			}
		}()
	}
	wg.Wait()
	sort.Slice(applied, func(i, j int) bool { return applied[i].Version < applied[j].Version })
	for i, inv := range applied {
		if inv.Version != int64(i+2) {
			t.Errorf("applied updates' versions %v: not one total order after version 1", applied)
			break
		}
	}
	if len(applied) == 0 {
		t.Fatal("no concurrent update applied")
	}
	last := applied[len(applied)-1].Value
	t.Logf("%d concurrent updates applied in order, %d refused retryably; the last applied: %s", len(applied), refused, last)
	if n := checkNoInterleaving(t, "globalconfig/host/ping.interval", nil, servers...); n < len(applied)+1 {
		t.Errorf("the logs show %d transactions on host/ping.interval that locked the cluster, want at least %d", n, len(applied)+1)
	}
	for _, s := range servers {
		if got := nodeSetting(t, s, "host_ping_interval"); got != last {
			t.Errorf("node %s: host_ping_interval %s, want the last applied %s", s.name, got, last)
		}
	}
}

// txnSpan is one cluster transaction as its originator logged it: its
// transitions in order, and where its critical section (from every node
// locked to unlocked) began and ended.
type txnSpan struct {
	id, node    string
	transitions []string // "from -> to"
	start, end  logPos
	final       string
}

// logPos is a line of a server's log: its time, and its place in that log
// (exact order within one process; across processes, the times order
// lines to the millisecond).
type logPos struct {
	at   time.Time
	proc int
	line int
}

var transitionLine = regexp.MustCompile(`^time=(\S+) .*msg="Transitioning from '([^']*)' to '([^']*)' due to event (\S+)".* txn=(\S+) scope=(\S+)`)

// txnSpans reads the transitions of the transactions on scope from the
// servers' logs.
func txnSpans(t *testing.T, scope string, servers ...*server) []*txnSpan {
	t.Helper()
	byID := map[string]*txnSpan{}
	var order []*txnSpan
	for pi, s := range servers {
		s.mu.Lock()
		lines := append([]string(nil), s.logs...)
		s.mu.Unlock()
		for li, l := range lines {
			m := transitionLine.FindStringSubmatch(l)
			if m == nil || m[6] != scope {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatalf("log line of %s: %q: %v", s.name, l, err)
			}
			sp := byID[m[5]]
			if sp == nil {
				sp = &txnSpan{id: m[5], node: s.name}
				byID[m[5]] = sp
				order = append(order, sp)
			}
			if sp.node != s.name {
				t.Errorf("transaction %s logged by %s and %s", sp.id, sp.node, s.name)
			}
			pos := logPos{at: at, proc: pi, line: li}
			sp.transitions = append(sp.transitions, m[2]+" -> "+m[3])
			switch m[3] {
			case "Locked":
				sp.start = pos
			case "Done", "Aborted":
				sp.end, sp.final = pos, m[3]
			}
		}
	}
	return order
}

// before: a is logged before b (same process: by line; else by time, a
// tie counting as before).
func (a logPos) before(b logPos) bool {
	if a.proc == b.proc {
		return a.line < b.line
	}
	return !a.at.After(b.at)
}

// checkNoInterleaving: every transaction on the scope ran the state
// machine from Default to a final state, one transition after the other,
// and no two that locked the cluster overlap between locked and unlocked.
// The originators of the transactions in killed were killed: those end
// when the locks they held expired. It answers how many locked it.
func checkNoInterleaving(t *testing.T, scope string, killed map[string]time.Time, servers ...*server) int {
	t.Helper()
	var locked []*txnSpan
	for _, sp := range txnSpans(t, scope, servers...) {
		prev := "Default"
		for _, tr := range sp.transitions {
			from, to, _ := strings.Cut(tr, " -> ")
			if from != prev {
				t.Errorf("transaction %s on %s: transition %q after state %q (its transitions: %q)", sp.id, sp.node, tr, prev, sp.transitions)
				break
			}
			prev = to
		}
		if exp, ok := killed[sp.id]; ok && sp.final == "" {
			sp.end, sp.final = logPos{at: exp, proc: -1}, "lease expired"
		}
		if sp.final == "" {
			t.Errorf("transaction %s on %s did not end: %q", sp.id, sp.node, sp.transitions)
			continue
		}
		if !sp.start.at.IsZero() {
			locked = append(locked, sp)
		}
	}
	sort.Slice(locked, func(i, j int) bool { return locked[i].start.before(locked[j].start) })
	for i := 1; i < len(locked); i++ {
		a, b := locked[i-1], locked[i]
		if !a.end.before(b.start) {
			t.Errorf("transactions interleave on %s: %s (%s, locked %s, unlocked %s) and %s (%s, locked %s)", scope,
				a.id, a.node, a.start.at.Format(time.StampMilli), a.end.at.Format(time.StampMilli),
				b.id, b.node, b.start.at.Format(time.StampMilli))
		}
	}
	return len(locked)
}

// nodeLocks are the transaction locks a node holds (admin locks).
func nodeLocks(t *testing.T, s *server) []managementnode.TxnLock {
	t.Helper()
	r := daemon(t, t.TempDir(), "--run-dir", s.runDir, "mplane", "locks")
	if r.code != 0 {
		t.Fatalf("locks on %s: exit %d: %s", s.name, r.code, r.stderr)
	}
	var out struct {
		Locks []managementnode.TxnLock `json:"locks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("locks on %s: %v", s.name, err)
	}
	return out.Locks
}

// storedConfig is a configuration's row, through the API.
func storedConfig(t *testing.T, c *client.Client, category, name string) gcInventory {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, _, err := c.Query(ctx, "global-configurations", client.Query{Q: []string{"category=" + category, "name=" + name}})
	if err != nil || len(raw) != 1 {
		t.Fatalf("query %s/%s: %d rows, %v", category, name, len(raw), err)
	}
	var row gcInventory
	if err := json.Unmarshal(raw[0], &row); err != nil {
		t.Fatal(err)
	}
	return row
}

// TestClusterTxnOriginatorKilled: the originator of an update is killed
// (kill -9) after it locked the cluster, after every node staged, after
// the durable write and after the commit. Each time, every survivor holds
// the lock of the dead transaction only until its lease runs out (then a
// new update runs at once), and every node holds one value: the old one
// if the write was not made, the new one if it was (the survivors that
// missed the commit take it from the database).
func TestClusterTxnOriginatorKilled(t *testing.T) {
	e := newClusterEnv(t)
	pauseDir := t.TempDir()
	e.extraEnv = []string{"MPLANE_ADMIN_PASSWORD=e2e-secret", managementnode.PauseEnv + "=" + pauseDir}
	live := []*server{e.startServer("A"), e.startServer("B"), e.startServer("C")}
	converged(t, 30*time.Second, live...)
	const scope = "globalconfig/host/ping.maxFailures"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var all []*server
	all = append(all, live...)
	killed := map[string]time.Time{} // the killed transactions' locks' expiry

	for i, point := range []string{"after-lock", "after-stage", "after-durable", "after-commit"} {
		durable := point == "after-durable" || point == "after-commit"
		c := login(t, live[0].url, "e2e-secret")
		old := storedConfig(t, c, "host", "ping.maxFailures")
		value := fmt.Sprint(4 + i)
		if err := os.WriteFile(filepath.Join(pauseDir, "pause"), []byte(point+" "+scope), 0o600); err != nil {
			t.Fatal(err)
		}
		// The update's outcome is logged, not checked: its job fails
		// (the owner died), or waits for the sweeper when its driver died.
		via := login(t, live[i%3].url, "e2e-secret")
		outcome := make(chan error, 1)
		go func() {
			_, err := updateGlobalConfig(ctx, via, "host", "ping.maxFailures", value)
			outcome <- err
		}()
		var victim *server
		testenv.Eventually(t, 30*time.Second, func() bool {
			for _, s := range live {
				if _, err := os.Stat(filepath.Join(pauseDir, "paused-"+s.uuid)); err == nil {
					victim = s
					return true
				}
			}
			return false
		}, "the originator held "+point)
		var survivors []*server
		for _, s := range live {
			if s != victim {
				survivors = append(survivors, s)
			}
		}
		var expires time.Time
		for _, s := range survivors {
			locks := nodeLocks(t, s)
			if len(locks) != 1 || locks[0].Scope != scope || locks[0].Originator != victim.uuid {
				t.Fatalf("%s: node %s holds %+v, want the lock of %s by %s (%s)", point, s.name, locks, scope, victim.name, victim.uuid)
			}
			if locks[0].Expires.After(expires) {
				expires = locks[0].Expires
			}
			killed[locks[0].Txn] = expires
		}
		victim.kill()
		killed := time.Now()
		if err := os.Remove(filepath.Join(pauseDir, "paused-"+victim.uuid)); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: killed the originator %s; the survivors' locks expire %v later", point, victim.name, expires.Sub(killed).Round(time.Millisecond))
		converged(t, 30*time.Second, survivors...)
		c = login(t, survivors[0].url, "e2e-secret")

		want := old.Value
		if durable {
			want = value
		}
		if row := storedConfig(t, c, "host", "ping.maxFailures"); row.Value != want {
			t.Errorf("%s: the database holds %+v, want %s", point, row, want)
		}
		testenv.Eventually(t, 30*time.Second, func() bool {
			for _, s := range survivors {
				if nodeSetting(t, s, "host_ping_max_failures") != want {
					return false
				}
			}
			return true
		}, fmt.Sprintf("%s: every survivor holds %s", point, want))

		select {
		case err := <-outcome:
			t.Logf("%s: the update's job: %v", point, err)
		default:
			t.Logf("%s: the update's job is not answered yet", point)
		}

		// Once the lease ran out, the cluster is unlocked: nothing is
		// held, and the next update runs at once.
		time.Sleep(time.Until(expires) + 100*time.Millisecond)
		for _, s := range survivors {
			if locks := nodeLocks(t, s); len(locks) != 0 {
				t.Errorf("%s: node %s holds %+v once the dead originator's lease ran out", point, s.name, locks)
			}
		}
		uctx, ucancel := context.WithTimeout(ctx, time.Minute)
		inv, err := updateGlobalConfig(uctx, c, "host", "ping.maxFailures", "3")
		ucancel()
		if err != nil || inv.Value != "3" {
			t.Fatalf("%s: the next update once the lease ran out: %+v, %v", point, inv, err)
		}
		for _, s := range survivors {
			if got := nodeSetting(t, s, "host_ping_max_failures"); got != "3" {
				t.Errorf("%s: node %s holds %s after the next update, want 3", point, s.name, got)
			}
		}

		// A new node keeps the cluster at three, and takes the value from
		// the database when it joins.
		n := e.startServer(fmt.Sprintf("N%d", i+1))
		all = append(all, n)
		live = append(survivors, n)
		converged(t, 30*time.Second, live...)
		if got := nodeSetting(t, n, "host_ping_max_failures"); got != "3" {
			t.Errorf("%s: the new node %s holds %s, want 3", point, n.name, got)
		}
	}
	if n := checkNoInterleaving(t, scope, killed, all...); n != 8 {
		t.Errorf("the logs show %d transactions on %s that locked the cluster, want 8 (4 killed, 4 after them)", n, scope)
	}
}
