package host_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/conf"
	"mplane/errcode"
	"mplane/internal/testenv"
	"mplane/managementnode"
	"mplane/server"
	"mplane/server/servertest"
	"mplane/services/host"
	"mplane/uid"
)

// TestHostAPI runs the host service's REST API and commands on one
// embedded cloud whose hosts are agents the test controls; the chain level
// is 2, so that bounding the commands per host shows.
func TestHostAPI(t *testing.T) {
	st, ctx := startStack(t, func(c *conf.Config) { c.HostChainLevel = 2 })
	testHostAPI(t, ctx, st)
}

// TestHostAPIOnMySQL is TestHostAPI on MariaDB: the capacity a reconnect
// records is one UPDATE whose assignments MySQL evaluates left to right,
// SQLite all from the old row; the write fence makes updates and inserts
// conditional there.
func TestHostAPIOnMySQL(t *testing.T) {
	dsn := testenv.MySQLDSN(t)
	st, ctx := startStack(t, func(c *conf.Config) { c.HostChainLevel = 2; c.DatabaseDSN = dsn })
	testHostAPI(t, ctx, st)
}

func testHostAPI(t *testing.T, ctx context.Context, st *servertest.Stack) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, ctx context.Context, st *servertest.Stack)
	}{
		{"add", testAddKVMHost},
		{"reconnect", testReconnectHost},
		{"commands", testRunAgentCommands},
		{"events", testAgentEvents},
		{"delete", testDeleteHost},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, ctx, st) })
	}
}

// TestPingTracking runs the ping tracker every 200ms, disconnecting a host
// after 3 failed pings.
func TestPingTracking(t *testing.T) {
	st, ctx := startStack(t, fastPing(3))
	t.Run("disconnect and reconnect", func(t *testing.T) { testPingDisconnectsAndReconnects(t, ctx, st) })
	t.Run("agent forgot its host", func(t *testing.T) { testPingReconnectsAgentThatForgotItsHost(t, ctx, st) })
}

