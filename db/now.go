package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

var errNoClock = errors.New("database clock not supported for this dialect")

// serverTimeLayout parses what the queries below return; the fraction is
// optional so both SQLite's milliseconds and MySQL's microseconds fit.
const serverTimeLayout = "2006-01-02 15:04:05.999999999"

// Now returns the database server's current time in UTC. Nodes compare
// heartbeats against this one clock rather than their own, which may drift.
//
// The time is formatted to text in SQL and parsed here as UTC, so neither the
// session time zone nor the driver's loc setting can shift it.
func Now(ctx context.Context, db *gorm.DB) (time.Time, error) {
	var query string
	switch Dialect(db) {
	case dialectMySQL:
		query = "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')"
	case dialectSQLite:
		query = "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"
	default:
		return time.Time{}, fmt.Errorf("read database clock: %w: %q", errNoClock, Dialect(db))
	}
	var s string
	if err := db.WithContext(ctx).Raw(query).Row().Scan(&s); err != nil {
		return time.Time{}, fmt.Errorf("read database clock: %w", err)
	}
	t, err := time.ParseInLocation(serverTimeLayout, s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("read database clock: parse %q: %w", s, err)
	}
	return t, nil
}
