package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mplane/admin"
	"mplane/errcode"
)

// testTable: echo (read-only, one required and one optional argument),
// poke (mutating, counts its runs and, after its answer, its follow-ups),
// block (waits for the end of its context), boom (panics).
type fixture struct {
	table  *admin.Table
	pokes  atomic.Int64
	after  atomic.Int64
	inside chan struct{}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{inside: make(chan struct{}, 1)}
	tb, err := admin.NewTable(nil,
		admin.Command{Name: "echo", ReadOnly: true, Description: "echo the arguments",
			Args: []admin.Arg{{Name: "WORD"}, {Name: "MORE", Optional: true, Query: "more"}},
			Run: func(_ context.Context, args []string) (any, error) {
				return map[string]any{"args": args}, nil
			}},
		admin.Command{Name: "poke it", Description: "count",
			Run: func(ctx context.Context, _ []string) (any, error) {
				n := f.pokes.Add(1)
				if !admin.AfterReply(ctx, func() { f.after.Add(1) }) {
					return nil, errors.New("no transport")
				}
				return map[string]any{"pokes": n}, nil
			}},
		admin.Command{Name: "poke", Description: "a shorter name that poke it must win over",
			Run: func(context.Context, []string) (any, error) { return "short", nil }},
		admin.Command{Name: "block", ReadOnly: true, Description: "wait for the end",
			Run: func(ctx context.Context, _ []string) (any, error) {
				f.inside <- struct{}{}
				<-ctx.Done()
				return nil, ctx.Err()
			}},
		admin.Command{Name: "boom", ReadOnly: true, Description: "panic",
			Run: func(context.Context, []string) (any, error) { panic("kaboom") }},
	)
	if err != nil {
		t.Fatal(err)
	}
	f.table = tb
	return f
}

func TestNewTableRejects(t *testing.T) {
	run := func(context.Context, []string) (any, error) { return nil, nil }
	for name, cmds := range map[string][]admin.Command{
		"duplicate":          {{Name: "a", Run: run}, {Name: "a", Run: run}},
		"help is built in":   {{Name: "help", Run: run}},
		"no handler":         {{Name: "a"}},
		"upper case":         {{Name: "Status", Run: run}},
		"double space":       {{Name: "a  b", Run: run}},
		"slash":              {{Name: "a/b", Run: run}},
		"required after opt": {{Name: "a", Run: run, Args: []admin.Arg{{Name: "X", Optional: true}, {Name: "Y"}}}},
		"variadic not last":  {{Name: "a", Run: run, Args: []admin.Arg{{Name: "X", Variadic: true}, {Name: "Y"}}}},
	} {
		if _, err := admin.NewTable(nil, cmds...); err == nil {
			t.Errorf("%s: NewTable accepted %+v", name, cmds)
		}
	}
}

func TestExec(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	o := f.table.Exec(ctx, []string{"echo", "a", "b"})
	if o.Err != nil || o.Command != "echo" {
		t.Fatalf("echo: %+v", o)
	}
	if got := o.Result.(map[string]any)["args"].([]string); strings.Join(got, ",") != "a,b" {
		t.Errorf("echo args %q", got)
	}
	if o := f.table.Exec(ctx, []string{"poke", "it"}); o.Command != "poke it" {
		t.Errorf("poke it ran %q, want the longest match", o.Command)
	}
	if o := f.table.Exec(ctx, []string{"poke"}); o.Command != "poke" || o.Result != "short" {
		t.Errorf("poke: %+v", o)
	}
	for _, tt := range []struct {
		words []string
		code  errcode.Code
		want  string
	}{
		{nil, errcode.InvalidArgument, "no command given"},
		{[]string{"echo"}, errcode.InvalidArgument, "echo: missing argument WORD; usage: echo WORD [MORE]"},
		{[]string{"echo", "a", "b", "c"}, errcode.InvalidArgument, "echo: too many arguments (at most 2, got 3"},
		{[]string{"nope"}, errcode.ResourceNotFound, `unknown command "nope"; "help" lists the commands`},
		{[]string{"boom"}, errcode.Internal, "command boom panicked: kaboom"},
		{[]string{"help", "zzz"}, errcode.ResourceNotFound, `no command starts with "zzz"`},
	} {
		o := f.table.Exec(ctx, tt.words)
		if o.Err == nil {
			t.Errorf("%q: no error", tt.words)
			continue
		}
		if e := errcode.From(o.Err); e.Code != tt.code || !strings.Contains(e.Details, tt.want) {
			t.Errorf("%q: got %v, want %s containing %q", tt.words, o.Err, tt.code, tt.want)
		}
	}
	// After-reply functions wait for Finish; a context that is not a
	// command's refuses them.
	if o := f.table.Exec(ctx, []string{"poke", "it"}); o.Err != nil {
		t.Fatal(o.Err)
	} else if f.after.Load() != 0 {
		t.Error("an after-reply function ran before Finish")
	} else if o.Finish(); f.after.Load() != 1 {
		t.Error("Finish did not run the after-reply function")
	}
	if admin.AfterReply(ctx, func() {}) {
		t.Error("AfterReply accepted a context that is not a command's")
	}
}

