package auth

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"mplane/errcode"
)

// Login limits (docs/security.md). A client (its address) that fails
// loginMaxFailures logins in a row for one account name is locked out of
// that name for loginLockout, doubled at each further lockout up to
// loginMaxLockout; a success clears its count. The lockout is answered
// 429 (Busy) before any password is checked, with a log line. Password
// checks (bcrypt, deliberately slow) run at most NumCPU at once, so a
// login storm queues instead of taking every core from the rest of the
// API. The counts are each node's own: a client that spreads its guesses
// over N nodes gets N times as many.
const (
	loginMaxFailures = 5
	loginLockout     = time.Minute
	loginMaxLockout  = time.Hour
	loginForgetAfter = time.Hour // a count untouched this long is dropped
	loginMaxTracked  = 100_000   // bound on the clients x names tracked
)

type loginKey struct{ client, account string }

type loginRecord struct {
	failures int
	lockouts int
	until    time.Time // locked out until
	touched  time.Time
}

// loginLimiter counts failed logins by client and account name.
type loginLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	records map[loginKey]*loginRecord
	checks  chan struct{} // bounds concurrent password checks
	log     *slog.Logger
}

func newLoginLimiter(now func() time.Time, log *slog.Logger) *loginLimiter {
	return &loginLimiter{now: now, records: map[loginKey]*loginRecord{}, checks: make(chan struct{}, runtime.NumCPU()), log: log}
}

// allow refuses a client locked out of account.
func (l *loginLimiter) allow(client, account string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.records[loginKey{client, account}]
	if r == nil {
		return nil
	}
	if wait := r.until.Sub(l.now()); wait > 0 {
		return errcode.New(errcode.Busy, "too many failed logins for account %q from %s: try again in %s",
			account, client, wait.Round(time.Second))
	}
	return nil
}

// failed counts a failed login, locking the client out at the limit.
func (l *loginLimiter) failed(client, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := loginKey{client, account}
	r := l.records[k]
	if r == nil {
		if len(l.records) >= loginMaxTracked {
			l.sweepLocked(now)
		}
		r = &loginRecord{}
		l.records[k] = r
	}
	r.touched = now
	r.failures++
	if r.failures < loginMaxFailures {
		return
	}
	lockout := min(loginLockout<<r.lockouts, loginMaxLockout)
	r.lockouts++
	r.failures = 0
	r.until = now.Add(lockout)
	l.log.Warn("login locked out after failed attempts", "account", account, "client", client,
		"failures", loginMaxFailures, "lockout", lockout)
}

// succeeded clears the client's count for account.
func (l *loginLimiter) succeeded(client, account string) {
	l.mu.Lock()
	delete(l.records, loginKey{client, account})
	l.mu.Unlock()
}

// sweepLocked drops the records untouched for loginForgetAfter, or all of
// them if that frees nothing (a flood of distinct names).
func (l *loginLimiter) sweepLocked(now time.Time) {
	for k, r := range l.records {
		if now.Sub(r.touched) > loginForgetAfter && now.After(r.until) {
			delete(l.records, k)
		}
	}
	if len(l.records) >= loginMaxTracked {
		clear(l.records)
	}
}

// check runs a password check when a slot is free, or fails when ctx ends
// first.
func (l *loginLimiter) check(ctx context.Context, fn func() bool) (bool, error) {
	select {
	case l.checks <- struct{}{}:
	case <-ctx.Done():
		return false, errcode.Wrap(errcode.Busy, ctx.Err(), "too many logins at once: try again")
	}
	defer func() { <-l.checks }()
	return fn(), nil
}

// clientOf is the address a request came from (the peer's; forwarding
// headers are not trusted).
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
