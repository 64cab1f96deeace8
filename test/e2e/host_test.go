package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/internal/testenv"
	hostsvc "mplane/services/host"
	"mplane/uid"
)

type agentProc struct {
	*proc
	port      int
	stateFile string
	args      []string
	// localDir is the directory the agent serves as the host's
	// LocalStorage at localStorageURL.
	localDir string
}

// localStorageURL is the URL of the LocalStorage that every agent of the
// tests serves (its own directory, agentProc.localDir) and setupCloud
// adds.
const localStorageURL = "/e2e/local"

// localDirOf is the LocalStorage directory of the agent with stateFile:
// next to the state file and named after it (agent1.json: agent1-local),
// so an agent restarted with the same state file (under another process
// name) finds its volumes again.
func localDirOf(stateFile string) string {
	base := strings.TrimSuffix(filepath.Base(stateFile), filepath.Ext(stateFile))
	return filepath.Join(filepath.Dir(stateFile), base+"-local")
}

// startAgent runs `mplane agent kvm` with stateFile, serving a LocalStorage
// (localStorageURL, in localDirOf(stateFile)) besides what extra adds.
func startAgent(t *testing.T, name string, port int, stateFile string, extra ...string) *agentProc {
	t.Helper()
	local := localDirOf(stateFile)
	args := append([]string{"agent", "kvm", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--state-file", stateFile, "--open-debug",
		"--storage", localStorageURL + "=" + local}, extra...)
	p := startProc(t, name, nil, args...)
	p.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	testenv.Eventually(t, 30*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("agent %s exited during start-up", name)
		}
		code, err := postJSON(context.Background(), p.url+protocol.PathEcho, nil)
		return err == nil && code == 200
	}, "agent %s up", name)
	return &agentProc{proc: p, port: port, stateFile: stateFile, args: extra, localDir: local}
}

func getHost(t *testing.T, b *cloudbus.Bus, via *server, hostUUID string) hostsvc.HostVO {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := cloudbus.Call(ctx, b, b.Target(hostsvc.BusService, via.uuid), hostsvc.MsgGetHost.Msg, hostsvc.HostRef{UUID: hostUUID},
		cloudbus.WithResource(hostUUID))
	if err != nil {
		t.Fatalf("get host %s: %v", hostUUID, err)
	}
	return h
}

func waitStatus(t *testing.T, b *cloudbus.Bus, via *server, hostUUID, status string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	testenv.Eventually(t, timeout, func() bool { return getHost(t, b, via, hostUUID).Status == status }, "host %s %s", hostUUID, status)
	return time.Since(start)
}

