package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"mplane/admin"
	"mplane/conf"
	"mplane/errcode"
	"mplane/flow"
	"mplane/services/globalconfig"
	"mplane/services/storage"
)

// ExitRequest is an exit asked for with the admin commands exit and
// respawn (Server.ExitRequested).
type ExitRequest struct {
	// Respawn: once the node has stopped, re-execute the binary (Respawn).
	Respawn bool
}

// ExitRequested receives the exit or respawn asked for on the admin
// interface, once its answer is sent; the owner of the process then stops
// the node (a graceful leave) and exits 0, or calls Respawn. Only with
// Options.OwnsProcess; at most one request is ever sent.
func (s *Server) ExitRequested() <-chan ExitRequest { return s.exits }

// Respawn replaces the process with a new run of the same binary, with the
// same arguments and environment (syscall.Exec): a new node incarnation,
// with a new UUID. Call it once the node has stopped; it returns only on
// failure.
func Respawn() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("respawn: find the binary: %w", err)
	}
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("respawn: exec %s: %w", exe, err)
	}
	return nil
}

// AdminSocket is the path of the node's admin socket.
func (s *Server) AdminSocket() string { return s.asok.Path() }

// Config is the node's configuration now: the one it started with and the
// run-time changes made since (config set, log level).
func (s *Server) Config() conf.Config {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	return s.live
}

// liveSettings are the settings `config set` changes at run time, each
// with how it is applied.
func (s *Server) liveSettings() map[string]func(conf.Config) error {
	return map[string]func(conf.Config) error{
		"log_level": func(c conf.Config) error {
			l, err := conf.ParseLevel(c.LogLevel)
			if err != nil {
				return err
			}
			s.level.Set(l)
			return nil
		},
		"host_ping_interval":     func(c conf.Config) error { return s.hosts.SetPingInterval(c.HostPingInterval) },
		"host_ping_max_failures": func(c conf.Config) error { return s.hosts.SetMaxPingFailures(c.HostPingMaxFailures) },
		"vm_allocation_strategy": func(c conf.Config) error { return s.vms.SetAllocationStrategy(c.VMAllocationStrategy) },
		"vm_orphan_policy":       func(c conf.Config) error { return s.vms.SetOrphanPolicy(c.VMOrphanPolicy) },
		"job_timeout":            func(c conf.Config) error { return s.portal.SetJobTimeout(c.JobTimeout) },
		"flow_retention":         func(c conf.Config) error { return s.vms.SetFlowRetention(c.FlowRetention) },
		"quota_defaults":         func(c conf.Config) error { return s.quota.SetDefaults(c.QuotaDefaults) },
	}
}

// globalConfigs are the cluster's global configurations
// (services/globalconfig): live settings that every node applies, changed
// through the API as cluster transactions. Each is one of liveSettings.
func globalConfigs() []globalconfig.Definition {
	return []globalconfig.Definition{
		{Category: "host", Name: "ping.interval", Type: globalconfig.TypeDuration, Key: "host_ping_interval",
			Description: "how often the owner of a host pings its agent"},
		{Category: "host", Name: "ping.maxFailures", Type: globalconfig.TypeInteger, Key: "host_ping_max_failures",
			Description: "failed pings in a row after which a host is Disconnected"},
		{Category: "log", Name: "level", Type: globalconfig.TypeString, Key: "log_level",
			Description: "the log level of every node: debug, info, warn or error"},
		{Category: "hostAllocator", Name: "strategy", Type: globalconfig.TypeString, Key: "vm_allocation_strategy",
			Description: "how a VM's host is chosen among those that fit: LeastUsed (the least used first: spread), " +
				"MostUsed (the most used first: pack, whole hosts stay free) or Random"},
		{Category: "vm", Name: "orphan.policy", Type: globalconfig.TypeString, Key: "vm_orphan_policy",
			Description: "what reconciliation does with a VM a host runs that the database has Stopped: Stop (stop it there) " +
				"or Adopt (mark it Running there if the host has its CPU and memory free)"},
		{Category: "api", Name: "job.timeout", Type: globalconfig.TypeDuration, Key: "job_timeout",
			Description: "how long one API call may take, from its submission to its result"},
		{Category: "flow", Name: "retention", Type: globalconfig.TypeDuration, Key: "flow_retention",
			Description: "how long the records of flows that finished cleanly are kept before they are pruned"},
		{Category: "quota", Name: "defaults", Type: globalconfig.TypeString, Key: "quota_defaults",
			Description: "the quotas of accounts without values of their own, as name=value,... (vm.num, vm.cpuNum, vm.memorySize, " +
				"volume.data.num, volume.capacity, snapshot.volume.num)"},
	}
}

