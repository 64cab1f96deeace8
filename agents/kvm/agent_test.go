package kvm

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/errcode"
)

func TestVMStateMachine(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{})
	steps := []struct {
		path    string
		cmd     any
		wantErr string
		want    string // the agent's state of v1 afterwards
	}{
		{protocol.PathRebootVM, protocol.RebootVMCmd{UUID: "v1"}, "not running", ""},
		{protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1"}, "", ""},
		{protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1"), CPUNum: 2, Memory: 1 << 30}, "", "Running"},
		{protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1"), CPUNum: 2, Memory: 1 << 30}, "", "Running"},
		{protocol.PathRebootVM, protocol.RebootVMCmd{UUID: "v1"}, "", "Running"},
		{protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1", Type: "grace"}, "", "Shutdown"},
		{protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1"}, "", "Shutdown"},
		{protocol.PathRebootVM, protocol.RebootVMCmd{UUID: "v1"}, "not running", "Shutdown"},
		{protocol.PathMigrateVM, protocol.MigrateVMCmd{VMUUID: "v1", DestAgentURL: a.url}, "not running", "Shutdown"},
		{protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1"), Memory: 1 << 40}, "not enough memory", "Shutdown"},
		{protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, "", "Running"},
		{protocol.PathDestroyVM, protocol.DestroyVMCmd{UUID: "v1"}, "", ""},
		{protocol.PathDestroyVM, protocol.DestroyVMCmd{UUID: "v1"}, "", ""},
		{protocol.PathStartVM, protocol.StartVMCmd{}, "vmInstanceUuid is required", ""},
	}
	for i, s := range steps {
		var rsp protocol.VMRsp
		err := m.client.Call(t.Context(), a.url, s.path, s.cmd, &rsp)
		switch {
		case s.wantErr == "" && err != nil:
			t.Fatalf("step %d %s: %v", i, s.path, err)
		case s.wantErr != "" && (!errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), s.wantErr)):
			t.Fatalf("step %d %s: err = %v, want AgentError containing %q", i, s.path, err, s.wantErr)
		}
		if got := a.vmState("v1"); got != s.want {
			t.Fatalf("step %d %s: state %q, want %q", i, s.path, got, s.want)
		}
	}
}

func TestListPingCapacity(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{CPUNum: 4, MemoryBytes: 8 << 30, Version: "v9"})

	var ping protocol.PingRsp
	if err := m.client.Call(t.Context(), a.url, protocol.PathPing, protocol.PingCmd{HostUUID: "h1"}, &ping); err != nil {
		t.Fatal(err)
	}
	if ping.HostUUID != "" || ping.Version != "v9" {
		t.Errorf("ping before connect %+v; want no host UUID", ping)
	}
	m.connect(t, a, "h1", "")
	if err := m.client.Call(t.Context(), a.url, protocol.PathPing, protocol.PingCmd{HostUUID: "h1"}, &ping); err != nil {
		t.Fatal(err)
	}
	if ping.HostUUID != "h1" || ping.SendCommandURL != m.eventURL {
		t.Errorf("ping %+v", ping)
	}

	for _, id := range []string{"v2", "v1"} {
		if err := m.client.Call(t.Context(), a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: id, RootVolume: testRoot(id), CPUNum: 1, Memory: 1 << 30}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.client.Call(t.Context(), a.url, protocol.PathStopVM, protocol.StopVMCmd{UUID: "v2"}, nil); err != nil {
		t.Fatal(err)
	}
	var capa protocol.CapacityRsp
	if err := m.client.Call(t.Context(), a.url, protocol.PathCapacity, struct{}{}, &capa); err != nil {
		t.Fatal(err)
	}
	if capa.CPUNum != 4 || capa.TotalMemory != 8<<30 || capa.UsedMemory != 1<<30 || capa.UsedCPU != 1 {
		t.Errorf("capacity %+v", capa)
	}
	var list protocol.ListVMsRsp
	if err := m.client.Call(t.Context(), a.url, protocol.PathListVMs, struct{}{}, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.VMs) != 2 || list.VMs[0].UUID != "v1" || list.States["v1"] != "Running" || list.States["v2"] != "Shutdown" {
		t.Errorf("list %+v", list)
	}
}

func TestEventsOnStateChange(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{})
	call := func(path string, cmd any) {
		t.Helper()
		if err := m.client.Call(t.Context(), a.url, path, cmd, nil); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	call(protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v0", RootVolume: testRoot("v0")}) // not connected yet: nowhere to send
	m.connect(t, a, "h1", "")
	call(protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")})
	call(protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}) // no change, no event
	call(protocol.PathRebootVM, protocol.RebootVMCmd{UUID: "v1"})
	call(protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1"})
	call(protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")})
	postDebug(t, a.url+protocol.PathDebugCrashVM, `{"vmUuid":"v1"}`, http.StatusOK)
	call(protocol.PathDestroyVM, protocol.DestroyVMCmd{UUID: "v1"})
	call(protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v2", RootVolume: testRoot("v2")})
	postDebug(t, a.url+protocol.PathDebugPowerOffVM, `{"vmUuid":"v2"}`, http.StatusOK)
	call(protocol.PathDestroyVM, protocol.DestroyVMCmd{UUID: "v2"}) // already Shutdown: no event

	want := []string{
		"/kvm/reportvmstate Running",
		"/kvm/reportvmreboot",
		"/kvm/reportvmstate Shutdown",
		"/kvm/reportvmstate Running",
		"/kvm/reportvmcrash",
		"/kvm/reportvmstate Crashed",
		"/kvm/reportvmstate Shutdown",
		"/kvm/reportvmstate Running",
		"/kvm/reportvmshutdown",
		"/kvm/reportvmstate Shutdown",
	}
	eventually(t, "events", func() bool { return len(m.eventsSoFar()) >= len(want) })
	if got := m.eventPaths(); !slices.Equal(got, want) {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
	ev := m.eventsSoFar()[0]
	if !strings.Contains(string(ev.Body), `"hostUuid":"h1"`) || !strings.Contains(string(ev.Body), `"vmUuid":"v1"`) {
		t.Errorf("state event body %s", ev.Body)
	}
	if ev.Secret != "" {
		t.Errorf("legacy host's event carries a secret %q", ev.Secret)
	}
	if st := a.Stats(); st.EventsUnsent != 1 {
		t.Errorf("EventsUnsent %d, want 1 (the start before connect)", st.EventsUnsent)
	}
}

func postDebug(t *testing.T, url, body string, want int) {
	t.Helper()
	rsp, err := http.Post(url, protocol.JSONContentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = rsp.Body.Close()
	if rsp.StatusCode != want {
		t.Fatalf("POST %s: %d, want %d", url, rsp.StatusCode, want)
	}
}

func TestStateFileSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "kvm.json")
	m := newMgmt(t)
	sec := agentclient.WithSecret("s1")

	a1, err := New(Options{StateFile: file, Server: fastServer()})
	if err != nil {
		t.Fatal(err)
	}
	url, stop := serve(t, a1)
	ta := &testAgent{Agent: a1, url: url}
	m.connect(t, ta, "h1", "s1")
	for _, id := range []string{"v1", "v2"} {
		if err := m.client.Call(t.Context(), url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: id, RootVolume: testRoot(id), CPUNum: 2, Memory: 1 << 20}, nil, sec); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.client.Call(t.Context(), url, protocol.PathStopVM, protocol.StopVMCmd{UUID: "v2"}, nil, sec); err != nil {
		t.Fatal(err)
	}
	before := a1.VMs()
	stop()

	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}

	b := startAgent(t, Options{StateFile: file})
	if got := b.VMs(); !reflect.DeepEqual(got, before) {
		t.Fatalf("after restart VMs %+v, want %+v", got, before)
	}
	// The secret survived: no command without it.
	err = m.client.Call(t.Context(), b.url, protocol.PathPing, protocol.PingCmd{}, nil)
	var se *agentclient.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Fatalf("ping without secret after restart: %v, want 401", err)
	}
	// The connection did not: ping has no host UUID, the node reconnects.
	var ping protocol.PingRsp
	if err := m.client.Call(t.Context(), b.url, protocol.PathPing, protocol.PingCmd{HostUUID: "h1"}, &ping, sec); err != nil {
		t.Fatal(err)
	}
	if ping.HostUUID != "" {
		t.Errorf("ping after restart reports host %q, want none", ping.HostUUID)
	}
	m.connect(t, b, "h1", "", sec)
}

// serve serves a on a loopback port; stop shuts it down.
func serve(t *testing.T, a *Agent) (url string, stop func()) {
	t.Helper()
	l, err := newLoopbackListener()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(l) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := a.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			<-served
		})
	}
	t.Cleanup(stop)
	return "http://" + l.Addr().String(), stop
}

func TestCorruptStateFileIsAnError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kvm.json")
	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{StateFile: file}); err == nil {
		t.Fatal("New accepted a corrupt state file")
	}
}