// testAddKVMHost adds hosts through POST /v1/hosts/kvm: a reachable agent
// becomes a Connected host with the agent's capacity; what the edge can
// see is refused at once (400, naming the field); what only the agent or
// the owner can see fails the job and leaves no host row.
func testAddKVMHost(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c := st.Client

	t.Run("connected with the agent's capacity", func(t *testing.T) {
		a := startAgent(t, "127.0.0.1:0", kvm.Options{CPUNum: 8, MemoryBytes: 16 << 30})
		h := addHost(t, ctx, st, a, "kvm-1")
		if len(h.UUID) != 32 || h.Name != "kvm-1" || h.ManagementIP != a.IP || h.AgentPort != a.Port {
			t.Fatalf("added %+v, want kvm-1 at %s", h, a.Addr)
		}
		if h.Status != host.StatusConnected || h.State != host.StateEnabled || h.HypervisorType != host.HypervisorKVM {
			t.Fatalf("added host is %s/%s/%s, want Connected/Enabled/KVM", h.Status, h.State, h.HypervisorType)
		}
		if h.CPUNum != 8 || h.TotalCPUCapacity != 8 || h.AvailableCPUCapacity != 8 ||
			h.TotalMemoryCapacity != 16<<30 || h.AvailableMemoryCapacity != 16<<30 {
			t.Fatalf("capacity %+v, want the agent's 8 CPUs and 16 GiB", h)
		}
		if h.ZoneUUID != st.Defaults["zone"] || h.ClusterUUID != st.Defaults["cluster"] {
			t.Fatalf("zone %s cluster %s, want the cluster's %s and %s", h.ZoneUUID, h.ClusterUUID, st.Defaults["zone"], st.Defaults["cluster"])
		}
		if a.commands(protocol.PathConnect) != 1 || a.commands(protocol.PathCapacity) != 1 {
			t.Fatalf("agent got %v, want one connect and one capacity", a.Stats().Commands)
		}
		// The inventory never shows the secret; the agent holds it.
		raw, err := c.Get(ctx, "hosts", h.UUID)
		if err != nil {
			t.Fatal(err)
		}
		secret := secretOf(t, st, h.UUID)
		if strings.Contains(string(raw), secret) || strings.Contains(string(raw), `"secret"`) {
			t.Fatalf("inventory shows the secret: %s", raw)
		}
		rows, total, err := client.QueryAs[host.HostVO](ctx, c, "hosts",
			client.Query{Q: []string{"managementIp=" + a.IP, "agentPort=" + strconv.Itoa(a.Port)}, ReplyWithCount: true})
		if err != nil || total != 1 || len(rows) != 1 || rows[0].UUID != h.UUID {
			t.Fatalf("query by address: %d rows (total %d), %v", len(rows), total, err)
		}
	})

	t.Run("name defaults to the address", func(t *testing.T) {
		a := startAgent(t, "127.0.0.1:0", kvm.Options{})
		p := addParams(st, a, "")
		delete(p, "name")
		h, err := client.CreateAndWait[host.HostVO](ctx, c, "hosts/kvm", p)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != a.IP || h.TotalCPUCapacity != 32 {
			t.Fatalf("name %q, %d CPUs; want %q and the agent's default 32", h.Name, h.TotalCPUCapacity, a.IP)
		}
	})

	t.Run("edge validation", func(t *testing.T) {
		cluster := st.Defaults["cluster"]
		missing := uid.New()
		tests := []struct {
			name   string
			params map[string]any
			detail []string
		}{
			{"no clusterUuid", map[string]any{"managementIp": "127.0.0.1"}, []string{"clusterUuid is required"}},
			{"unknown cluster", map[string]any{"managementIp": "127.0.0.1", "clusterUuid": missing}, []string{"clusterUuid " + missing + " does not exist"}},
			{"no managementIp", map[string]any{"clusterUuid": cluster}, []string{"managementIp is required"}},
			{"hostname as managementIp", map[string]any{"managementIp": "kvm-1.example", "clusterUuid": cluster}, []string{"managementIp must be an IP address", "kvm-1.example"}},
			{"unspecified managementIp", map[string]any{"managementIp": "0.0.0.0", "clusterUuid": cluster}, []string{"managementIp must be a unicast address"}},
			{"multicast managementIp", map[string]any{"managementIp": "224.0.0.1", "clusterUuid": cluster}, []string{"managementIp must be a unicast address"}},
			{"port too high", map[string]any{"managementIp": "127.0.0.1", "agentPort": 70000, "clusterUuid": cluster}, []string{"agentPort must be between 1 and 65535"}},
			{"negative port", map[string]any{"managementIp": "127.0.0.1", "agentPort": -1, "clusterUuid": cluster}, []string{"agentPort must be between 1 and 65535"}},
			{"long name", map[string]any{"managementIp": "127.0.0.1", "clusterUuid": cluster, "name": strings.Repeat("n", 256)}, []string{"name must be at most 255 characters"}},
			{"unknown field", map[string]any{"managementIp": "127.0.0.1", "clusterUuid": cluster, "hostname": "x"}, []string{"hostname"}},
			{"every problem at once", map[string]any{"managementIp": "nope", "agentPort": 99999}, []string{"clusterUuid is required", "managementIp must be an IP address", "agentPort"}},
		}
		var before int64
		st.DB().Model(&host.HostVO{}).Count(&before)
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Create(ctx, "hosts/kvm", tc.params)
				wantAPIError(t, err, http.StatusBadRequest, errcode.InvalidArgument, tc.detail...)
			})
		}
		var after int64
		st.DB().Model(&host.HostVO{}).Count(&after)
		if after != before {
			t.Fatalf("refused adds left %d host rows", after-before)
		}
	})

	t.Run("duplicate address", func(t *testing.T) {
		a := startAgent(t, "127.0.0.1:0", kvm.Options{})
		first := addHost(t, ctx, st, a, "first")
		_, err := client.CreateAndWait[host.HostVO](ctx, c, "hosts/kvm", addParams(st, a, "second"))
		wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidArgument,
			"already exists", first.UUID, "managementIp "+a.IP, "agentPort "+strconv.Itoa(a.Port))
		if n := hostRows(t, st, a); n != 1 {
			t.Fatalf("%d hosts at %s after the duplicate add, want the first only", n, a.Addr)
		}
		var second int64
		st.DB().Model(&host.HostVO{}).Where("name = ?", "second").Count(&second)
		if second != 0 {
			t.Fatal("the duplicate add left its row")
		}
		if got := getHost(t, ctx, st, first.UUID); got.Status != host.StatusConnected || got.Name != "first" {
			t.Fatalf("first host after the duplicate add: %+v", got)
		}
	})

	t.Run("redelivered add answers the same host", func(t *testing.T) {
		a := startAgent(t, "127.0.0.1:0", kvm.Options{})
		req := host.AddKVMHostReq{UUID: uid.New(), Name: "again", ManagementIP: a.IP, AgentPort: a.Port,
			ZoneUUID: st.Defaults["zone"], ClusterUUID: st.Defaults["cluster"]}
		h1, err := managementnode.CallOwner(ctx, st.Node(), host.MsgAddKVMHost, req)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := managementnode.CallOwner(ctx, st.Node(), host.MsgAddKVMHost, req)
		if err != nil {
			t.Fatalf("redelivered add: %v", err)
		}
		if h1.UUID != req.UUID || h2.UUID != req.UUID || !h2.CreateDate.Equal(h1.CreateDate) || hostRows(t, st, a) != 1 {
			t.Fatalf("adds answered %s and %s (created %v, %v), %d rows", h1.UUID, h2.UUID, h1.CreateDate, h2.CreateDate, hostRows(t, st, a))
		}
		if a.commands(protocol.PathConnect) != 1 {
			t.Fatalf("the redelivered add connected the agent again: %v", a.Stats().Commands)
		}
		got, err := managementnode.CallOwner(ctx, st.Node(), host.MsgGetHost, host.HostRef{UUID: req.UUID})
		if err != nil || got.Status != host.StatusConnected {
			t.Fatalf("get host through the bus: %+v, %v", got, err)
		}
		if _, err := managementnode.CallOwner(ctx, st.Node(), host.MsgGetHost, host.HostRef{UUID: uid.New()}); !errcode.Has(err, errcode.ResourceNotFound) {
			t.Fatalf("get a missing host through the bus: %v, want ResourceNotFound", err)
		}
	})

	// An agent that cannot be connected fails the job, and the host row
	// written meanwhile is removed.
	failing := []struct {
		name   string
		agent  func(t *testing.T) *agent
		detail string
	}{
		{"capacity fails", func(t *testing.T) *agent {
			return startAgent(t, "127.0.0.1:0", kvm.Options{FailRate: 1, FaultPaths: []string{protocol.PathCapacity}})
		}, protocol.PathCapacity},
		{"agent holds another node's secret", func(t *testing.T) *agent {
			state := filepath.Join(t.TempDir(), "agent.json")
			if err := os.WriteFile(state, []byte(`{"formatVersion":1,"secret":"someone-elses","vms":[]}`), 0o600); err != nil {
				t.Fatal(err)
			}
			return startAgent(t, "127.0.0.1:0", kvm.Options{StateFile: state})
		}, "401"},
	}
	for _, tc := range failing {
		t.Run("agent fails to connect: "+tc.name, func(t *testing.T) {
			a := tc.agent(t)
			_, err := client.CreateAndWait[host.HostVO](ctx, c, "hosts/kvm", addParams(st, a, "broken"))
			wantAPIError(t, err, http.StatusServiceUnavailable, errcode.AgentError, "connect the agent at http://"+a.Addr, tc.detail)
			if n := hostRows(t, st, a); n != 0 {
				t.Fatalf("a failed add left %d host rows", n)
			}
		})
	}
}

