package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"mplane/api/rest"
	"mplane/errcode"
	"mplane/internal/testenv"
)

type accountsEnv struct {
	t      *testing.T
	s      *Service
	h      http.Handler
	owned  map[string]map[string]int64
	forgot []string
}

func newAccountsEnv(t *testing.T, dsn string) *accountsEnv {
	gdb := openDB(t, dsn)
	s := newService(t, gdb, newFakeClock(), time.Hour) // a long cache: changes must evict it
	if _, err := ensureAdmin(context.Background(), gdb, "admin-password", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	e := &accountsEnv{t: t, s: s, owned: map[string]map[string]int64{}}
	mux := http.NewServeMux()
	rest.Handle(mux, "PUT /accounts/login", s.LoginHandler())
	rest.Handle(mux, "DELETE /accounts/sessions/{uuid}", s.LogoutHandler())
	s.RegisterAccounts(mux, AccountsOptions{
		Owned: func(_ context.Context, account string) (map[string]int64, error) { return e.owned[account], nil },
		Forget: func(_ context.Context, account string) error {
			e.forgot = append(e.forgot, account)
			return nil
		},
	})
	rest.Handle(mux, "GET /whoami", whoami)
	e.h = s.Middleware(mux, PublicPatterns()...)
	return e
}

func (e *accountsEnv) do(method, path, body, session string) (int, map[string]json.RawMessage) {
	e.t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if session != "" {
		req.Header.Set("Authorization", "OAuth "+session)
	}
	e.h.ServeHTTP(rec, req)
	var out map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		e.t.Fatalf("%s %s: %d %q is not a JSON object", method, path, rec.Code, rec.Body)
	}
	return rec.Code, out
}

func (e *accountsEnv) login(name, password string) string {
	e.t.Helper()
	code, out := e.do("PUT", "/v1/accounts/login", `{"logInByAccount": {"accountName": "`+name+`", "password": "`+password+`"}}`, "")
	if code != 200 {
		e.t.Fatalf("login %s: %d %s", name, code, out["error"])
	}
	var sess Session
	_ = json.Unmarshal(out["inventory"], &sess)
	return sess.UUID
}

func errOf(t *testing.T, out map[string]json.RawMessage) *errcode.Error {
	t.Helper()
	var e errcode.Error
	if err := json.Unmarshal(out["error"], &e); err != nil {
		t.Fatalf("no error in %v", out)
	}
	return &e
}

func TestAccountsAPI(t *testing.T) {
	for _, dsn := range []struct{ name, dsn string }{{"sqlite", testenv.SQLiteDSN(t)}, {"mysql", testenv.MySQLDSN(t)}} {
		t.Run(dsn.name, func(t *testing.T) { testAccountsAPI(t, dsn.dsn) })
	}
}

