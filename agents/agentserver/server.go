package agentserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mplane/agents/protocol"
)

// Options configures a Server. The zero value is usable: every field has a
// documented default.
type Options struct {
	// Logger receives the framework's logs. Default: discard.
	Logger *slog.Logger

	// ContentType is the Content-Type of sync answers, of the empty
	// acknowledgement of async commands and of error answers. Default
	// protocol.HTMLContentType, what the Python agent (CherryPy) sends
	// although the body is JSON.
	ContentType string

	// CallbackRetryInterval is the pause between two attempts to post a
	// result or an event that failed with a connection error. Default 1s.
	CallbackRetryInterval time.Duration
	// CallbackRetryLimit is how long after the first attempt the server
	// keeps retrying; then the result is dropped (the management node's
	// deadline fails the call). Default 60s, like the Python framework.
	CallbackRetryLimit time.Duration
	// CallbackAttemptTimeout bounds one attempt: connecting, sending and
	// reading the answer. An attempt that times out counts as a connection
	// error. Default 30s.
	CallbackAttemptTimeout time.Duration
	// HTTPClient posts results and events. Default: a client with its own
	// transport (closed by Shutdown). Its Timeout, if set, applies too.
	HTTPClient *http.Client
	// TLS, if set, makes Serve serve HTTPS with it.
	TLS *tls.Config

	// MaxBodyBytes bounds a command's body. Default 64 MiB.
	MaxBodyBytes int64

	// Admit, if set, is called for every request to a registered path before
	// the framework looks at it (header checks, duplicates, the handler). A
	// non-nil error rejects the request: the answer's status is the one of a
	// *StatusError in the error's chain, else 403, and no handler runs. It
	// must be fast and safe for concurrent use. Agents use it to check
	// credentials and to record arrivals.
	Admit func(r *http.Request, route Route) error
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ContentType == "" {
		o.ContentType = protocol.HTMLContentType
	}
	if o.CallbackRetryInterval <= 0 {
		o.CallbackRetryInterval = time.Second
	}
	if o.CallbackRetryLimit <= 0 {
		o.CallbackRetryLimit = time.Minute
	}
	if o.CallbackAttemptTimeout <= 0 {
		o.CallbackAttemptTimeout = 30 * time.Second
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 20
	}
	return o
}

// Kind says how a path is served.
type Kind int

const (
	// Sync: the result is the body of the answer.
	Sync Kind = iota + 1
	// Async: 200 with an empty body at once, the result posted to the
	// callback URL later.
	Async
	// Raw: a plain http.Handler (debug endpoints, echo).
	Raw
)

func (k Kind) String() string {
	switch k {
	case Sync:
		return "sync"
	case Async:
		return "async"
	case Raw:
		return "raw"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Route describes a registered path, as handed to Options.Admit.
type Route struct {
	Path string
	Kind Kind
}

// StatusError is an error with the HTTP status the server answers with.
// Options.Admit returns it to choose the rejection status.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string { return e.Msg }

// ErrClosed is returned by Serve once Shutdown has been called.
var ErrClosed = errors.New("agentserver: server is shut down")

// Server is an agent's HTTP endpoint. It serves registered paths only and is
// safe for concurrent use. Register handlers with HandleSync, HandleAsync
// and HandleRaw; then Serve, or mount it (it is an http.Handler).
type Server struct {
	opts   Options
	log    *slog.Logger
	client *http.Client
	ownTr  *http.Transport // the default client's transport, closed by Shutdown

	routesMu sync.RWMutex
	routes   map[string]*route

	// baseCtx is the parent of every async handler's and delivery's context.
	// It is cancelled when Shutdown's context ends (the hard stop).
	baseCtx context.Context
	cancel  context.CancelFunc

	// tasksMu guards running and closing transitions, so that no task is
	// added to wg after Shutdown started waiting.
	tasksMu sync.Mutex
	running map[string]time.Time // task UUID -> arrival
	closing atomic.Bool
	wg      sync.WaitGroup

	httpMu      sync.Mutex
	httpServers []*http.Server

	shutdownOnce sync.Once
	tasksDone    chan struct{}

	stats counters
}

type route struct {
	path   string
	kind   Kind
	invoke invoker
	raw    http.Handler
}

// New returns a Server with no paths registered.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		routes:    map[string]*route{},
		running:   map[string]time.Time{},
		tasksDone: make(chan struct{}),
	}
	s.client = opts.HTTPClient
	if s.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 16
		s.ownTr = tr
		s.client = &http.Client{Transport: tr}
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	return s
}

