package rest

import (
	"fmt"
	"net/http"
	"strings"
)

// The two prefixes every API route is served under.
const (
	PrefixV1       = "/v1"
	PrefixZStackV1 = "/zstack/v1"
)

// Prefixes lists PrefixV1 and PrefixZStackV1.
func Prefixes() []string { return []string{PrefixV1, PrefixZStackV1} }

// Patterns expands a ServeMux pattern written without prefix, "[METHOD ]/path",
// into one pattern per prefix: Patterns("GET /api-jobs/{uuid}") is
// ["GET /v1/api-jobs/{uuid}", "GET /zstack/v1/api-jobs/{uuid}"]. It panics if
// the path does not start with "/" (a host in the pattern is not supported):
// patterns are written in the code, so this is a programming error, as it is
// for http.ServeMux.
func Patterns(pattern string) []string {
	method, path := splitPattern(pattern)
	out := make([]string, 0, 2)
	for _, p := range Prefixes() {
		out = append(out, method+p+path)
	}
	return out
}

// Handle registers h on mux under both prefixes (see Patterns). Like
// ServeMux.Handle it panics on an invalid pattern; a pattern that
// conflicts with one registered before is served as ZStack's router
// serves it, the literal segments winning (see overlap.go), or, if even
// that cannot be, panics.
func Handle(mux *http.ServeMux, pattern string, h http.Handler) {
	method, path := splitPattern(pattern)
	for _, prefix := range Prefixes() {
		// The prefix and the resource's name are never generalized.
		fixed := len(strings.Split(strings.Trim(prefix, "/"), "/")) + 1
		handle(mux, method+prefix+path, fixed, h)
	}
}

// HandleFunc is Handle for a function.
func HandleFunc(mux *http.ServeMux, pattern string, h func(http.ResponseWriter, *http.Request)) {
	Handle(mux, pattern, http.HandlerFunc(h))
}

// splitPattern returns "METHOD " (with its space, or "") and the path.
func splitPattern(pattern string) (method, path string) {
	path = strings.TrimLeft(pattern, " \t")
	if i := strings.IndexAny(path, " \t"); i >= 0 {
		method, path = path[:i]+" ", strings.TrimLeft(path[i:], " \t")
	}
	if !strings.HasPrefix(path, "/") {
		panic(fmt.Sprintf("rest: pattern %q: path must start with \"/\" and have no host or prefix", pattern))
	}
	return method, path
}

// Prefix is the API prefix r was reached by: PrefixZStackV1 when its path
// starts with it, else PrefixV1.
func Prefix(r *http.Request) string {
	if p := r.URL.Path; p == PrefixZStackV1 || strings.HasPrefix(p, PrefixZStackV1+"/") {
		return PrefixZStackV1
	}
	return PrefixV1
}

// URL returns an absolute URL for path under the prefix r was reached by:
// base + Prefix(r) + path. base is the public scheme://host[:port] of the
// API; empty derives it from r (https when r came over TLS, else http, and
// r.Host). X-Forwarded-* headers are not trusted: behind a proxy, pass base.
func URL(r *http.Request, base, path string) string {
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return strings.TrimRight(base, "/") + Prefix(r) + path
}
