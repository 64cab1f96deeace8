package server

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"mplane/agents/protocol"
	"mplane/api/auth"
	"mplane/api/rest"
	"mplane/errcode"
	"mplane/managementnode"
)

// routes builds the API handler and the admin handler. With admin_listen
// empty both are served on the API listener; otherwise the admin endpoints
// (/admin/*, /debug/pprof/*) only on admin_listen. /healthz and /readyz are
// on both.
func (s *Server) routes() (api, admin http.Handler) {
	health := func(mux *http.ServeMux) {
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"status":"ok"}`)
		})
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			st := s.node.Status()
			if st.State != managementnode.StateRunning || !s.node.Ring().Has(s.node.UUID()) {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, `{"status":"not ready","state":%q}`+"\n", st.State)
				return
			}
			fmt.Fprintf(w, `{"status":"ready","epoch":%d}`+"\n", st.Epoch)
		})
	}
	adminMux := http.NewServeMux()
	health(adminMux)
	adminRoutes := func(mux *http.ServeMux) {
		mux.Handle("GET /admin/", s.node.AdminHandler())
		mux.HandleFunc("POST /admin/probe", s.probe)
		mux.HandleFunc("GET /admin/process", serveProcess)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	adminRoutes(adminMux)

	mux := http.NewServeMux()
	health(mux)
	if s.cfg.AdminListen == "" {
		adminRoutes(mux)
	}
	mux.Handle(protocol.DefaultCallbackPath, s.agents.CallbackHandler())
	mux.Handle(protocol.DefaultEventPath, s.hosts.EventHandler())
	v1 := http.NewServeMux()
	rest.Handle(v1, "PUT /accounts/login", s.auth.LoginHandler())
	rest.Handle(v1, "DELETE /accounts/sessions/{uuid}", s.auth.LogoutHandler())
	s.portal.Register(v1)
	guarded := s.auth.Middleware(v1, auth.PublicPatterns()...)
	for _, prefix := range rest.Prefixes() {
		mux.Handle(prefix+"/", guarded)
	}
	return mux, adminMux
}

// probe asks the owner of a resource to identify itself, through this
// node's ring: POST /admin/probe?resource=<uuid>[&sleepMs=N].
func (s *Server) probe(w http.ResponseWriter, r *http.Request) {
	res := r.URL.Query().Get("resource")
	if res == "" {
		writeError(w, errcode.New(errcode.InvalidArgument, "query parameter resource is required: POST /admin/probe?resource=<uuid>"))
		return
	}
	var sleep time.Duration
	if v := r.URL.Query().Get("sleepMs"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			writeError(w, errcode.New(errcode.InvalidArgument, "sleepMs must be a non-negative integer, got %q", v))
			return
		}
		sleep = time.Duration(ms) * time.Millisecond
	}
	rep, err := s.node.Probe(r.Context(), res, sleep)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"nodeUuid":%q,"epoch":%d,"hops":%d}`+"\n", rep.NodeUUID, rep.Epoch, rep.Hops)
}