// checkSetting validates a value of a live setting as configSet does,
// without applying it, and answers it as the configuration shows it
// (config show): the global configurations' Check.
func (s *Server) checkSetting(key, value string) (string, error) {
	if s.liveSettings()[key] == nil {
		return "", fmt.Errorf("%s cannot change while the node runs", key)
	}
	next, err := withSetting(s.Config(), key, value)
	if err != nil {
		return "", err
	}
	return next.Display(key), nil
}

// withSetting is cur with key set to value, parsed and validated as the
// configuration is.
func withSetting(cur conf.Config, key, value string) (conf.Config, error) {
	next, err := cur.With(key, value)
	if err != nil {
		return next, err
	}
	return next, next.Validate()
}

// applySetting is configSet for the global configurations' Apply.
func (s *Server) applySetting(key, value string) error {
	_, err := s.configSet(key, value)
	return err
}

func (s *Server) liveKeys() []string {
	var keys []string
	live := s.liveSettings()
	for _, k := range conf.Keys() {
		if live[k] != nil {
			keys = append(keys, k)
		}
	}
	return keys
}

// adminTable is the node's one admin command table, served on the admin
// socket and under /admin/ over HTTP.
func (s *Server) adminTable() (*admin.Table, error) {
	cmds := s.node.AdminCommands()
	cmds = append(cmds,
		admin.Command{Name: "process", ReadOnly: true, Description: "what this process costs: CPU seconds, RSS, goroutines, heap, uptime",
			Run: func(context.Context, []string) (any, error) { return readProcessInfo(), nil }},
		admin.Command{Name: "flows", ReadOnly: true, Description: "unfinished flow records (running or rolling back) of this node, or of all nodes",
			Args: []admin.Arg{{Name: "OWNER", Optional: true, Description: `"all", or a node UUID; default this node`}},
			Run:  s.flows},
		admin.Command{Name: "storage drift", ReadOnly: true,
			Description: "primary storage (and host directories of local storage) whose available capacity is not total minus reservations; empty is right",
			Run: func(ctx context.Context, _ []string) (any, error) {
				d, err := storage.CapacityDrift(ctx, s.db)
				if d == nil {
					d = []storage.Drift{}
				}
				return map[string]any{"drift": d}, err
			}},
		admin.Command{Name: "storage clean-image-caches",
			Description: "remove now the image caches of deleted images that no volume needs (done every 10 minutes anyway); answers how many went",
			Run: func(ctx context.Context, _ []string) (any, error) {
				n, err := s.vols.CleanImageCaches(ctx)
				return map[string]any{"removed": n}, err
			}},
		admin.Command{Name: "config show", ReadOnly: true, Description: "every setting of this node with its current value (secrets redacted) and whether it can change live",
			Run: s.configShow},
		admin.Command{Name: "config set", Description: "change a setting of this node now, without a restart (validated; only the live settings)",
			Args: []admin.Arg{{Name: "KEY", Description: "the setting, e.g. log_level"}, {Name: "VALUE", Description: "its new value, in the configuration's form"}},
			Run:  func(_ context.Context, args []string) (any, error) { return s.configSet(args[0], args[1]) }},
		admin.Command{Name: "log level", Description: "set the log level now (config set log_level)",
			Args: []admin.Arg{{Name: "LEVEL", Description: "debug, info, warn or error"}},
			Run:  func(_ context.Context, args []string) (any, error) { return s.configSet("log_level", args[0]) }},
		admin.Command{Name: "profile cpu", Description: "write a CPU profile (runtime/pprof) of the next SECONDS to FILE; answers when done",
			Args: []admin.Arg{{Name: "SECONDS", Description: "1 to 600"}, {Name: "FILE", Description: "absolute path, written by the node"}},
			Run:  s.profileCPU},
		admin.Command{Name: "heap", Description: "write a heap profile (runtime/pprof, after a GC) to FILE",
			Args: []admin.Arg{{Name: "FILE", Description: "absolute path, written by the node"}},
			Run:  s.heap},
		admin.Command{Name: "respawn", Description: "leave the cluster gracefully, then re-execute the binary with the same arguments and environment (a new node UUID)",
			Run: func(ctx context.Context, _ []string) (any, error) { return s.requestExit(ctx, true) }},
		admin.Command{Name: "exit", Description: "leave the cluster gracefully, then exit 0",
			Run: func(ctx context.Context, _ []string) (any, error) { return s.requestExit(ctx, false) }},
	)
	return admin.NewTable(s.log, cmds...)
}

