package auth

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"mplane/api/rest"
	"mplane/db"
	"mplane/errcode"
	"mplane/internal/testenv"
)

var backends = testenv.Backends

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func openDB(t *testing.T, dsn string) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gdb, err := db.Open(ctx, dsn, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(gdb) })
	if err := Migrate(ctx, gdb); err != nil {
		t.Fatal(err)
	}
	return gdb
}

func newService(t *testing.T, gdb *gorm.DB, clock *fakeClock, cacheTTL time.Duration) *Service {
	t.Helper()
	return New(gdb, Options{Now: clock.Now, BcryptCost: bcrypt.MinCost, CacheTTL: cacheTTL})
}

func sha512Hex(s string) string {
	sum := sha512.Sum512([]byte(s))
	return hex.EncodeToString(sum[:])
}

func wantCode(t *testing.T, err error, code errcode.Code, details string) {
	t.Helper()
	e := errcode.From(err)
	if err == nil || e.Code != code || (details != "" && e.Details != details) {
		t.Fatalf("error %v, want %s %q", err, code, details)
	}
}

func TestDigest(t *testing.T) {
	d := sha512Hex("password")
	tests := []struct {
		in       string
		isDigest bool
		digest   string
	}{
		{"password", false, d},
		{d, true, d},
		{strings.ToUpper(d), false, sha512Hex(strings.ToUpper(d))},
		{d[:127], false, sha512Hex(d[:127])},
		{d + "0", false, sha512Hex(d + "0")},
		{strings.Repeat("g", 128), false, sha512Hex(strings.Repeat("g", 128))},
		{"", false, sha512Hex("")},
	}
	for _, tc := range tests {
		if got := IsDigest(tc.in); got != tc.isDigest {
			t.Errorf("IsDigest(%.20q...) = %v", tc.in, got)
		}
		if got := Digest(tc.in); got != tc.digest {
			t.Errorf("Digest(%.20q...) = %.20s..., want %.20s...", tc.in, got, tc.digest)
		}
	}
}

func TestPasswordStoredAsBcrypt(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			gdb := openDB(t, b.DSN(t))
			const password = "s3cret-Passw0rd"
			if _, err := EnsureAdmin(context.Background(), gdb, password); err != nil {
				t.Fatal(err)
			}
			var a Account
			if err := gdb.Take(&a, "uuid = ?", AdminUUID).Error; err != nil {
				t.Fatal(err)
			}
			if a.Name != AdminName || a.Type != Admin {
				t.Errorf("admin account %+v", a)
			}
			h := a.PasswordHash
			if h == password || h == Digest(password) || strings.Contains(h, password) || strings.Contains(h, Digest(password)[:16]) {
				t.Fatalf("stored hash holds the password or its digest: %q", h)
			}
			cost, err := bcrypt.Cost([]byte(h))
			if err != nil {
				t.Fatalf("stored hash %q is not bcrypt: %v", h, err)
			}
			if cost != bcrypt.DefaultCost {
				t.Errorf("bcrypt cost %d, want %d", cost, bcrypt.DefaultCost)
			}
			raw, _ := hex.DecodeString(sha512Hex(password))
			if bcrypt.CompareHashAndPassword([]byte(h), raw) != nil {
				t.Error("the hash is not bcrypt of the raw SHA-512 digest")
			}
			if out, _ := json.Marshal(a); strings.Contains(string(out), h) {
				t.Errorf("account JSON leaks the hash: %s", out)
			}
		})
	}
}