func testAccountsAPI(t *testing.T, dsn string) {
	e := newAccountsEnv(t, dsn)
	admin := e.login("admin", "admin-password")

	// Create: admins only, names and passwords checked.
	code, out := e.do("POST", "/v1/accounts", `{"params": {"name": "alice", "password": "alice-password", "description": "first tenant"}}`, admin)
	if code != 200 {
		t.Fatalf("create alice: %d %v", code, out)
	}
	var alice Account
	_ = json.Unmarshal(out["inventory"], &alice)
	if alice.UUID == "" || alice.Type != Normal || alice.Description != "first tenant" || strings.Contains(string(out["inventory"]), "assword") {
		t.Fatalf("alice: %s", out["inventory"])
	}
	aliceSess := e.login("alice", "alice-password")
	// The table holds no live session id: only its hash.
	var raw, hashed int64
	e.s.db.Model(&Session{}).Where("uuid = ?", aliceSess).Count(&raw)
	e.s.db.Model(&Session{}).Where("uuid = ?", StoredID(aliceSess)).Count(&hashed)
	if raw != 0 || hashed != 1 {
		t.Fatalf("sessions rows: %d with the session id, %d with its hash; want 0 and 1", raw, hashed)
	}
	for _, tc := range []struct {
		name, body, session string
		status              int
		detail              string
	}{
		{"by a normal account", `{"params": {"name": "bob", "password": "bob-password"}}`, aliceSess, 403, "creating an account needs an admin account"},
		{"a taken name", `{"params": {"name": "alice", "password": "other-password"}}`, admin, 400, `account name "alice" is already taken`},
		{"a short password", `{"params": {"name": "bob", "password": "short"}}`, admin, 400, "password must be 8 to 1024 characters"},
		{"a NUL in the name", `{"params": {"name": "b\u0000b", "password": "bob-password"}}`, admin, 400, "must not hold a NUL character"},
		{"a bidi override in the name", `{"params": {"name": "b\u202eb", "password": "bob-password"}}`, admin, 400, "must not hold control or format characters"},
		{"a long name", `{"params": {"name": "` + strings.Repeat("n", 256) + `", "password": "bob-password"}}`, admin, 400, "account name must be 1 to 255 bytes"},
		{"an unknown type", `{"params": {"name": "bob", "password": "bob-password", "type": "Root"}}`, admin, 400, "type must be Normal or SystemAdmin"},
	} {
		t.Run("create "+tc.name, func(t *testing.T) {
			code, out := e.do("POST", "/v1/accounts", tc.body, tc.session)
			if code != tc.status || !strings.Contains(errOf(t, out).Details, tc.detail) {
				t.Fatalf("%d %v, want %d %q", code, out, tc.status, tc.detail)
			}
		})
	}

	// Query: admin sees all, a normal account itself only.
	if code, out := e.do("GET", "/v1/accounts?count=true", "", admin); code != 200 || string(out["total"]) != "2" {
		t.Fatalf("admin's count: %d %v", code, out)
	}
	if code, out := e.do("GET", "/v1/accounts", "", aliceSess); code != 200 || !strings.Contains(string(out["inventories"]), alice.UUID) ||
		strings.Contains(string(out["inventories"]), AdminUUID) {
		t.Fatalf("alice's query: %d %v", code, out)
	}
	if code, _ := e.do("GET", "/v1/accounts/"+AdminUUID, "", aliceSess); code != 404 {
		t.Fatalf("alice gets admin: %d, want 404", code)
	}

	// Update: a normal account changes itself only, its password with the
	// old one; the change ends its other sessions.
	other := e.login("alice", "alice-password")
	if code, out := e.do("PUT", "/v1/accounts/"+AdminUUID, `{"updateAccount": {"password": "taken-over!"}}`, aliceSess); code != 404 {
		t.Fatalf("alice updates admin: %d %v, want 404", code, out)
	}
	if code, out := e.do("PUT", "/v1/accounts/"+alice.UUID, `{"updateAccount": {"password": "new-alice-password"}}`, aliceSess); code != 403 ||
		!strings.Contains(errOf(t, out).Details, "oldPassword is wrong") {
		t.Fatalf("password change without the old one: %d %v, want 403", code, out)
	}
	code, out = e.do("PUT", "/v1/accounts/"+alice.UUID, `{"updateAccount": {"password": "new-alice-password", "oldPassword": "alice-password", "description": "changed"}}`, aliceSess)
	if code != 200 || !strings.Contains(string(out["inventory"]), `"description":"changed"`) {
		t.Fatalf("password change: %d %v", code, out)
	}
	if code, _ := e.do("GET", "/v1/whoami", "", other); code != 401 {
		t.Fatalf("alice's other session after the password change: %d, want 401", code)
	}
	if code, _ := e.do("GET", "/v1/whoami", "", aliceSess); code != 200 {
		t.Fatalf("the session that changed the password: %d, want 200", code)
	}
	if code, _ := e.do("PUT", "/v1/accounts/login", `{"logInByAccount": {"accountName": "alice", "password": "alice-password"}}`, ""); code != 401 {
		t.Fatalf("login with the old password: %d, want 401", code)
	}
	e.login("alice", "new-alice-password")
	// An admin sets any password without the old one.
	if code, out := e.do("PUT", "/v1/accounts/"+alice.UUID, `{"updateAccount": {"password": "reset-by-admin"}}`, admin); code != 200 {
		t.Fatalf("admin resets alice's password: %d %v", code, out)
	}
	if code, _ := e.do("GET", "/v1/whoami", "", aliceSess); code != 401 {
		t.Fatalf("alice's session after admin's reset: %d, want 401", code)
	}
	aliceSess = e.login("alice", "reset-by-admin")
	if code, out := e.do("PUT", "/v1/accounts/"+AdminUUID, `{"updateAccount": {"name": "root"}}`, admin); code != 400 {
		t.Fatalf("rename admin: %d %v, want 400", code, out)
	}

	// Delete: admins only, not admin, not an account that owns resources.
	if code, _ := e.do("DELETE", "/v1/accounts/"+alice.UUID, "", aliceSess); code != 403 {
		t.Fatalf("alice deletes herself: %d, want 403", code)
	}
	if code, _ := e.do("DELETE", "/v1/accounts/"+AdminUUID, "", admin); code != 400 {
		t.Fatalf("delete admin: %d, want 400", code)
	}
	e.owned[alice.UUID] = map[string]int64{"vm_instances": 2, "volumes": 1}
	if code, out := e.do("DELETE", "/v1/accounts/"+alice.UUID, "", admin); code != 409 ||
		errOf(t, out).Details != "account "+alice.UUID+" still owns 1 volumes, 2 vm_instances; delete them first" {
		t.Fatalf("delete an account that owns resources: %d %v, want 409", code, out)
	}
	delete(e.owned, alice.UUID)
	if code, out := e.do("DELETE", "/v1/accounts/"+alice.UUID, "", admin); code != 200 {
		t.Fatalf("delete alice: %d %v", code, out)
	}
	if code, _ := e.do("GET", "/v1/whoami", "", aliceSess); code != 401 {
		t.Fatalf("a deleted account's session: %d, want 401", code)
	}
	if len(e.forgot) != 1 || e.forgot[0] != alice.UUID {
		t.Fatalf("records forgotten for %v, want alice's", e.forgot)
	}
	if code, _ := e.do("DELETE", "/v1/accounts/"+alice.UUID, "", admin); code != 200 {
		t.Fatalf("delete a deleted account again: %d, want 200", code)
	}
}

