package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

const (
	mysqlEnv        = "MPLANE_TEST_MYSQL_DSN"
	defaultMySQLDSN = "root:@tcp(127.0.0.1:3306)/test"
)

// mysqlAdmin is the process-wide connection used to create and drop the
// per-test databases. It is never closed: it lives as long as the test binary.
var mysqlAdmin struct {
	once sync.Once
	cfg  *mysql.Config
	db   *sql.DB
	err  error
}

// MySQLDSN creates an empty database for this test on the test MariaDB/MySQL
// server and returns a DSN for it in the form db.Open accepts,
// "mysql://user:pass@tcp(host:port)/mplane_t_<hex>". The database is dropped
// when the test ends. If the server is unreachable the test is skipped, or
// failed under CI=true.
func MySQLDSN(t testing.TB) string {
	t.Helper()
	mysqlAdmin.once.Do(connectMySQLAdmin)
	if mysqlAdmin.err != nil {
		unreachable(t, os.Getenv, "MySQL/MariaDB not reachable (%v); set %s (e.g. %q) or start mariadb",
			mysqlAdmin.err, mysqlEnv, defaultMySQLDSN)
		return ""
	}

	name := "mplane_t_" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := mysqlAdmin.db.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4"); err != nil {
		t.Fatalf("create test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := mysqlAdmin.db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})

	cfg := mysqlAdmin.cfg.Clone()
	cfg.DBName = name
	return "mysql://" + cfg.FormatDSN()
}

func connectMySQLAdmin() {
	raw := strings.TrimPrefix(envOr(mysqlEnv, defaultMySQLDSN), "mysql://")
	cfg, err := mysql.ParseDSN(raw)
	if err != nil {
		mysqlAdmin.err = fmt.Errorf("parse %s: %w", mysqlEnv, err)
		return
	}
	where := cfg.Net + "(" + cfg.Addr + ")"

	admin := cfg.Clone()
	admin.Timeout = probeTimeout
	connector, err := mysql.NewConnector(admin)
	if err != nil {
		mysqlAdmin.err = fmt.Errorf("%s: %w", where, err)
		return
	}
	db := sql.OpenDB(connector)
	db.SetMaxIdleConns(2)
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		mysqlAdmin.err = fmt.Errorf("%s: %w", where, err)
		return
	}
	mysqlAdmin.cfg, mysqlAdmin.db = cfg, db
}
