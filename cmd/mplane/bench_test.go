package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/bench"
	"mplane/conf"
	"mplane/server"
)

// runBench executes "mplane bench <args>" and returns stdout, stderr and
// the error.
func runBench(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newBenchCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

func TestBenchFlagValidation(t *testing.T) {
	t.Setenv(envBenchPassword, "")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"vms zero", []string{"--password", "p", "--vms", "0"}, []string{"--vms must be at least 1, got 0"}},
		{"vms negative", []string{"--password", "p", "--vms", "-4"}, []string{"--vms must be between 1 and 60000, got -4"}},
		{"vms not a number", []string{"--password", "p", "--vms", "many"}, []string{`invalid argument "many" for "--vms"`}},
		{"concurrency zero", []string{"--password", "p", "--concurrency", "0"}, []string{"--concurrency must be at least 1"}},
		{"bad url", []string{"--password", "p", "--url", "localhost:8080"}, []string{`--url "localhost:8080": want http://host:port`}},
		{"one bad url of several", []string{"--password", "p", "--url", "http://a:1,ftp://b:2"}, []string{`--url "ftp://b:2"`}},
		{"empty url", []string{"--password", "p", "--url", " , "}, []string{"--url: at least one API URL is required"}},
		{"bad agent url", []string{"--password", "p", "--agents", "127.0.0.1:7070"}, []string{`--agents "127.0.0.1:7070"`}},
		{"bad node url", []string{"--password", "p", "--nodes", "node1"}, []string{`--nodes "node1"`}},
		{"missing password", nil, []string{"no password: set --password or MPLANE_BENCH_PASSWORD"}},
		{"ops without create first", []string{"--password", "p", "--ops", "stop,start"}, []string{"--ops must start with create"}},
		{"unknown op", []string{"--password", "p", "--ops", "create,migrate"}, []string{`unknown operation "migrate"`}},
		{"output", []string{"--password", "p", "-o", "yaml"}, []string{`-o/--output must be table or json, got "yaml"`}},
		{"wait", []string{"--password", "p", "--wait", "sleep"}, []string{"--wait must be webhook or poll"}},
		{"timeout", []string{"--password", "p", "--timeout", "0s"}, []string{"--timeout must be positive"}},
		{"local storage url", []string{"--password", "p", "--local-storage-url", "mplane/local"}, []string{`--local-storage-url must be an absolute directory path such as /mplane/local, got "mplane/local"`}},
		{"local storage url not clean", []string{"--password", "p", "--local-storage-url", "/mplane/local/"}, []string{"--local-storage-url must be an absolute"}},
		{"positional argument", []string{"--password", "p", "extra"}, []string{`unknown command "extra"`}},
		{"every problem listed", []string{"--vms", "0", "--url", "x"}, []string{"invalid arguments:", "--vms", `--url "x"`, "no password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := runBench(t, tt.args...)
			if err == nil {
				t.Fatalf("mplane bench %v succeeded", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if stdout != "" {
				t.Errorf("printed a report: %q", stdout)
			}
		})
	}
}

func TestBenchPasswordFromEnvironment(t *testing.T) {
	f := benchFlags{urls: "http://127.0.0.1:1", account: "admin", vms: 1, concurrency: 1, ops: "create", output: "table",
		wait: bench.WaitWebhook, timeout: time.Minute}
	if _, err := f.options(""); err == nil || !strings.Contains(err.Error(), "no password") {
		t.Errorf("without password: %v", err)
	}
	o, err := f.options("from-env")
	if err != nil || o.Password != "from-env" {
		t.Errorf("password from the environment: %q, %v", o.Password, err)
	}
	f.password = "from-flag"
	if o, _ := f.options("from-env"); o.Password != "from-flag" {
		t.Errorf("the flag must win over the environment, got %q", o.Password)
	}
}

func TestBenchReportExitCode(t *testing.T) {
	dir := t.TempDir()
	f := benchFlags{output: "json", save: filepath.Join(dir, "r.json")}
	rep := &bench.Report{Phases: []bench.Phase{{Op: bench.OpCreate, Ops: 2, Succeeded: 2}},
		Agents: []bench.AgentEnd{{URL: "http://a:1", Overlaps: 1}}}
	var out bytes.Buffer
	err := f.report(&out, rep)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), "overlapping") {
		t.Fatalf("overlap: %v, want exit code 1", err)
	}
	saved, rerr := os.ReadFile(f.save)
	if rerr != nil || !bytes.Equal(saved, out.Bytes()) {
		t.Errorf("saved report differs from the printed one (%v)", rerr)
	}
	rep.Agents[0].Overlaps = 0
	if err := f.report(&bytes.Buffer{}, rep); err != nil {
		t.Errorf("clean report: %v", err)
	}
}