func TestResetPassword(t *testing.T) {
	e := newAccountsEnv(t, testenv.SQLiteDSN(t))
	admin := e.login("admin", "admin-password")
	generated, err := ResetPassword(context.Background(), e.s.db, "admin", "", bcrypt.MinCost)
	if err != nil || len(generated) < 16 {
		t.Fatalf("ResetPassword: %q %v", generated, err)
	}
	e.s.cache.removeAccount(AdminUUID) // another process reset it: this node's cache lives on for CacheTTL
	if code, _ := e.do("GET", "/v1/whoami", "", admin); code != 401 {
		t.Fatalf("admin's session after the reset: %d, want 401", code)
	}
	e.login("admin", generated)
	if !AdminPasswordIs(context.Background(), e.s.db, generated) || AdminPasswordIs(context.Background(), e.s.db, "admin-password") {
		t.Fatal("AdminPasswordIs does not tell the new password from the old")
	}
	if _, err := ResetPassword(context.Background(), e.s.db, "nobody", "some-password", bcrypt.MinCost); errcode.CodeOf(err) != errcode.ResourceNotFound {
		t.Fatalf("reset of an unknown account: %v", err)
	}
	if _, err := ResetPassword(context.Background(), e.s.db, "admin", "short", bcrypt.MinCost); errcode.CodeOf(err) != errcode.InvalidArgument {
		t.Fatalf("reset to a short password: %v", err)
	}
}