// flowView is a flow record as the flows command shows it.
type flowView struct {
	ID        string          `json:"id"`
	Chain     string          `json:"chain"`
	Owner     string          `json:"owner"`
	Resource  string          `json:"resource"`
	State     flow.State      `json:"state"`
	Applied   int             `json:"applied"`
	Total     int             `json:"total"`
	Step      string          `json:"step"`
	Error     string          `json:"error,omitempty"`
	UpdatedAt time.Time       `json:"updatedAt"`
	Data      json.RawMessage `json:"data,omitempty"`
}

func (s *Server) flows(ctx context.Context, args []string) (any, error) {
	owner := s.node.UUID()
	if len(args) > 0 {
		owner = args[0]
	}
	var owners []string
	if owner != "all" {
		owners = []string{owner}
	}
	recs, err := flow.NewGormRecorder(s.db).Unfinished(ctx, owners...)
	if err != nil {
		return nil, err
	}
	views := make([]flowView, 0, len(recs))
	for _, r := range recs {
		v := flowView{ID: r.ID, Chain: r.Chain, Owner: r.Owner, Resource: r.Resource, State: r.State, Applied: r.Applied,
			Total: r.Total, Step: r.Step, Error: r.Error, UpdatedAt: r.UpdatedAt}
		if json.Valid(r.Data) {
			v.Data = r.Data
		}
		views = append(views, v)
	}
	return map[string]any{"owner": owner, "flows": views}, nil
}

// settingView is one setting in the answer of config show.
type settingView struct {
	conf.Setting
	Live bool `json:"live"`
}

func (s *Server) configShow(context.Context, []string) (any, error) {
	live := s.liveSettings()
	cfg := s.Config()
	var out []settingView
	for _, st := range cfg.Settings() {
		out = append(out, settingView{Setting: st, Live: live[st.Key] != nil})
	}
	return map[string]any{"settings": out, "live": s.liveKeys()}, nil
}

// configSet changes a live setting: refused for the others, parsed and
// validated like the configuration, then applied at once. cfgMu is held
// across the apply (docs/locking.md), so changes apply one at a time and
// Config always tells what is applied.
func (s *Server) configSet(key, value string) (any, error) {
	if !slices.Contains(conf.Keys(), key) {
		return nil, errcode.New(errcode.InvalidArgument, "config set: unknown setting %q; settings that can change live: %s (config show lists every setting)",
			key, strings.Join(s.liveKeys(), ", "))
	}
	apply := s.liveSettings()[key]
	if apply == nil {
		return nil, errcode.New(errcode.InvalidArgument, "config set: %s cannot change while the node runs (set it in the configuration and restart, or respawn); settings that can change live: %s",
			key, strings.Join(s.liveKeys(), ", "))
	}
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	cur := s.live
	next, err := withSetting(cur, key, value)
	if err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "config set: %v", err)
	}
	if err := apply(next); err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "config set %s", key)
	}
	s.live = next
	s.log.Info("setting changed at run time", "key", key, "value", next.Display(key), "previous", cur.Display(key))
	return map[string]any{"key": key, "value": next.Display(key), "previous": cur.Display(key)}, nil
}

