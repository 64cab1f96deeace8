package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/agentserver"
	"mplane/agents/protocol"
	"mplane/errcode"
)

// eventually polls cond until it holds; the bound is a hang guard.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// mgmt is a management node's agent-facing side: a client with its
// callback endpoint and an event endpoint that records events.
type mgmt struct {
	client   *agentclient.Client
	eventURL string

	mu     sync.Mutex
	events []agentclient.Event
}

func newMgmt(t testing.TB) *mgmt {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.Addr().String()
	m := &mgmt{eventURL: base + protocol.DefaultEventPath}
	m.client = agentclient.New(agentclient.Options{CallbackURL: base + protocol.DefaultCallbackPath, DefaultTimeout: 30 * time.Second})
	mux := http.NewServeMux()
	mux.Handle(protocol.DefaultCallbackPath, m.client.CallbackHandler())
	mux.Handle(protocol.DefaultEventPath, agentclient.NewEventHandler(agentclient.EventOptions{
		Handle: func(_ context.Context, ev agentclient.Event) error {
			m.mu.Lock()
			m.events = append(m.events, ev)
			m.mu.Unlock()
			return nil
		},
	}))
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() {
		m.client.Close()
		_ = hs.Close()
	})
	return m
}

func (m *mgmt) eventsSoFar() []agentclient.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]agentclient.Event(nil), m.events...)
}

// progressEvents decodes the progress events received so far.
func (m *mgmt) progressEvents(t testing.TB) []protocol.ProgressEvent {
	t.Helper()
	var out []protocol.ProgressEvent
	for _, ev := range m.eventsSoFar() {
		if ev.Path != protocol.EventProgressReport {
			continue
		}
		var p protocol.ProgressEvent
		if err := json.Unmarshal(ev.Body, &p); err != nil {
			t.Fatalf("progress event %s: %v", ev.Body, err)
		}
		out = append(out, p)
	}
	return out
}

// testAgent is an agent served on a loopback port.
type testAgent struct {
	*Agent
	url    string
	secret string
}

func fastServer() agentserver.Options {
	return agentserver.Options{
		CallbackRetryInterval:  5 * time.Millisecond,
		CallbackRetryLimit:     10 * time.Second,
		CallbackAttemptTimeout: 5 * time.Second,
	}
}

// startAgent serves an agent on a fresh root (unless opts has one); setup
// runs before it serves.
func startAgent(t testing.TB, opts Options, setup ...func(*Agent)) *testAgent {
	t.Helper()
	if opts.Root == "" {
		opts.Root = t.TempDir()
	}
	if opts.Server.CallbackRetryInterval == 0 {
		opts.Server = fastServer()
	}
	if opts.DownloadRetryInterval == 0 {
		opts.DownloadRetryInterval = time.Millisecond
	}
	if opts.ProgressInterval == 0 {
		opts.ProgressInterval = time.Nanosecond
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(a)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(l) }()
	t.Cleanup(func() {
		if err := a.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testAgent{Agent: a, url: "http://" + l.Addr().String()}
}

// mode is one way of storing: with qemu-img (qcow2) or without (raw).
type mode struct {
	name    string
	qemuImg string
	qcow2   bool
}

var (
	plainMode = mode{name: "plain", qemuImg: QemuImgNone}
	qcow2Mode = mode{name: "qcow2", qcow2: true}
)

func haveQemu() bool {
	_, err := exec.LookPath("qemu-img")
	return err == nil
}

// forModes runs f once without qemu-img and once with it (skipped, saying
// so, where qemu-img is not installed; .ci/run installs it).
func forModes(t *testing.T, f func(t *testing.T, md mode)) {
	for _, md := range []mode{plainMode, qcow2Mode} {
		t.Run(md.name, func(t *testing.T) {
			if md.qcow2 && !haveQemu() {
				t.Skip("qemu-img is not installed (apt-get install qemu-utils)")
			}
			f(t, md)
		})
	}
}

func needQemu(t testing.TB) {
	t.Helper()
	if !haveQemu() {
		t.Skip("qemu-img is not installed (apt-get install qemu-utils)")
	}
}

// env is an agent in a mode with a management node connected to it.
type env struct {
	t *testing.T
	m *mgmt
	a *testAgent
}

func newEnv(t *testing.T, md mode) *env {
	t.Helper()
	return newEnvWith(t, md, Options{})
}

// newEnvWith is newEnv with options (QemuImg is the mode's) and setup
// functions run before the agent serves.
func newEnvWith(t *testing.T, md mode, o Options, setup ...func(*Agent)) *env {
	t.Helper()
	o.QemuImg = md.qemuImg
	m := newMgmt(t)
	a := startAgent(t, o, setup...)
	if a.HasQemuImg() != md.qcow2 {
		t.Fatalf("agent has qemu-img %v, mode %s", a.HasQemuImg(), md.name)
	}
	e := &env{t: t, m: m, a: a}
	var rsp protocol.StorageConnectRsp
	if err := m.client.CallSync(t.Context(), a.url, protocol.PathStorageConnect,
		protocol.StorageConnectCmd{UUID: "ps-1", SendCommandURL: m.eventURL}, &rsp); err != nil {
		t.Fatal(err)
	}
	return e
}

// call sends an async command and answers the typed response and error.
func call[C, R any](e *env, c protocol.Command[C, R], cmd C) (R, error) {
	e.t.Helper()
	var rsp R
	var opts []agentclient.CallOption
	if e.a.secret != "" {
		opts = append(opts, agentclient.WithSecret(e.a.secret))
	}
	err := e.m.client.Call(e.t.Context(), e.a.url, c.Path, cmd, &rsp, opts...)
	return rsp, err
}

// must is call that fails the test on an error.
func must[C, R any](e *env, c protocol.Command[C, R], cmd C) R {
	e.t.Helper()
	rsp, err := call(e, c, cmd)
	if err != nil {
		e.t.Fatalf("%s: %v", c.Path, err)
	}
	return rsp
}

// fails is call that wants an agent failure containing want.
func fails[C, R any](e *env, c protocol.Command[C, R], cmd C, want string) {
	e.t.Helper()
	_, err := call(e, c, cmd)
	if err == nil {
		e.t.Fatalf("%s %+v succeeded; want an error containing %q", c.Path, cmd, want)
	}
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), want) {
		e.t.Fatalf("%s %+v: %v; want an agent error containing %q", c.Path, cmd, err, want)
	}
}