// testReconnectHost: the reconnectHost action connects the agent again and
// refreshes the capacity; on a missing host it is a 404; with the agent
// down the job fails and the host is Disconnected.
func testReconnectHost(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c := st.Client
	state := filepath.Join(t.TempDir(), "agent.json")
	a := startAgent(t, "127.0.0.1:0", kvm.Options{StateFile: state, CPUNum: 4, MemoryBytes: 8 << 30})
	h := addHost(t, ctx, st, a, "kvm")

	// A reservation is kept across the reconnect; a larger host (the
	// agent restarted with more memory) adds the difference.
	if err := host.Reserve(ctx, st.DB(), h.UUID, "vm-1", 1, 1<<30); err != nil {
		t.Fatal(err)
	}
	got, err := client.ActionAndWait[host.HostVO](ctx, c, "hosts", h.UUID, "reconnectHost", nil)
	if err != nil {
		t.Fatalf("reconnectHost: %v", err)
	}
	if got.Status != host.StatusConnected || got.AvailableCPUCapacity != 3 || got.AvailableMemoryCapacity != 7<<30 {
		t.Fatalf("after reconnect: %s, %d CPUs and %d bytes free; want Connected, 3 and 7 GiB", got.Status, got.AvailableCPUCapacity, got.AvailableMemoryCapacity)
	}
	if n := a.commands(protocol.PathConnect); n != 2 {
		t.Fatalf("agent got %d connects, want 2", n)
	}

	a.stop(t)
	bigger := startAgent(t, a.Addr, kvm.Options{StateFile: state, CPUNum: 8, MemoryBytes: 16 << 30})
	got, err = client.ActionAndWait[host.HostVO](ctx, c, "hosts", h.UUID, "reconnectHost", nil)
	if err != nil {
		t.Fatalf("reconnectHost after the agent restarted: %v", err)
	}
	if got.TotalCPUCapacity != 8 || got.AvailableCPUCapacity != 7 || got.TotalMemoryCapacity != 16<<30 || got.AvailableMemoryCapacity != 15<<30 {
		t.Fatalf("after reconnect to a larger host: %+v; want 8/7 CPUs, 16/15 GiB", got)
	}

	t.Run("missing host", func(t *testing.T) {
		_, err := c.Action(ctx, "hosts", uid.New(), "reconnectHost", nil)
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
	})

	t.Run("agent down", func(t *testing.T) {
		bigger.stop(t)
		_, err := client.ActionAndWait[host.HostVO](ctx, c, "hosts", h.UUID, "reconnectHost", nil)
		wantAPIError(t, err, http.StatusServiceUnavailable, errcode.AgentError, "reconnect host "+h.UUID, a.Addr)
		if got := getHost(t, ctx, st, h.UUID); got.Status != host.StatusDisconnected {
			t.Fatalf("host is %s after a failed reconnect, want Disconnected", got.Status)
		}
	})
}