func TestLoginPlainAndDigest(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			gdb := openDB(t, b.DSN(t))
			clock := newFakeClock()
			s := newService(t, gdb, clock, -1)
			ctx := context.Background()
			const plain = "pa55word"
			tests := []struct {
				name       string
				createWith string
			}{
				{"created plain", plain},
				{"created digest", sha512Hex(plain)},
			}
			for i, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					name := "user" + string(rune('a'+i))
					acc, err := s.CreateAccount(ctx, name, tc.createWith, Normal)
					if err != nil {
						t.Fatal(err)
					}
					for _, pw := range []string{plain, sha512Hex(plain)} {
						sess, err := s.Login(ctx, name, pw)
						if err != nil {
							t.Fatalf("login with %.10q...: %v", pw, err)
						}
						if sess.AccountUUID != acc.UUID || len(sess.UUID) != 32 {
							t.Errorf("session %+v", sess)
						}
						if want := clock.Now().Add(DefaultSessionTTL); !sess.ExpiredDate.Equal(want) {
							t.Errorf("expiredDate %v, want %v", sess.ExpiredDate, want)
						}
						id, err := s.Validate(ctx, sess.UUID)
						if err != nil {
							t.Fatal(err)
						}
						if id != (Identity{AccountUUID: acc.UUID, AccountName: name, SessionUUID: sess.UUID}) {
							t.Errorf("identity %+v", id)
						}
						_, err = s.Validate(ctx, strings.ToUpper(sess.UUID))
						wantCode(t, err, errcode.Unauthenticated, "unknown session")
					}
				})
			}
		})
	}
}

func TestLoginWrongCredentials(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			gdb := openDB(t, b.DSN(t))
			s := newService(t, gdb, newFakeClock(), 0)
			ctx := context.Background()
			if _, err := s.CreateAccount(ctx, "alice", "right", Normal); err != nil {
				t.Fatal(err)
			}
			const msg = "wrong account name or password"
			for _, tc := range []struct{ name, pw string }{
				{"alice", "wrong"},
				{"alice", sha512Hex("wrong")},
				{"alice", strings.ToUpper(sha512Hex("right"))},
				{"alice", ""},
				{"bob", "right"},
				{"Alice", "right"},
				{"", ""},
			} {
				_, err := s.Login(ctx, tc.name, tc.pw)
				wantCode(t, err, errcode.Unauthenticated, msg)
			}
			var n int64
			gdb.Model(&Session{}).Count(&n)
			if n != 0 {
				t.Errorf("%d sessions created by failed logins", n)
			}
		})
	}
}

func TestCreateAccountErrors(t *testing.T) {
	s := newService(t, openDB(t, testenv.SQLiteDSN(t)), newFakeClock(), 0)
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, "alice", "pw", Normal); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, pw string
		typ      AccountType
		details  string
	}{
		{"alice", "pw", Normal, `account name "alice" is already taken`},
		{"", "pw", Normal, `account name must be 1 to 255 characters, got ""`},
		{"bob", "", Normal, `password must not be empty`},
		{"bob", "pw", "Root", `account type must be SystemAdmin or Normal, got "Root"`},
	}
	for _, tc := range tests {
		_, err := s.CreateAccount(ctx, tc.name, tc.pw, tc.typ)
		wantCode(t, err, errcode.InvalidArgument, tc.details)
	}
}

func TestSessionExpiry(t *testing.T) {
	for _, cacheTTL := range []time.Duration{-1, time.Hour} {
		t.Run("cache "+cacheTTL.String(), func(t *testing.T) {
			gdb := openDB(t, testenv.SQLiteDSN(t))
			clock := newFakeClock()
			s := New(gdb, Options{Now: clock.Now, BcryptCost: bcrypt.MinCost, CacheTTL: cacheTTL, SessionTTL: 30 * time.Minute})
			ctx := context.Background()
			if _, err := s.CreateAccount(ctx, "alice", "pw", Normal); err != nil {
				t.Fatal(err)
			}
			sess, err := s.Login(ctx, "alice", "pw")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Validate(ctx, sess.UUID); err != nil {
				t.Fatal(err)
			}
			clock.Add(30*time.Minute - time.Millisecond)
			if _, err := s.Validate(ctx, sess.UUID); err != nil {
				t.Fatalf("1ms before expiry: %v", err)
			}
			clock.Add(time.Millisecond)
			_, err = s.Validate(ctx, sess.UUID)
			wantCode(t, err, errcode.Unauthenticated, "session expired at 2024-05-01T10:30:00Z; log in again")

			n, err := s.PurgeExpired(ctx)
			if err != nil || n != 1 {
				t.Fatalf("PurgeExpired = %d, %v; want 1", n, err)
			}
			_, err = s.Validate(ctx, sess.UUID)
			wantCode(t, err, errcode.Unauthenticated, "unknown session")
		})
	}
}

