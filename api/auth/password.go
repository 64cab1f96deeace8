package auth

import (
	"crypto/sha512"
	"encoding/hex"

	"golang.org/x/crypto/bcrypt"
)

// DigestLen is the length of a password digest: SHA-512 in lowercase hex.
const DigestLen = 2 * sha512.Size

// IsDigest reports whether s is taken as a password digest rather than a
// plain password: exactly 128 characters, all of 0-9 and a-f.
func IsDigest(s string) bool {
	if len(s) != DigestLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Digest returns the form ZStack clients send a password in, the SHA-512
// hex digest of the plain password. A value that already IsDigest is
// returned unchanged.
func Digest(password string) string {
	if IsDigest(password) {
		return password
	}
	sum := sha512.Sum512([]byte(password))
	return hex.EncodeToString(sum[:])
}

// digestBytes is what bcrypt hashes: the 64 raw bytes of the digest.
// bcrypt reads at most 72 bytes, so the 128-character hex form would not
// fit (x/crypto refuses it); the raw bytes carry the same information.
func digestBytes(password string) []byte {
	raw, _ := hex.DecodeString(Digest(password)) // Digest returns valid hex
	return raw
}

// hashPassword returns the stored form of password: bcrypt, at cost, of
// the raw SHA-512 digest.
func hashPassword(password string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword(digestBytes(password), cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

// checkPassword reports whether password (plain or digest) matches hash.
func checkPassword(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), digestBytes(password)) == nil
}
