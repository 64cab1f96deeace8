// Package uid makes the identifiers of mplane: resource UUIDs, job and
// session UUIDs, agent task UUIDs, node incarnations and secrets. Every one
// is 128 random bits from crypto/rand as 32 lowercase hex digits, ZStack's
// UUID form (a UUID without dashes). Task UUIDs, session UUIDs and host
// secrets are credentials, so they must not be guessable: that is why there
// is one generator, and it is the strong one.
package uid

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
)

// New returns a new identifier: 32 lowercase hex digits.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics on a broken source)
	return hex.EncodeToString(b[:])
}

var pattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Valid reports whether s has the form New returns.
func Valid(s string) bool { return pattern.MatchString(s) }