func TestLogout(t *testing.T) {
	gdb := openDB(t, testenv.SQLiteDSN(t))
	s := newService(t, gdb, newFakeClock(), time.Hour) // a long cache: Logout must evict
	ctx := context.Background()
	if _, err := s.CreateAccount(ctx, "alice", "pw", Normal); err != nil {
		t.Fatal(err)
	}
	sess, err := s.Login(ctx, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Validate(ctx, sess.UUID); err != nil {
		t.Fatal(err)
	}
	if err := s.Logout(ctx, sess.UUID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Validate(ctx, sess.UUID)
	wantCode(t, err, errcode.Unauthenticated, "unknown session")
	if err := s.Logout(ctx, sess.UUID); err != nil {
		t.Errorf("second logout: %v", err)
	}
}

func TestEnsureAdmin(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			gdb := openDB(t, b.DSN(t))
			ctx := context.Background()
			generated, err := ensureAdmin(ctx, gdb, "", bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			if len(generated) < 16 {
				t.Fatalf("generated password %q too short", generated)
			}
			var before Account
			if err := gdb.Take(&before, "uuid = ?", AdminUUID).Error; err != nil {
				t.Fatal(err)
			}
			// Second start, with or without a configured password: nothing
			// is generated and the stored password does not change.
			for _, pw := range []string{"", "configured-later"} {
				again, err := ensureAdmin(ctx, gdb, pw, bcrypt.MinCost)
				if err != nil || again != "" {
					t.Fatalf("second EnsureAdmin(%q) = %q, %v; want nothing generated", pw, again, err)
				}
			}
			var after Account
			if err := gdb.Take(&after, "uuid = ?", AdminUUID).Error; err != nil {
				t.Fatal(err)
			}
			if after.PasswordHash != before.PasswordHash {
				t.Error("a later start changed the admin password")
			}
			s := newService(t, gdb, newFakeClock(), 0)
			sess, err := s.Login(ctx, AdminName, generated)
			if err != nil {
				t.Fatalf("login with the generated password: %v", err)
			}
			id, err := s.Validate(ctx, sess.UUID)
			if err != nil || !id.Admin || id.AccountUUID != AdminUUID {
				t.Fatalf("admin identity %+v, %v", id, err)
			}
			if _, err := s.Login(ctx, AdminName, "configured-later"); err == nil {
				t.Error("the later configured password works")
			}
		})
	}
}

func TestEnsureAdminConfigured(t *testing.T) {
	gdb := openDB(t, testenv.SQLiteDSN(t))
	ctx := context.Background()
	generated, err := ensureAdmin(ctx, gdb, "configured", bcrypt.MinCost)
	if err != nil || generated != "" {
		t.Fatalf("EnsureAdmin = %q, %v; want nothing generated", generated, err)
	}
	s := newService(t, gdb, newFakeClock(), 0)
	if _, err := s.Login(ctx, AdminName, sha512Hex("configured")); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureAdminConcurrentStarts(t *testing.T) {
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			gdb := openDB(t, b.DSN(t))
			const nodes = 4
			results := make(chan string, nodes)
			errs := make(chan error, nodes)
			var wg sync.WaitGroup
			for range nodes {
				wg.Go(func() {
					g, err := ensureAdmin(context.Background(), gdb, "", bcrypt.MinCost)
					results <- g
					errs <- err
				})
			}
			wg.Wait()
			close(results)
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			var generated []string
			for g := range results {
				if g != "" {
					generated = append(generated, g)
				}
			}
			if len(generated) != 1 {
				t.Fatalf("%d nodes generated a password, want exactly 1", len(generated))
			}
			s := newService(t, gdb, newFakeClock(), 0)
			if _, err := s.Login(context.Background(), AdminName, generated[0]); err != nil {
				t.Fatalf("the reported password does not work: %v", err)
			}
		})
	}
}

// whoami answers the identity the middleware put in the context.
var whoami = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id, ok := FromContext(r.Context())
	rest.WriteJSON(w, http.StatusOK, map[string]any{"ok": ok, "account": id.AccountUUID, "admin": id.Admin, "session": id.SessionUUID})
})

