package auth

import (
	"errors"
	"net/http"

	"mplane/api/rest"
)

// logInByAccount is the body of PUT /v1/accounts/login under
// "logInByAccount". The fields after password are sent by ZStack SDKs and
// accepted, but not used.
type logInByAccount struct {
	AccountName string         `json:"accountName" api:"required"`
	Password    string         `json:"password" api:"required"`
	AccountType string         `json:"accountType"`
	CaptchaUUID string         `json:"captchaUuid"`
	VerifyCode  string         `json:"verifyCode"`
	ClientInfo  map[string]any `json:"clientInfo"`
}

func (l *logInByAccount) Validate() error {
	switch {
	case l.AccountName == "":
		return errors.New("accountName must not be empty")
	case l.Password == "":
		return errors.New("password must not be empty")
	}
	return nil
}

// LoginHandler serves PUT /v1/accounts/login (mount it with rest.Handle
// under "PUT /accounts/login"). Body:
//
//	{"logInByAccount": {"accountName": "admin", "password": "<plain or SHA-512 hex>"}}
//
// It answers 200 {"inventory": <Session>}, 400 for a malformed body, 401
// for a wrong name or password, and 429 (Busy) for a client locked out of
// the account after failed logins (loginLimiter).
func (s *Service) LoginHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := rest.DecodeAction(r, "logInByAccount")
		if err != nil {
			rest.WriteError(w, err)
			return
		}
		var body logInByAccount
		if err := a.Decode(&body); err != nil {
			rest.WriteError(w, err)
			return
		}
		sess, err := s.login(r.Context(), clientOf(r), body.AccountName, body.Password)
		if err != nil {
			rest.WriteError(w, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		rest.WriteJSON(w, http.StatusOK, map[string]any{"inventory": sess})
	})
}

// LogoutHandler serves DELETE /v1/accounts/sessions/{uuid} (mount it under
// "DELETE /accounts/sessions/{uuid}"), ZStack's log out. It answers 200 {}
// whether or not the session existed.
func (s *Service) LogoutHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.Logout(r.Context(), r.PathValue("uuid")); err != nil {
			rest.WriteError(w, err)
			return
		}
		rest.WriteJSON(w, http.StatusOK, struct{}{})
	})
}
