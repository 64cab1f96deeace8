package db

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"mplane/internal/testenv"
)

type testNode struct {
	ID        uint   `gorm:"primaryKey"`
	Name      string `gorm:"size:64;uniqueIndex"`
	CreatedAt time.Time
}

type testNIC struct {
	ID         uint `gorm:"primaryKey"`
	TestNodeID uint
	TestNode   testNode `gorm:"constraint:OnDelete:CASCADE"`
}

var backends = []struct {
	name    string
	dialect string
	dsn     func(t testing.TB) string
}{
	{"sqlite", "sqlite", testenv.SQLiteDSN},
	{"mysql", "mysql", testenv.MySQLDSN},
}

func open(t *testing.T, dsn string, opts Options) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := Open(ctx, dsn, opts)
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	t.Cleanup(func() {
		if err := Close(gdb); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return gdb
}

func TestBackends(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			gdb := open(t, b.dsn(t), Options{})
			ctx := context.Background()

			if got := Dialect(gdb); got != b.dialect {
				t.Errorf("Dialect() = %q, want %q", got, b.dialect)
			}
			if err := gdb.AutoMigrate(&testNode{}, &testNIC{}); err != nil {
				t.Fatalf("AutoMigrate: %v", err)
			}

			n := testNode{Name: "n1"}
			if err := gdb.WithContext(ctx).Create(&n).Error; err != nil {
				t.Fatalf("create: %v", err)
			}
			if n.CreatedAt.Location() != time.UTC {
				t.Errorf("CreatedAt location %v, want UTC", n.CreatedAt.Location())
			}
			var got testNode
			if err := gdb.WithContext(ctx).First(&got, n.ID).Error; err != nil {
				t.Fatalf("read back: %v", err)
			}
			if !got.CreatedAt.Equal(n.CreatedAt) {
				t.Errorf("CreatedAt read back %v, wrote %v", got.CreatedAt, n.CreatedAt)
			}

			err := gdb.WithContext(ctx).Create(&testNode{Name: "n1"}).Error
			if !errors.Is(err, gorm.ErrDuplicatedKey) {
				t.Errorf("duplicate name: err %v, want gorm.ErrDuplicatedKey", err)
			}
			err = gdb.WithContext(ctx).Create(&testNIC{TestNodeID: 9999}).Error
			if !errors.Is(err, gorm.ErrForeignKeyViolated) {
				t.Errorf("dangling foreign key: err %v, want gorm.ErrForeignKeyViolated", err)
			}

			now, err := Now(ctx, gdb)
			if err != nil {
				t.Fatalf("Now: %v", err)
			}
			if now.Location() != time.UTC {
				t.Errorf("Now() location %v, want UTC", now.Location())
			}
			// Same machine: a time zone mistake would be off by hours.
			if d := time.Since(now); d < -time.Minute || d > time.Minute {
				t.Errorf("Now() = %v, local clock %v: off by %v", now, time.Now().UTC(), d)
			}
		})
	}
}

func TestNowPrecision(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			gdb := open(t, b.dsn(t), Options{})
			// Sub-second precision: two readings a few ms apart differ.
			first, err := Now(context.Background(), gdb)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 5*time.Second, func() bool {
				next, err := Now(context.Background(), gdb)
				return err == nil && next.After(first) && next.Sub(first) < time.Second
			}, "database clock advances by less than a second")
		})
	}
}

