package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/server"
	"mplane/server/servertest"
)

// stack is the real embedded cloud the tests share, without simulated
// hosts of its own. The tests run one after another (they set environment
// variables), each through a Front of its own; they name what they create
// uniquely where they count or list it, and add the hosts they place VMs
// on.
var stack *servertest.Stack

func TestMain(m *testing.M) {
	st, err := servertest.Launch(servertest.Options{Hosts: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the shared stack:", err)
		os.Exit(1)
	}
	stack = st
	code := m.Run()
	if err := st.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stop the shared stack:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// env is a clean ctl environment on the shared stack: a Front with a
// Recorder that MPLANE_CTL_URL names, its own session file, no inherited
// MPLANE_CTL_* variables, fast polling.
type env struct {
	t           *testing.T
	rec         *servertest.Recorder
	url         string
	sessionFile string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rec := servertest.NewRecorder()
	dir := t.TempDir()
	e := &env{t: t, rec: rec, url: stack.Front(t, rec.Wrap), sessionFile: filepath.Join(dir, "cfg", "ctl.json")}
	t.Setenv(envURL, e.url)
	t.Setenv(envSessionFile, e.sessionFile)
	t.Setenv(envSession, "")
	t.Setenv(envPassword, "")
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	old := clientOptions
	clientOptions = []client.Option{
		client.WithPollInterval(time.Millisecond, 4*time.Millisecond),
		client.WithRetries(1, time.Millisecond),
	}
	t.Cleanup(func() { clientOptions = old })
	return e
}

// loggedIn makes the following commands use the stack's session.
func (e *env) loggedIn() *env {
	e.t.Helper()
	e.t.Setenv(envSession, stack.Client.Session())
	return e
}

type runResult struct {
	stdout, stderr string
	err            error
}

// run executes "mplane ctl <args>" with stdin (empty when nil) and returns
// what it printed.
func (e *env) run(stdin io.Reader, args ...string) runResult {
	e.t.Helper()
	return runCmd(e.t, stdin, args...)
}

func runCmd(t *testing.T, stdin io.Reader, args ...string) runResult {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	cmd := NewCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetIn(stdin)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return runResult{stdout: out.String(), stderr: errb.String(), err: err}
}

// ok fails the test unless the command succeeded, and returns its stdout.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(nil, args...)
	if r.err != nil {
		e.t.Fatalf("ctl %s: %v\nstderr: %s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

// fails runs a command that must fail with exit code 1, an error already
// reported on stderr, and nothing on stdout; it returns stderr.
func (e *env) fails(args ...string) string {
	e.t.Helper()
	return mustFail(e.t, e.run(nil, args...), args...)
}

func mustFail(t *testing.T, r runResult, args ...string) string {
	t.Helper()
	if r.err == nil {
		t.Fatalf("ctl %s succeeded, want an error; stdout:\n%s", strings.Join(args, " "), r.stdout)
	}
	// What main looks for: an error already printed, and its exit code.
	var rep interface{ Reported() bool }
	var coded interface{ ExitCode() int }
	if !errors.As(r.err, &rep) || !rep.Reported() || !errors.As(r.err, &coded) || coded.ExitCode() != 1 {
		t.Fatalf("ctl %s: error %v (%T), want a reported error with exit code 1", strings.Join(args, " "), r.err, r.err)
	}
	if r.stdout != "" {
		t.Errorf("ctl %s printed to stdout on failure: %q", strings.Join(args, " "), r.stdout)
	}
	// Progress lines of a job may come first; the error comes last.
	if !strings.HasPrefix(r.stderr, "error: ") && !strings.Contains(r.stderr, "\nerror: ") {
		t.Errorf("ctl %s: stderr %q has no line starting with \"error: \"", strings.Join(args, " "), r.stderr)
	}
	return r.stderr
}

// jsonOut creates with -o json and returns the printed inventory.
func (e *env) jsonOut(args ...string) map[string]any {
	e.t.Helper()
	out := e.ok(append([]string{"-o", "json"}, args...)...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		e.t.Fatalf("ctl %s: output is not a JSON object: %v\n%s", strings.Join(args, " "), err, out)
	}
	return m
}

// uuidOf creates something with -o json and returns its uuid.
func (e *env) uuidOf(args ...string) string {
	e.t.Helper()
	id, _ := e.jsonOut(args...)["uuid"].(string)
	if id == "" {
		e.t.Fatalf("ctl %s: no uuid in the output", strings.Join(args, " "))
	}
	return id
}

// seed builds a small cloud with ctl itself, on a simulated host of its
// own, and returns the UUIDs. Its cluster has a local primary storage
// ("ps") at the directory the simulated hosts serve, attached before the
// host is added, so the host's directory is measured when it connects.
func (e *env) seed() map[string]string {
	e.t.Helper()
	return e.seedWith(servertest.AgentOptions{})
}

// seedWith is seed with a simulated host of opts.
func (e *env) seedWith(opts servertest.AgentOptions) map[string]string {
	e.t.Helper()
	agent := stack.StartAgent(e.t, opts)
	ids := map[string]string{}
	ids["zone"] = e.uuidOf("create", "zone", "--name", "zone1")
	ids["cluster"] = e.uuidOf("create", "cluster", "--name", "cluster1", "--zone", ids["zone"])
	ids["ps"] = e.uuidOf("create", "primary-storage", "--name", "ps1", "--dir", server.DefaultLocalStorageURL, "--zone", ids["zone"])
	e.ok("attach", "primary-storage", ids["ps"], "--cluster", ids["cluster"])
	ids["host"] = e.uuidOf("add", "host", "--ip", agent.IP, "--port", fmt.Sprint(agent.Port), "--cluster", ids["cluster"])
	ids["offering"] = e.uuidOf("create", "offering", "--name", "small", "--cpu", "1", "--memory", "1G")
	img := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("mplane image "), 4096))
	}))
	e.t.Cleanup(img.Close)
	ids["image"] = e.uuidOf("create", "image", "--name", "cirros", "--image-url", img.URL+"/cirros.img",
		"--backup-storage", stack.DefaultBackupStorage(e.t))
	ids["l2"] = e.uuidOf("create", "l2", "--name", "flat", "--zone", ids["zone"], "--interface", "eth0")
	e.ok("attach", "l2", ids["l2"], "--cluster", ids["cluster"])
	ids["l3"] = e.uuidOf("create", "l3", "--name", "public", "--l2", ids["l2"])
	ids["range"] = e.uuidOf("create", "ip-range", "--l3", ids["l3"], "--start", "10.0.0.10", "--end", "10.0.0.20",
		"--netmask", "255.255.255.0", "--gateway", "10.0.0.1")
	return ids
}

// lastBody is the params (or action body) of the last request to path
// with method.
func (e *env) lastBody(method, path string) map[string]any {
	e.t.Helper()
	r := e.last(method, path)
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		e.t.Fatalf("%s %s body %s: %v", method, path, r.Body, err)
	}
	return m
}

// last is the last request to path with method.
func (e *env) last(method, path string) servertest.Request {
	e.t.Helper()
	reqs := e.rec.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Method == method && reqs[i].Path == path {
			return reqs[i]
		}
	}
	e.t.Fatalf("no %s %s request", method, path)
	return servertest.Request{}
}

// rowOf is the row of tableRows whose first cell is uuid.
func rowOf(t *testing.T, rows [][]string, uuid string) []string {
	t.Helper()
	for _, r := range rows {
		if len(r) > 0 && r[0] == uuid {
			return r
		}
	}
	t.Fatalf("no row for %s in %v", uuid, rows)
	return nil
}

// tableRows splits table output into rows of fields (split on runs of 3+
// spaces, the table's column gap, so headers like "MANAGEMENT IP" stay one).
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		var cells []string
		for _, c := range splitGap.Split(strings.TrimSpace(line), -1) {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	return rows
}
