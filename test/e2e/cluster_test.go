package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"mplane/api/portal"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/internal/testenv"
	"mplane/managementnode"
)

// clusterEnv is what every server of one test shares.
type clusterEnv struct {
	t        *testing.T
	amqpURL  string
	prefix   string
	dsn      string
	interval time.Duration
	extraEnv []string
}

func newClusterEnv(t *testing.T) *clusterEnv {
	url := testenv.AMQPURL(t)
	e := &clusterEnv{t: t, amqpURL: url, prefix: testenv.BusPrefix(t, url), dsn: testenv.MySQLDSN(t),
		interval: 500 * time.Millisecond}
	// Registered first, so it runs after every server has stopped.
	testenv.DeleteQueuesAtCleanup(t, e.amqpURL, e.prefix+"."+portal.SharedQueue)
	return e
}

type server struct {
	*proc
	uuid string
	// runDir holds its admin socket (mplane daemon --run-dir).
	runDir string
}

func (e *clusterEnv) startServer(name string) *server {
	e.t.Helper()
	port := freePort(e.t)
	runDir := e.t.TempDir()
	p := startProc(e.t, name, append([]string{
		"MPLANE_BUS_URL=" + e.amqpURL,
		"MPLANE_BUS_PREFIX=" + e.prefix,
		"MPLANE_DATABASE_DSN=" + e.dsn,
		"MPLANE_RUN_DIR=" + runDir,
		fmt.Sprintf("MPLANE_API_LISTEN=127.0.0.1:%d", port),
		"MPLANE_HEARTBEAT_INTERVAL=" + e.interval.String(),
		"MPLANE_HEARTBEAT_THRESHOLD=3",
		"MPLANE_RING_RESYNC_INTERVAL=2s",
		"MPLANE_DRAIN_TIMEOUT=20s",
		"MPLANE_LOG_LEVEL=info",
		"MPLANE_ADMIN_PASSWORD=" + e2ePassword,
	}, e.extraEnv...), "server")
	p.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	s := &server{proc: p, runDir: runDir}
	testenv.Eventually(e.t, 60*time.Second, func() bool {
		if p.exited() {
			e.t.Fatalf("%s exited during start-up", name)
		}
		code, err := getJSON(context.Background(), p.url+"/readyz", nil)
		return err == nil && code == 200
	}, "%s ready", name)
	var st managementnode.Status
	if _, err := getJSON(context.Background(), p.url+"/admin/status", &st); err != nil {
		e.t.Fatal(err)
	}
	s.uuid = st.NodeUUID
	return s
}

func ringOf(t *testing.T, s *server) managementnode.RingInfo {
	t.Helper()
	var r managementnode.RingInfo
	if _, err := getJSON(context.Background(), s.url+"/admin/ring", &r); err != nil {
		t.Fatalf("ring of %s: %v", s.name, err)
	}
	return r
}

func statusOf(t *testing.T, s *server) managementnode.Status {
	t.Helper()
	var st managementnode.Status
	if _, err := getJSON(context.Background(), s.url+"/admin/status", &st); err != nil {
		t.Fatalf("status of %s: %v", s.name, err)
	}
	return st
}

// converged waits until every server reports the same epoch and exactly
// the given members.
func converged(t *testing.T, timeout time.Duration, servers ...*server) managementnode.RingInfo {
	t.Helper()
	var last managementnode.RingInfo
	testenv.Eventually(t, timeout, func() bool {
		want := map[string]bool{}
		for _, s := range servers {
			want[s.uuid] = true
		}
		for i, s := range servers {
			r := ringOf(t, s)
			if len(r.Members) != len(servers) {
				return false
			}
			for _, m := range r.Members {
				if !want[m.UUID] {
					return false
				}
			}
			if i > 0 && r.Epoch != last.Epoch {
				return false
			}
			last = r
		}
		return true
	}, "%d servers converge on one ring", len(servers))
	return last
}

func partitionsOf(r managementnode.RingInfo, uuid string) int {
	for _, m := range r.Members {
		if m.UUID == uuid {
			return m.Partitions
		}
	}
	return 0
}

