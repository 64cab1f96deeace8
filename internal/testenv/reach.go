package testenv

import (
	"os"
	"testing"
)

// unreachable ends t because a server it needs is down: a failure under
// CI=true, a skip elsewhere. getenv is os.Getenv outside this package's tests.
func unreachable(t testing.TB, getenv func(string) string, format string, args ...any) {
	t.Helper()
	if getenv("CI") == "true" {
		t.Fatalf("CI=true, so not skipping: "+format, args...)
		return
	}
	t.Skipf(format, args...)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Require ends t because a program it needs is missing: a failure under
// CI=true (CI installs it), a skip elsewhere.
func Require(t testing.TB, format string, args ...any) {
	t.Helper()
	unreachable(t, os.Getenv, format, args...)
}