func TestSQLitePragmas(t *testing.T) {
	gdb := open(t, testenv.SQLiteDSN(t), Options{})
	sqlDB, err := gdb.DB()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Hold several connections at once so more than one is checked.
	var conns []interface{ Close() error }
	for i := range 3 {
		conn, err := sqlDB.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		for _, p := range []struct{ pragma, want string }{
			{"journal_mode", "wal"},
			{"busy_timeout", "5000"},
			{"foreign_keys", "1"},
		} {
			var got string
			if err := conn.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(&got); err != nil {
				t.Fatalf("conn %d: PRAGMA %s: %v", i, p.pragma, err)
			}
			if got != p.want {
				t.Errorf("conn %d: PRAGMA %s = %q, want %q", i, p.pragma, got, p.want)
			}
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

func TestSQLiteDriverDSN(t *testing.T) {
	tests := []struct {
		query string
		want  []string
		avoid []string
	}{
		{"", []string{"_pragma=busy_timeout%285000%29", "_pragma=journal_mode%28WAL%29", "_pragma=foreign_keys%281%29", "_txlock=immediate"}, nil},
		{"_pragma=busy_timeout(100)&_txlock=deferred", []string{"busy_timeout%28100%29", "_txlock=deferred"}, []string{"5000", "immediate"}},
	}
	for _, tt := range tests {
		got, err := sqliteDriverDSN("/x/mplane.db", tt.query)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, "/x/mplane.db?") {
			t.Errorf("query %q: %q does not start with the file", tt.query, got)
		}
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("query %q: %q lacks %q", tt.query, got, w)
			}
		}
		for _, a := range tt.avoid {
			if strings.Contains(got, a) {
				t.Errorf("query %q: %q overrides the user's setting with %q", tt.query, got, a)
			}
		}
	}
}

func TestSQLiteCreatesParentDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "mplane.db")
	gdb := open(t, "sqlite:"+path, Options{})
	if err := gdb.Exec("CREATE TABLE t (id INTEGER)").Error; err != nil {
		t.Fatal(err)
	}
	// The database holds sessions and host secrets: the owner's alone,
	// its directory, its file and its WAL files.
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory of the database: %v, %v; want mode 0700", fi.Mode(), err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", filepath.Base(f), fi.Mode(), err)
		}
	}
}

// A database file made before, readable by others, is made private when
// opened.
func TestSQLiteExistingFileMadePrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mplane.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	open(t, "sqlite:"+path, Options{})
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("database file: %v, %v; want mode 0600", fi.Mode(), err)
	}
}

func TestSQLiteMemory(t *testing.T) {
	gdb := open(t, "sqlite::memory:", Options{MaxOpenConns: 10})
	if err := gdb.AutoMigrate(&testNode{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() {
			errs <- gdb.Create(&testNode{Name: strings.Repeat("x", i+1)}).Error
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("create: %v", err)
		}
	}
	var n int64
	if err := gdb.Model(&testNode{}).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Errorf("count %d, want 10: every connection must see the same memory database", n)
	}
}

// TestSQLiteConcurrentWriters runs read-then-write transactions from many
// goroutines: with DEFERRED transactions some fail with SQLITE_BUSY whatever
// the busy timeout; with IMMEDIATE they queue.
func TestSQLiteConcurrentWriters(t *testing.T) {
	type counter struct {
		ID    uint `gorm:"primaryKey"`
		Value int
	}
	gdb := open(t, testenv.SQLiteDSN(t), Options{})
	if err := gdb.AutoMigrate(&counter{}); err != nil {
		t.Fatal(err)
	}
	if err := gdb.Create(&counter{ID: 1}).Error; err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				errs <- gdb.Transaction(func(tx *gorm.DB) error {
					var c counter
					if err := tx.First(&c, 1).Error; err != nil {
						return err
					}
					return tx.Model(&c).Update("value", c.Value+1).Error
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("transaction: %v", err)
		}
	}
	var c counter
	if err := gdb.First(&c, 1).Error; err != nil {
		t.Fatal(err)
	}
	if c.Value != workers*perWorker {
		t.Errorf("counter %d, want %d: lost updates", c.Value, workers*perWorker)
	}
}

