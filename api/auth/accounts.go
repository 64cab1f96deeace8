package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"gorm.io/gorm"

	"mplane/api/query"
	"mplane/api/rest"
	"mplane/errcode"
	"mplane/uid"
)

// The accounts API, in ZStack's paths and bodies. Every answer is at once
// (200), not a job: an account is one row.
//
//	POST   /v1/accounts          {"params": {"name", "password", "type", "description"}}  admins
//	GET    /v1/accounts[/{uuid}] ZStack's query params; a normal account sees itself only
//	PUT    /v1/accounts/{uuid}   {"updateAccount": {"name", "description", "password", "oldPassword"}}
//	DELETE /v1/accounts/{uuid}   admins; not the admin account, not one that owns resources
//
// A normal account may update itself only, and changing its password
// needs its old one (oldPassword); an admin changes any account's without.
// A password change ends the account's other sessions; a delete ends all
// of them (other nodes trust a cached session for up to CacheTTL more).

// MinPasswordLen is the shortest password an account may be given.
const MinPasswordLen = 8

// createAccountParams are the params of POST /v1/accounts.
type createAccountParams struct {
	Name        string `json:"name" api:"required"`
	Password    string `json:"password" api:"required"`
	Type        string `json:"type"`
	Description string `json:"description"`
}

// updateAccountParams are the params of updateAccount.
type updateAccountParams struct {
	UUID        string  `json:"uuid"`
	Name        *string `json:"name"`
	Description *string `json:"description"`
	Password    *string `json:"password"`
	OldPassword string  `json:"oldPassword"`
}

// checkName refuses what may not name an account: empty, longer than
// MaxAccountNameLen bytes, invalid UTF-8, control or format characters
// (NUL, bidi overrides), or white space at either end.
func checkName(name string) error {
	switch {
	case name == "" || len(name) > MaxAccountNameLen:
		return errcode.New(errcode.InvalidArgument, "account name must be 1 to %d bytes, got %d", MaxAccountNameLen, len(name))
	case !utf8.ValidString(name):
		return errcode.New(errcode.InvalidArgument, "account name must be valid UTF-8")
	case strings.TrimSpace(name) != name:
		return errcode.New(errcode.InvalidArgument, "account name %q must not begin or end with white space", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return errcode.New(errcode.InvalidArgument, "account name must not hold control or format characters (found %U)", r)
		}
	}
	return nil
}

func checkPasswordValue(pw string) error {
	if IsDigest(pw) {
		return nil // a client's SHA-512 digest: its length says nothing of the password
	}
	if utf8.RuneCountInString(pw) < MinPasswordLen || len(pw) > 1024 {
		return errcode.New(errcode.InvalidArgument, "password must be %d to 1024 characters", MinPasswordLen)
	}
	return nil
}

func checkDescription(d string) error {
	if len(d) > 2048 || !utf8.ValidString(d) {
		return errcode.New(errcode.InvalidArgument, "description must be valid UTF-8 of at most 2048 bytes, got %d bytes", len(d))
	}
	return nil
}

func (p *createAccountParams) Validate() error {
	if err := checkName(p.Name); err != nil {
		return err
	}
	if err := checkPasswordValue(p.Password); err != nil {
		return err
	}
	switch AccountType(p.Type) {
	case "", Normal, Admin:
	default:
		return errcode.New(errcode.InvalidArgument, "type must be %s or %s, got %q", Normal, Admin, p.Type)
	}
	return checkDescription(p.Description)
}

func (p *updateAccountParams) Validate() error {
	if p.Name != nil {
		if err := checkName(*p.Name); err != nil {
			return err
		}
	}
	if p.Password != nil {
		if err := checkPasswordValue(*p.Password); err != nil {
			return err
		}
	}
	if p.Description != nil {
		return checkDescription(*p.Description)
	}
	return nil
}

// AccountsOptions are what the accounts API needs from the rest of the
// node.
type AccountsOptions struct {
	// Owned counts what an account owns, by kind ("vm_instances": 2): an
	// account is deleted only when it owns nothing. Nil counts nothing.
	Owned func(ctx context.Context, account string) (map[string]int64, error)
	// Forget deletes the records of a deleted account (its ownership
	// records and sharings). Nil does nothing.
	Forget func(ctx context.Context, account string) error
}

var accountSchema = query.SchemaOf[Account]()