// testPingDisconnectsAndReconnects: a host whose agent stops answering is
// Disconnected after the failed pings; commands to it are refused; when
// the agent is back the tracker reconnects it.
func testPingDisconnectsAndReconnects(t *testing.T, ctx context.Context, st *servertest.Stack) {
	state := filepath.Join(t.TempDir(), "agent.json")
	a := startAgent(t, "127.0.0.1:0", kvm.Options{StateFile: state})
	h := addHost(t, ctx, st, a, "kvm")

	// The tracker pings it, and it stays Connected.
	poll(t, 10*time.Second, func() (bool, string) {
		return a.commands(protocol.PathPing) >= 3, "waiting for 3 pings"
	})
	if got := getHost(t, ctx, st, h.UUID); got.Status != host.StatusConnected {
		t.Fatalf("answering host is %s", got.Status)
	}

	a.stop(t)
	waitStatus(t, ctx, st, h.UUID, host.StatusDisconnected)

	_, err := host.Run(ctx, st.Node(), h.UUID, protocol.ListVMs, struct{}{})
	wantCode(t, err, errcode.InvalidState, "Disconnected", "not Connected", protocol.PathListVMs)

	// The agent comes back (same state file, so the same secret): the
	// tracker reconnects it.
	back := startAgent(t, a.Addr, kvm.Options{StateFile: state})
	waitStatus(t, ctx, st, h.UUID, host.StatusConnected)
	if back.commands(protocol.PathConnect) < 1 {
		t.Fatal("host Connected without a connect to the agent")
	}
	rsp, err := host.Run(ctx, st.Node(), h.UUID, protocol.Ping, protocol.PingCmd{HostUUID: h.UUID})
	if err != nil || rsp.HostUUID != h.UUID {
		t.Fatalf("ping after the reconnect: %+v, %v", rsp, err)
	}
}