func TestOpenBadDSN(t *testing.T) {
	tests := []struct {
		dsn  string
		want string
	}{
		{"postgres://u:p@h/db", `open database: unsupported DSN scheme "postgres"; use sqlite:<path> or mysql://<dsn>`},
		{"/var/lib/mplane.db", `open database: unsupported DSN scheme ""; use sqlite:<path> or mysql://<dsn>`},
		{"", `open database: unsupported DSN scheme ""; use sqlite:<path> or mysql://<dsn>`},
		{"sqlite:", `open database: sqlite DSN needs a path, e.g. sqlite:/var/lib/mplane/mplane.db or sqlite::memory: (got "sqlite:")`},
		{"mysql://root:pw@127.0.0.1/db", `open database: parse mysql DSN: default addr for network '127.0.0.1' unknown`},
	}
	for _, tt := range tests {
		_, err := Open(context.Background(), tt.dsn, Options{})
		if err == nil || err.Error() != tt.want {
			t.Errorf("Open(%q) error\n got %v\nwant %s", tt.dsn, err, tt.want)
		}
	}
}

// normalizeMySQLDSN returns raw with mplane's settings applied, in
// go-sql-driver form, so tests can check what mysqlConfig sets.
func normalizeMySQLDSN(raw string) (string, error) {
	cfg, err := mysqlConfig(raw)
	if err != nil {
		return "", err
	}
	return cfg.FormatDSN(), nil
}

func TestNormalizeMySQLDSN(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"root:@tcp(127.0.0.1:3306)/mplane", []string{"parseTime=true", "charset=utf8mb4", "timeout=10s"}},
		{"root:@tcp(db:3306)/mplane?parseTime=false", []string{"parseTime=true"}},
		{"root:@tcp(db:3306)/mplane?charset=utf8&timeout=2s", []string{"charset=utf8", "timeout=2s"}},
		{"root:@tcp(db:3306)/mplane?loc=Europe%2FParis", []string{"loc=Europe%2FParis"}},
	}
	for _, tt := range tests {
		got, err := normalizeMySQLDSN(tt.in)
		if err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("normalizeMySQLDSN(%q) = %q, lacks %q", tt.in, got, w)
			}
		}
		// loc=UTC is the driver's default, which FormatDSN leaves out.
		if !strings.Contains(tt.in, "loc=") && strings.Contains(got, "loc=") {
			t.Errorf("normalizeMySQLDSN(%q) = %q: loc should stay UTC", tt.in, got)
		}
	}
	cfg, err := mysqlConfig("root:@tcp(db:3306)/mplane")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Loc != time.UTC || !cfg.ParseTime || cfg.Params["charset"] != "utf8mb4" {
		t.Errorf("mysqlConfig: loc %v parseTime %v charset %q", cfg.Loc, cfg.ParseTime, cfg.Params["charset"])
	}
}

// logBuffer is a slog.Logger writing JSON lines to a buffer, at every level.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func TestOpenMySQLRetriesUntilDeadline(t *testing.T) {
	log, buf := logBuffer()
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	// Nothing listens on port 1: every attempt is refused at once.
	_, err := Open(ctx, "mysql://root:topsecret@tcp(127.0.0.1:1)/mplane", Options{Logger: log})
	if err == nil {
		t.Fatal("Open succeeded with no server")
	}
	for _, w := range []string{"open database: mysql tcp(127.0.0.1:1)/mplane not reachable after", "connection refused"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if n := strings.Count(buf.String(), `"level":"WARN","msg":"database not reachable, retrying"`); n < 2 {
		t.Errorf("%d retry warnings, want several:\n%s", n, buf)
	}
	if strings.Contains(err.Error()+buf.String(), "topsecret") {
		t.Errorf("password leaked:\nerr %v\nlog %s", err, buf)
	}
}

