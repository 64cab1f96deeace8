package db

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"
)

// logger adapts GORM's logger interface to slog. See the package doc for
// what is logged at which level.
type logger struct {
	log   *slog.Logger
	slow  time.Duration // <= 0: off
	level gormlogger.LogLevel
}

func newLogger(log *slog.Logger, slow time.Duration) *logger {
	return &logger{log: log, slow: slow, level: gormlogger.Warn}
}

// LogMode returns a copy at level; db.Debug() asks for Info to see every
// statement.
func (l *logger) LogMode(level gormlogger.LogLevel) gormlogger.Interface {
	c := *l
	c.level = level
	return &c
}

func (l *logger) Info(ctx context.Context, msg string, args ...any) {
	if l.level >= gormlogger.Info {
		l.log.InfoContext(ctx, fmt.Sprintf(msg, args...))
	}
}

func (l *logger) Warn(ctx context.Context, msg string, args ...any) {
	if l.level >= gormlogger.Warn {
		l.log.WarnContext(ctx, fmt.Sprintf(msg, args...))
	}
}

func (l *logger) Error(ctx context.Context, msg string, args ...any) {
	if l.level >= gormlogger.Error {
		l.log.ErrorContext(ctx, fmt.Sprintf(msg, args...))
	}
}

func (l *logger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	if l.level <= gormlogger.Silent {
		return
	}
	elapsed := time.Since(begin)
	switch {
	case err != nil:
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return
		}
		// Debug, not error: GORM hands err to the caller, who reports it
		// with more context than we have here.
		if l.log.Enabled(ctx, slog.LevelDebug) {
			sql, rows := fc()
			l.log.DebugContext(ctx, "sql statement failed", "sql", sql, "rows", rows, "elapsed", elapsed, "err", err)
		}
	case l.slow > 0 && elapsed > l.slow && l.level >= gormlogger.Warn:
		sql, rows := fc()
		l.log.WarnContext(ctx, "slow sql statement", "sql", sql, "rows", rows, "elapsed", elapsed, "threshold", l.slow)
	case l.level >= gormlogger.Info:
		sql, rows := fc()
		l.log.InfoContext(ctx, "sql statement", "sql", sql, "rows", rows, "elapsed", elapsed)
	}
}

// ParamsFilter keeps parameter values out of logged SQL: they may be
// passwords or tokens. GORM then logs the statement with its placeholders.
func (l *logger) ParamsFilter(_ context.Context, sql string, _ ...any) (string, []any) {
	return sql, nil
}

var hideScanParams sync.Once

// hideRecorderParams makes GORM's Scan and Pluck, which log through an
// internal recorder rather than our logger, also log SQL without parameter
// values. The hook is process-wide in GORM; setting it once from Open, before
// any *gorm.DB exists, keeps it race-free, and every *gorm.DB in mplane comes
// from Open.
func hideRecorderParams() {
	hideScanParams.Do(func() {
		gormlogger.RecorderParamsFilter = func(_ context.Context, sql string, _ ...any) (string, []any) {
			return sql, nil
		}
	})
}
