package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/go-sql-driver/mysql"
	gormmysql "gorm.io/driver/mysql"
	"gorm.io/gorm"
)

const (
	firstRetryDelay = 100 * time.Millisecond
	maxRetryDelay   = 5 * time.Second
)

func openMySQL(ctx context.Context, raw string, opts Options) (*gorm.DB, error) {
	cfg, err := mysqlConfig(raw)
	if err != nil {
		return nil, err
	}
	where := mysqlWhere(cfg)
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: mysql %s: %w", where, err)
	}
	sqlDB := sql.OpenDB(readCommitted{connector})
	p := opts.pool(defaultMySQLMaxOpen, defaultMySQLLifetime)
	sqlDB.SetMaxOpenConns(p.maxOpen)
	sqlDB.SetMaxIdleConns(p.maxIdle)
	sqlDB.SetConnMaxLifetime(p.lifetime)

	if err := pingWithRetry(ctx, sqlDB, opts.Logger, where); err != nil {
		_ = sqlDB.Close()
		return nil, err
	}
	gdb, err := gorm.Open(gormmysql.New(gormmysql.Config{Conn: sqlDB, DSNConfig: cfg}), gormConfig(opts))
	if err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("open database: mysql %s: %w", where, err)
	}
	if err := markUnavailable(gdb); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("open database: register callbacks: %w", err)
	}
	return gdb, nil
}

// readCommitted opens every connection at READ COMMITTED. The write fence
// (managementnode.FenceWrites) makes each update conditional on its node's
// membership row; at REPEATABLE READ that condition would be a locking read,
// so a transaction of a node would hold a shared lock on its row, blocking
// its own heartbeat, and a paused one its eviction, until it ended. At READ
// COMMITTED it is a plain read of the latest committed row: an evicted
// node's update matches nothing.
type readCommitted struct{ driver.Connector }

func (c readCommitted) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("mysql driver connection cannot execute statements")
	}
	if _, err := ex.ExecContext(ctx, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", nil); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("set isolation level READ COMMITTED: %w", err)
	}
	return conn, nil
}

// mysqlConfig parses a go-sql-driver DSN and applies mplane's settings:
// parseTime always (models and Now scan time.Time), charset utf8mb4 unless
// given, client-side parameter binding, and a dial timeout unless given. loc is UTC unless the DSN names
// another: that is the driver's own default.
func mysqlConfig(raw string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(raw)
	if err != nil {
		// The driver's messages never echo the DSN, which may hold a password.
		return nil, fmt.Errorf("open database: parse mysql DSN: %w", err)
	}
	cfg.ParseTime = true
	if cfg.Params == nil {
		cfg.Params = make(map[string]string)
	}
	if _, ok := cfg.Params["charset"]; !ok {
		cfg.Params["charset"] = "utf8mb4"
	}
	if cfg.Loc == nil {
		cfg.Loc = time.UTC
	}
	// Bind parameters in the client: one round trip per statement instead
	// of three (prepare, execute, close). Safe with utf8mb4, the charset
	// set above unless the DSN chose another.
	if cs := cfg.Params["charset"]; cs == "utf8mb4" || cs == "utf8" {
		cfg.InterpolateParams = true
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultMySQLDialTimeout
	}
	return cfg, nil
}

// mysqlWhere names the server for errors and logs without the credentials.
func mysqlWhere(cfg *mysql.Config) string {
	return fmt.Sprintf("%s(%s)/%s", cfg.Net, cfg.Addr, cfg.DBName)
}

// pingWithRetry pings until the server answers, an error that waiting cannot
// fix comes back, or ctx is done.
func pingWithRetry(ctx context.Context, sqlDB *sql.DB, log *slog.Logger, where string) error {
	delay := firstRetryDelay
	var lastErr error
	for attempt := 1; ; attempt++ {
		err := sqlDB.PingContext(ctx)
		if err == nil {
			if attempt > 1 {
				log.Info("database reachable", "addr", where, "attempts", attempt)
			}
			return nil
		}
		if permanent(err) {
			return fmt.Errorf("open database: mysql %s: %w", where, err)
		}
		if ctx.Err() != nil {
			if lastErr == nil {
				lastErr = err
			}
			return fmt.Errorf("open database: mysql %s not reachable after %d attempts (%v): %w", where, attempt, ctx.Err(), lastErr)
		}
		lastErr = err

		// Jitter so nodes started together do not retry in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		log.Warn("database not reachable, retrying", "addr", where, "attempt", attempt, "retry_in", wait, "err", err)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("open database: mysql %s not reachable after %d attempts (%v): %w", where, attempt, ctx.Err(), lastErr)
		case <-timer.C:
		}
		delay = min(delay*2, maxRetryDelay)
	}
}

// permanent reports whether err is one that retrying cannot fix: bad
// credentials, no access to the database, no such database.
func permanent(err error) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case 1044, // ER_DBACCESS_DENIED_ERROR
		1045, // ER_ACCESS_DENIED_ERROR
		1049, // ER_BAD_DB_ERROR
		1698: // ER_ACCESS_DENIED_NO_PASSWORD_ERROR
		return true
	}
	return false
}