// RegisterAccounts mounts the accounts API on mux (behind the middleware).
func (s *Service) RegisterAccounts(mux *http.ServeMux, opts AccountsOptions) {
	rest.HandleFunc(mux, "POST /accounts", s.createAccountHandler)
	rest.HandleFunc(mux, "GET /accounts", func(w http.ResponseWriter, r *http.Request) { s.queryAccounts(w, r, "") })
	rest.HandleFunc(mux, "GET /accounts/{uuid}", func(w http.ResponseWriter, r *http.Request) { s.queryAccounts(w, r, r.PathValue("uuid")) })
	rest.HandleFunc(mux, "PUT /accounts/{uuid}", s.updateAccountHandler)
	rest.HandleFunc(mux, "DELETE /accounts/{uuid}", func(w http.ResponseWriter, r *http.Request) { s.deleteAccountHandler(w, r, opts) })
}

func requireIdentity(r *http.Request) (Identity, error) {
	id, ok := FromContext(r.Context())
	if !ok {
		return Identity{}, errcode.New(errcode.Unauthenticated, "no session: the accounts API must run behind the middleware")
	}
	return id, nil
}

func requireAdmin(r *http.Request, what string) (Identity, error) {
	id, err := requireIdentity(r)
	if err == nil && !id.Admin {
		err = errcode.New(errcode.PermissionDenied, "%s needs an admin account", what)
	}
	return id, err
}

func (s *Service) createAccountHandler(w http.ResponseWriter, r *http.Request) {
	if _, err := requireAdmin(r, "creating an account"); err != nil {
		rest.WriteError(w, err)
		return
	}
	var p createAccountParams
	if _, err := rest.DecodeParams(r, &p); err != nil {
		rest.WriteError(w, err)
		return
	}
	typ := AccountType(p.Type)
	if typ == "" {
		typ = Normal
	}
	a, err := s.createAccount(r.Context(), p.Name, p.Password, p.Description, typ)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rest.WriteJSON(w, http.StatusOK, map[string]any{"inventory": a})
}

// createAccount is CreateAccount with a description.
func (s *Service) createAccount(ctx context.Context, name, password, description string, typ AccountType) (Account, error) {
	hash, err := hashPassword(password, s.cost)
	if err != nil {
		return Account{}, fmt.Errorf("create account %q: hash password: %w", name, err)
	}
	a := Account{UUID: uid.New(), Name: name, Type: typ, Description: description, PasswordHash: hash}
	err = s.db.WithContext(ctx).Create(&a).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return Account{}, errcode.New(errcode.InvalidArgument, "account name %q is already taken", name)
	}
	if err != nil {
		return Account{}, errcode.Wrap(errcode.Internal, err, "create account %q", name)
	}
	return a, nil
}

func (s *Service) queryAccounts(w http.ResponseWriter, r *http.Request, uuid string) {
	id, err := requireIdentity(r)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	pq, err := query.ParseRaw(accountSchema, r.URL.RawQuery)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	db := s.db.Model(&Account{})
	if !id.Admin {
		db = db.Where("uuid = ?", id.AccountUUID) // a normal account sees itself
	}
	if uuid != "" {
		db = db.Where("uuid = ?", uuid)
	}
	rows, total, err := query.Find[Account](r.Context(), db, pq)
	if err != nil {
		rest.WriteError(w, errcode.Wrap(errcode.Internal, err, "query accounts"))
		return
	}
	if uuid != "" && len(rows) == 0 && !pq.Count {
		rest.WriteError(w, errcode.New(errcode.ResourceNotFound, "account %s not found", uuid))
		return
	}
	rep, err := pq.Reply(rows, total)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rest.WriteJSON(w, http.StatusOK, rep)
}

// loadVisible reads the account uuid as id may see it: a normal account
// sees only itself, others are not found.
func (s *Service) loadVisible(ctx context.Context, id Identity, uuid string) (Account, error) {
	var a Account
	if !id.Admin && uuid != id.AccountUUID {
		return a, errcode.New(errcode.ResourceNotFound, "account %s not found", uuid)
	}
	err := s.db.WithContext(ctx).Where("uuid = ?", uuid).Take(&a).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return a, errcode.New(errcode.ResourceNotFound, "account %s not found", uuid)
	}
	if err != nil {
		return a, errcode.Wrap(errcode.Internal, err, "load account %s", uuid)
	}
	return a, nil
}