func TestMiddleware(t *testing.T) {
	gdb := openDB(t, testenv.SQLiteDSN(t))
	clock := newFakeClock()
	s := newService(t, gdb, clock, 0)
	ctx := context.Background()
	acc, err := s.CreateAccount(ctx, "alice", "pw", Normal)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := s.Login(ctx, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	old, err := s.Login(ctx, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	h := s.Middleware(whoami, append(PublicPatterns(), "GET /healthz")...)

	const (
		missing   = `missing Authorization header; send "Authorization: OAuth <session uuid>" with the uuid from PUT /v1/accounts/login`
		malformed = `malformed Authorization header; expected "OAuth <session uuid>"`
	)
	tests := []struct {
		name    string
		method  string
		path    string
		header  string
		status  int
		details string
	}{
		{"no header", "GET", "/v1/vm-instances", "", 401, missing},
		{"blank header", "GET", "/v1/vm-instances", "   ", 401, missing},
		{"bearer", "GET", "/v1/vm-instances", "Bearer " + sess.UUID, 401, malformed},
		{"scheme only", "GET", "/v1/vm-instances", "OAuth", 401, malformed},
		{"scheme only with space", "GET", "/v1/vm-instances", "OAuth ", 401, malformed},
		{"extra part", "GET", "/v1/vm-instances", "OAuth " + sess.UUID + " x", 401, malformed},
		{"no scheme", "GET", "/v1/vm-instances", sess.UUID, 401, malformed},
		{"unknown session", "GET", "/v1/vm-instances", "OAuth 0123456789abcdef0123456789abcdef", 401, "unknown session"},
		{"huge session", "GET", "/v1/vm-instances", "OAuth " + strings.Repeat("a", 1000), 401, "unknown session"},
		{"valid", "GET", "/v1/vm-instances", "OAuth " + sess.UUID, 200, ""},
		{"valid, scheme in lower case", "GET", "/zstack/v1/vm-instances", "oauth " + sess.UUID, 200, ""},
		{"login is public", "PUT", "/v1/accounts/login", "", 200, ""},
		{"login is public under zstack", "PUT", "/zstack/v1/accounts/login", "", 200, ""},
		{"logout is public", "DELETE", "/v1/accounts/sessions/abc", "", 200, ""},
		{"login GET is not public", "GET", "/v1/accounts/login", "", 401, missing},
		{"healthz", "GET", "/healthz", "", 200, ""},
		{"healthz subpath is not public", "GET", "/healthz/x", "", 401, missing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status == 401 {
				checkError(t, rec, errcode.Unauthenticated, tc.details)
				if rec.Header().Get("WWW-Authenticate") != "OAuth" {
					t.Errorf("WWW-Authenticate %q", rec.Header().Get("WWW-Authenticate"))
				}
				if tc.header != "" && strings.TrimSpace(tc.header) != "" && strings.Contains(rec.Body.String(), sess.UUID) {
					t.Errorf("answer repeats the session: %s", rec.Body)
				}
			}
		})
	}

	t.Run("identity in context", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/v1/vm-instances", nil)
		req.Header.Set("Authorization", "OAuth "+sess.UUID)
		h.ServeHTTP(rec, req)
		want := `{"account":"` + acc.UUID + `","admin":false,"ok":true,"session":"` + sess.UUID + `"}` + "\n"
		if rec.Body.String() != want {
			t.Errorf("body %s, want %s", rec.Body, want)
		}
	})

	t.Run("expired", func(t *testing.T) {
		clock.Add(DefaultSessionTTL)
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/v1/vm-instances", nil)
		req.Header.Set("Authorization", "OAuth "+old.UUID)
		h.ServeHTTP(rec, req)
		if rec.Code != 401 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		checkError(t, rec, errcode.Unauthenticated, "session expired at 2024-05-01T12:00:00Z; log in again")
	})
}

