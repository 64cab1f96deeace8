package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/internal/testenv"
	mserver "mplane/server"
	"mplane/services/vm"
)

// startEmbedded runs `mplane run` as a user would and returns its API URL
// and the admin password it printed.
func startEmbedded(t *testing.T) (*proc, string) {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	p := startProc(t, "run", nil, "run", "--data-dir", filepath.Join(dir, "data"),
		"--api-listen", fmt.Sprintf("127.0.0.1:%d", port), "--agent-port", "0", "--host-ping-interval", "500ms")
	p.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	var password string
	re := regexp.MustCompile(`password: ([A-Z0-9]+)`)
	testenv.Eventually(t, 60*time.Second, func() bool {
		if p.exited() {
			t.Fatal("mplane run exited during start-up")
		}
		p.mu.Lock()
		out := p.stdout.String()
		p.mu.Unlock()
		if m := re.FindStringSubmatch(out); m != nil && strings.Contains(out, "mplane is running") {
			password = m[1]
			return true
		}
		return false
	}, "mplane run up")
	return p, password
}

// TestEmbeddedVMLifecycle drives `mplane run` only through its REST API:
// 50 VMs created at once, then stopped, started, rebooted and destroyed;
// capacity and IPs come back to where they started.
func TestEmbeddedVMLifecycle(t *testing.T) {
	p, password := startEmbedded(t)
	c := login(t, p.url, password)
	cl := cloud{offering: firstUUID(t, c, "instance-offerings"), image: firstUUID(t, c, "images"), l3: firstUUID(t, c, "l3-networks")}
	testenv.Eventually(t, 30*time.Second, func() bool {
		hs := hostsOf(t, c)
		for _, h := range hs {
			if h.Status != "Connected" {
				return false
			}
		}
		return len(hs) == 3
	}, "3 simulated hosts Connected")
	before := capacityOf(t, c, cl.l3)

	const n = 50
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vms := make([]vm.VmInstanceVO, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			vms[i], errs[i] = createVM(ctx, c, cl, fmt.Sprintf("vm-%02d", i), nil)
		}(i)
	}
	wg.Wait()
	ips := map[string]bool{}
	for i := range vms {
		if errs[i] != nil {
			t.Fatalf("create vm %d: %v", i, errs[i])
		}
		v := vms[i]
		if v.State != vm.StateRunning || v.HostUUID == "" || len(v.VMNics) != 1 || v.VMNics[0].IP == "" {
			t.Fatalf("vm %d not Running with a host and an IP: %+v", i, v)
		}
		if ips[v.VMNics[0].IP] {
			t.Fatalf("IP %s given to two VMs", v.VMNics[0].IP)
		}
		ips[v.VMNics[0].IP] = true
	}
	mid := capacityOf(t, c, cl.l3)
	if mid.usedIPs != before.usedIPs+n {
		t.Fatalf("used IPs %d, want %d", mid.usedIPs, before.usedIPs+n)
	}

	// Each operation on every VM, all VMs at once.
	for _, op := range []struct {
		action string
		body   any
		want   string
	}{
		{"stopVmInstance", map[string]any{"type": "grace"}, vm.StateStopped},
		{"startVmInstance", nil, vm.StateRunning},
		{"rebootVmInstance", nil, vm.StateRunning},
	} {
		for i := range vms {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				var got vm.VmInstanceVO
				got, errs[i] = vmAction(ctx, c, vms[i].UUID, op.action, op.body)
				if errs[i] == nil && got.State != op.want {
					errs[i] = fmt.Errorf("state %s after %s, want %s", got.State, op.action, op.want)
				}
			}(i)
		}
		wg.Wait()
		for i := range vms {
			if errs[i] != nil {
				t.Fatalf("%s vm %d: %v", op.action, i, errs[i])
			}
		}
	}
	// An illegal transition is refused with a clear error.
	if _, err := vmAction(ctx, c, vms[0].UUID, "startVmInstance", nil); errcode.CodeOf(err) != errcode.InvalidState ||
		!strings.Contains(err.Error(), "it is Running") {
		t.Fatalf("start of a Running VM: got %v, want SYS.1006 saying it is Running", err)
	}
	for i := range vms {
		wg.Add(1)
		go func(i int) { defer wg.Done(); errs[i] = destroyVM(ctx, c, vms[i].UUID) }(i)
	}
	wg.Wait()
	for i := range vms {
		if errs[i] != nil {
			t.Fatalf("destroy vm %d: %v", i, errs[i])
		}
	}
	after := capacityOf(t, c, cl.l3)
	for h, cpu := range before.cpu {
		if after.cpu[h] != cpu || after.mem[h] != before.mem[h] {
			t.Fatalf("host %s capacity cpu %d mem %d after destroy, want %d %d", h, after.cpu[h], after.mem[h], cpu, before.mem[h])
		}
	}
	if after.usedIPs != before.usedIPs {
		t.Fatalf("used IPs %d after destroy, want %d", after.usedIPs, before.usedIPs)
	}
}

