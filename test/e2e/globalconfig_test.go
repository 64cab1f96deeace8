package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/internal/testenv"
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
	var arrivals []kvm.Arrival
	if code, err := getJSON(context.Background(), agentURL+protocol.PathDebugArrivals, &arrivals); err != nil || code != http.StatusOK {
		t.Fatalf("arrivals of %s: %d %v", agentURL, code, err)
	}
	var at []time.Time
	for _, a := range arrivals {
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
	for _, s := range servers {
		if got := nodeSetting(t, s, "host_ping_interval"); got != last {
			t.Errorf("node %s: host_ping_interval %s, want the last applied %s", s.name, got, last)
		}
	}
}
