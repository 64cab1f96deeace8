package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/api/client/clienttest"
)

// ctlEnv is a fake API and a clean ctl environment: its own session file,
// no inherited MPLANE_CTL_* variables, fast polling.
type ctlEnv struct {
	t           *testing.T
	srv         *clienttest.Server
	sessionFile string
}

func newCtlEnv(t *testing.T, opts clienttest.Options) *ctlEnv {
	t.Helper()
	srv := clienttest.NewServer(opts)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	e := &ctlEnv{t: t, srv: srv, sessionFile: filepath.Join(dir, "cfg", "ctl.json")}
	t.Setenv(envCtlURL, srv.URL)
	t.Setenv(envCtlSessionFile, e.sessionFile)
	t.Setenv(envCtlSession, "")
	t.Setenv(envCtlPassword, "")
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	old := ctlClientOptions
	ctlClientOptions = []client.Option{
		client.WithPollInterval(time.Millisecond, 4*time.Millisecond),
		client.WithRetries(1, time.Millisecond),
	}
	t.Cleanup(func() { ctlClientOptions = old })
	return e
}

// loggedIn makes the following commands use a valid session.
func (e *ctlEnv) loggedIn() *ctlEnv {
	e.t.Helper()
	e.t.Setenv(envCtlSession, e.srv.NewSession())
	return e
}

type ctlResult struct {
	stdout, stderr string
	err            error
}

// run executes "mplane ctl <args>" with stdin (empty when nil) and returns
// what it printed.
func (e *ctlEnv) run(stdin io.Reader, args ...string) ctlResult {
	e.t.Helper()
	return ctlRunCmd(e.t, stdin, args...)
}

func ctlRunCmd(t *testing.T, stdin io.Reader, args ...string) ctlResult {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	cmd := newCtlCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetIn(stdin)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return ctlResult{stdout: out.String(), stderr: errb.String(), err: err}
}

// ok fails the test unless the command succeeded, and returns its stdout.
func (e *ctlEnv) ok(args ...string) string {
	e.t.Helper()
	r := e.run(nil, args...)
	if r.err != nil {
		e.t.Fatalf("ctl %s: %v\nstderr: %s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

// fails runs a command that must fail with exit code 1, an error already
// reported on stderr, and nothing on stdout; it returns stderr.
func (e *ctlEnv) fails(args ...string) string {
	e.t.Helper()
	return ctlMustFail(e.t, e.run(nil, args...), args...)
}

func ctlMustFail(t *testing.T, r ctlResult, args ...string) string {
	t.Helper()
	if r.err == nil {
		t.Fatalf("ctl %s succeeded, want an error; stdout:\n%s", strings.Join(args, " "), r.stdout)
	}
	var ee *exitError
	var rep interface{ Reported() bool }
	if !errors.As(r.err, &ee) || ee.code != 1 || !errors.As(r.err, &rep) || !rep.Reported() {
		t.Fatalf("ctl %s: error %v (%T), want a reported exitError with code 1", strings.Join(args, " "), r.err, r.err)
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
func (e *ctlEnv) jsonOut(args ...string) map[string]any {
	e.t.Helper()
	out := e.ok(append([]string{"-o", "json"}, args...)...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		e.t.Fatalf("ctl %s: output is not a JSON object: %v\n%s", strings.Join(args, " "), err, out)
	}
	return m
}

// uuidOf creates something with -o json and returns its uuid.
func (e *ctlEnv) uuidOf(args ...string) string {
	e.t.Helper()
	id, _ := e.jsonOut(args...)["uuid"].(string)
	if id == "" {
		e.t.Fatalf("ctl %s: no uuid in the output", strings.Join(args, " "))
	}
	return id
}

// seed builds a small cloud with ctl itself and returns the UUIDs.
func (e *ctlEnv) seed() map[string]string {
	e.t.Helper()
	ids := map[string]string{}
	ids["zone"] = e.uuidOf("create", "zone", "--name", "zone1")
	ids["cluster"] = e.uuidOf("create", "cluster", "--name", "cluster1", "--zone", ids["zone"])
	ids["host"] = e.uuidOf("add", "host", "--ip", "127.0.0.10", "--cluster", ids["cluster"])
	ids["offering"] = e.uuidOf("create", "offering", "--name", "small", "--cpu", "1", "--memory", "1G")
	ids["image"] = e.uuidOf("create", "image", "--name", "cirros", "--image-url", "http://images.invalid/cirros.qcow2")
	ids["l3"] = e.uuidOf("create", "l3", "--name", "public", "--zone", ids["zone"])
	ids["range"] = e.uuidOf("create", "ip-range", "--l3", ids["l3"], "--start", "10.0.0.10", "--end", "10.0.0.20",
		"--netmask", "255.255.255.0", "--gateway", "10.0.0.1")
	return ids
}

// lastBody is the params (or action body) of the last request to path
// with method.
func (e *ctlEnv) lastBody(method, path string) map[string]any {
	e.t.Helper()
	reqs := e.srv.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Method == method && reqs[i].Path == path {
			var m map[string]any
			if err := json.Unmarshal(reqs[i].Body, &m); err != nil {
				e.t.Fatalf("%s %s body %s: %v", method, path, reqs[i].Body, err)
			}
			return m
		}
	}
	e.t.Fatalf("no %s %s request", method, path)
	return nil
}

// ctlTableRows splits table output into rows of fields (split on runs of 3+
// spaces, the table's column gap, so headers like "MANAGEMENT IP" stay one).
func ctlTableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		var cells []string
		for _, c := range ctlSplitGap.Split(strings.TrimSpace(line), -1) {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	return rows
}