func (s *Service) updateAccountHandler(w http.ResponseWriter, r *http.Request) {
	id, err := requireIdentity(r)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	uuid := r.PathValue("uuid")
	a, err := s.loadVisible(r.Context(), id, uuid)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	act, err := rest.DecodeAction(r, "updateAccount")
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	var p updateAccountParams
	if err := act.Decode(&p); err != nil {
		rest.WriteError(w, err)
		return
	}
	if p.UUID != "" && p.UUID != uuid {
		rest.WriteError(w, errcode.New(errcode.InvalidArgument, "the body gives uuid %q but the path gives %q; leave it out of the body", p.UUID, uuid))
		return
	}
	a, err = s.updateAccount(r.Context(), id, a, p)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rest.WriteJSON(w, http.StatusOK, map[string]any{"inventory": a})
}

func (s *Service) updateAccount(ctx context.Context, id Identity, a Account, p updateAccountParams) (Account, error) {
	changes := map[string]any{}
	if p.Name != nil && *p.Name != a.Name {
		if a.UUID == AdminUUID {
			return a, errcode.New(errcode.InvalidArgument, "the admin account keeps its name %q", AdminName)
		}
		changes["name"] = *p.Name
	}
	if p.Description != nil {
		changes["description"] = *p.Description
	}
	if p.Password != nil {
		if !id.Admin {
			ok, err := s.limit.check(ctx, func() bool { return checkPassword(a.PasswordHash, p.OldPassword) })
			if err != nil {
				return a, err
			}
			if !ok {
				return a, errcode.New(errcode.PermissionDenied, "oldPassword is wrong: changing an account's password needs its old one")
			}
		}
		hash, err := hashPassword(*p.Password, s.cost)
		if err != nil {
			return a, errcode.Wrap(errcode.Internal, err, "hash the new password")
		}
		changes["password_hash"] = hash
	}
	if len(changes) == 0 {
		return a, nil
	}
	changes["updated_at"] = s.clock()
	err := s.db.WithContext(ctx).Model(&Account{}).Where("uuid = ?", a.UUID).Updates(changes).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return a, errcode.New(errcode.InvalidArgument, "account name %q is already taken", *p.Name)
	}
	if err != nil {
		return a, errcode.Wrap(errcode.Internal, err, "update account %s", a.UUID)
	}
	if p.Password != nil {
		// Whoever had the old password has no session left, but for the
		// caller's own.
		if err := s.endSessions(ctx, a.UUID, id.SessionUUID); err != nil {
			return a, err
		}
	}
	var out Account
	if err := s.db.WithContext(ctx).Where("uuid = ?", a.UUID).Take(&out).Error; err != nil {
		return a, errcode.Wrap(errcode.Internal, err, "read account %s", a.UUID)
	}
	return out, nil
}

// endSessions deletes the sessions of account but keep.
func (s *Service) endSessions(ctx context.Context, account, keep string) error {
	if s.cache != nil {
		s.cache.removeAccount(account)
	}
	if err := s.db.WithContext(ctx).Where("account_uuid = ? AND uuid <> ?", account, StoredID(keep)).Delete(&Session{}).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "end the sessions of account %s", account)
	}
	return nil
}

func (s *Service) deleteAccountHandler(w http.ResponseWriter, r *http.Request, opts AccountsOptions) {
	id, err := requireAdmin(r, "deleting an account")
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	uuid := r.PathValue("uuid")
	switch {
	case uuid == AdminUUID:
		err = errcode.New(errcode.InvalidArgument, "the admin account cannot be deleted")
	case uuid == id.AccountUUID:
		err = errcode.New(errcode.InvalidArgument, "an account cannot delete itself")
	}
	if err == nil {
		err = s.deleteAccount(r.Context(), uuid, opts)
	}
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rest.WriteJSON(w, http.StatusOK, struct{}{})
}

// deleteAccount deletes an account that owns nothing, its sessions and its
// records; a missing one is deleted already.
func (s *Service) deleteAccount(ctx context.Context, uuid string, opts AccountsOptions) error {
	if opts.Owned != nil {
		owned, err := opts.Owned(ctx, uuid)
		if err != nil {
			return err
		}
		if len(owned) > 0 {
			kinds := make([]string, 0, len(owned))
			for k, n := range owned {
				kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
			}
			sort.Strings(kinds)
			return errcode.New(errcode.InvalidState, "account %s still owns %s; delete them first", uuid, strings.Join(kinds, ", "))
		}
	}
	if err := s.db.WithContext(ctx).Where("uuid = ?", uuid).Delete(&Account{}).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "delete account %s", uuid)
	}
	if err := s.endSessions(ctx, uuid, ""); err != nil {
		return err
	}
	if opts.Forget != nil {
		return opts.Forget(ctx, uuid)
	}
	return nil
}
