package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
)

// sqlitePragmas run on every new connection, busy_timeout first so the
// others wait for a lock instead of failing.
var sqlitePragmas = []struct{ name, value string }{
	{"busy_timeout", "5000"},
	{"journal_mode", "WAL"},
	{"foreign_keys", "1"},
}

func openSQLite(ctx context.Context, path string, opts Options) (*gorm.DB, error) {
	file, query, _ := strings.Cut(path, "?")
	if strings.TrimSpace(file) == "" {
		return nil, fmt.Errorf("open database: sqlite DSN needs a path, e.g. sqlite:/var/lib/mplane/mplane.db or sqlite::memory: (got %q)", sqliteScheme+path)
	}
	memory := file == sqliteMemoryPath
	if !memory && !strings.HasPrefix(file, "file:") {
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return nil, fmt.Errorf("open database: create directory for %s: %w", file, err)
		}
	}
	driverDSN, err := sqliteDriverDSN(file, query)
	if err != nil {
		return nil, fmt.Errorf("open database: sqlite DSN %s: %w", path, err)
	}

	sqlDB, err := sql.Open(sqliteDriverName, driverDSN)
	if err != nil {
		return nil, fmt.Errorf("open database: sqlite %s: %w", file, err)
	}
	p := opts.pool(defaultSQLiteMaxOpen, 0)
	if memory {
		// One connection, never recycled: the database lives in it.
		p = poolSize{maxOpen: 1, maxIdle: 1, lifetime: 0}
	}
	sqlDB.SetMaxOpenConns(p.maxOpen)
	sqlDB.SetMaxIdleConns(p.maxIdle)
	sqlDB.SetConnMaxLifetime(p.lifetime)
	if err := sqlDB.PingContext(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("open database: sqlite %s: %w", file, err)
	}
	if !memory && !strings.HasPrefix(file, "file:") {
		// It holds sessions and host secrets: the owner's alone. SQLite
		// gives its -wal and -shm files the database file's mode.
		for _, f := range []string{file, file + "-wal", file + "-shm"} {
			if err := os.Chmod(f, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
				_ = sqlDB.Close()
				return nil, fmt.Errorf("open database: make %s private (mode 0600): %w", f, err)
			}
		}
	}

	gdb, err := gorm.Open(&sqlite.Dialector{DriverName: sqliteDriverName, Conn: sqlDB}, gormConfig(opts))
	if err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("open database: sqlite %s: %w", file, err)
	}
	if err := markUnavailable(gdb); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("open database: register callbacks: %w", err)
	}
	return gdb, nil
}

// sqliteDriverDSN adds mplane's pragmas and _txlock=immediate to the query
// string for the glebarez driver, keeping any the user already set. It never
// adds _time_format: the driver stops reading parameters after that one, so
// _txlock would be silently dropped.
func sqliteDriverDSN(file, query string) (string, error) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("parse query parameters: %w", err)
	}
	set := make(map[string]bool)
	for _, v := range q["_pragma"] {
		name, _, _ := strings.Cut(v, "(")
		name, _, _ = strings.Cut(name, "=")
		set[strings.ToLower(strings.TrimSpace(name))] = true
	}
	var pragmas []string
	for _, p := range sqlitePragmas {
		if !set[p.name] {
			pragmas = append(pragmas, p.name+"("+p.value+")")
		}
	}
	// Ours run first so busy_timeout covers the user's too.
	q["_pragma"] = append(pragmas, q["_pragma"]...)
	if q.Get("_txlock") == "" {
		q.Set("_txlock", "immediate")
	}
	return file + "?" + q.Encode(), nil
}
