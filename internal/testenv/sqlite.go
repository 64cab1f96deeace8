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
