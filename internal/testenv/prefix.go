package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
)

// Prefix returns a bus_prefix unique to this call, "t" and 10 hex digits, so
// a test's exchanges and queues never meet another test's on a shared broker.
func Prefix(t testing.TB) string {
	t.Helper()
	return "t" + randomHex(5)
}

func randomHex(nbytes int) string {
	b := make([]byte, nbytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b)
}
