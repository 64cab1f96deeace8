package db

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"
	"gorm.io/gorm"

	"mplane/errcode"
)

// Unavailable reports a database error that says nothing about the
// statement and everything about the database: the server cannot be
// reached, dropped the connection, is shutting down, has too many
// connections, is a Galera node not ready, or (Transient) chose the
// transaction as a deadlock victim; SQLite was busy. The same statement
// may succeed later.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if Transient(err) {
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1040, // ER_CON_COUNT_ERROR
			1047, // ER_UNKNOWN_COM_ERROR: Galera's "WSREP has not yet prepared node"
			1053, // ER_SERVER_SHUTDOWN
			1927, // ER_CONNECTION_KILLED
			2006, // CR_SERVER_GONE_ERROR
			2013: // CR_SERVER_LOST
			return true
		}
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "invalid connection") || strings.Contains(msg, "bad connection")
}

// markUnavailable registers callbacks that turn an Unavailable error of any
// statement into errcode.DBUnavailable (a retryable 503 at the API) with
// the driver's error as its cause, so errors.Is and errors.As on the cause
// still work.
func markUnavailable(gdb *gorm.DB) error {
	mark := func(tx *gorm.DB) {
		if tx.Error != nil && !errcode.Has(tx.Error, errcode.DBUnavailable) && Unavailable(tx.Error) {
			tx.Error = errcode.Wrap(errcode.DBUnavailable, tx.Error, "database %s", Dialect(tx))
		}
	}
	cb := gdb.Callback()
	for _, err := range []error{
		cb.Create().After("*").Register("mplane:unavailable", mark),
		cb.Query().After("*").Register("mplane:unavailable", mark),
		cb.Update().After("*").Register("mplane:unavailable", mark),
		cb.Delete().After("*").Register("mplane:unavailable", mark),
		cb.Row().After("*").Register("mplane:unavailable", mark),
		cb.Raw().After("*").Register("mplane:unavailable", mark),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}