func TestFailureInjection(t *testing.T) {
	m := newMgmt(t)
	t.Run("fail rate", func(t *testing.T) {
		a := startAgent(t, Options{FailRate: 1})
		err := m.client.Call(t.Context(), a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, nil)
		if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), "injected failure") {
			t.Fatalf("err = %v, want an injected AgentError", err)
		}
		if a.vmState("v1") != "" {
			t.Error("a failed start changed the state")
		}
		// Sync commands are not subject to injection.
		m.connect(t, a, "h1", "")
		if st := a.Stats(); st.InjectedFailures != 1 {
			t.Errorf("InjectedFailures %d", st.InjectedFailures)
		}
	})
	t.Run("no callback rate", func(t *testing.T) {
		a := startAgent(t, Options{NoCallbackRate: 1})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		err := m.client.Call(ctx, a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, nil)
		if !errcode.Has(err, errcode.Timeout) {
			t.Fatalf("err = %v, want Timeout", err)
		}
		eventually(t, "no-reply to be counted", func() bool {
			st := a.Stats()
			return st.InjectedNoCallbacks == 1 && st.Server.NoReply == 1
		})
	})
	t.Run("rates in between", func(t *testing.T) {
		a := startAgent(t, Options{FailRate: 0.5, Seed: 42})
		var failed int
		for i := 0; i < 40; i++ {
			if err := m.client.Call(t.Context(), a.url, protocol.PathPing, protocol.PingCmd{}, nil); err != nil {
				failed++
			}
		}
		if failed == 0 || failed == 40 {
			t.Errorf("%d of 40 failed with fail rate 0.5", failed)
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{FailRate: 1.5}, {NoCallbackRate: -0.1}, {Latency: -time.Second}, {CPUNum: -1}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted invalid options", o)
		}
	}
}