func TestOpenMySQLPermanentError(t *testing.T) {
	dsn := testenv.MySQLDSN(t)
	cfg, err := mysqlConfig(strings.TrimPrefix(dsn, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Passwd = "mplane_no_such_user", "topsecret"
	log, buf := logBuffer()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Open(ctx, "mysql://"+cfg.FormatDSN(), Options{Logger: log})
	if err == nil {
		t.Fatal("Open succeeded with a user that does not exist")
	}
	if !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("error %q does not say access was denied", err)
	}
	if strings.Contains(buf.String(), "retrying") {
		t.Errorf("retried an error that waiting cannot fix:\n%s", buf)
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("password leaked: %v", err)
	}
}

func TestLogging(t *testing.T) {
	ctx := context.Background()
	t.Run("slow statements at warn without parameter values", func(t *testing.T) {
		log, buf := logBuffer()
		gdb := open(t, testenv.SQLiteDSN(t), Options{Logger: log, SlowThreshold: time.Nanosecond})
		var n int
		if err := gdb.WithContext(ctx).Raw("SELECT length(?)", "hunter2").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		if !strings.Contains(out, `"level":"WARN","msg":"slow sql statement","sql":"SELECT length(?)"`) {
			t.Errorf("no slow statement warning:\n%s", out)
		}
		if strings.Contains(out, "hunter2") {
			t.Errorf("parameter value logged:\n%s", out)
		}
	})
	t.Run("failures at debug, record not found never", func(t *testing.T) {
		log, buf := logBuffer()
		gdb := open(t, testenv.SQLiteDSN(t), Options{Logger: log, SlowThreshold: -1})
		if err := gdb.AutoMigrate(&testNode{}); err != nil {
			t.Fatal(err)
		}
		buf.Reset()
		err := gdb.WithContext(ctx).First(&testNode{}).Error
		if !errors.Is(err, gorm.ErrRecordNotFound) {
			t.Fatalf("First on empty table: %v", err)
		}
		if buf.Len() != 0 {
			t.Errorf("logged on record not found:\n%s", buf)
		}
		if err := gdb.WithContext(ctx).Exec("SELECT * FROM no_such_table").Error; err == nil {
			t.Fatal("query on a missing table succeeded")
		}
		if !strings.Contains(buf.String(), `"level":"DEBUG","msg":"sql statement failed"`) || !strings.Contains(buf.String(), "no such table") {
			t.Errorf("failure not logged at debug:\n%s", buf)
		}
		if strings.Contains(buf.String(), `"level":"WARN"`) || strings.Contains(buf.String(), `"level":"ERROR"`) {
			t.Errorf("failure logged above debug:\n%s", buf)
		}
	})
	t.Run("quiet by default, every statement with Debug()", func(t *testing.T) {
		log, buf := logBuffer()
		gdb := open(t, testenv.SQLiteDSN(t), Options{Logger: log})
		var n int
		if err := gdb.WithContext(ctx).Raw("SELECT 1").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if buf.Len() != 0 {
			t.Errorf("fast statement logged:\n%s", buf)
		}
		if err := gdb.WithContext(ctx).Debug().Raw("SELECT 2").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), `"level":"INFO","msg":"sql statement","sql":"SELECT 2"`) {
			t.Errorf("Debug() did not log the statement:\n%s", buf)
		}
	})
}

// Every MySQL connection, also a transaction's and one opened after the
// pool's first, runs at READ COMMITTED whatever the server's default.
func TestMySQLSessionsReadCommitted(t *testing.T) {
	gdb, err := Open(context.Background(), testenv.MySQLDSN(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Close(gdb) })
	level := func(q *gorm.DB) string {
		var l string
		// MariaDB and MySQL 5.7 name it tx_isolation, MySQL 8 transaction_isolation.
		if err := q.Raw("SELECT @@session.tx_isolation").Scan(&l).Error; err != nil {
			if err := q.Raw("SELECT @@session.transaction_isolation").Scan(&l).Error; err != nil {
				t.Fatal(err)
			}
		}
		return l
	}
	if l := level(gdb); l != "READ-COMMITTED" {
		t.Errorf("session isolation %s, want READ-COMMITTED", l)
	}
	err = gdb.Transaction(func(tx *gorm.DB) error {
		if l := level(tx); l != "READ-COMMITTED" {
			t.Errorf("isolation in a transaction %s, want READ-COMMITTED", l)
		}
		// A second connection while the first is held by the transaction.
		if l := level(gdb); l != "READ-COMMITTED" {
			t.Errorf("isolation of another connection %s, want READ-COMMITTED", l)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