// path is rel's absolute path under the agent's root.
func (e *env) path(rel string) string { return filepath.Join(e.a.Root(), rel) }

// write puts content at rel (test setup, not through the agent).
func (e *env) write(rel string, content []byte) {
	e.t.Helper()
	p := e.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// files lists every file under the root (relative paths), temporary ones
// included: what a failure must not leave behind.
func (e *env) files() []string {
	e.t.Helper()
	var out []string
	_ = filepath.WalkDir(e.a.Root(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			r, _ := filepath.Rel(e.a.Root(), p)
			out = append(out, r)
		}
		return nil
	})
	return out
}

// onlyFiles fails unless the root holds exactly keep (and no temporary).
func (e *env) onlyFiles(keep ...string) {
	e.t.Helper()
	got := e.files()
	if strings.Join(got, ",") != strings.Join(keep, ",") {
		e.t.Fatalf("files under the root: %q; want %q", got, keep)
	}
}

// pattern is n bytes of a recognizable, non-zero pattern seeded by b.
func pattern(n int, b byte) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b + byte(i%251)
		if out[i] == 0 {
			out[i] = 1
		}
	}
	return out
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sparseImage writes a raw image at p: size bytes, data only at the given
// offsets (the rest holes).
func sparseImage(t testing.TB, p string, size int64, chunks map[int64][]byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, b := range chunks {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// run runs a program (qemu-img, qemu-io, cp) and returns its output.
func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

type qemuInfo struct {
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	BackingFilename     string `json:"backing-filename"`
	FullBackingFilename string `json:"full-backing-filename"`
	BackingFormat       string `json:"backing-filename-format"`
	Snapshots           []struct {
		Name string `json:"name"`
	} `json:"snapshots"`
}

func qemuInfoOf(t testing.TB, p string) qemuInfo {
	t.Helper()
	var info qemuInfo
	if err := json.Unmarshal(run(t, "qemu-img", "info", "--output=json", "-U", p), &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// content is what a guest would read from the volume at p: the raw bytes,
// through qemu-img convert for qcow2.
func content(t testing.TB, p string) []byte {
	t.Helper()
	head := make([]byte, 4)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Read(head)
	_ = f.Close()
	if !bytes.Equal(head, qcow2Magic) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out := filepath.Join(t.TempDir(), "content.raw")
	run(t, "qemu-img", "convert", "-U", "-O", "raw", p, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// guestWrite writes data at off into the volume at p, as a guest would.
func guestWrite(t testing.TB, p string, off int64, data []byte) {
	t.Helper()
	head := make([]byte, 4)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, _ = f.ReadAt(head, 0)
	if !bytes.Equal(head, qcow2Magic) {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
		return
	}
	src := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -s "+src+" "+strconv.FormatInt(off, 10)+" "+strconv.Itoa(len(data)), p)
}
