// Package clienttest is an in-memory fake of mplane's REST API contract
// (ZStack's conventions), for the tests of API clients: package client and
// the CLI. It is not the server and shares no code with it but the error
// encoding of api/rest; it implements the contract as the client sees it:
//
//   - PUT /v1/accounts/login; every other route needs "Authorization:
//     OAuth <session>" (401 SYS.1008 otherwise).
//   - POST /v1/<resources> with {"params": {...}}, strictly checked: an
//     unknown or wrongly typed field, a missing required one or an unknown
//     referenced UUID is a 400 SYS.1007 at once, as the real API answers.
//   - PUT /v1/<resources>/{uuid}/actions, DELETE /v1/<resources>/{uuid}.
//   - Mutating calls answer 202 {"location": ".../v1/api-jobs/<id>"}; the
//     job answers 202 for Options.PendingPolls polls, then 200 with
//     {"inventory": ...} or 503 with {"error": ...}. X-Job-UUID chooses
//     the job id, and a second request with the same id gets the same job
//     without doing the work again.
//   - GET /v1/<resources>[/{uuid}] with q=, limit, start, count,
//     replyWithCount, sort and fields.
//
// Everything is served under /v1 and /zstack/v1. Failure injection:
// FailNextJob, DropNextResponses, ExpireSessions, Intercept.
package clienttest

import (
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"mplane/api/rest"
	"mplane/errcode"
)

// Options configures a Server; the zero value is usable.
type Options struct {
	// Account and Password are the one account that can log in. Defaults
	// "admin" and "password".
	Account, Password string
	// PendingPolls is how many polls a job answers 202 before its outcome.
	// Default 2; negative means 0.
	PendingPolls int
}

// Request is one request the server received, as recorded.
type Request struct {
	Method        string
	Path          string // without query
	Query         url.Values
	RawQuery      string
	JobUUID       string // X-Job-UUID
	Authorization string
	Body          []byte
}

// Server is the fake API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the server's base URL (http://127.0.0.1:port), without prefix.
	URL string

	ts   *httptest.Server
	opts Options

	mu        sync.Mutex
	sessions  map[string]bool
	store     map[string]*collection // by query path: "zones", "hosts", ...
	jobs      map[string]*job
	requests  []Request
	drops     int
	failNext  []*errcode.Error
	intercept func(w http.ResponseWriter, r *http.Request) bool
	clock     time.Time
}

type job struct {
	id      string
	pending int
	result  any // {"inventory": ...} or {}
	err     *errcode.Error
}

// NewServer starts a fake API on a loopback port; Close stops it.
func NewServer(opts Options) *Server {
	if opts.Account == "" {
		opts.Account = "admin"
	}
	if opts.Password == "" {
		opts.Password = "password"
	}
	if opts.PendingPolls == 0 {
		opts.PendingPolls = 2
	}
	if opts.PendingPolls < 0 {
		opts.PendingPolls = 0
	}
	s := &Server{
		opts:     opts,
		sessions: map[string]bool{},
		store:    map[string]*collection{},
		jobs:     map[string]*job{},
		clock:    time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for _, name := range collections {
		s.store[name] = &collection{byUUID: map[string]map[string]any{}}
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.ts.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.ts.Close() }

// NewSession returns a valid session without a login.
func (s *Server) NewSession() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := newUUID()
	s.sessions[id] = true
	return id
}

// ExpireSessions makes every session invalid (401 from now on).
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions = map[string]bool{}
}

// FailNextJob makes the next job started fail with err (503 on its
// location) after its pending polls; the work is not done. Calls queue up.
func (s *Server) FailNextJob(err *errcode.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = append(s.failNext, err)
}

// DropNextResponses makes the next n mutating requests start their job
// (do the work) and then close the connection without an answer, as a
// server or network failing at the worst moment would.
func (s *Server) DropNextResponses(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops += n
}

// Intercept installs fn in front of every route: when it returns true it
// has answered the request itself. The request is recorded first.
func (s *Server) Intercept(fn func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.intercept = fn
}

// Requests returns the requests received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// JobCount is the number of jobs started.
func (s *Server) JobCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