func TestOverlapCounterDetectsConcurrentCommandsOnOneVM(t *testing.T) {
	m := newMgmt(t)
	entered := make(chan string, 4)
	release := make(chan struct{})
	a := startAgent(t, Options{}, func(a *Agent) {
		a.testHookEntered = func(vm, _ string) {
			entered <- vm
			<-release
		}
	})
	var wg sync.WaitGroup
	for _, cmd := range []struct {
		path string
		cmd  any
	}{
		{protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}},
		{protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1"}},
	} {
		wg.Go(func() {
			if err := m.client.Call(t.Context(), a.url, cmd.path, cmd.cmd, nil); err != nil {
				t.Error(err)
			}
		})
	}
	// Both commands are inside their window at the same time.
	<-entered
	<-entered
	if st := a.Stats(); st.Overlaps != 1 || st.OverlapsByVM["v1"] != 1 || st.Running != 2 {
		t.Errorf("stats %+v; want one overlap on v1 with two running", st)
	}
	close(release)
	wg.Wait()
	if st := a.Stats(); st.Running != 0 || st.MaxRunning != 2 {
		t.Errorf("after: stats %+v", st)
	}
}

func TestOverlapCounterStaysZeroWhenSerialized(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{Latency: time.Millisecond})
	var wg sync.WaitGroup
	// Each VM's commands one after the other (what the node's chain task
	// does); different VMs in parallel.
	for _, vm := range []string{"v1", "v2", "v3", "v4"} {
		wg.Go(func() {
			for _, c := range []struct {
				path string
				cmd  any
			}{
				{protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: vm, RootVolume: testRoot(vm)}},
				{protocol.PathRebootVM, protocol.RebootVMCmd{UUID: vm}},
				{protocol.PathStopVM, protocol.StopVMCmd{UUID: vm}},
				{protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: vm, RootVolume: testRoot(vm)}},
				{protocol.PathDestroyVM, protocol.DestroyVMCmd{UUID: vm}},
			} {
				if err := m.client.Call(t.Context(), a.url, c.path, c.cmd, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := a.Stats()
	if st.Overlaps != 0 {
		t.Errorf("Overlaps %d, want 0: %+v", st.Overlaps, st.OverlapsByVM)
	}
	if st.Commands[protocol.PathStartVM] != 8 || st.Arrivals.Count != 20 {
		t.Errorf("commands %v, arrivals %+v", st.Commands, st.Arrivals)
	}
}

func TestSecretEnforcement(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{})
	status := func(err error) int {
		var se *agentclient.StatusError
		if errors.As(err, &se) {
			return se.Status
		}
		if err != nil {
			return -1
		}
		return http.StatusOK
	}
	ping := func(opts ...agentclient.CallOption) int {
		return status(m.client.Call(t.Context(), a.url, protocol.PathPing, protocol.PingCmd{}, nil, opts...))
	}
	connect := func(secret string, opts ...agentclient.CallOption) int {
		return status(m.client.CallSync(t.Context(), a.url, protocol.PathConnect,
			protocol.ConnectCmd{HostUUID: "h1", SendCommandURL: m.eventURL, Secret: secret}, nil, opts...))
	}

	if got := connect(""); got != 200 {
		t.Fatalf("legacy connect: %d", got)
	}
	if got := ping(); got != 200 {
		t.Fatalf("legacy host, ping without secret: %d, want 200", got)
	}
	if got := connect("s1"); got != 200 {
		t.Fatalf("connect with secret: %d", got)
	}
	if got := ping(); got != http.StatusUnauthorized {
		t.Errorf("ping without secret: %d, want 401", got)
	}
	if got := ping(agentclient.WithSecret("nope")); got != http.StatusUnauthorized {
		t.Errorf("ping with a wrong secret: %d, want 401", got)
	}
	if got := ping(agentclient.WithSecret("s1")); got != 200 {
		t.Errorf("ping with the secret: %d, want 200", got)
	}
	if got := status(m.client.CallSync(t.Context(), a.url, protocol.PathEcho, nil, nil)); got != 200 {
		t.Errorf("echo without secret: %d, want 200", got)
	}
	if got := status(m.client.Call(t.Context(), a.url, protocol.PathEcho, nil, nil)); got != http.StatusInternalServerError {
		t.Errorf("echo with a taskuuid: %d, want 500 (a sync path)", got)
	}
	if got := connect("evil"); got != http.StatusUnauthorized {
		t.Errorf("takeover connect without the secret: %d, want 401", got)
	}
	// Rotation: connect with the current secret, giving a new one.
	if got := connect("s2", agentclient.WithSecret("s1")); got != 200 {
		t.Errorf("rotating connect: %d", got)
	}
	if got := ping(agentclient.WithSecret("s1")); got != http.StatusUnauthorized {
		t.Errorf("old secret after rotation: %d, want 401", got)
	}
	if err := m.client.Call(t.Context(), a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, nil, agentclient.WithSecret("s2")); err != nil {
		t.Fatal(err)
	}
	if a.vmState("v1") != "Running" {
		t.Fatal("start with the secret did not run")
	}
	eventually(t, "state event", func() bool { return len(m.eventsSoFar()) == 1 })
	if ev := m.eventsSoFar()[0]; ev.Secret != "s2" {
		t.Errorf("event secret %q, want s2", ev.Secret)
	}
	// Refused commands did not run and were counted.
	if st := a.Stats(); st.Rejected != 4 || st.Server.Rejected != 4 {
		t.Errorf("Rejected %d (server %d), want 4", st.Rejected, st.Server.Rejected)
	}
}

func TestMigrateBetweenAgents(t *testing.T) {
	m := newMgmt(t)
	src := startAgent(t, Options{})
	dst := startAgent(t, Options{MemoryBytes: 4 << 30})
	m.connect(t, src, "h-src", "")
	m.connect(t, dst, "h-dst", "dst-secret")
	nic := protocol.NicTO{UUID: "nic-1", Mac: "fa:00:00:00:00:01", IP: "10.0.0.5", L3NetworkUUID: "l3-1", UseVirtio: true}
	if err := m.client.Call(t.Context(), src.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1"), CPUNum: 2, Memory: 2 << 30,
		Nics: []protocol.NicTO{nic}}, nil); err != nil {
		t.Fatal(err)
	}

	err := m.client.Call(t.Context(), src.url, protocol.PathMigrateVM, protocol.MigrateVMCmd{VMUUID: "v1", DestAgentURL: dst.url, DestSecret: "wrong"}, nil)
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("migration with a wrong destination secret: %v", err)
	}
	if src.vmState("v1") != "Running" || dst.vmState("v1") != "" {
		t.Fatal("a failed migration moved the protocol.VM")
	}

	if err := m.client.Call(t.Context(), src.url, protocol.PathMigrateVM, protocol.MigrateVMCmd{VMUUID: "v1", DestAgentURL: dst.url, DestSecret: "dst-secret"}, nil); err != nil {
		t.Fatal(err)
	}
	if src.vmState("v1") != "" || dst.vmState("v1") != "Running" {
		t.Fatalf("after migration: source %q, destination %q", src.vmState("v1"), dst.vmState("v1"))
	}
	if got := dst.VMs()[0]; got.CPUNum != 2 || got.Memory != 2<<30 ||
		!reflect.DeepEqual(got.Volumes, []protocol.VolumeTO{*testRoot("v1")}) || !reflect.DeepEqual(got.NICs, []protocol.NicTO{nic}) {
		t.Errorf("VM on destination %+v, want its root volume and NIC kept", got)
	}
	eventually(t, "destination's event", func() bool {
		for _, ev := range m.eventsSoFar() {
			if ev.Secret == "dst-secret" && strings.Contains(string(ev.Body), `"hostUuid":"h-dst"`) &&
				strings.Contains(string(ev.Body), `"vmState":"Running"`) {
				return true
			}
		}
		return false
	})

	// The destination is now full: a second VM cannot come in.
	if err := m.client.Call(t.Context(), src.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v2", RootVolume: testRoot("v2"), Memory: 3 << 30}, nil); err != nil {
		t.Fatal(err)
	}
	err = m.client.Call(t.Context(), src.url, protocol.PathMigrateVM, protocol.MigrateVMCmd{VMUUID: "v2", DestAgentURL: dst.url, DestSecret: "dst-secret"}, nil)
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), "not enough memory") {
		t.Fatalf("migration to a full host: %v", err)
	}
	if src.vmState("v2") != "Running" {
		t.Error("VM lost in a failed migration")
	}
}

