package db

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Options tunes Open. The zero value is ready to use.
type Options struct {
	// Logger receives GORM's log and Open's retry warnings. Nil discards.
	Logger *slog.Logger
	// SlowThreshold is the duration past which a statement is logged at
	// warn. Zero means 200ms; negative disables slow statement logging.
	SlowThreshold time.Duration
	// MaxOpenConns caps open connections. Zero means 32 for MySQL and 8 for
	// a SQLite file (SQLite has one writer anyway; readers run in parallel
	// under WAL). sqlite::memory: always uses 1: every connection to it
	// would otherwise see its own empty database.
	MaxOpenConns int
	// MaxIdleConns caps idle connections. Zero means MaxOpenConns, so a
	// burst does not end in a storm of reconnects.
	MaxIdleConns int
	// ConnMaxLifetime closes connections older than this. Zero means 3
	// minutes for MySQL, below the idle timeouts of servers, proxies and
	// load balancers, and no limit for SQLite. Negative means no limit.
	ConnMaxLifetime time.Duration
}

const (
	sqliteScheme = "sqlite:"
	mysqlScheme  = "mysql://"

	dialectSQLite    = "sqlite"
	dialectMySQL     = "mysql"
	sqliteDriverName = "sqlite" // registered by github.com/glebarez/go-sqlite
	sqliteMemoryPath = ":memory:"

	defaultSlowThreshold    = 200 * time.Millisecond
	defaultMySQLMaxOpen     = 32
	defaultSQLiteMaxOpen    = 8
	defaultMySQLLifetime    = 3 * time.Minute
	defaultMySQLDialTimeout = 10 * time.Second

	// gormTimePrecision matches GORM's default DATETIME(3) columns on MySQL.
	gormTimePrecision = time.Millisecond
)

// Open connects to the database named by dsn (see the package doc for the
// forms) and returns a configured *gorm.DB. ctx bounds the connection
// attempts, including MySQL's start-up retries; it is not kept. Close the
// result with Close.
func Open(ctx context.Context, dsn string, opts Options) (*gorm.DB, error) {
	hideRecorderParams()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SlowThreshold == 0 {
		opts.SlowThreshold = defaultSlowThreshold
	}
	switch {
	case strings.HasPrefix(dsn, sqliteScheme):
		return openSQLite(ctx, strings.TrimPrefix(dsn, sqliteScheme), opts)
	case strings.HasPrefix(dsn, mysqlScheme):
		return openMySQL(ctx, strings.TrimPrefix(dsn, mysqlScheme), opts)
	default:
		scheme, _, found := strings.Cut(dsn, ":")
		if !found {
			scheme = ""
		}
		return nil, fmt.Errorf("open database: unsupported DSN scheme %q; use sqlite:<path> or mysql://<dsn>", scheme)
	}
}

// gormConfig is the GORM configuration shared by both backends.
func gormConfig(opts Options) *gorm.Config {
	return &gorm.Config{
		Logger: newLogger(opts.Logger, opts.SlowThreshold),
		// UTC so stored times compare correctly in SQL across nodes and
		// backends (SQLite compares them as text); truncated to the column
		// precision so what is read back equals what was written.
		NowFunc:        func() time.Time { return time.Now().UTC().Truncate(gormTimePrecision) },
		TranslateError: true,
		// A single INSERT, UPDATE or DELETE is atomic by itself; GORM's
		// default wraps each in BEGIN/COMMIT, three round trips for one.
		// Multi-statement changes use db.Transaction explicitly.
		SkipDefaultTransaction: true,
	}
}

// Dialect returns the backend of db: "sqlite" or "mysql".
func Dialect(db *gorm.DB) string {
	return db.Dialector.Name()
}

// Close closes db's connection pool.
func Close(db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	if err := sqlDB.Close(); err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	return nil
}

// poolSize applies opts' pool settings with the given defaults.
type poolSize struct {
	maxOpen, maxIdle int
	lifetime         time.Duration
}

func (o Options) pool(defMaxOpen int, defLifetime time.Duration) poolSize {
	p := poolSize{maxOpen: o.MaxOpenConns, maxIdle: o.MaxIdleConns, lifetime: o.ConnMaxLifetime}
	if p.maxOpen <= 0 {
		p.maxOpen = defMaxOpen
	}
	if p.maxIdle <= 0 {
		p.maxIdle = p.maxOpen
	}
	switch {
	case p.lifetime == 0:
		p.lifetime = defLifetime
	case p.lifetime < 0:
		p.lifetime = 0 // database/sql: no limit
	}
	return p
}