// TestHostsWithRealAgents drives two management nodes and three simulated
// KVM agents, all real processes: adding, losing and regaining hosts, a
// command that never gets its callback, and callbacks that must change
// nothing.
func TestHostsWithRealAgents(t *testing.T) {
	e := newClusterEnv(t)
	e.extraEnv = []string{"MPLANE_HOST_PING_INTERVAL=300ms", "MPLANE_HOST_PING_MAX_FAILURES=3"}
	a, b := e.startServer("A"), e.startServer("B")
	converged(t, 30*time.Second, a, b)
	bus := clientBus(t, e)
	dir := t.TempDir()

	agents := []*agentProc{
		startAgent(t, "agent1", freePort(t), filepath.Join(dir, "agent1.json")),
		startAgent(t, "agent2", freePort(t), filepath.Join(dir, "agent2.json")),
		// agent3 never answers /vm/reboot: a crashed handler.
		startAgent(t, "agent3", freePort(t), filepath.Join(dir, "agent3.json"), "--no-callback-rate", "1", "--fault-paths", protocol.PathRebootVM),
	}

	// 1. Add three hosts through node A; each lands on its owner and ends
	// Connected.
	var hosts []hostsvc.HostVO
	for i, ag := range agents {
		id := uid.New()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		h, err := cloudbus.Call(ctx, bus, bus.Target(hostsvc.BusService, a.uuid), hostsvc.MsgAddKVMHost.Msg,
			hostsvc.AddKVMHostReq{UUID: id, Name: fmt.Sprintf("host%d", i+1), ManagementIP: "127.0.0.1", AgentPort: ag.port},
			cloudbus.WithResource(id))
		cancel()
		if err != nil {
			t.Fatalf("add host %d: %v", i+1, err)
		}
		if h.Status != hostsvc.StatusConnected || h.TotalCPUCapacity == 0 || h.AvailableMemoryCapacity == 0 {
			t.Fatalf("added host %+v, want Connected with capacity", h)
		}
		hosts = append(hosts, h)
	}
	// A second add of the same address is refused with a clear error.
	{
		id := uid.New()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := cloudbus.Call(ctx, bus, bus.Target(hostsvc.BusService, b.uuid), hostsvc.MsgAddKVMHost.Msg,
			hostsvc.AddKVMHostReq{UUID: id, ManagementIP: "127.0.0.1", AgentPort: agents[0].port}, cloudbus.WithResource(id))
		cancel()
		if errcode.CodeOf(err) != errcode.InvalidArgument || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("duplicate address: got %v, want SYS.1007 naming the existing host", err)
		}
	}

	// 2. Kill agent1: its host turns Disconnected after max failures x
	// interval; restarted with the same state file, it is Connected again.
	agents[0].kill()
	took := waitStatus(t, bus, b, hosts[0].UUID, hostsvc.StatusDisconnected, 30*time.Second)
	t.Logf("host Disconnected %v after its agent was killed (ping interval 300ms x 3 failures)", took.Round(10*time.Millisecond))
	agents[0] = startAgent(t, "agent1-again", agents[0].port, agents[0].stateFile)
	took = waitStatus(t, bus, b, hosts[0].UUID, hostsvc.StatusConnected, 60*time.Second)
	t.Logf("host Connected again %v after its agent restarted", took.Round(10*time.Millisecond))

	// 3. A command whose callback never comes fails with SYS.1001 at its
	// deadline and frees its chain slot.
	{
		h := hosts[2]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := cloudbus.Call(ctx, bus, bus.Target(hostsvc.BusService, a.uuid), hostsvc.MsgAgentCommand.Msg,
			hostsvc.AgentCommandReq{HostUUID: h.UUID, Path: protocol.PathRebootVM, Command: []byte(`{"uuid":"vm-x"}`)},
			cloudbus.WithResource(h.UUID), cloudbus.WithTimeout(1500*time.Millisecond))
		cancel()
		if errcode.CodeOf(err) != errcode.Timeout {
			t.Fatalf("command without callback: got %v, want SYS.1001", err)
		}
		testenv.Eventually(t, 20*time.Second, func() bool {
			for _, s := range []*server{a, b} {
				var q struct {
					Queues []struct {
						Signature string `json:"signature"`
					} `json:"queues"`
				}
				if _, err := getJSON(context.Background(), s.url+"/admin/queues", &q); err != nil {
					return false
				}
				for _, x := range q.Queues {
					if x.Signature == "host-"+h.UUID {
						return false
					}
				}
			}
			return true
		}, "host chain slot freed")
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		_, err = cloudbus.Call(ctx, bus, bus.Target(hostsvc.BusService, b.uuid), hostsvc.MsgAgentCommand.Msg,
			hostsvc.AgentCommandReq{HostUUID: h.UUID, Path: protocol.PathListVMs}, cloudbus.WithResource(h.UUID))
		cancel()
		if err != nil {
			t.Fatalf("next command on the host: %v", err)
		}
	}

	// 4. A duplicate callback (a task already completed) and a forged one
	// (unknown task) both get 404 and change nothing.
	var arrivals []kvm.Arrival
	if _, err := getJSON(context.Background(), agents[1].url+protocol.PathDebugArrivals, &arrivals); err != nil {
		t.Fatal(err)
	}
	done := ""
	for _, ar := range arrivals {
		if ar.Path == protocol.PathCapacity && ar.TaskUUID != "" {
			done = ar.TaskUUID
		}
	}
	if done == "" {
		t.Fatal("no completed async task found in agent2's arrivals")
	}
	for _, task := range []string{done, uid.New()} {
		for _, s := range []*server{a, b} {
			req, _ := http.NewRequest(http.MethodPost, s.url+"/asyncrest/callback", bytes.NewReader([]byte(`{"success":false,"error":"forged"}`)))
			req.Header.Set("taskuuid", task)
			resp, err := httpc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("callback for task %s on %s: status %d, want 404", task, s.name, resp.StatusCode)
			}
		}
	}
	// Without taskuuid: 400.
	resp, err := httpc.Post(a.url+"/asyncrest/callback", "application/json", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("callback without taskuuid: %d, want 400", resp.StatusCode)
	}
	if h := getHost(t, bus, a, hosts[1].UUID); h.Status != hostsvc.StatusConnected {
		t.Fatalf("host after forged callbacks: %+v", h)
	}
	// 5. Events reach the host's owner through any node, which
	// authenticates them before it reads them: a wrong secret or none is
	// refused (401), from the host's own address too (here 127.0.0.1, the
	// test's own); an unknown host is 404.
	for _, c := range []struct {
		host, secret string
		want         int
	}{
		{hosts[1].UUID, "not-the-secret", http.StatusUnauthorized},
		{hosts[1].UUID, "", http.StatusUnauthorized},
		{"no-such-host", "any-secret", http.StatusNotFound},
	} {
		for _, s := range []*server{a, b} {
			req, _ := http.NewRequest(http.MethodPost, s.url+"/asyncrest/sendcommand?hostUuid="+c.host,
				bytes.NewReader([]byte(`{"hostUuid":"`+c.host+`","vmUuid":"v1","vmState":"Running"}`)))
			req.Header.Set("commandpath", "/kvm/reportvmstate")
			if c.secret != "" {
				req.Header.Set("X-Mplane-Secret", c.secret)
			}
			resp, err := httpc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("event for %s with secret %q via %s: %d, want %d", c.host, c.secret, s.name, resp.StatusCode, c.want)
			}
		}
	}

	// No agent saw two commands on one VM at once.
	for _, ag := range agents {
		var st kvm.Stats
		if _, err := getJSON(context.Background(), ag.url+protocol.PathDebugStats, &st); err != nil {
			t.Fatal(err)
		}
		if st.Overlaps != 0 {
			t.Fatalf("agent %s counted %d overlapping commands", ag.name, st.Overlaps)
		}
	}
}