// HandleRaw registers a plain handler for path (and path + "/"). It gets the
// request after Options.Admit, with no header checks.
func (s *Server) HandleRaw(path string, h http.Handler) {
	s.register(&route{path: path, kind: Raw, raw: h})
}

func (s *Server) register(rt *route) {
	p := normalizePath(rt.path)
	if p == "" {
		panic("agentserver: empty path")
	}
	rt.path = p
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	if _, dup := s.routes[p]; dup {
		panic("agentserver: path registered twice: " + p)
	}
	s.routes[p] = rt
}

// Routes lists the registered paths.
func (s *Server) Routes() []Route {
	s.routesMu.RLock()
	defer s.routesMu.RUnlock()
	out := make([]Route, 0, len(s.routes))
	for _, rt := range s.routes {
		out = append(out, Route{Path: rt.path, Kind: rt.kind})
	}
	return out
}

// normalizePath maps "/vm/start/" to "/vm/start": the Python framework
// serves both spellings of every path.
func normalizePath(p string) string {
	if len(p) > 1 {
		p = strings.TrimRight(p, "/")
		if p == "" {
			p = "/"
		}
	}
	return p
}

// ServeHTTP dispatches a request to its path's handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.routesMu.RLock()
	rt := s.routes[normalizePath(r.URL.Path)]
	s.routesMu.RUnlock()
	if rt == nil {
		s.writeError(w, http.StatusNotFound, fmt.Sprintf("no handler for path %s", r.URL.Path))
		return
	}
	if s.closing.Load() {
		// The Python agent answers 400 "kvmagent is stopping"; 503 says
		// the same and lets a client see the command may be resent.
		s.writeError(w, http.StatusServiceUnavailable, "agent is stopping")
		return
	}
	if s.opts.Admit != nil {
		if err := s.opts.Admit(r, Route{Path: rt.path, Kind: rt.kind}); err != nil {
			s.stats.rejected.Add(1)
			status := http.StatusForbidden
			var se *StatusError
			if errors.As(err, &se) && se.Status != 0 {
				status = se.Status
			}
			s.writeError(w, status, err.Error())
			return
		}
	}
	switch rt.kind {
	case Raw:
		rt.raw.ServeHTTP(w, r)
	case Sync:
		s.serveSync(w, r, rt)
	case Async:
		s.serveAsync(w, r, rt)
	}
}