func TestHelp(t *testing.T) {
	f := newFixture(t)
	o := f.table.Exec(context.Background(), []string{"help"})
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	h := o.Result.(admin.Help)
	var names []string
	for _, c := range h.Commands {
		names = append(names, c.Command)
		if c.Description == "" {
			t.Errorf("%s has no description", c.Command)
		}
	}
	if got := strings.Join(names, ","); got != "block,boom,echo,help,poke,poke it" {
		t.Errorf("help lists %s", got)
	}
	for _, c := range h.Commands {
		if c.Command == "echo" && (c.Usage != "echo WORD [MORE]" || len(c.Args) != 2 || !c.ReadOnly) {
			t.Errorf("echo in help: %+v", c)
		}
	}
	o = f.table.Exec(context.Background(), []string{"help", "poke"})
	if n := len(o.Result.(admin.Help).Commands); n != 2 {
		t.Errorf("help poke: %d commands, want 2", n)
	}
}

// startSocket starts a socket for f in dir and stops it when the test ends.
func startSocket(t *testing.T, f *fixture, dir, uuid string) *admin.Socket {
	t.Helper()
	s, err := admin.NewSocket(admin.SocketOptions{Dir: dir, NodeUUID: uuid, Table: f.table})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

func TestSocketModesAndProtocol(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "run")
	old := syscall.Umask(0) // the modes must not depend on the umask
	s := startSocket(t, f, dir, "n1")
	syscall.Umask(old)

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("run directory mode %04o, want 0700", fi.Mode().Perm())
	}
	fi, err = os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	if target, err := os.Readlink(filepath.Join(dir, admin.LinkName)); err != nil || target != "mplane-n1.asok" {
		t.Errorf("link: %q, %v", target, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Several requests on one connection, in both forms, and bad lines.
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	ask := func(line string) admin.Response {
		t.Helper()
		if _, err := io.WriteString(c, line+"\n"); err != nil {
			t.Fatal(err)
		}
		b, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var rsp admin.Response
		if err := json.Unmarshal(b, &rsp); err != nil {
			t.Fatalf("answer %q: %v", b, err)
		}
		return rsp
	}
	if rsp := ask(`{"command": ["echo", "x y"]}`); !rsp.OK || string(rsp.Result) != `{"args":["x y"]}` {
		t.Errorf("echo: %+v %s", rsp, rsp.Result)
	}
	if rsp := ask(`{"command": "echo a b"}`); !rsp.OK || string(rsp.Result) != `{"args":["a","b"]}` {
		t.Errorf("echo as a string: %+v %s", rsp, rsp.Result)
	}
	for line, code := range map[string]errcode.Code{
		`not json`:                             errcode.MalformedMessage,
		`{"cmd": ["echo"]}`:                    errcode.MalformedMessage,
		`{"command": 3}`:                       errcode.MalformedMessage,
		`{"command": ["nope"]}`:                errcode.ResourceNotFound,
		`{"command": ["echo", 1, 2]}`:          errcode.MalformedMessage,
		`{"command": ["echo", "a", "b", "c"]}`: errcode.InvalidArgument,
	} {
		if rsp := ask(line); rsp.OK || rsp.Error == nil || rsp.Error.Code != code {
			t.Errorf("%s: %+v, want error %s", line, rsp, code)
		}
	}
	// The follow-up of a command runs after its answer is written.
	if rsp := ask(`{"command": ["poke", "it"]}`); !rsp.OK {
		t.Fatalf("poke it: %+v", rsp.Error)
	}
	waitFor(t, func() bool { return f.after.Load() == 1 }, "the after-reply function ran")

	// The client side: Resolve and Call.
	for _, target := range []string{"mplane", "mplane.asok", "mplane-n1.asok", "n", "n1", s.Path()} {
		p, err := admin.Resolve(dir, target)
		if err != nil {
			t.Errorf("Resolve(%q): %v", target, err)
			continue
		}
		res, err := admin.Call(context.Background(), p, []string{"echo", target})
		if err != nil || !strings.Contains(string(res), target) {
			t.Errorf("Call via %q: %s, %v", target, res, err)
		}
	}
	_, err = admin.Call(context.Background(), s.Path(), []string{"echo"})
	if e, ok := errors.AsType[*errcode.Error](err); !ok || e.Code != errcode.InvalidArgument || !strings.Contains(e.Details, "missing argument WORD") {
		t.Errorf("Call echo without its argument: %v", err)
	}
	if _, err := admin.Resolve(dir, "zz"); err == nil || !strings.Contains(err.Error(), "mplane-n1.asok") {
		t.Errorf("Resolve(zz): %v, want the sockets there listed", err)
	}
	if _, err := admin.Resolve(filepath.Join(dir, "nowhere"), "mplane"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Resolve in a missing directory: %v", err)
	}
}

func TestResolveAmbiguous(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "run")
	startSocket(t, f, dir, "ab1")
	startSocket(t, f, dir, "ab2")
	if _, err := admin.Resolve(dir, "ab"); err == nil || !strings.Contains(err.Error(), "several nodes") {
		t.Errorf("Resolve(ab): %v", err)
	}
	// The link names the node started last.
	p, err := admin.Resolve(dir, "mplane")
	if err != nil {
		t.Fatal(err)
	}
	if target, _ := os.Readlink(p); target != "mplane-ab2.asok" {
		t.Errorf("mplane.asok -> %q, want the last started", target)
	}
}

