package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mplane/api/client"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mplane-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mplane")
	build := exec.Command("go", "build", "-race", "-o", binary, "mplane/cmd/mplane")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mplane:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is one mplane process started by a test.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	url    string
	done   chan struct{}
	err    error
	mu     sync.Mutex
	logs   []string
	stdout bytes.Buffer
}

// lockedWriter collects a process's stdout under its lock.
type lockedWriter struct{ p *proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.stdout.Write(b)
}

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

// startProc runs `mplane args...` with env added, and stops it (SIGKILL if
// still running) when the test ends.
func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = lockedWriter{p}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// MPLANE_E2E_LOG_DIR keeps every process's whole log there (a failed
	// test prints only the last lines).
	var logFile *os.File
	if d := os.Getenv("MPLANE_E2E_LOG_DIR"); d != "" {
		if f, err := os.Create(filepath.Join(d, strings.ReplaceAll(t.Name(), "/", "_")+"-"+name+".log")); err == nil {
			logFile = f
		}
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			p.mu.Lock()
			p.logs = append(p.logs, sc.Text())
			p.mu.Unlock()
			if logFile != nil {
				fmt.Fprintln(logFile, sc.Text())
			}
		}
		if logFile != nil {
			logFile.Close()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.mu.Lock()
			n := len(p.logs)
			from := max(0, n-40)
			t.Logf("--- last log lines of %s ---\n%s", p.name, strings.Join(p.logs[from:], "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) exitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) logged(substr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

var httpc = &http.Client{Timeout: 60 * time.Second}

// getJSON GETs url into v; it reports the status code.
func getJSON(ctx context.Context, url string, v any) (int, error) {
	return doJSON(ctx, http.MethodGet, url, v)
}

// postJSON POSTs (no body) to url and decodes the answer into v.
func postJSON(ctx context.Context, url string, v any) (int, error) {
	return doJSON(ctx, http.MethodPost, url, v)
}

// e2ePassword is the admin password the suite's servers start with.
const e2ePassword = "e2e-secret"

// adminSessions are admin sessions by server base URL, for the operators'
// endpoints (/admin/*, /debug/pprof/*), which the API listener serves to
// admin sessions only.
var adminSessions sync.Map

func adminSession(ctx context.Context, base string, fresh bool) (string, error) {
	if s, ok := adminSessions.Load(base); ok && !fresh {
		return s.(string), nil
	}
	c, err := client.New(base)
	if err != nil {
		return "", err
	}
	sess, err := c.Login(ctx, "admin", e2ePassword)
	if err != nil {
		return "", fmt.Errorf("log in to %s for its admin endpoints: %w", base, err)
	}
	adminSessions.Store(base, sess.UUID)
	return sess.UUID, nil
}

func doJSON(ctx context.Context, method, url string, v any) (int, error) {
	resp, err := doAuthorized(ctx, method, url, false)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		resp, err = doAuthorized(ctx, method, url, true) // the session expired with its server
	}
	if err != nil {
		return 0, err
	}
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

// doAuthorized sends a request without a body, with an admin session when
// it is for a server's operators' endpoints.
func doAuthorized(ctx context.Context, method, url string, fresh bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	if p := req.URL.Path; strings.HasPrefix(p, "/admin/") || strings.HasPrefix(p, "/debug/pprof") {
		sess, err := adminSession(ctx, req.URL.Scheme+"://"+req.URL.Host, fresh)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "OAuth "+sess)
	}
	return httpc.Do(req)
}