// profileFile opens the FILE argument of a profile command.
func profileFile(cmd, path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, errcode.New(errcode.InvalidArgument, "%s: FILE must be an absolute path, the node's working directory is not yours (got %q)", cmd, path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "%s: %v", cmd, err)
	}
	return f, nil
}

func (s *Server) profileCPU(ctx context.Context, args []string) (any, error) {
	secs, err := strconv.Atoi(args[0])
	if err != nil || secs < 1 || secs > 600 {
		return nil, errcode.New(errcode.InvalidArgument, "profile cpu: SECONDS must be a whole number from 1 to 600, got %q", args[0])
	}
	f, err := profileFile("profile cpu", args[1])
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, errcode.New(errcode.Busy, "profile cpu: %v (another CPU profile is running: profile cpu or /debug/pprof/profile)", err)
	}
	t := time.NewTimer(time.Duration(secs) * time.Second)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	pprof.StopCPUProfile()
	err = f.Close()
	if ctx.Err() != nil {
		return nil, errcode.New(errcode.Canceled, "profile cpu: interrupted (the node is stopping); %s holds what was profiled", args[1])
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "profile cpu: write %s", args[1])
	}
	return fileAnswer(args[1], map[string]any{"seconds": secs}), nil
}

func (s *Server) heap(_ context.Context, args []string) (any, error) {
	f, err := profileFile("heap", args[0])
	if err != nil {
		return nil, err
	}
	runtime.GC()
	err = pprof.Lookup("heap").WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "heap: write %s", args[0])
	}
	return fileAnswer(args[0], nil), nil
}

func fileAnswer(path string, extra map[string]any) map[string]any {
	a := map[string]any{"file": path}
	if fi, err := os.Stat(path); err == nil {
		a["bytes"] = fi.Size()
	}
	for k, v := range extra {
		a[k] = v
	}
	return a
}

// requestExit answers exit and respawn; the request reaches the process
// owner (ExitRequested) once the answer is sent.
func (s *Server) requestExit(ctx context.Context, respawn bool) (any, error) {
	name, action := "exit", "leaving the cluster, then exiting 0"
	if respawn {
		name = "respawn"
	}
	if !s.ownsProcess {
		return nil, errcode.New(errcode.InvalidState, "%s: this node does not own its process (it runs embedded in another program or a test)", name)
	}
	if respawn {
		exe, err := os.Executable()
		if err != nil {
			return nil, errcode.Wrap(errcode.Internal, err, "respawn: find the binary")
		}
		action = "leaving the cluster, then re-executing " + exe + " (a new node UUID)"
	}
	if !s.exiting.CompareAndSwap(false, true) {
		return nil, errcode.New(errcode.InvalidState, "%s: the node is already leaving (exit or respawn was asked for)", name)
	}
	req := ExitRequest{Respawn: respawn}
	if !admin.AfterReply(ctx, func() { s.exits <- req }) { // buffered 1, sent once
		s.exiting.Store(false)
		return nil, errcode.New(errcode.Internal, "%s: not run by an admin transport", name)
	}
	s.log.Info("asked to leave on the admin interface", "command", name)
	return map[string]any{"nodeUuid": s.node.UUID(), "command": name, "action": action}, nil
}

// levelFilter drops the records below level, before the handler it wraps
// (which may have a lower level of its own): the level of a logger the
// server did not build (Options.LogLevel nil).
type levelFilter struct {
	h     slog.Handler
	level *slog.LevelVar
}

func (f *levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.level.Level() && f.h.Enabled(ctx, l)
}

func (f *levelFilter) Handle(ctx context.Context, r slog.Record) error { return f.h.Handle(ctx, r) }

func (f *levelFilter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &levelFilter{h: f.h.WithAttrs(attrs), level: f.level}
}

func (f *levelFilter) WithGroup(name string) slog.Handler {
	return &levelFilter{h: f.h.WithGroup(name), level: f.level}
}
