package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	amqp "github.com/rabbitmq/amqp091-go"
)

// fakeTB records Fatalf and Skipf instead of stopping the goroutine, so the
// helpers' failure paths can be checked. Calls it does not override go to
// the embedded real T.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Fatalf(format string, a ...any) { f.fatal = fmt.Sprintf(format, a...) }
func (f *fakeTB) Skipf(format string, a ...any)  { f.skip = fmt.Sprintf(format, a...) }

func TestUnreachable(t *testing.T) {
	tests := []struct {
		ci        string
		wantFatal bool
	}{
		{"true", true},
		{"", false},
		{"false", false},
	}
	for _, tt := range tests {
		f := &fakeTB{TB: t}
		getenv := func(k string) string {
			if k == "CI" {
				return tt.ci
			}
			return ""
		}
		unreachable(f, getenv, "server down at %s", "h:1")
		if tt.wantFatal {
			if f.fatal == "" || f.skip != "" {
				t.Errorf("CI=%q: fatal %q skip %q, want fatal only", tt.ci, f.fatal, f.skip)
			}
			if !strings.Contains(f.fatal, "server down at h:1") {
				t.Errorf("CI=%q: fatal message %q", tt.ci, f.fatal)
			}
		} else if f.skip != "server down at h:1" || f.fatal != "" {
			t.Errorf("CI=%q: fatal %q skip %q, want skip only", tt.ci, f.fatal, f.skip)
		}
	}
}

func TestAMQPURL(t *testing.T) {
	url := AMQPURL(t)
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if again := AMQPURL(t); again != url {
		t.Errorf("second call returned %q, want %q", again, url)
	}
}

func TestRedactURL(t *testing.T) {
	if got := redactURL("amqp://guest:secret@h:5672/"); strings.Contains(got, "secret") {
		t.Errorf("redactURL leaks the password: %s", got)
	}
}

func TestPrefix(t *testing.T) {
	valid := regexp.MustCompile(`^t[0-9a-f]{10}$`)
	seen := make(map[string]bool)
	for range 100 {
		p := Prefix(t)
		if !valid.MatchString(p) {
			t.Fatalf("Prefix() = %q, want t + 10 hex digits", p)
		}
		if seen[p] {
			t.Fatalf("Prefix() repeated %q", p)
		}
		seen[p] = true
	}
}

func TestSQLiteDSN(t *testing.T) {
	dsn := SQLiteDSN(t)
	if !strings.HasPrefix(dsn, "sqlite:") || !strings.HasSuffix(dsn, "/mplane.db") {
		t.Errorf("SQLiteDSN() = %q", dsn)
	}
	if dsn == SQLiteDSN(t) {
		t.Error("two calls returned the same file")
	}
}

func TestMySQLDSN(t *testing.T) {
	var dsn, name string
	t.Run("create", func(t *testing.T) {
		dsn = MySQLDSN(t)
		cfg, err := mysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
		if err != nil {
			t.Fatalf("returned DSN %q does not parse: %v", dsn, err)
		}
		name = cfg.DBName
		if !strings.HasPrefix(dsn, "mysql://") || !strings.HasPrefix(name, "mplane_t_") {
			t.Fatalf("MySQLDSN() = %q", dsn)
		}
		db := openMySQL(t, dsn)
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, "CREATE TABLE probe (id INT PRIMARY KEY)"); err != nil {
			t.Fatalf("use test database: %v", err)
		}
		if !databaseExists(t, name) {
			t.Fatalf("database %s does not exist", name)
		}
	})
	if t.Skipped() || name == "" {
		return
	}
	if databaseExists(t, name) {
		t.Errorf("database %s still exists after the subtest's cleanup", name)
	}
}

func openMySQL(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", strings.TrimPrefix(dsn, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	err := mysqlAdmin.db.QueryRowContext(context.Background(),
		"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&n)
	if err != nil {
		t.Fatalf("look up database %s: %v", name, err)
	}
	return n == 1
}

func TestEventually(t *testing.T) {
	var calls atomic.Int32
	Eventually(t, 5*time.Second, func() bool { return calls.Add(1) >= 3 }, "third call")
	if got := calls.Load(); got != 3 {
		t.Errorf("cond called %d times, want 3", got)
	}

	f := &fakeTB{TB: t}
	Eventually(f, 30*time.Millisecond, func() bool { return false }, "queue %s drained", "q1")
	if !strings.Contains(f.fatal, "condition not met within 30ms: queue q1 drained") {
		t.Errorf("fatal message %q", f.fatal)
	}

	f = &fakeTB{TB: t}
	Eventually(f, 0, func() bool { return false })
	if !strings.Contains(f.fatal, "(no description)") {
		t.Errorf("fatal message %q", f.fatal)
	}
}
