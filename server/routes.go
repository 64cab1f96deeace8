package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"

	"mplane/admin"
	"mplane/agents/protocol"
	"mplane/api/auth"
	"mplane/api/rest"
	"mplane/api/tenancy"
	"mplane/managementnode"
)

// routes builds the API handler and the admin handler. With admin_listen
// empty both are served on the API listener, the admin endpoints
// (/admin/*, /debug/pprof/*) to admin sessions only; otherwise the admin
// endpoints only on admin_listen, without a session (bind it to loopback
// or a management network). /healthz and /readyz are
// on both. /admin/ serves the admin command table (admin.Handler): the
// read-only commands on either listener, all of them only on admin_listen.
// StorageEventPath is where storage agents (backup storage) post their
// events (the sendCommandUrl they get at connect).
const StorageEventPath = "/storage/sendcommand"

func (s *Server) routes() (apiHandler, adminHandler http.Handler) {
	health := func(mux *http.ServeMux) {
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintln(w, `{"status":"ok"}`)
		})
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			st := s.node.Status()
			if !s.started.Load() || st.State != managementnode.StateRunning || !s.node.Ring().Has(s.node.UUID()) {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, `{"status":"not ready","state":%q}`+"\n", st.State)
				return
			}
			fmt.Fprintf(w, `{"status":"ready","epoch":%d}`+"\n", st.Epoch)
		})
	}
	adminMux := http.NewServeMux()
	health(adminMux)
	adminRoutes := func(mux *http.ServeMux, mutating bool, guard func(http.Handler) http.Handler) {
		mux.Handle("/admin/", guard(admin.Handler(s.table, admin.HandlerOptions{Mutating: mutating})))
		mux.Handle("/debug/pprof/", guard(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/profile", guard(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", guard(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", guard(http.HandlerFunc(pprof.Trace)))
	}
	adminRoutes(adminMux, true, func(h http.Handler) http.Handler { return h })

	mux := http.NewServeMux()
	health(mux)
	if s.cfg.AdminListen == "" {
		// On the API listener, reachable by anyone who reaches the API:
		// an admin session is required.
		adminRoutes(mux, false, s.auth.RequireAdmin)
	}
	mux.Handle(protocol.DefaultCallbackPath, s.agents.CallbackHandler())
	mux.Handle(protocol.DefaultEventPath, s.hosts.EventHandler())
	mux.Handle(StorageEventPath, s.store.EventHandler())
	v1 := http.NewServeMux()
	rest.Handle(v1, "PUT /accounts/login", s.auth.LoginHandler())
	rest.Handle(v1, "DELETE /accounts/sessions/{uuid}", s.auth.LogoutHandler())
	s.auth.RegisterAccounts(v1, auth.AccountsOptions{
		Owned: func(ctx context.Context, account string) (map[string]int64, error) {
			return s.portal.Guard().Owned(ctx, s.db, account)
		},
		Forget: func(ctx context.Context, account string) error {
			return errors.Join(tenancy.Forget(ctx, s.db, account), s.quota.Forget(ctx, account))
		},
	})
	s.quota.Register(v1)
	rest.Handle(v1, "PUT /accounts/resources/actions", s.portal.ShareHandler())
	s.portal.Register(v1)
	guarded := s.auth.Middleware(v1, auth.PublicPatterns()...)
	for _, prefix := range rest.Prefixes() {
		mux.Handle(prefix+"/", guarded)
	}
	return mux, adminMux
}