// clientBus is a bus endpoint of the test itself on the cluster's broker:
// it is not a member, it only sends.
func clientBus(t *testing.T, e *clusterEnv) *cloudbus.Bus {
	t.Helper()
	b, err := cloudbus.New(cloudbus.Options{URL: e.amqpURL, Namespace: e.prefix, NodeUUID: "e2e-client-" + testenv.Prefix(t),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	return b
}

// probeVia sends a probe for res straight to node's queue (as a sender
// with a stale ring would) and returns who handled it.
func probeVia(t *testing.T, b *cloudbus.Bus, node, res string) managementnode.ProbeReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := cloudbus.Call(ctx, b, b.Target(managementnode.Service, node), managementnode.MsgProbe,
		managementnode.ProbeReq{ResourceUUID: res}, cloudbus.WithResource(res))
	if err != nil {
		t.Fatalf("probe %s via %s: %v", res, node, err)
	}
	return rep
}

// TestClusterMembershipAndFailover drives three real `mplane server`
// processes on RabbitMQ and MariaDB through the life of a cluster: agree,
// crash, forward, join, leave.
func TestClusterMembershipAndFailover(t *testing.T) {
	e := newClusterEnv(t)
	a, b, c := e.startServer("A"), e.startServer("B"), e.startServer("C")
	bus := clientBus(t, e)

	// 1. All three report the same ring and epoch.
	r := converged(t, 30*time.Second, a, b, c)
	total := 0
	for _, m := range r.Members {
		total += m.Partitions
	}
	if total != managementnode.Partitions {
		t.Fatalf("ring covers %d partitions, want %d", total, managementnode.Partitions)
	}

	// 2. A message for a resource sent to a node that does not own it is
	// forwarded and executed once, by the owner.
	ring3, err := managementnode.BuildRing(r.Epoch, []string{a.uuid, b.uuid, c.uuid})
	if err != nil {
		t.Fatal(err)
	}
	before := statusOf(t, a).ProbesHandled + statusOf(t, b).ProbesHandled + statusOf(t, c).ProbesHandled
	const sent = 30
	for i := 0; i < sent; i++ {
		res := fmt.Sprintf("res-%d", i)
		owner := ring3.Owner(res)
		wrong := a.uuid
		if owner == wrong {
			wrong = b.uuid
		}
		rep := probeVia(t, bus, wrong, res)
		if rep.NodeUUID != owner || rep.Hops != 1 {
			t.Fatalf("%s: handled by %s after %d hops, want owner %s after 1 hop", res, rep.NodeUUID, rep.Hops, owner)
		}
	}
	after := statusOf(t, a).ProbesHandled + statusOf(t, b).ProbesHandled + statusOf(t, c).ProbesHandled
	if after-before != sent {
		t.Fatalf("%d probes executed for %d sent: a message ran twice or not at all", after-before, sent)
	}

	// 3. kill -9 C while A waits on a call to it: the call fails with
	// SYS.1012 when C is evicted, and C's resources move to A and B.
	resOfC := ""
	for i := 0; resOfC == ""; i++ {
		if x := fmt.Sprintf("c-res-%d", i); ring3.Owner(x) == c.uuid {
			resOfC = x
		}
	}
	type probeAnswer struct {
		Error *errcode.Error `json:"error"`
		managementnode.ProbeReply
	}
	pending := make(chan probeAnswer, 1)
	go func() {
		var ans probeAnswer
		_, err := postJSON(context.Background(), a.url+"/admin/probe?resource="+resOfC+"&sleepMs=60000", &ans)
		if err != nil {
			ans.Error = errcode.Wrap(errcode.Internal, err, "post probe")
		}
		pending <- ans
	}()
	testenv.Eventually(t, 20*time.Second, func() bool { return statusOf(t, c).Inflight == 1 }, "probe running on C")
	killed := time.Now()
	c.kill()
	r2 := converged(t, 60*time.Second, a, b)
	t.Logf("survivors converged %v after kill -9 (heartbeat %v, threshold 3 intervals)", time.Since(killed).Round(10*time.Millisecond), e.interval)
	if r2.Epoch <= r.Epoch {
		t.Fatalf("epoch did not move: %d -> %d", r.Epoch, r2.Epoch)
	}
	ans := <-pending
	if ans.Error == nil || ans.Error.Code != errcode.NodeUnavailable {
		t.Fatalf("call pending on the killed node: got %+v, want SYS.1012", ans)
	}
	rep := probeVia(t, bus, a.uuid, resOfC)
	if rep.NodeUUID != a.uuid && rep.NodeUUID != b.uuid {
		t.Fatalf("resource of the dead node handled by %s", rep.NodeUUID)
	}
	if !a.logged("evicted a peer") && !b.logged("evicted a peer") {
		t.Fatal("no survivor logged the eviction")
	}

	// 4. A fourth node joining takes over about a quarter of the
	// partitions (here: a third, since C is gone; with A and B it is the
	// third member). Start two to get back to four.
	d := e.startServer("D")
	f := e.startServer("F")
	r4 := converged(t, 60*time.Second, a, b, d, f)
	got := partitionsOf(r4, f.uuid)
	quarter := managementnode.Partitions / 4
	if got < quarter*8/10 || got > quarter*12/10 {
		t.Fatalf("the 4th node owns %d partitions, want about %d", got, quarter)
	}

	// 5. SIGTERM one node while it runs a resource's work: the work
	// completes, the node leaves with exit code 0, the others converge.
	resOfD := ""
	ring4, _ := managementnode.BuildRing(0, []string{a.uuid, b.uuid, d.uuid, f.uuid})
	for i := 0; resOfD == ""; i++ {
		if x := fmt.Sprintf("d-res-%d", i); ring4.Owner(x) == d.uuid {
			resOfD = x
		}
	}
	drained := make(chan probeAnswer, 1)
	go func() {
		var ans probeAnswer
		_, err := postJSON(context.Background(), a.url+"/admin/probe?resource="+resOfD+"&sleepMs=1500", &ans)
		if err != nil {
			ans.Error = errcode.Wrap(errcode.Internal, err, "post probe")
		}
		drained <- ans
	}()
	testenv.Eventually(t, 20*time.Second, func() bool { return statusOf(t, d).Inflight == 1 }, "probe running on D")
	if err := d.cmd.Process.Signal(sigterm); err != nil {
		t.Fatal(err)
	}
	if code := d.exitCode(); code != 0 {
		t.Fatalf("SIGTERM: exit code %d, want 0", code)
	}
	if ans := <-drained; ans.Error != nil || ans.NodeUUID != d.uuid {
		t.Fatalf("work running on the leaving node: %+v, want it completed by D", ans)
	}
	converged(t, 30*time.Second, a, b, f)
	if !d.logged("left the cluster") {
		t.Fatal("D did not log its leave")
	}
	for _, l := range d.logs {
		if strings.Contains(l, "level=ERROR") {
			t.Fatalf("D logged an error while leaving: %s", l)
		}
	}
}