// TestBenchAgainstEmbeddedCloud runs mplane bench against a real node
// (in-process bus, SQLite) and two simulated agents in this process.
func TestBenchAgainstEmbeddedCloud(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	dir := t.TempDir()
	var agents, storageDirs []string
	for i := 0; i < 2; i++ {
		// Each host serves the bench's local primary storage, where the
		// VMs' root volumes go.
		storageDirs = append(storageDirs, t.TempDir())
		a, err := kvm.New(kvm.Options{CPUNum: 64, MemoryBytes: 64 << 30, Storage: map[string]string{bench.DefaultLocalStorageURL: storageDirs[i]}})
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- a.Serve(l) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = a.Shutdown(ctx)
			<-served
		})
		agents = append(agents, "http://"+l.Addr().String())
	}
	cfg, err := conf.Load("", []string{"MPLANE_DATA_DIR=" + dir, "MPLANE_API_LISTEN=127.0.0.1:0",
		"MPLANE_ADMIN_PASSWORD=bench-test", "MPLANE_DRAIN_TIMEOUT=1s", "MPLANE_WEBHOOK_ALLOW=127.0.0.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.Start(ctx, server.Options{Config: cfg})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveUntilDone(ctx, s, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Setenv(envBenchPassword, "bench-test")

	profiles := filepath.Join(dir, "profiles")
	stdout, stderr, err := runBench(t, "--url", s.URL(), "--agents", strings.Join(agents, ","), "--setup", "--vms", "6",
		"--concurrency", "3", "-o", "json", "--profile-seconds", "1", "--profile-dir", profiles, "--label", "t")
	if err != nil {
		t.Fatalf("bench: %v\nstderr:\n%s\nstdout:\n%s", err, stderr, stdout)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("-o json printed no report: %v\n%s", err, stdout)
	}
	if len(rep.Phases) != 4 {
		t.Fatalf("%d phases, want create, stop, start, destroy", len(rep.Phases))
	}
	for _, p := range rep.Phases {
		if p.Ops != 6 || p.Succeeded != 6 || p.Done.Count != 6 {
			t.Errorf("%s: %d jobs, %d succeeded, %d latencies; want 6 each (errors %v)", p.Op, p.Ops, p.Succeeded, p.Done.Count, p.FirstErrors)
		}
		if p.Agent == nil || p.Agent.Count != 6 || p.Agent.Missing != 0 {
			t.Errorf("%s: API-call-to-agent latency %+v, want 6 joined", p.Op, p.Agent)
		}
		if len(p.Nodes) != 1 || p.Nodes[0].Err != "" || p.Nodes[0].Handled < 6 || p.Nodes[0].SharePct != 100 {
			t.Errorf("%s: node figures %+v", p.Op, p.Nodes)
		}
	}
	if got := rep.Phases[0].Nodes[0].HandledByName["vm.CreateVmInstance"]; got != 6 {
		t.Errorf("vm.CreateVmInstance handled %d times, want 6", got)
	}
	if len(rep.Agents) != 2 || rep.Agents[0].Err != "" || rep.Agents[0].Overlaps+rep.Agents[1].Overlaps != 0 {
		t.Errorf("agents %+v", rep.Agents)
	}
	if len(rep.Nodes) != 1 || rep.Nodes[0].MaxRSSBytes == 0 {
		t.Errorf("nodes %+v", rep.Nodes)
	}
	if len(rep.Profiles) != 1 {
		t.Errorf("profiles %v, problems %v", rep.Profiles, rep.Problems)
	} else if fi, err := os.Stat(rep.Profiles[0]); err != nil || fi.Size() == 0 {
		t.Errorf("profile %s: %v", rep.Profiles[0], err)
	}
	if !strings.Contains(stderr, "create: 6/6 done, 0 failed") {
		t.Errorf("no progress on stderr:\n%s", stderr)
	}
	// Destroyed VMs keep their root volumes (expunge removes them).
	if n := rootVolumes(t, storageDirs); n != 6 {
		t.Errorf("%d root volume files on the hosts' local storage, want 6", n)
	}

	// Again on the same cloud (no --setup needed), every job submitted at
	// once and results by polling, with the table.
	stdout, stderr, err = runBench(t, "--url", s.URL(), "--agents", strings.Join(agents, ","), "--vms", "4",
		"--concurrency", "2", "--submit-all", "--wait", "poll", "--ops", "create,destroy")
	if err != nil {
		t.Fatalf("bench --submit-all: %v\nstderr:\n%s\nstdout:\n%s", err, stderr, stdout)
	}
	for _, want := range []string{"every job submitted at once, results by poll", "create: every job accepted (202)", "peak RSS of a node"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	if n := rootVolumes(t, storageDirs); n != 10 {
		t.Errorf("%d root volume files on the hosts' local storage after the second run, want 10", n)
	}

	// The summary of a saved report.
	saved := filepath.Join(dir, "r.json")
	data, _ := json.Marshal(rep)
	if err := os.WriteFile(saved, data, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, _, err = runBench(t, "summary", "--took", "90s", "--note", "Code: abc.", saved)
	if err != nil || !strings.Contains(stdout, "| t | 6 | 3 | create |") || !strings.Contains(stdout, "whole run 1m30s") ||
		!strings.Contains(stdout, "\n\nCode: abc.\n\n") {
		t.Errorf("summary (%v):\n%s", err, stdout)
	}
	if _, _, err := runBench(t, "summary", filepath.Join(dir, "missing.json")); err == nil {
		t.Error("summary of a missing file succeeded")
	}
}

// rootVolumes counts the root volume files in the hosts' storage
// directories.
func rootVolumes(t *testing.T, dirs []string) int {
	t.Helper()
	n := 0
	for _, d := range dirs {
		files, err := filepath.Glob(filepath.Join(d, "rootVolumes", "vol-*", "*"))
		if err != nil {
			t.Fatal(err)
		}
		n += len(files)
	}
	return n
}
