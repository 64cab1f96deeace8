package quota

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"gorm.io/gorm"

	"mplane/api/auth"
	"mplane/api/rest"
	"mplane/errcode"
)

// The quota API, in ZStack's paths, answered at once:
//
//	GET /v1/accounts/quota/{uuid}/usages  {"usages": [{"name", "total", "used"}]}  admins, or the account itself
//	GET /v1/accounts/quotas[?q=identityUuid=<account>][&q=name=<quota>]  {"inventories": [{"identityUuid", "identityType", "name", "value"}]}
//	PUT /v1/accounts/quotas/actions {"updateQuota": {"identityUuid", "name", "value"}}  admins
//
// A normal account sees its own quotas only; another account is not
// found.

type updateQuotaParams struct {
	IdentityUUID string `json:"identityUuid" api:"required"`
	Name         string `json:"name" api:"required"`
	Value        *int64 `json:"value" api:"required"`
}

// Register mounts the quota API on mux, behind the auth middleware.
func (s *Service) Register(mux *http.ServeMux) {
	rest.HandleFunc(mux, "GET /accounts/quota/{uuid}/usages", s.usagesHandler)
	rest.HandleFunc(mux, "GET /accounts/quotas", s.queryHandler)
	rest.HandleFunc(mux, "PUT /accounts/quotas/actions", s.updateHandler)
}

func identity(r *http.Request) (auth.Identity, error) {
	id, ok := auth.FromContext(r.Context())
	if !ok {
		return auth.Identity{}, errcode.New(errcode.Unauthenticated, "no session: the quota API must run behind the middleware")
	}
	return id, nil
}

// account checks that id may see account's quotas and that it exists.
func (s *Service) account(ctx context.Context, id auth.Identity, account string) error {
	if err := rest.CheckUUID("the account uuid", account); err != nil {
		return err
	}
	notFound := errcode.New(errcode.ResourceNotFound, "account %s not found", account)
	if !id.Admin && account != id.AccountUUID {
		return notFound
	}
	var a auth.Account
	err := s.db.WithContext(ctx).Where("uuid = ?", account).Take(&a).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return notFound
	}
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up account %s", account)
	}
	return nil
}

func (s *Service) usagesHandler(w http.ResponseWriter, r *http.Request) {
	id, err := identity(r)
	account := r.PathValue("uuid")
	if err == nil {
		err = s.account(r.Context(), id, account)
	}
	var usages []Usage
	if err == nil {
		usages, err = s.Usages(r.Context(), account)
	}
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rest.WriteJSON(w, http.StatusOK, map[string]any{"usages": usages})
}

// queryFilter reads the q conditions the quota query takes: identityUuid=
// and name=.
func queryFilter(v url.Values) (account, name string, err error) {
	for _, q := range v["q"] {
		field, val, ok := strings.Cut(q, "=")
		switch {
		case ok && field == "identityUuid":
			account = val
		case ok && field == "name":
			name = val
		default:
			return "", "", errcode.New(errcode.InvalidArgument, "q %q: the quota query takes identityUuid=<account> and name=<quota>", q)
		}
	}
	return account, name, nil
}

func (s *Service) queryHandler(w http.ResponseWriter, r *http.Request) {
	id, err := identity(r)
	var values url.Values
	if err == nil {
		if values, err = url.ParseQuery(r.URL.RawQuery); err != nil {
			err = errcode.New(errcode.InvalidArgument, "malformed query string: %v", err)
		}
	}
	var account, name string
	if err == nil {
		account, name, err = queryFilter(values)
	}
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	var accounts []string
	switch {
	case account != "":
		if !id.Admin && account != id.AccountUUID {
			accounts = nil // another account's: none
		} else {
			accounts = []string{account}
		}
	case id.Admin:
		err = s.db.WithContext(r.Context()).Model(&auth.Account{}).Where("type = ?", auth.Normal).Order("uuid").Pluck("uuid", &accounts).Error
	default:
		accounts = []string{id.AccountUUID}
	}
	if err != nil {
		rest.WriteError(w, errcode.Wrap(errcode.Internal, err, "list the accounts"))
		return
	}
	inventories := []QuotaVO{}
	for _, a := range accounts {
		limits, err := s.Limits(r.Context(), s.db, a)
		if err != nil {
			rest.WriteError(w, err)
			return
		}
		for _, n := range Names {
			if name == "" || name == n {
				inventories = append(inventories, QuotaVO{IdentityUUID: a, IdentityType: "AccountVO", Name: n, Value: limits[n]})
			}
		}
	}
	rest.WriteJSON(w, http.StatusOK, map[string]any{"inventories": inventories})
}

func (s *Service) updateHandler(w http.ResponseWriter, r *http.Request) {
	id, err := identity(r)
	if err == nil && !id.Admin {
		err = errcode.New(errcode.PermissionDenied, "updateQuota needs an admin account")
	}
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	a, err := rest.DecodeAction(r, "updateQuota")
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	var p updateQuotaParams
	if err := a.Decode(&p); err != nil {
		rest.WriteError(w, err)
		return
	}
	if err := s.account(r.Context(), id, p.IdentityUUID); err != nil {
		rest.WriteError(w, err)
		return
	}
	q, err := s.Set(r.Context(), p.IdentityUUID, p.Name, *p.Value)
	if err != nil {
		rest.WriteError(w, err)
		return
	}
	rest.WriteJSON(w, http.StatusOK, map[string]any{"inventory": q})
}