// testPingReconnectsAgentThatForgotItsHost: a ping answered for no host (an
// agent restarted without state) or naming another event URL makes the
// owner connect the host again, before any ping fails enough to
// disconnect it.
func testPingReconnectsAgentThatForgotItsHost(t *testing.T, ctx context.Context, st *servertest.Stack) {
	a := startAgent(t, "127.0.0.1:0", kvm.Options{})
	h := addHost(t, ctx, st, a, "kvm")
	eventURL := st.URL + protocol.DefaultEventPath + "?hostUuid=" + h.UUID + "&" + agentclient.EventTokenParam + "=" + agentclient.EventToken(secretOf(t, st, h.UUID))

	// Restarted with a fresh state: it answers pings for no host, and the
	// owner connects it again.
	a.stop(t)
	fresh := startAgent(t, a.Addr, kvm.Options{})
	poll(t, 10*time.Second, func() (bool, string) {
		rsp, err := host.Run(ctx, st.Node(), h.UUID, protocol.Ping, protocol.PingCmd{HostUUID: h.UUID})
		if err != nil {
			return false, err.Error()
		}
		return rsp.HostUUID == h.UUID && rsp.SendCommandURL == eventURL && fresh.commands(protocol.PathConnect) >= 1,
			"the restarted agent answers for host " + rsp.HostUUID + " to " + rsp.SendCommandURL
	})
	if got := getHost(t, ctx, st, h.UUID); got.Status != host.StatusConnected {
		t.Fatalf("host is %s", got.Status)
	}

	// Connected elsewhere, by a sync command through the host's chain: the
	// agent now reports to another event URL, and the owner takes it back.
	before := fresh.commands(protocol.PathConnect)
	if _, err := host.Run(ctx, st.Node(), h.UUID, protocol.Connect,
		protocol.ConnectCmd{HostUUID: h.UUID, SendCommandURL: "http://127.0.0.1:1/elsewhere"}); err != nil {
		t.Fatalf("connect through host.Run: %v", err)
	}
	poll(t, 10*time.Second, func() (bool, string) {
		rsp, err := host.Run(ctx, st.Node(), h.UUID, protocol.Ping, protocol.PingCmd{HostUUID: h.UUID})
		if err != nil {
			return false, err.Error()
		}
		return rsp.SendCommandURL == eventURL && fresh.commands(protocol.PathConnect) >= before+2,
			"agent reports to " + rsp.SendCommandURL
	})
}

