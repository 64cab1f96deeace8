package servertest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
)

// Request is one request a Recorder saw, as it arrived.
type Request struct {
	Method   string
	Path     string // without the query
	RawQuery string
	Query    url.Values
	// JobUUID is the X-Job-UUID header; Authorization the header as sent.
	JobUUID       string
	Authorization string
	Body          []byte
	// RemoteAddr is the client's end of the connection: two requests with
	// one RemoteAddr came on one connection.
	RemoteAddr string
	// Status is the status answered, 0 while the request is served, when
	// an interceptor answered it, or when the answer was dropped.
	Status int
}

// Recorder is HTTP middleware for Options.Wrap (or Stack.Front) that
// records every request between the client and the node and injects
// failures there: Intercept answers requests itself, DropResponses lets
// the node do the work of a call and then cuts the connection before the
// client reads the answer. Its methods are safe for concurrent use.
//
//	rec := servertest.NewRecorder()
//	st := servertest.Start(t, servertest.Options{Wrap: rec.Wrap})
//	rec.Reset() // forget the stack's own login and lookups
type Recorder struct {
	mu        sync.Mutex
	reqs      []*Request
	intercept func(w http.ResponseWriter, r *http.Request) bool
	drops     int
	observers []func(Request)
}

// NewRecorder returns a Recorder that records and passes everything on.
func NewRecorder() *Recorder { return &Recorder{} }

// Requests returns a copy of the requests seen so far (since Reset), in
// the order they arrived.
func (rec *Recorder) Requests() []Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := make([]Request, len(rec.reqs))
	for i, r := range rec.reqs {
		out[i] = *r
		out[i].Body = append([]byte(nil), r.Body...)
	}
	return out
}

// Reset forgets the requests recorded so far.
func (rec *Recorder) Reset() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.reqs = nil
}

// Intercept installs fn in front of the node: when fn returns true it has
// answered the request itself (w can be hijacked) and the node never sees
// it; false passes the request on. nil removes the interceptor. Requests
// are recorded before fn runs.
func (rec *Recorder) Intercept(fn func(w http.ResponseWriter, r *http.Request) bool) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.intercept = fn
}

// DropResponses makes the next n calls that start a job (requests with an
// X-Job-UUID header) reach the node, which starts the job, and then closes
// the client's connection without an answer, as a network failing at the
// worst moment would.
func (rec *Recorder) DropResponses(n int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.drops += n
}

// OnResponse calls fn with every request the node answered, after the
// answer was written (Status set); fn must not block for long.
func (rec *Recorder) OnResponse(fn func(Request)) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.observers = append(rec.observers, fn)
}

// Wrap is the middleware: give it to Options.Wrap or Stack.Front.
func (rec *Recorder) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		req := &Request{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Query: r.URL.Query(),
			JobUUID: r.Header.Get("X-Job-UUID"), Authorization: r.Header.Get("Authorization"),
			Body: body, RemoteAddr: r.RemoteAddr,
		}
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, req)
		intercept := rec.intercept
		drop := rec.drops > 0 && req.JobUUID != ""
		if drop {
			rec.drops--
		}
		rec.mu.Unlock()

		if intercept != nil && intercept(w, r) {
			return
		}
		if drop {
			// The node does the work; its answer goes nowhere.
			next.ServeHTTP(httptest.NewRecorder(), r)
			hijackAndClose(w)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		rec.mu.Lock()
		req.Status = sw.status
		done := *req
		observers := append([]func(Request){}, rec.observers...)
		rec.mu.Unlock()
		for _, fn := range observers {
			fn(done)
		}
	})
}

// hijackAndClose closes the connection of w without an answer.
func hijackAndClose(w http.ResponseWriter) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		_ = conn.Close()
		return
	}
	panic(http.ErrAbortHandler) // HTTP/2: the server resets the stream
}

// HijackAndClose is an interceptor's way to fail a request at the
// transport level: the connection is closed without an answer.
func HijackAndClose(w http.ResponseWriter) { hijackAndClose(w) }

// statusWriter remembers the status written through it.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (flush,
// hijack).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Gate is HTTP middleware that holds requests to some paths until Open is
// called, e.g. in front of a simulated host (AgentOptions.Wrap) so that a
// real job is certainly still running while a test looks at it:
//
//	gate := servertest.NewGate("/vm/start")
//	host := st.AddHost(t, servertest.AgentOptions{Wrap: gate.Wrap})
//	// a VM created on host stays processing until gate.Open()
//
// A held request also ends when its client goes away.
type Gate struct {
	paths map[string]bool
	open  chan struct{}
	once  sync.Once
}

// NewGate returns a closed gate for the given URL paths ("/vm/start"); no
// paths holds every request.
func NewGate(paths ...string) *Gate {
	g := &Gate{paths: map[string]bool{}, open: make(chan struct{})}
	for _, p := range paths {
		g.paths["/"+strings.Trim(p, "/")] = true
	}
	return g
}

// Open lets held and later requests through. Idempotent.
func (g *Gate) Open() { g.once.Do(func() { close(g.open) }) }

// Wrap is the middleware.
func (g *Gate) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(g.paths) == 0 || g.paths["/"+strings.Trim(r.URL.Path, "/")] {
			select {
			case <-g.open:
			case <-r.Context().Done():
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
