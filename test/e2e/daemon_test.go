package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/internal/testenv"
	"mplane/managementnode"
)

// daemonResult is one run of `mplane daemon`.
type daemonResult struct {
	stdout, stderr string
	code           int
}

// daemon runs `mplane daemon --data-dir data args...`.
func daemon(t *testing.T, data string, args ...string) daemonResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"daemon", "--data-dir", data}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := daemonResult{stdout: out.String(), stderr: errb.String()}
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("mplane daemon %q: %v", args, err)
		}
		r.code = cmd.ProcessState.ExitCode()
	}
	return r
}

// daemonStatus is the node's status through `mplane daemon ... status`,
// ok false if the command failed.
func daemonStatus(t *testing.T, data, node string) (managementnode.Status, bool) {
	t.Helper()
	r := daemon(t, data, node, "status")
	var st managementnode.Status
	if r.code != 0 {
		return st, false
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status answer %q: %v", r.stdout, err)
	}
	return st, true
}

// TestDaemonRespawnAndExit drives `mplane run` through `mplane daemon`:
// the commands, their errors, respawn (a new node UUID in the same
// process) and exit (the process exits 0 and removes its socket).
func TestDaemonRespawnAndExit(t *testing.T) {
	port := freePort(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startProc(t, "run", []string{"MPLANE_ADMIN_PASSWORD=" + e2ePassword}, "run", "--hosts", "0", "--data-dir", data,
		"--api-listen", fmt.Sprintf("127.0.0.1:%d", port), "--agent-port", "0")
	p.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	testenv.Eventually(t, 60*time.Second, func() bool {
		if p.exited() {
			t.Fatal("mplane run exited during start-up")
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return strings.Contains(p.stdout.String(), "mplane is running")
	}, "mplane run up")
	run := filepath.Join(data, "run")
	if fi, err := os.Stat(run); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("run directory: %v, %v; want mode 0700", fi.Mode(), err)
	}

	first, ok := daemonStatus(t, data, "mplane")
	if !ok || first.State != managementnode.StateRunning || len(first.NodeUUID) != 32 {
		t.Fatalf("status: %+v", first)
	}
	sock := filepath.Join(run, "mplane-"+first.NodeUUID+".asok")
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v, %v; want mode 0600", sock, fi.Mode(), err)
	}
	// The same node by UUID prefix and by path.
	for _, node := range []string{first.NodeUUID[:6], sock} {
		if st, ok := daemonStatus(t, data, node); !ok || st.NodeUUID != first.NodeUUID {
			t.Errorf("status of %s: %+v", node, st)
		}
	}

	if r := daemon(t, data, "-o", "text", "mplane", "help"); r.code != 0 ||
		!strings.Contains(r.stdout, "config set KEY VALUE") || !strings.Contains(r.stdout, "respawn") {
		t.Errorf("help: %+v", r)
	}
	// Errors exit non-zero with the node's message.
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"mplane", "config", "set", "api_listen", "127.0.0.1:1"}, []string{"api_listen cannot change while the node runs", "log_level", "SYS.1007"}},
		{[]string{"mplane", "config", "set", "log_level", "loud"}, []string{"must be one of debug, info, warn, error"}},
		{[]string{"mplane", "frobnicate"}, []string{`unknown command "frobnicate"`}},
		{[]string{"mplane", "status", "extra"}, []string{"too many arguments"}},
		{[]string{"nosuchnode", "status"}, []string{`no admin socket "nosuchnode"`, "mplane-" + first.NodeUUID}},
		{[]string{"mplane"}, []string{"want NODE COMMAND"}},
	} {
		r := daemon(t, data, tt.args...)
		if r.code == 0 {
			t.Errorf("%q: exit 0: %s", tt.args, r.stdout)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%q: stderr %q lacks %q", tt.args, r.stderr, w)
			}
		}
	}

	// A live change, seen in the process's log.
	if r := daemon(t, data, "mplane", "log", "level", "debug"); r.code != 0 {
		t.Fatalf("log level debug: %+v", r)
	}
	daemon(t, data, "mplane", "status")
	testenv.Eventually(t, 10*time.Second, func() bool { return p.logged(`level=DEBUG msg="admin command" command=status`) },
		"a debug line after log level debug")

	// respawn: answered, then a new incarnation in the same process.
	r := daemon(t, data, "mplane", "respawn")
	if r.code != 0 || !strings.Contains(r.stdout, first.NodeUUID) || !strings.Contains(r.stdout, "re-executing") {
		t.Fatalf("respawn: %+v", r)
	}
	var second managementnode.Status
	testenv.Eventually(t, 60*time.Second, func() bool {
		if p.exited() {
			t.Fatal("the process exited instead of respawning")
		}
		st, ok := daemonStatus(t, data, "mplane")
		second = st
		return ok && st.NodeUUID != first.NodeUUID && st.State == managementnode.StateRunning
	}, "a new node UUID answering after respawn")
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the old node's socket is still there: %v", err)
	}
	var hst managementnode.Status
	if _, err := getJSON(context.Background(), p.url+"/admin/status", &hst); err != nil || hst.NodeUUID != second.NodeUUID {
		t.Errorf("GET /admin/status after respawn: %+v, %v; want node %s", hst, err, second.NodeUUID)
	}

	// exit: answered, then the process leaves and exits 0.
	r = daemon(t, data, "mplane", "exit")
	if r.code != 0 || !strings.Contains(r.stdout, second.NodeUUID) {
		t.Fatalf("exit: %+v", r)
	}
	testenv.Eventually(t, 60*time.Second, p.exited, "the process exits")
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if !p.logged("left the cluster") {
		t.Error("the node did not leave the cluster gracefully")
	}
	if left, _ := filepath.Glob(filepath.Join(run, "*.asok")); len(left) != 0 {
		t.Errorf("sockets left after exit: %v", left)
	}
	if r := daemon(t, data, "mplane", "status"); r.code == 0 || !strings.Contains(r.stderr, "no admin socket in") {
		t.Errorf("status after exit: %+v", r)
	}
}
