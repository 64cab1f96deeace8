package kvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
	"mplane/agents/storage"
)

// storagePaths are the storage commands routed by protocol.StorageHeader.
var storagePaths = func() map[string]bool {
	m := map[string]bool{}
	for _, p := range protocol.StorageCommandPaths() {
		m[p] = true
	}
	return m
}()

// storageRoute tells whether a request path is a storage command (async)
// or the file endpoint (raw), and its route for admission.
func storageRoute(p string) (agentserver.Route, bool) {
	if strings.HasPrefix(p, protocol.PathFiles) {
		return agentserver.Route{Path: protocol.PathFiles, Kind: agentserver.Raw}, true
	}
	// The framework serves "/volume/info/" as "/volume/info".
	if len(p) > 1 {
		p = strings.TrimRight(p, "/")
	}
	if storagePaths[p] {
		return agentserver.Route{Path: p, Kind: agentserver.Async}, true
	}
	return agentserver.Route{}, false
}

// mountStorage builds a storage agent on each directory of
// Options.Storage. On an error the ones built are shut down.
func (a *Agent) mountStorage() (err error) {
	a.storages = map[string]*storage.Agent{}
	a.storageURLs = slices.Sorted(maps.Keys(a.opts.Storage))
	defer func() {
		if err != nil {
			for _, sa := range a.storages {
				_ = sa.Shutdown(context.Background()) // nothing runs yet
			}
			a.storages, a.storageURLs = nil, nil
		}
	}()
	roots := map[string]string{} // resolved root -> URL
	for _, u := range a.storageURLs {
		sa, err := storage.New(storage.Options{
			Root:    a.opts.Storage[u],
			QemuImg: a.opts.StorageQemuImg,
			Logger:  a.log.With("storage_url", u),
			Server:  a.opts.Server,
			// Downloads from backup storage trust what the agent trusts.
			HTTPClient: a.opts.Server.HTTPClient,
		})
		if err != nil {
			return fmt.Errorf("kvm agent storage %s: %w", u, err)
		}
		a.storages[u] = sa
		for other, ou := range roots {
			if within(sa.Root(), other) || within(other, sa.Root()) {
				return fmt.Errorf("kvm agent storage %s (%s) and %s (%s) share files: give each primary storage a directory of its own",
					u, sa.Root(), ou, other)
			}
		}
		roots[sa.Root()] = u
	}
	if a.secret != "" {
		// The secret from the state file: the storage agents require it
		// too (the agent's admission does already).
		for _, sa := range a.storages {
			sa.SetConnection("", "", a.secret)
		}
	}
	return nil
}

// within reports whether p is dir or under it (both absolute and clean).
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// connectStorageLocked connects the mounted storage agents as the host is
// connected: their events go where the agent's go, with its secret.
func (a *Agent) connectStorageLocked() {
	for _, sa := range a.storages {
		sa.SetConnection(a.hostUUID, a.sendCommandURL, a.secret)
	}
}

// storageFor finds the mounted storage agent the request's
// protocol.StorageHeader names; nil and why not when there is none. what
// names the request in the error ("storage command /volume/info").
func (a *Agent) storageFor(h http.Header, what string) (*storage.Agent, error) {
	u := h.Get(protocol.StorageHeader)
	if u == "" {
		return nil, &agentserver.StatusError{Status: http.StatusBadRequest,
			Msg: fmt.Sprintf("%s needs the %s header naming its primary storage's URL; %s",
				what, protocol.StorageHeader, a.servedStorage())}
	}
	if sa := a.storages[u]; sa != nil {
		return sa, nil
	}
	if path.IsAbs(u) {
		if sa := a.storages[path.Clean(u)]; sa != nil {
			return sa, nil
		}
	}
	return nil, &agentserver.StatusError{Status: http.StatusNotFound,
		Msg: fmt.Sprintf("this host serves no primary storage with URL %s (%s header of %s); %s",
			strconv.Quote(u), protocol.StorageHeader, what, a.servedStorage())}
}

// servedStorage says which storage the agent serves and how to add one.
func (a *Agent) servedStorage() string {
	const add = "add one with --storage URL=DIR (kvm.Options.Storage)"
	if len(a.storageURLs) == 0 {
		return "this host serves no primary storage: " + add
	}
	q := make([]string, len(a.storageURLs))
	for i, u := range a.storageURLs {
		q[i] = strconv.Quote(u)
	}
	return "this host serves " + strings.Join(q, ", ") + "; " + add
}

// serveStorage serves a storage command or a file: admitted as the agent's
// own commands (arrival recorded, the host secret checked), then handed to
// the storage agent the header names. A command naming none gets an error
// result (through the agent's own endpoint, refuseStorage); a file request
// 400 (no header) or 404 (unknown storage).
func (a *Agent) serveStorage(w http.ResponseWriter, r *http.Request, rt agentserver.Route) {
	what := "storage command " + rt.Path
	if rt.Kind == agentserver.Raw {
		what = "file request " + r.URL.Path
	}
	sa, err := a.storageFor(r.Header, what)
	if err != nil && rt.Kind == agentserver.Async {
		a.srv.ServeHTTP(w, r)
		return
	}
	if aerr := a.admit(r, rt); aerr != nil {
		err = aerr
	}
	if err != nil {
		status := http.StatusForbidden
		var se *agentserver.StatusError
		if errors.As(err, &se) && se.Status != 0 {
			status = se.Status
		}
		writeJSON(w, status, protocol.Response{Error: err.Error()})
		return
	}
	if d := a.opts.StorageLatency; d > 0 && rt.Kind == agentserver.Async {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	sa.Handler().ServeHTTP(w, r)
}

// refuseStorage answers a storage command that names no storage this host
// serves.
func (a *Agent) refuseStorage(_ context.Context, req *agentserver.Request, _ json.RawMessage) (struct{}, error) {
	_, err := a.storageFor(req.Header, "storage command "+req.Path)
	if err == nil {
		// Unreachable through Handler: serveStorage routes it.
		err = fmt.Errorf("storage command %s was not routed to its storage", req.Path)
	}
	return struct{}{}, err
}

// shutdownStorage shuts the mounted storage agents down, concurrently,
// within ctx; the channel gets the joined errors once all have returned.
func (a *Agent) shutdownStorage(ctx context.Context) <-chan error {
	out := make(chan error, 1)
	errs := make([]error, len(a.storageURLs))
	var wg sync.WaitGroup
	for i, u := range a.storageURLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.storages[u].Shutdown(ctx); err != nil {
				errs[i] = fmt.Errorf("storage %s: %w", u, err)
			}
		}()
	}
	go func() {
		wg.Wait()
		out <- errors.Join(errs...)
	}()
	return out
}