// testRunAgentCommands sends typed commands with host.Run: async and sync
// paths, the agent's errors, refused paths and hosts, an untyped command on
// the bus, and the chain level bounding the commands running at once on
// one host.
func testRunAgentCommands(t *testing.T, ctx context.Context, st *servertest.Stack) {
	a := startAgent(t, "127.0.0.1:0", kvm.Options{})
	h := addHost(t, ctx, st, a, "kvm")
	node := st.Node()

	t.Run("async", func(t *testing.T) {
		rsp, err := host.Run(ctx, node, h.UUID, protocol.StartVM, protocol.StartVMCmd{VMInstanceUUID: "vm-a", CPUNum: 2, Memory: 1 << 30,
			RootVolume: simRoot("vm-a")})
		if err != nil || !rsp.Success || rsp.VMState != protocol.VMStateRunning {
			t.Fatalf("start vm-a: %+v, %v", rsp, err)
		}
		list, err := host.Run(ctx, node, h.UUID, protocol.ListVMs, struct{}{})
		if err != nil || list.States["vm-a"] != protocol.VMStateRunning || len(list.VMs) != 1 || list.VMs[0].CPUNum != 2 {
			t.Fatalf("list: %+v, %v", list, err)
		}
		capRsp, err := host.Run(ctx, node, h.UUID, protocol.Capacity, struct{}{})
		if err != nil || capRsp.UsedCPU != 2 || capRsp.UsedMemory != 1<<30 {
			t.Fatalf("capacity: %+v, %v; want 2 CPUs and 1 GiB used", capRsp, err)
		}
	})

	t.Run("sync", func(t *testing.T) {
		incoming := protocol.Command[protocol.IncomingVMCmd, protocol.VMRsp]{Path: protocol.PathIncomingVM}
		rsp, err := host.Run(ctx, node, h.UUID, incoming, protocol.IncomingVMCmd{VM: protocol.VM{UUID: "vm-b", CPUNum: 1, Memory: 1 << 20}})
		if err != nil || rsp.VMState != protocol.VMStateRunning {
			t.Fatalf("incoming vm-b: %+v, %v", rsp, err)
		}
		found := false
		for _, vm := range a.VMs() {
			found = found || (vm.UUID == "vm-b" && vm.State == protocol.VMStateRunning)
		}
		if !found {
			t.Fatalf("agent's VMs %+v lack vm-b", a.VMs())
		}
		// A sync command the agent refuses.
		_, err = host.Run(ctx, node, h.UUID, incoming, protocol.IncomingVMCmd{})
		wantCode(t, err, errcode.AgentError, "vm.uuid is required")
	})

	t.Run("agent error", func(t *testing.T) {
		_, err := host.Run(ctx, node, h.UUID, protocol.StopVM, protocol.StopVMCmd{})
		wantCode(t, err, errcode.AgentError, "uuid is required")
	})

	t.Run("refused", func(t *testing.T) {
		tests := []struct {
			name   string
			host   string
			path   string
			code   errcode.Code
			detail string
		}{
			{"relative path", h.UUID, "vm/list", errcode.InvalidArgument, "agent command path"},
			{"no path", h.UUID, "", errcode.InvalidArgument, "agent command path"},
			{"missing host", uid.New(), protocol.PathListVMs, errcode.ResourceNotFound, "not found"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				before := a.Stats().Arrivals.Count
				_, err := host.Run(ctx, node, tc.host, protocol.Command[struct{}, protocol.ListVMsRsp]{Path: tc.path}, struct{}{})
				wantCode(t, err, tc.code, tc.detail)
				if after := a.Stats().Arrivals.Count; after != before && tc.host == h.UUID {
					t.Fatalf("a refused command reached the agent (%d arrivals)", after-before)
				}
			})
		}
		// A command that cannot be encoded never leaves.
		_, err := host.Run(ctx, node, h.UUID, protocol.Command[chan int, struct{}]{Path: protocol.PathListVMs}, make(chan int))
		wantCode(t, err, errcode.Internal, "encode")
		// A result that does not decode into the response type.
		_, err = host.Run(ctx, node, h.UUID, protocol.Command[struct{}, struct{ VMs string }]{Path: protocol.PathListVMs}, struct{}{})
		wantCode(t, err, errcode.MalformedMessage, "decode")
	})

	t.Run("untyped on the bus", func(t *testing.T) {
		// No body: the agent gets {}; the raw result is its response.
		rep, err := managementnode.CallOwner(ctx, node, host.MsgAgentCommand, host.AgentCommandReq{HostUUID: h.UUID, Path: protocol.PathListVMs})
		if err != nil {
			t.Fatal(err)
		}
		var list protocol.ListVMsRsp
		if err := json.Unmarshal(rep.Result, &list); err != nil || !list.Success || len(list.VMs) != 2 {
			t.Fatalf("raw result %s: %+v, %v; want vm-a and vm-b", rep.Result, list, err)
		}
	})

	t.Run("chain level bounds concurrency", func(t *testing.T) {
		slow := startAgent(t, "127.0.0.1:0", kvm.Options{Latency: 250 * time.Millisecond})
		sh := addHost(t, ctx, st, slow, "slow")
		const n = 6
		var wg sync.WaitGroup
		errs := make(chan error, n)
		start := time.Now()
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, err := host.Run(ctx, node, sh.UUID, protocol.StartVM, protocol.StartVMCmd{VMInstanceUUID: "vm-" + strconv.Itoa(i), CPUNum: 1, Memory: 1 << 20,
					RootVolume: simRoot("vm-" + strconv.Itoa(i))})
				errs <- err
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(start)
		if got := slow.Stats().MaxRunning; got != 2 {
			t.Fatalf("%d commands ran at once on the host, want the chain level 2", got)
		}
		if took < 3*250*time.Millisecond {
			t.Fatalf("%d commands of 250ms took %v at 2 at a time, want >= 750ms", n, took)
		}
		if vms := slow.Stats().VMs[protocol.VMStateRunning]; vms != n {
			t.Fatalf("%d VMs running, want %d", vms, n)
		}
	})
}

