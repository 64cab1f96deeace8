// Package auth holds accounts and sessions, the login and logout handlers,
// and the middleware that requires "Authorization: OAuth <session uuid>" on
// every other API call, as ZStack's REST API does.
//
// Passwords. ZStack clients send the SHA-512 hex digest of the password;
// people with curl send the password itself. Both are accepted: a value of
// exactly 128 characters from 0-9a-f (IsDigest) is taken as the digest,
// anything else as a plain password and digested first (Digest). The two
// forms of one password are therefore equivalent everywhere (login, account
// creation, EnsureAdmin). Consequences: an upper-case hex digest is taken as
// a plain password (and fails); a plain password that happens to be 128
// lower-case hex characters is taken as a digest, consistently, so it still
// works when typed as is. The stored form is bcrypt of the 64 raw bytes of
// the digest (hex-decoded: bcrypt reads at most 72 bytes, so the 128-byte hex
// form would not fit); neither the password nor its digest is ever stored
// or logged.
//
// Guarantees:
//
//   - Login answers the same errcode.Unauthenticated error, "wrong account
//     name or password", for an unknown name and a wrong password, and
//     compares against a dummy hash when the name is unknown so that the
//     two take about the same time. Account names are case-sensitive on
//     both backends (MariaDB's case-insensitive collation is checked in Go).
//   - Sessions expire SessionTTL (default 2h) after login, by the injected
//     clock (Options.Now). Validate refuses an unknown, expired or malformed
//     session, or one whose account is gone, with errcode.Unauthenticated;
//     the middleware answers those 401 with "WWW-Authenticate: OAuth" and
//     never echoes the header it got. Database failures are 500s, not 401s.
//   - Session cache: validated sessions are kept in memory for at most
//     CacheTTL (default 5s) and never past their expiry, at most CacheSize
//     (default 10000) of them. Staleness: a logout on another node, or a
//     deleted account, is seen here within CacheTTL; a logout on this node
//     is seen at once. CacheTTL < 0 turns the cache off.
//   - EnsureAdmin creates the admin account (name "admin", ZStack's admin
//     UUID) once: it returns a generated password only from the call that
//     created the account, never on a later start, and never changes an
//     existing admin's password; concurrent first starts of several nodes
//     create one account.
//   - Expired sessions stay in the table until PurgeExpired deletes them;
//     run it periodically.
//
// Wiring, in the composition root:
//
//	if err := auth.Migrate(ctx, db); err != nil { ... }
//	if pw, err := auth.EnsureAdmin(ctx, db, cfg.AdminPassword); err != nil { ... } else if pw != "" { print it once }
//	svc := auth.New(db, auth.Options{})
//	rest.Handle(mux, "PUT /accounts/login", svc.LoginHandler())
//	rest.Handle(mux, "DELETE /accounts/sessions/{uuid}", svc.LogoutHandler())
//	handler := svc.Middleware(mux, append(auth.PublicPatterns(), "GET /healthz", "GET /readyz")...)
//
// Handlers then read the caller with FromContext.
package auth
