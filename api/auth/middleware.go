package auth

import (
	"net/http"
	"strings"

	"mplane/api/rest"
	"mplane/errcode"
)

// Scheme is the Authorization scheme of ZStack sessions:
// "Authorization: OAuth <session uuid>".
const Scheme = "OAuth"

// Middleware requires a valid session on every request except those
// matching one of the public patterns, and puts the caller's Identity in
// the request's context (see FromContext). Patterns are http.ServeMux
// patterns with their prefix ("PUT /v1/accounts/login", "/healthz",
// "GET /v1/openapi.json"); rest.Patterns and PublicPatterns help write
// them. A missing, malformed, unknown or expired session is answered 401
// with an errcode.Unauthenticated error and "WWW-Authenticate: OAuth".
// Middleware panics on an invalid pattern, as ServeMux.Handle does.
func (s *Service) Middleware(next http.Handler, public ...string) http.Handler {
	pub := http.NewServeMux()
	for _, p := range public {
		pub.Handle(p, http.NotFoundHandler()) // only the match matters
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := pub.Handler(r); pattern != "" {
			next.ServeHTTP(w, r)
			return
		}
		sessionUUID, err := SessionFromHeader(r.Header.Get("Authorization"))
		if err != nil {
			unauthorized(w, err)
			return
		}
		id, err := s.Validate(r.Context(), sessionUUID)
		if err != nil {
			if errcode.Has(err, errcode.Unauthenticated) {
				unauthorized(w, err)
			} else {
				rest.WriteError(w, err)
			}
			return
		}
		next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
	})
}

// PublicPatterns are the auth routes that need no session, under both
// prefixes: login, and logout (whose path carries the session itself).
func PublicPatterns() []string {
	return append(rest.Patterns("PUT /accounts/login"), rest.Patterns("DELETE /accounts/sessions/{uuid}")...)
}

// SessionFromHeader extracts the session UUID from an Authorization header
// value, "OAuth <session uuid>" (the scheme in any case). The error, an
// errcode.Unauthenticated, never repeats the header, which may hold a
// secret.
func SessionFromHeader(h string) (string, error) {
	if strings.TrimSpace(h) == "" {
		return "", errcode.New(errcode.Unauthenticated,
			`missing Authorization header; send "Authorization: OAuth <session uuid>" with the uuid from PUT /v1/accounts/login`)
	}
	parts := strings.Fields(h)
	if len(parts) != 2 || !strings.EqualFold(parts[0], Scheme) {
		return "", errcode.New(errcode.Unauthenticated,
			`malformed Authorization header; expected "OAuth <session uuid>"`)
	}
	return parts[1], nil
}

func unauthorized(w http.ResponseWriter, err error) {
	w.Header().Set("WWW-Authenticate", Scheme)
	rest.WriteError(w, err)
}

// RequireAdmin is Middleware for the operators' endpoints (/admin/*,
// /debug/pprof/* when they are served on the API listener): a session is
// required, and it must be an admin account's; another account's is
// answered 403 (PermissionDenied).
func (s *Service) RequireAdmin(next http.Handler) http.Handler {
	return s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := FromContext(r.Context()); !ok || !id.Admin {
			rest.WriteError(w, errcode.New(errcode.PermissionDenied,
				"%s needs an admin account's session (or use the admin listener, admin_listen)", r.URL.Path))
			return
		}
		next.ServeHTTP(w, r)
	}))
}