func checkError(t *testing.T, rec *httptest.ResponseRecorder, code errcode.Code, details string) {
	t.Helper()
	var body struct {
		Error *errcode.Error `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == nil {
		t.Fatalf("body %s is not {\"error\": {...}}: %v", rec.Body, err)
	}
	if body.Error.Code != code || (details != "" && body.Error.Details != details) {
		t.Fatalf("error %s %q, want %s %q", body.Error.Code, body.Error.Details, code, details)
	}
}

func TestLoginHandler(t *testing.T) {
	gdb := openDB(t, testenv.SQLiteDSN(t))
	clock := newFakeClock()
	s := newService(t, gdb, clock, 0)
	ctx := context.Background()
	if _, err := ensureAdmin(ctx, gdb, "password", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	rest.Handle(mux, "PUT /accounts/login", s.LoginHandler())
	rest.Handle(mux, "DELETE /accounts/sessions/{uuid}", s.LogoutHandler())
	rest.Handle(mux, "GET /whoami", whoami)
	h := s.Middleware(mux, PublicPatterns()...)

	do := func(method, path, body, session string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if session != "" {
			req.Header.Set("Authorization", "OAuth "+session)
		}
		h.ServeHTTP(rec, req)
		return rec
	}

	for _, tc := range []struct {
		name, path, password string
	}{
		{"plain", "/v1/accounts/login", "password"},
		{"digest", "/v1/accounts/login", sha512Hex("password")},
		{"zstack prefix", "/zstack/v1/accounts/login", sha512Hex("password")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := do("PUT", tc.path, `{"logInByAccount": {"accountName": "admin", "password": "`+tc.password+`"}}`, "")
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var body struct {
				Inventory map[string]any `json:"inventory"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			inv := body.Inventory
			if inv["accountUuid"] != AdminUUID || inv["expiredDate"] != "2024-05-01T12:00:00Z" || len(inv["uuid"].(string)) != 32 {
				t.Fatalf("inventory %v", inv)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Error("login answer may be cached")
			}
			session := inv["uuid"].(string)
			if rec := do("GET", "/v1/whoami", "", session); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"admin":true`) {
				t.Fatalf("whoami with the new session: %d %s", rec.Code, rec.Body)
			}
			if rec := do("DELETE", "/v1/accounts/sessions/"+session, "", ""); rec.Code != 200 || rec.Body.String() != "{}\n" {
				t.Fatalf("logout: %d %s", rec.Code, rec.Body)
			}
			if rec := do("GET", "/v1/whoami", "", session); rec.Code != 401 {
				t.Fatalf("whoami after logout: %d %s", rec.Code, rec.Body)
			}
		})
	}

	bad := []struct {
		name    string
		body    string
		status  int
		code    errcode.Code
		details string
	}{
		{"wrong password", `{"logInByAccount": {"accountName": "admin", "password": "nope"}}`, 401, errcode.Unauthenticated, "wrong account name or password"},
		{"unknown account", `{"logInByAccount": {"accountName": "root", "password": "password"}}`, 401, errcode.Unauthenticated, "wrong account name or password"},
		{"malformed", `{"logInByAccount": {"accountName": "admin",}}`, 400, errcode.InvalidArgument,
			"malformed JSON at line 1, column 44 (byte offset 44): invalid character '}' looking for beginning of object key string"},
		{"empty body", ``, 400, errcode.InvalidArgument, `request body is empty; expected {"logInByAccount": {...}}`},
		{"wrong action", `{"logIn": {}}`, 400, errcode.InvalidArgument, `unknown action "logIn"; valid actions: logInByAccount`},
		{"missing password", `{"logInByAccount": {"accountName": "admin"}}`, 400, errcode.InvalidArgument, "logInByAccount.password is required"},
		{"missing name", `{"logInByAccount": {"password": "x"}}`, 400, errcode.InvalidArgument, "logInByAccount.accountName is required"},
		{"empty name", `{"logInByAccount": {"accountName": "", "password": "x"}}`, 400, errcode.InvalidArgument, "logInByAccount: accountName must not be empty"},
		{"password not a string", `{"logInByAccount": {"accountName": "admin", "password": 123}}`, 400, errcode.InvalidArgument,
			"logInByAccount.password must be a string, got number"},
		{"unknown field", `{"logInByAccount": {"accountName": "admin", "password": "x", "passwd": "x"}}`, 400, errcode.InvalidArgument,
			`logInByAccount: unknown field "passwd"; allowed fields: accountName, password, accountType, captchaUuid, verifyCode, clientInfo`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			rec := do("PUT", "/v1/accounts/login", tc.body, "")
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			checkError(t, rec, tc.code, tc.details)
		})
	}
	t.Run("ZStack SDK extras accepted", func(t *testing.T) {
		rec := do("PUT", "/v1/accounts/login", `{"logInByAccount": {"accountName": "admin", "password": "password",
			"accountType": "ZStack", "clientInfo": {"browser": "x"}}, "systemTags": []}`, "")
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

func TestSessionCacheBounded(t *testing.T) {
	c := newSessionCache(time.Minute, 3)
	now := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		c.put(string(rune('a'+i)), Identity{}, now.Add(time.Hour), now)
		if c.len() > 3 {
			t.Fatalf("cache holds %d entries, bound 3", c.len())
		}
	}
	c.put("short", Identity{AccountUUID: "x"}, now.Add(time.Second), now)
	if _, ok := c.get("short", now.Add(time.Second)); ok {
		t.Error("entry outlived its session")
	}
	c.put("long", Identity{AccountUUID: "y"}, now.Add(time.Hour), now)
	if _, ok := c.get("long", now.Add(time.Minute-time.Millisecond)); !ok {
		t.Error("entry gone before its cache lifetime")
	}
	if _, ok := c.get("long", now.Add(time.Minute)); ok {
		t.Error("entry outlived its cache lifetime")
	}
}

// TestLoginLockout: five failed logins for one account from one client
// lock that client out of that account (429, before any password check,
// the right password included) for a minute, doubled at the next lockout;
// another client, or another account from the same client, is not locked
// out; a success clears the count.
func TestLoginLockout(t *testing.T) {
	gdb := openDB(t, testenv.SQLiteDSN(t))
	clock := newFakeClock()
	s := newService(t, gdb, clock, 0)
	ctx := context.Background()
	if _, err := ensureAdmin(ctx, gdb, "password", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAccount(ctx, "other", "other-password", Normal); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	rest.Handle(mux, "PUT /accounts/login", s.LoginHandler())
	login := func(client, account, password string) int {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("PUT", "/v1/accounts/login",
			strings.NewReader(`{"logInByAccount": {"accountName": "`+account+`", "password": "`+password+`"}}`))
		req.RemoteAddr = client + ":40000"
		mux.ServeHTTP(rec, req)
		if rec.Code == http.StatusTooManyRequests && !strings.Contains(rec.Body.String(), "too many failed logins") {
			t.Fatalf("429 without saying why: %s", rec.Body)
		}
		return rec.Code
	}
	const attacker, operator = "192.0.2.66", "192.0.2.10"
	// A success clears the count: four failures, a success, four more
	// failures are no lockout.
	for range loginMaxFailures - 1 {
		if code := login(attacker, "admin", "guess"); code != 401 {
			t.Fatalf("failed login: %d, want 401", code)
		}
	}
	if code := login(attacker, "admin", "password"); code != 200 {
		t.Fatalf("login after four failures: %d, want 200", code)
	}
	for range loginMaxFailures - 1 {
		login(attacker, "admin", "guess")
	}
	if code := login(attacker, "admin", "guess"); code != 401 {
		t.Fatalf("the fifth failure in a row: %d, want 401 (the lockout starts after it)", code)
	}
	if code := login(attacker, "admin", "password"); code != http.StatusTooManyRequests {
		t.Fatalf("right password while locked out: %d, want 429", code)
	}
	if code := login(operator, "admin", "password"); code != 200 {
		t.Fatalf("another client: %d, want 200", code)
	}
	if code := login(attacker, "other", "other-password"); code != 200 {
		t.Fatalf("another account from the locked-out client: %d, want 200", code)
	}
	clock.Add(loginLockout + time.Second)
	for range loginMaxFailures {
		login(attacker, "admin", "guess")
	}
	clock.Add(loginLockout + time.Second)
	if code := login(attacker, "admin", "password"); code != http.StatusTooManyRequests {
		t.Fatalf("a minute into the second lockout: %d, want 429 (it lasts two)", code)
	}
	clock.Add(loginLockout)
	if code := login(attacker, "admin", "password"); code != 200 {
		t.Fatalf("after the second lockout: %d, want 200", code)
	}
}