var prefixes = []string{"/zstack/v1/", "/v1/"}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, rest.MaxBodyBytes))
	s.mu.Lock()
	s.requests = append(s.requests, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), RawQuery: r.URL.RawQuery,
		JobUUID: r.Header.Get("X-Job-UUID"), Authorization: r.Header.Get("Authorization"), Body: body,
	})
	intercept := s.intercept
	s.mu.Unlock()
	if intercept != nil && intercept(w, r) {
		return
	}

	var prefix, rel string
	for _, p := range prefixes {
		if strings.HasPrefix(r.URL.Path, p) {
			prefix, rel = strings.TrimSuffix(p, "/"), strings.TrimPrefix(r.URL.Path, p)
			break
		}
	}
	if prefix == "" {
		rest.WriteError(w, errcode.New(errcode.ResourceNotFound, "no API route %s", r.URL.Path))
		return
	}
	segs := strings.Split(strings.Trim(rel, "/"), "/")

	if r.Method == http.MethodPut && rel == "accounts/login" {
		s.login(w, body)
		return
	}
	if !s.authenticated(r) {
		rest.WriteError(w, errcode.New(errcode.Unauthenticated, "no valid session in the Authorization header; log in with PUT /v1/accounts/login"))
		return
	}
	if segs[0] == "api-jobs" && len(segs) == 2 && r.Method == http.MethodGet {
		s.pollJob(w, segs[1])
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.query(w, r, segs)
	case http.MethodPost:
		s.mutate(w, r, prefix, func() (any, *errcode.Error) { return s.create(rel, body) })
	case http.MethodPut:
		if len(segs) != 3 || segs[2] != "actions" {
			rest.WriteError(w, errcode.New(errcode.ResourceNotFound, "no API route PUT %s", r.URL.Path))
			return
		}
		s.mutate(w, r, prefix, func() (any, *errcode.Error) { return s.action(segs[0], segs[1], body) })
	case http.MethodDelete:
		if len(segs) != 2 {
			rest.WriteError(w, errcode.New(errcode.ResourceNotFound, "no API route DELETE %s", r.URL.Path))
			return
		}
		mode := r.URL.Query().Get("deleteMode")
		if mode != "" && mode != "Permissive" && mode != "Enforcing" {
			rest.WriteError(w, errcode.New(errcode.InvalidArgument, "deleteMode must be Permissive or Enforcing, got %q", mode))
			return
		}
		s.mutate(w, r, prefix, func() (any, *errcode.Error) { return s.delete(segs[0], segs[1]) })
	default:
		rest.WriteError(w, errcode.New(errcode.InvalidArgument, "method %s not allowed", r.Method))
	}
}

func (s *Server) authenticated(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	session, ok := strings.CutPrefix(h, "OAuth ")
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[strings.TrimSpace(session)]
}

func (s *Server) login(w http.ResponseWriter, body []byte) {
	var req struct {
		LogInByAccount *struct {
			AccountName string `json:"accountName"`
			Password    string `json:"password"`
		} `json:"logInByAccount"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.LogInByAccount == nil {
		rest.WriteError(w, errcode.New(errcode.InvalidArgument, `expected {"logInByAccount": {"accountName": ..., "password": ...}}`))
		return
	}
	sum := sha512.Sum512([]byte(s.opts.Password))
	l := req.LogInByAccount
	if l.AccountName != s.opts.Account || (l.Password != hex.EncodeToString(sum[:]) && l.Password != s.opts.Password) {
		rest.WriteError(w, errcode.New(errcode.Unauthenticated, "wrong account name or password"))
		return
	}
	id := s.NewSession()
	rest.WriteJSON(w, http.StatusOK, map[string]any{"inventory": map[string]any{
		"uuid": id, "accountUuid": "36c27e8ff05c4780bf6d2fa65700f22e", "expiredDate": "2099-01-01T00:00:00Z",
	}})
}

var zstackUUID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// mutate starts (or finds again, by X-Job-UUID) the job of a mutating
// request. work runs under s.mu and validates first: a validation error is
// answered at once (400/404), as the real API does, and starts no job.
func (s *Server) mutate(w http.ResponseWriter, r *http.Request, prefix string, work func() (any, *errcode.Error)) {
	id := r.Header.Get("X-Job-UUID")
	if id != "" && !zstackUUID.MatchString(id) {
		rest.WriteError(w, errcode.New(errcode.InvalidArgument, "X-Job-UUID must be 32 lowercase hex digits, got %q", id))
		return
	}
	s.mu.Lock()
	if id == "" {
		id = newUUID()
	}
	if _, dup := s.jobs[id]; !dup {
		j := &job{id: id, pending: s.opts.PendingPolls}
		if len(s.failNext) > 0 {
			j.err, s.failNext = s.failNext[0], s.failNext[1:]
		} else {
			result, err := work()
			if err != nil {
				s.mu.Unlock()
				rest.WriteError(w, err)
				return
			}
			j.result = result
		}
		s.jobs[id] = j
	}
	drop := s.drops > 0
	if drop {
		s.drops--
	}
	s.mu.Unlock()
	if drop {
		hj, ok := w.(http.Hijacker)
		if ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
	}
	loc := "http://" + r.Host + prefix + "/api-jobs/" + id
	rest.WriteJSON(w, http.StatusAccepted, map[string]any{"location": loc})
}

func (s *Server) pollJob(w http.ResponseWriter, id string) {
	s.mu.Lock()
	j, ok := s.jobs[id]
	if !ok {
		s.mu.Unlock()
		rest.WriteError(w, errcode.New(errcode.ResourceNotFound, "no API job %s", id))
		return
	}
	if j.pending > 0 {
		j.pending--
		s.mu.Unlock()
		rest.WriteJSON(w, http.StatusAccepted, map[string]any{"location": "/v1/api-jobs/" + id})
		return
	}
	result, jerr := j.result, j.err
	s.mu.Unlock()
	if jerr != nil {
		rest.WriteJSON(w, http.StatusServiceUnavailable, rest.ErrorBody{Error: jerr})
		return
	}
	rest.WriteJSON(w, http.StatusOK, result)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// now is a clock that moves one second per call, so createDate orders
// resources by creation.
func (s *Server) nowLocked() string {
	s.clock = s.clock.Add(time.Second)
	return s.clock.Format(time.RFC3339)
}

func invalid(format string, args ...any) *errcode.Error {
	return errcode.New(errcode.InvalidArgument, format, args...)
}

func notFound(coll, uuid string) *errcode.Error {
	return errcode.New(errcode.ResourceNotFound, "no %s with uuid %s", coll, uuid)
}

func jsonString(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}
