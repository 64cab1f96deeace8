package testenv

import (
	"path/filepath"
	"testing"
)

// SQLiteDSN returns "sqlite:<t.TempDir()>/mplane.db", a database file that
// exists only for this test.
func SQLiteDSN(t testing.TB) string {
	t.Helper()
	return "sqlite:" + filepath.Join(t.TempDir(), "mplane.db")
}

// Backend is a database backend the tests run on.
type Backend struct {
	Name string
	// DSN returns a fresh database of this backend for the test.
	DSN func(testing.TB) string
}

// Backends are the two backends mplane supports: tests of code that talks
// to the database run on both.
var Backends = []Backend{{"sqlite", SQLiteDSN}, {"mysql", MySQLDSN}}
