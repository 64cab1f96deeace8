package db

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"gorm.io/gorm"
)

// Transient reports a database error that a new attempt of the same
// transaction may not hit: InnoDB chose it as a deadlock victim (1213) or
// its lock wait timed out (1205); SQLite was busy.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213 || me.Number == 1205
	}
	msg := err.Error()
	return strings.Contains(msg, "database is locked") || strings.Contains(msg, "SQLITE_BUSY")
}

// Transaction runs fn in a transaction of gdb, again (up to 5 attempts,
// with a short random pause) while it fails with a Transient error: a
// deadlock between two short transactions is not a failure of either.
// fn must be safe to run again (it is: its first run was rolled back).
func Transaction(ctx context.Context, gdb *gorm.DB, fn func(tx *gorm.DB) error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			pause := time.Duration(5+rand.IntN(20*attempt)) * time.Millisecond
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(pause):
			}
		}
		if err = gdb.WithContext(ctx).Transaction(fn); !Transient(err) {
			return err
		}
	}
	return err
}