// testAgentEvents posts events to the node's event endpoint as an agent
// does: they are accepted with the host's secret and the host named in the
// URL, and refused otherwise, whatever address they come from.
func testAgentEvents(t *testing.T, ctx context.Context, st *servertest.Stack) {
	a := startAgent(t, "127.0.0.1:0", kvm.Options{})
	h := addHost(t, ctx, st, a, "kvm")
	secret := secretOf(t, st, h.UUID)
	q := "hostUuid=" + h.UUID
	body := `{"vmUuid":"vm-x","vmState":"Running"}`

	tests := []struct {
		name         string
		query, path  string
		secret, body string
		from         string
		want         int
	}{
		{"right secret", q, protocol.EventReportVMState, secret, body, "", http.StatusOK},
		{"right secret from another address", q, protocol.EventReportVMState, secret, body, "127.0.0.2", http.StatusOK},
		{"wrong secret", q, protocol.EventReportVMState, "guess", body, "", http.StatusUnauthorized},
		{"wrong secret from the host's address", q, protocol.EventReportVMState, secret + "x", body, "127.0.0.1", http.StatusUnauthorized},
		{"no secret from the host's address", q, protocol.EventReportVMState, "", body, "127.0.0.1", http.StatusUnauthorized},
		{"no secret from another address", q, protocol.EventReportVMState, "", body, "127.0.0.2", http.StatusUnauthorized},
		{"host in the body", "", protocol.EventReportVMState, secret, `{"hostUuid":"` + h.UUID + `","vmUuid":"vm-x"}`, "", http.StatusBadRequest},
		{"wrong secret, host in the body", "", protocol.EventReportVMState, "guess", `{"hostUuid":"` + h.UUID + `"}`, "", http.StatusBadRequest},
		{"no host named", "", protocol.EventReportVMState, secret, body, "", http.StatusBadRequest},
		{"unknown host", "hostUuid=" + uid.New(), protocol.EventReportVMState, secret, body, "", http.StatusNotFound},
		// A Python agent posts to its sendCommandUrl, which holds the
		// event token, without the header.
		{"the event token of the sendCommandUrl", q + "&token=" + agentclient.EventToken(secret), protocol.EventReportVMState, "", body, "", http.StatusOK},
		{"a wrong event token", q + "&token=" + agentclient.EventToken("guess"), protocol.EventReportVMState, "", body, "", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := postEvent(t, st, tc.query, tc.path, tc.secret, tc.body, tc.from); got != tc.want {
				t.Fatalf("event answered %d, want %d", got, tc.want)
			}
		})
	}

	t.Run("reconnect asked with the wrong secret is ignored", func(t *testing.T) {
		before := a.commands(protocol.PathConnect)
		if got := postEvent(t, st, q, protocol.EventReconnectMe, "guess", "{}", ""); got != http.StatusUnauthorized {
			t.Fatalf("reconnectme with a wrong secret answered %d", got)
		}
		// A right one afterwards is the only reconnect the agent sees.
		if got := postEvent(t, st, q, protocol.EventReconnectMe, secret, "{}", ""); got != http.StatusOK {
			t.Fatalf("reconnectme answered %d", got)
		}
		poll(t, 10*time.Second, func() (bool, string) {
			return a.commands(protocol.PathConnect) >= before+1, "waiting for the asked reconnect"
		})
		if n := a.commands(protocol.PathConnect); n != before+1 {
			t.Fatalf("agent got %d connects, want exactly one more", n-before)
		}
		waitStatus(t, ctx, st, h.UUID, host.StatusConnected)
	})
}