func TestSocketStaleAndStop(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A dead node's socket: bound, then closed without removing the file.
	dead := filepath.Join(dir, admin.SocketName("dead"))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	// A live one, answering.
	live := startSocket(t, f, dir, "live")

	s, err := admin.NewSocket(admin.SocketOptions{Dir: dir, NodeUUID: "n2", Table: f.table})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead node's socket is still there: %v", err)
	}
	if _, err := os.Lstat(live.Path()); err != nil {
		t.Errorf("the live node's socket was removed: %v", err)
	}

	// Stop with a command running and an idle connection: both end, the
	// files go, the live node's link would stay (it is ours here).
	idle, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	answered := make(chan error, 1)
	go func() {
		_, err := admin.Call(context.Background(), s.Path(), []string{"block"})
		answered <- err
	}()
	<-f.inside
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := <-answered; err == nil {
		t.Error("block answered no error after Stop")
	}
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Error("an idle connection is still open after Stop")
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after Stop: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, admin.LinkName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("link still there after Stop: %v", err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestSocketLongPath: a run directory whose socket path does not fit a
// sockaddr_un still works.
func TestSocketLongPath(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60), "run")
	s := startSocket(t, f, dir, "0123456789abcdef0123456789abcdef")
	if len(s.Path()) <= 108 {
		t.Fatalf("path %d bytes: not long", len(s.Path()))
	}
	p, err := admin.Resolve(dir, "mplane")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := admin.Call(context.Background(), p, []string{"echo", "long"}); err != nil || !strings.Contains(string(res), "long") {
		t.Errorf("Call: %s, %v", res, err)
	}
}

func TestHTTP(t *testing.T) {
	f := newFixture(t)
	ro := httptest.NewServer(admin.Handler(f.table, admin.HandlerOptions{}))
	defer ro.Close()
	rw := httptest.NewServer(admin.Handler(f.table, admin.HandlerOptions{Mutating: true}))
	defer rw.Close()

	do := func(method, url, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	compact := func(s string) string {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return "not JSON: " + s
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	for _, tt := range []struct {
		method, url, body string
		status            int
		want              string // the compact JSON answer, or a part of it
	}{
		{"GET", ro.URL + "/admin/echo/a", "", 200, `{"args":["a"]}`},
		{"GET", ro.URL + "/admin/echo/a?more=b", "", 200, `{"args":["a","b"]}`},
		{"POST", ro.URL + "/admin/echo?word=a&more=b", "", 200, `{"args":["a","b"]}`},
		{"GET", ro.URL + "/admin/echo?more=b", "", 400, `MORE given without WORD`},
		{"GET", ro.URL + "/admin/echo/a?word=b", "", 400, `given twice`},
		{"GET", ro.URL + "/admin/echo/a?x=1", "", 400, `unknown query parameter \"x\"`},
		{"GET", ro.URL + "/admin/nope", "", 404, `"code":"SYS.1005"`},
		{"GET", ro.URL + "/admin/help", "", 200, `"usage":"echo WORD [MORE]"`},
		{"GET", rw.URL + "/admin/poke/it", "", 405, `POST /admin/poke/it`},
		{"POST", ro.URL + "/admin/poke/it", "", 403, `"code":"SYS.1009"`},
		{"POST", ro.URL + "/admin/command", `{"command": ["poke", "it"]}`, 403, `{"error":{"code":"SYS.1009"`},
		{"POST", rw.URL + "/admin/poke/it", "", 200, `{"pokes":1}`},
		{"POST", rw.URL + "/admin/command", `{"command": ["poke", "it"]}`, 200, `{"ok":true,"result":{"pokes":2}}`},
		{"POST", ro.URL + "/admin/command", `{"command": "echo a"}`, 200, `{"ok":true,"result":{"args":["a"]}}`},
		{"POST", ro.URL + "/admin/command", `{"command": ["echo"]}`, 400, `"ok":false`},
		{"POST", ro.URL + "/admin/command", `nope`, 400, `"code":"SYS.1004"`},
		{"GET", ro.URL + "/admin/command", "", 405, `"ok":false`},
		{"DELETE", ro.URL + "/admin/echo/a", "", 405, `"code":"SYS.1007"`},
	} {
		status, body := do(tt.method, tt.url, tt.body)
		if status != tt.status || !strings.Contains(compact(body), tt.want) {
			t.Errorf("%s %s %s: %d %s, want %d with %s", tt.method, strings.TrimPrefix(strings.TrimPrefix(tt.url, ro.URL), rw.URL), tt.body, status, body, tt.status, tt.want)
		}
	}
	waitFor(t, func() bool { return f.after.Load() == 2 }, "the after-reply functions of both pokes ran")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