func TestDeadlineFromCommandAbortsSlowCommand(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := m.client.Call(ctx, a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, nil)
	if !errcode.Has(err, errcode.Timeout) {
		t.Fatalf("err = %v, want Timeout", err)
	}
	// The agent gives up too (timeoutMs), long before its hour of latency,
	// and sends no result nobody waits for.
	eventually(t, "agent to give up", func() bool {
		st := a.Stats().Server
		return st.Running == 0 && st.Expired == 1
	})
	if st := a.Stats().Server; st.CallbacksDelivered != 0 {
		t.Errorf("agent sent a result after the deadline: %+v", st)
	}
	if a.vmState("v1") != "" {
		t.Error("abandoned command changed the state")
	}
}

func TestLostReplyActsWithoutAnswering(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{LostReplyRate: 1, FaultPaths: []string{protocol.PathStopVM}})
	if err := m.client.Call(t.Context(), a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: "v1", RootVolume: testRoot("v1")}, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err := m.client.Call(ctx, a.url, protocol.PathStopVM, protocol.StopVMCmd{UUID: "v1"}, nil)
	if !errcode.Has(err, errcode.Timeout) {
		t.Fatalf("stop with its reply lost: %v, want Timeout", err)
	}
	if st := a.vmState("v1"); st != protocol.VMStateShutdown {
		t.Fatalf("the stop did not act: %q", st)
	}
	if st := a.Stats(); st.InjectedLostReplies != 1 {
		t.Errorf("InjectedLostReplies %d, want 1", st.InjectedLostReplies)
	}
}