// testDeleteHost: a host without VMs is deleted; one with a VM (created
// through POST /v1/vm-instances) is refused with InvalidState, at the edge
// and by the owner; deleting a missing host succeeds.
func testDeleteHost(t *testing.T, ctx context.Context, st *servertest.Stack) {
	c := st.Client

	t.Run("without VMs", func(t *testing.T) {
		a := startAgent(t, "127.0.0.1:0", kvm.Options{})
		h := addHost(t, ctx, st, a, "doomed")
		if err := deleteAndWait(ctx, c, "hosts", h.UUID, ""); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err := c.Get(ctx, "hosts", h.UUID)
		wantAPIError(t, err, http.StatusNotFound, errcode.ResourceNotFound)
		if n := hostRows(t, st, a); n != 0 {
			t.Fatalf("%d rows after delete", n)
		}
		// A second delete finds nothing to do.
		if err := deleteAndWait(ctx, c, "hosts", h.UUID, ""); err != nil {
			t.Fatalf("second delete: %v", err)
		}
	})

	t.Run("missing host", func(t *testing.T) {
		if err := deleteAndWait(ctx, c, "hosts", uid.New(), client.DeleteEnforcing); err != nil {
			t.Fatalf("delete of a missing host: %v", err)
		}
	})

	t.Run("with a VM", func(t *testing.T) {
		// The host serves the cloud's local primary storage: the VM's
		// root volume goes there.
		a := startAgent(t, "127.0.0.1:0", kvm.Options{Storage: map[string]string{server.DefaultLocalStorageURL: t.TempDir()}})
		h := addHost(t, ctx, st, a, "busy")
		vm, err := client.CreateAndWait[struct {
			UUID     string `json:"uuid"`
			HostUUID string `json:"hostUuid"`
			State    string `json:"state"`
		}](ctx, c, "vm-instances", map[string]any{"name": "vm1", "instanceOfferingUuid": st.Defaults["offering"],
			"imageUuid": st.Defaults["image"], "l3NetworkUuids": []string{st.Defaults["l3"]}, "hostUuid": h.UUID})
		if err != nil {
			t.Fatalf("create a VM on the host: %v", err)
		}
		if vm.HostUUID != h.UUID || vm.State != "Running" {
			t.Fatalf("VM %+v, want Running on %s", vm, h.UUID)
		}
		_, err = c.Delete(ctx, "hosts", h.UUID, "")
		wantAPIError(t, err, http.StatusConflict, errcode.InvalidState, h.UUID, "1 VMs")
		// The owner checks again (a VM may have been placed since the edge
		// checked).
		_, err = managementnode.CallOwner(ctx, st.Node(), host.MsgDeleteHost, host.HostRef{UUID: h.UUID})
		wantCode(t, err, errcode.InvalidState, "still runs 1 VMs")
		if got := getHost(t, ctx, st, h.UUID); got.Status != host.StatusConnected {
			t.Fatalf("refused delete left the host %s", got.Status)
		}
		// A destroyed VM keeps its root volume on the host's local storage
		// until it is expunged: the host cannot go before.
		if err := deleteAndWait(ctx, c, "vm-instances", vm.UUID, ""); err != nil {
			t.Fatalf("destroy the VM: %v", err)
		}
		err = deleteAndWait(ctx, c, "hosts", h.UUID, "")
		wantAPIError(t, err, http.StatusServiceUnavailable, errcode.InvalidState, h.UUID, "1 volumes on its local storage", "expunge")
		if got := getHost(t, ctx, st, h.UUID); got.State != host.StateEnabled {
			t.Fatalf("the refused delete left the host %s, want Enabled", got.State)
		}
		if _, err := client.ActionAndWait[struct{}](ctx, c, "vm-instances", vm.UUID, "expungeVmInstance", map[string]any{}); err != nil {
			t.Fatalf("expunge the VM: %v", err)
		}
		perHost := func(table string) int64 {
			var n int64
			if err := st.DB().Table(table).Where("host_uuid = ?", h.UUID).Count(&n).Error; err != nil {
				t.Fatal(err)
			}
			return n
		}
		if perHost("local_storage_host_refs") == 0 || perHost("l2_network_host_refs") == 0 || perHost("image_caches") == 0 {
			t.Fatal("the host has no local storage directory, bridge or image cache recorded: the test needs them")
		}
		if err := deleteAndWait(ctx, c, "hosts", h.UUID, ""); err != nil {
			t.Fatalf("delete after the VM is gone: %v", err)
		}
		if n := hostRows(t, st, a); n != 0 {
			t.Fatalf("%d rows after delete", n)
		}
		// What other services kept for the host goes with it.
		for _, table := range []string{"local_storage_host_refs", "l2_network_host_refs", "image_caches", "storage_reservations"} {
			if n := perHost(table); n != 0 {
				t.Errorf("%d rows of the deleted host left in %s", n, table)
			}
		}
		var ps struct{ Total, Sum int64 }
		if err := st.DB().Raw(`SELECT p.total_capacity AS total, (SELECT COALESCE(SUM(r.total_capacity), 0) FROM local_storage_host_refs r
			WHERE r.primary_storage_uuid = p.uuid) AS sum FROM primary_storages p WHERE p.url = ?`, server.DefaultLocalStorageURL).Scan(&ps).Error; err != nil {
			t.Fatal(err)
		}
		if ps.Total != ps.Sum {
			t.Errorf("local storage total %d after the host's deletion, want %d, the sum over its remaining hosts", ps.Total, ps.Sum)
		}
	})
}

// simRoot is a root volume on no storage the agent serves (not checked).
func simRoot(vm string) *protocol.VolumeTO {
	return &protocol.VolumeTO{VolumeUUID: "root-" + vm, InstallPath: "/simulated/" + vm, Type: "Root"}
}