// TestAgentStartFailureLeaksNothing: a host whose agent fails /vm/start;
// creating a VM on it fails with the agent's error, and no capacity, IP or
// VM row is left behind.
func TestAgentStartFailureLeaksNothing(t *testing.T) {
	p, password := startEmbedded(t)
	c := login(t, p.url, password)
	// The host serves the embedded cloud's LocalStorage too: the create
	// gets as far as starting the VM.
	local := t.TempDir()
	ag := startAgent(t, "failing-agent", freePort(t), filepath.Join(t.TempDir(), "a.json"),
		"--storage", mserver.DefaultLocalStorageURL+"="+local, "--fail-rate", "1", "--fault-paths", protocol.PathStartVM)
	cl := cloud{offering: firstUUID(t, c, "instance-offerings"), image: firstUUID(t, c, "images"), l3: firstUUID(t, c, "l3-networks"),
		cluster: firstUUID(t, c, "clusters")}
	h := addHost(t, c, cl, "failing", ag.port)
	before := capacityOf(t, c, cl.l3)
	var vmsBefore, volsBefore int
	if _, total, err := c.Query(context.Background(), "vm-instances", client.Query{Count: true}); err == nil {
		vmsBefore = total
	}
	if _, total, err := c.Query(context.Background(), "volumes", client.Query{Count: true}); err == nil {
		volsBefore = total
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := createVM(ctx, c, cl, "doomed", map[string]any{"hostUuid": h.UUID})
	if errcode.CodeOf(err) != errcode.AgentError || !strings.Contains(err.Error(), "injected") || !strings.Contains(err.Error(), "start-on-hypervisor") {
		t.Fatalf("got %v, want the agent's error naming the failed step", err)
	}
	after := capacityOf(t, c, cl.l3)
	if after.cpu[h.UUID] != before.cpu[h.UUID] || after.mem[h.UUID] != before.mem[h.UUID] || after.usedIPs != before.usedIPs {
		t.Fatalf("leaked: capacity %d/%d -> %d/%d, used IPs %d -> %d", before.cpu[h.UUID], before.mem[h.UUID],
			after.cpu[h.UUID], after.mem[h.UUID], before.usedIPs, after.usedIPs)
	}
	if _, total, err := c.Query(context.Background(), "vm-instances", client.Query{Count: true}); err != nil || total != vmsBefore {
		t.Fatalf("VM rows %d after a failed create, want %d (%v)", total, vmsBefore, err)
	}
	// Its root volume was made before the start failed: the rollback
	// deleted its file and its row.
	if _, total, err := c.Query(context.Background(), "volumes", client.Query{Count: true}); err != nil || total != volsBefore {
		t.Fatalf("volume rows %d after a failed create, want %d (%v)", total, volsBefore, err)
	}
	if files := filesUnder(t, filepath.Join(local, "rootVolumes")); len(files) != 0 {
		t.Fatalf("root volume files left by a failed create: %v", files)
	}
}

// TestBadInputIsAnsweredClearly: every kind of caller mistake gets a 4xx
// with a catalogue code and a message that says what is wrong.
func TestBadInputIsAnsweredClearly(t *testing.T) {
	p, password := startEmbedded(t)
	c := login(t, p.url, password)
	off, img, l3 := firstUUID(t, c, "instance-offerings"), firstUUID(t, c, "images"), firstUUID(t, c, "l3-networks")
	auth := "OAuth " + c.Session()
	good := func(extra map[string]any) string {
		params := map[string]any{"name": "x", "instanceOfferingUuid": off, "imageUuid": img, "l3NetworkUuids": []string{l3}}
		for k, v := range extra {
			if v == nil {
				delete(params, k)
			} else {
				params[k] = v
			}
		}
		return string(mustJSON(map[string]any{"params": params}))
	}
	missing := "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name, method, path, body, auth string
		status                         int
		code                           errcode.Code
		says                           string
	}{
		{"malformed JSON", "POST", "/v1/vm-instances", `{"params": {"name": "x",}`, auth, 400, errcode.InvalidArgument, "malformed JSON"},
		{"missing field", "POST", "/v1/vm-instances", good(map[string]any{"imageUuid": nil}), auth, 400, errcode.InvalidArgument, "imageUuid is required"},
		{"wrong type", "POST", "/v1/vm-instances", good(map[string]any{"l3NetworkUuids": "abc"}), auth, 400, errcode.InvalidArgument, "l3NetworkUuids"},
		{"unknown offering", "POST", "/v1/vm-instances", good(map[string]any{"instanceOfferingUuid": missing}), auth, 400, errcode.InvalidArgument, "instanceOfferingUuid " + missing + " does not exist"},
		{"unknown image", "POST", "/v1/vm-instances", good(map[string]any{"imageUuid": missing}), auth, 400, errcode.InvalidArgument, "imageUuid " + missing + " does not exist"},
		{"unknown L3", "POST", "/v1/vm-instances", good(map[string]any{"l3NetworkUuids": []string{missing}}), auth, 400, errcode.InvalidArgument, "L3 network " + missing + " does not exist"},
		{"negative CPU", "POST", "/v1/instance-offerings", `{"params": {"name": "bad", "cpuNum": -1, "memorySize": 1073741824}}`, auth, 400, errcode.InvalidArgument, "cpuNum must be between 1 and 1024"},
		{"unknown query field", "GET", "/v1/vm-instances?q=colour=red", "", auth, 400, errcode.InvalidArgument, "colour"},
		{"unknown query operator", "GET", "/v1/vm-instances?q=cpuNum%3D%3E1", "", auth, 400, errcode.InvalidArgument, "cpuNum"},
		{"unknown VM in the path", "PUT", "/v1/vm-instances/" + missing + "/actions", `{"startVmInstance": {}}`, auth, 404, errcode.ResourceNotFound, "not found"},
		{"no session", "GET", "/v1/vm-instances", "", "", 401, errcode.Unauthenticated, "Authorization"},
		{"unknown session", "GET", "/v1/vm-instances", "", "OAuth " + missing, 401, errcode.Unauthenticated, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, p.url+tc.path, bytes.NewReader([]byte(tc.body)))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			var ans struct {
				Error *errcode.Error `json:"error"`
			}
			resp, err := httpc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			_ = jsonDecode(resp, &ans)
			if resp.StatusCode != tc.status || ans.Error == nil || ans.Error.Code != tc.code || !strings.Contains(ans.Error.Error(), tc.says) {
				t.Fatalf("%s %s: %d %+v, want %d %s saying %q", tc.method, tc.path, resp.StatusCode, ans.Error, tc.status, tc.code, tc.says)
			}
		})
	}
	// A session that was logged out is refused too.
	req, _ := http.NewRequest("DELETE", p.url+"/v1/accounts/sessions/"+c.Session(), nil)
	if resp, err := httpc.Do(req); err == nil {
		resp.Body.Close()
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, _, err := c.Query(context.Background(), "vm-instances", client.Query{})
		return errcode.CodeOf(err) == errcode.Unauthenticated
	}, "logged-out session refused")
}
