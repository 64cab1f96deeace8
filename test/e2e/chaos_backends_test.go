package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the chaos suite's own MariaDB
	amqp "github.com/rabbitmq/amqp091-go"

	"mplane/internal/testenv"
	"mplane/uid"
)

// The chaos suite runs its own MariaDB and RabbitMQ on other ports, so that
// killing and restarting them disturbs nothing else on the machine. Each
// is a process of the test's, with its data in the test's directory,
// killed (and its data removed) when the test ends.

// backendProc is one private server process that the suite can crash
// (SIGKILL) and start again on the same port and data.
type backendProc struct {
	t     *testing.T
	name  string
	start func() *exec.Cmd
	ready func(ctx context.Context) error

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func (b *backendProc) up() {
	b.t.Helper()
	b.mu.Lock()
	cmd := b.start()
	cmd.Stdout, cmd.Stderr = b.log, b.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children die with it
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		b.t.Fatalf("start %s: %v", b.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		err := b.ready(ctx)
		if err == nil {
			return
		}
		select {
		case <-done:
			b.t.Fatalf("%s exited during start-up (log %s): %v", b.name, b.log.Name(), err)
		case <-ctx.Done():
			b.t.Fatalf("%s not ready after 90s (log %s): %v", b.name, b.log.Name(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// crash kills the server and its children at once, as a power cut would.
func (b *backendProc) crash() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

func newBackend(t *testing.T, name string, start func() *exec.Cmd, ready func(ctx context.Context) error) *backendProc {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	b := &backendProc{t: t, name: name, start: start, ready: ready, log: logf}
	t.Cleanup(func() { b.crash(); _ = logf.Close() })
	b.up()
	return b
}

// privateDB is a MariaDB server of the test's own.
type privateDB struct {
	*backendProc
	port int
}

func startPrivateDB(t *testing.T) *privateDB {
	t.Helper()
	bin, err := exec.LookPath("mariadbd")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mariadbd"); err != nil {
			testenv.Require(t, "mariadbd (Debian package mariadb-server) for the chaos suite's own database: %v", err)
		}
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	install := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal",
		"--skip-test-db", "--user="+me.Username)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	port := freePort(t)
	d := &privateDB{port: port}
	dsn := fmt.Sprintf("root@tcp(127.0.0.1:%d)/?timeout=2s", port)
	d.backendProc = newBackend(t, "mariadb", func() *exec.Cmd {
		return exec.Command(bin, "--no-defaults", "--datadir="+data, fmt.Sprintf("--port=%d", port), "--bind-address=127.0.0.1",
			"--socket="+filepath.Join(dir, "mysqld.sock"), "--pid-file="+filepath.Join(dir, "mysqld.pid"), "--user="+me.Username,
			"--skip-name-resolve", "--innodb-buffer-pool-size=128M", "--max-connections=500", "--skip-log-bin")
	}, func(ctx context.Context) error {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	})
	return d
}

// newDatabase creates an empty database and returns its DSN as mplane takes
// it.
func (d *privateDB) newDatabase(t *testing.T) string {
	t.Helper()
	name := "chaos_" + uid.New()[:12]
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", d.port))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE `" + name + "` CHARACTER SET utf8mb4"); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("mysql://root@tcp(127.0.0.1:%d)/%s?parseTime=true", d.port, name)
}

// privateMQ is a RabbitMQ node of the test's own.
type privateMQ struct {
	*backendProc
	url string
	// node and env reach the node with rabbitmqctl (dropConnections).
	node, ctl string
	env       []string
}

// dropConnections closes every client connection of the broker, which
// stays up: the nodes must reconnect and carry on.
func (m *privateMQ) dropConnections(t *testing.T) {
	t.Helper()
	ctl := func(args ...string) string {
		cmd := exec.Command(m.ctl, append([]string{"-q", "-n", m.node}, args...)...)
		cmd.Env = m.env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("rabbitmqctl %s: %v: %s", args[0], err, out)
		}
		return string(out)
	}
	n := len(strings.Fields(ctl("list_connections", "pid")))
	if n == 0 {
		t.Errorf("the broker has no connections to drop")
	}
	ctl("close_all_connections", "chaos suite: connection dropped")
	t.Logf("dropped the broker's %d connections", n)
}

func startPrivateMQ(t *testing.T) *privateMQ {
	t.Helper()
	bin := "/usr/lib/rabbitmq/bin/rabbitmq-server" // the server itself, not the wrapper that switches user
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("rabbitmq-server"); err != nil {
			testenv.Require(t, "rabbitmq-server (Debian package rabbitmq-server) for the chaos suite's own broker: %v", err)
		}
	}
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	for _, d := range []string{home, filepath.Join(dir, "mnesia"), filepath.Join(dir, "log")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(home, ".erlang.cookie"), []byte(strings.ToUpper(uid.New())), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plugins"), []byte("[].\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port, dist := freePort(t), freePort(t)
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"),
		fmt.Appendf(nil, "listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", port), 0o600); err != nil {
		t.Fatal(err)
	}
	node := "mplane-chaos-" + uid.New()[:8] + "@localhost"
	env := append(os.Environ(), "HOME="+home, "RABBITMQ_NODENAME="+node, fmt.Sprintf("RABBITMQ_NODE_PORT=%d", port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", dist), "RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"), "RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"), "RABBITMQ_PID_FILE="+filepath.Join(dir, "rabbitmq.pid"),
		"RABBITMQ_FEATURE_FLAGS_FILE="+filepath.Join(dir, "feature_flags"))
	m := &privateMQ{url: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port), node: node, env: env,
		ctl: filepath.Join(filepath.Dir(bin), "rabbitmqctl")}
	m.backendProc = newBackend(t, "rabbitmq", func() *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = env
		cmd.Dir = dir
		return cmd
	}, func(ctx context.Context) error {
		c, err := amqp.DialConfig(m.url, amqp.Config{Dial: amqp.DefaultDial(time.Second)})
		if err != nil {
			return err
		}
		return c.Close()
	})
	return m
}