func (s *Server) serveSync(w http.ResponseWriter, r *http.Request, rt *route) {
	if id := r.Header.Get(protocol.TaskUUIDHeader); id != "" {
		// What the Python framework does (an exception, hence 500): a
		// taskuuid means the caller believes the path is async and waits
		// for a callback that would never come.
		s.log.Warn("async task uuid on a sync path", "path", rt.path, "task_uuid", id)
		s.writeError(w, http.StatusInternalServerError,
			fmt.Sprintf("found async task uuid[%s] in header of sync path %s", id, rt.path))
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	req := newRequest(r, rt, body)
	ctx, cancel := req.context(r.Context())
	defer cancel()
	// The hard stop of Shutdown ends sync handlers too, whoever serves
	// the connection.
	unhook := context.AfterFunc(s.baseCtx, cancel)
	defer unhook()
	out := rt.invoke(ctx, req)
	s.stats.syncCalls.Add(1)
	if !out.reply {
		s.writeError(w, http.StatusInternalServerError, "handler gave no reply")
		return
	}
	w.Header().Set("Content-Type", s.opts.ContentType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out.result)
}

func (s *Server) serveAsync(w http.ResponseWriter, r *http.Request, rt *route) {
	id := r.Header.Get(protocol.TaskUUIDHeader)
	if id == "" {
		s.writeError(w, http.StatusBadRequest, "taskUuid missing in request header")
		return
	}
	callback := r.Header.Get(protocol.CallbackURLHeader)
	if callback == "" {
		// The Python framework acknowledges and then fails in its worker
		// thread, so the caller only learns at its deadline. Nobody can
		// receive the result: say so now.
		s.writeError(w, http.StatusBadRequest, "callbackurl missing in request header")
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	req := newRequest(r, rt, body)

	s.tasksMu.Lock()
	if s.closing.Load() {
		s.tasksMu.Unlock()
		s.writeError(w, http.StatusServiceUnavailable, "agent is stopping")
		return
	}
	if _, dup := s.running[id]; dup {
		s.tasksMu.Unlock()
		s.stats.duplicates.Add(1)
		s.log.Info("ignored duplicated task", "path", rt.path, "task_uuid", id)
		s.writeAck(w)
		return
	}
	s.running[id] = req.Arrived
	s.wg.Add(1)
	s.tasksMu.Unlock()

	s.stats.asyncStarted.Add(1)
	s.writeAck(w)
	go s.runTask(rt, req)
}

// runTask runs an async handler and posts its result. The task stays in
// the running table until the result is delivered or dropped, as in the
// Python framework: a duplicate arriving while the result is being retried
// is still ignored.
func (s *Server) runTask(rt *route, req *Request) {
	defer s.wg.Done()
	defer func() {
		s.tasksMu.Lock()
		delete(s.running, req.TaskUUID)
		s.tasksMu.Unlock()
	}()
	ctx, cancel := req.context(s.baseCtx)
	out := rt.invoke(ctx, req)
	cancel()
	if !out.reply {
		s.stats.noReply.Add(1)
		s.log.Info("handler gave no reply; no callback", "path", rt.path, "task_uuid", req.TaskUUID)
		return
	}
	if out.expired {
		// The caller failed the call at this same deadline; a result
		// saying "deadline exceeded" could only race its timer.
		s.stats.expired.Add(1)
		s.log.Info("command deadline passed; no callback", "path", rt.path, "task_uuid", req.TaskUUID)
		return
	}
	h := http.Header{}
	h.Set("Content-Type", protocol.JSONContentType)
	h.Set(protocol.TaskUUIDHeader, req.TaskUUID)
	attempts, err := s.post(s.baseCtx, req.CallbackURL, out.result, h, &s.stats.callbackRetries)
	if err != nil {
		s.stats.callbacksFailed.Add(1)
		s.log.Warn("result not delivered", "path", rt.path, "task_uuid", req.TaskUUID,
			"callback_url", req.CallbackURL, "attempts", attempts, "err", err)
		return
	}
	s.stats.callbacksDelivered.Add(1)
}

func (s *Server) writeAck(w http.ResponseWriter) {
	w.Header().Set("Content-Type", s.opts.ContentType)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// writeError answers with status and a result envelope, so that a client
// parsing the body learns the reason whatever the status.
func (s *Server) writeError(w http.ResponseWriter, status int, msg string) {
	body, _ := protocol.Marshal(protocol.Response{Success: false, Error: msg})
	w.Header().Set("Content-Type", s.opts.ContentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		return nil, fmt.Errorf("read command body: %w", err)
	}
	return body, nil
}

// Serve accepts connections on l until Shutdown. It returns nil after
// Shutdown, ErrClosed if Shutdown was called before, or the listener's
// error. It may be called for several listeners.
func (s *Server) Serve(l net.Listener) error {
	if s.opts.TLS != nil {
		l = tls.NewListener(l, s.opts.TLS)
	}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.httpMu.Lock()
	if s.closing.Load() {
		s.httpMu.Unlock()
		_ = l.Close()
		return ErrClosed
	}
	s.httpServers = append(s.httpServers, hs)
	s.httpMu.Unlock()
	err := hs.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server: it closes the listeners given to Serve,
// refuses new commands (503), and waits for running handlers and result
// deliveries. When ctx ends first, it cancels the handlers' and deliveries'
// contexts (results not yet delivered are dropped) and returns ctx's error
// without waiting further. It is idempotent and safe to call concurrently.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.tasksMu.Lock()
		s.closing.Store(true)
		s.tasksMu.Unlock()
		// Ends when the last task ends; tasks end at the latest when
		// baseCtx is cancelled, if their handlers honour their context.
		go func() {
			s.wg.Wait()
			close(s.tasksDone)
		}()
	})
	var errs []error
	s.httpMu.Lock()
	servers := append([]*http.Server(nil), s.httpServers...)
	s.httpMu.Unlock()
	for _, hs := range servers {
		if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	select {
	case <-s.tasksDone:
	case <-ctx.Done():
		s.cancel()
		errs = append(errs, fmt.Errorf("agentserver: tasks still running: %w", ctx.Err()))
	}
	s.cancel()
	if s.ownTr != nil {
		s.ownTr.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// Done is closed when Shutdown has been called and every task has ended.
func (s *Server) Done() <-chan struct{} { return s.tasksDone }