// A command under an older fencing token than one the agent has seen is
// refused (409) and acts on nothing; newer and equal tokens, and commands
// without one, pass.
func TestFencingTokens(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{})
	fence := func(n string) agentclient.CallOption { return agentclient.WithHeader(protocol.FenceHeader, n) }
	start := func(vm string, opts ...agentclient.CallOption) error {
		return m.client.Call(t.Context(), a.url, protocol.PathStartVM, protocol.StartVMCmd{VMInstanceUUID: vm, RootVolume: testRoot(vm)}, nil, opts...)
	}
	if err := start("v1", fence("7")); err != nil {
		t.Fatal(err)
	}
	err := start("v2", fence("6"))
	var se *agentclient.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusConflict || !strings.Contains(se.Text, "stale fencing token 6") ||
		!errcode.Has(err, errcode.NodeUnavailable) || !errcode.IsRetryable(err) {
		t.Fatalf("a command under an older token: %v, want a retryable NodeUnavailable from a 409 naming the stale token", err)
	}
	if a.vmState("v2") != "" {
		t.Error("the refused command acted")
	}
	for _, opts := range [][]agentclient.CallOption{{fence("7")}, {fence("8")}, nil} {
		if err := m.client.Call(t.Context(), a.url, protocol.PathPing, protocol.PingCmd{}, nil, opts...); err != nil {
			t.Errorf("ping %v: %v", opts, err)
		}
	}
	if err := start("v3", fence("7")); err == nil {
		t.Error("token 7 accepted after 8")
	}
	if err := m.client.Call(t.Context(), a.url, protocol.PathPing, protocol.PingCmd{}, nil, fence("x")); err == nil {
		t.Error("a malformed token was accepted")
	}
	if st := a.Stats(); st.StaleFenceRefused != 2 {
		t.Errorf("StaleFenceRefused %d, want 2", st.StaleFenceRefused)
	}
}
