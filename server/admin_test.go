package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"mplane/admin"
	"mplane/agents/protocol"
	"mplane/api/auth"
	"mplane/api/client"
	"mplane/conf"
	"mplane/errcode"
	"mplane/internal/testenv"
	"mplane/managementnode"
	"mplane/server"
	"mplane/server/servertest"
	"mplane/services/globalconfig"
	hostsvc "mplane/services/host"
	"mplane/services/storage"
)

// syncBuffer is a log destination read while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startLogged starts an embedded node without hosts whose log goes to the
// returned buffer, with its level in a LevelVar as `mplane run` does.
func startLogged(t *testing.T) (*server.Embedded, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := conf.Load("", []string{"MPLANE_DATA_DIR=" + dir, "MPLANE_API_LISTEN=127.0.0.1:0",
		"MPLANE_ADMIN_PASSWORD=" + servertest.Password, "MPLANE_DRAIN_TIMEOUT=1s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	level := new(slog.LevelVar)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := server.StartEmbedded(ctx, server.EmbeddedOptions{Options: server.Options{Config: cfg,
		Logger: cfg.NewLogger(buf, level), LogLevel: level, BcryptCost: bcrypt.MinCost}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return e, buf
}

func call(t *testing.T, path string, words ...string) json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := admin.Call(ctx, path, words)
	if err != nil {
		t.Fatalf("%q: %v", words, err)
	}
	return res
}

func callInto(t *testing.T, path string, v any, words ...string) {
	t.Helper()
	if err := json.Unmarshal(call(t, path, words...), v); err != nil {
		t.Fatalf("%q: %v", words, err)
	}
}

// refused runs a command that must fail with code and details containing
// every one of want.
func refused(t *testing.T, path string, code errcode.Code, words []string, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := admin.Call(ctx, path, words)
	e, ok := errors.AsType[*errcode.Error](err)
	if !ok {
		t.Errorf("%q: answered %s, %v; want error %s", words, res, err, code)
		return
	}
	if e.Code != code {
		t.Errorf("%q: %v, want code %s", words, e, code)
	}
	for _, w := range want {
		if !strings.Contains(e.Details, w) {
			t.Errorf("%q: %q lacks %q", words, e.Details, w)
		}
	}
}

type settingsAnswer struct {
	Settings []struct {
		Key, Value string
		Live       bool
	}
	Live []string
}

func (a settingsAnswer) value(key string) string {
	for _, s := range a.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return "<missing>"
}

// TestAdminSocket runs the command table over the node's admin socket.
func TestAdminSocket(t *testing.T) {
	e, logs := startLogged(t)
	path := e.AdminSocket()
	dir := filepath.Dir(path)

	// The data directory (the database, the agents' state) is the
	// owner's alone, and so is the database file.
	if fi, err := os.Stat(e.Config().DataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(e.Config().DataDir, "mplane.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("database file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	// Modes: the socket 0600 in a 0700 directory, under the link too.
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("run directory %s: %v, %v; want mode 0700", dir, fi.Mode(), err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: %v, %v; want a socket with mode 0600", path, fi.Mode(), err)
	}
	if got, want := path, filepath.Join(e.Config().DataDir, "run", "mplane-"+e.Node().UUID()+".asok"); got != want {
		t.Errorf("socket %s, want %s", got, want)
	}
	link, err := admin.Resolve(dir, "mplane")
	if err != nil {
		t.Fatal(err)
	}

	// help lists every command.
	var help admin.Help
	callInto(t, link, &help, "help")
	var names []string
	for _, c := range help.Commands {
		names = append(names, c.Command)
	}
	want := []string{"bus", "config set", "config show", "exit", "flows", "heap", "help", "locks", "log level", "probe", "process",
		"profile cpu", "queues", "respawn", "ring", "status", "storage clean-image-caches", "storage drift"}
	if !slices.Equal(names, want) {
		t.Errorf("help lists %q, want %q", names, want)
	}

	// The read-only commands.
	// storage drift: none, until a row is made wrong behind the node's back.
	var drift struct {
		Drift []storage.Drift `json:"drift"`
	}
	callInto(t, link, &drift, "storage", "drift")
	if drift.Drift == nil || len(drift.Drift) != 0 {
		t.Errorf("storage drift %+v, want an empty list", drift.Drift)
	}
	if err := e.DB().Model(&storage.PrimaryStorageVO{}).Where("name = ?", server.DefaultPrimaryStorage).
		Update("available_capacity", gorm.Expr("available_capacity + 4096")).Error; err != nil {
		t.Fatal(err)
	}
	callInto(t, link, &drift, "storage", "drift")
	if len(drift.Drift) != 1 || drift.Drift[0].Drift != 4096 {
		t.Errorf("storage drift %+v, want one storage 4096 bytes over", drift.Drift)
	}
	var st managementnode.Status
	callInto(t, link, &st, "status")
	if st.NodeUUID != e.Node().UUID() || st.State != managementnode.StateRunning {
		t.Errorf("status %+v", st)
	}
	var ring managementnode.RingInfo
	callInto(t, path, &ring, "ring")
	if len(ring.Members) != 1 || ring.Members[0].UUID != st.NodeUUID || ring.Partitions == 0 {
		t.Errorf("ring %+v", ring)
	}
	var queues struct {
		Queues []json.RawMessage `json:"queues"`
		At     time.Time         `json:"at"`
	}
	callInto(t, path, &queues, "queues")
	if queues.Queues == nil || queues.At.IsZero() {
		t.Errorf("queues %+v", queues)
	}
	var bus managementnode.BusInfo
	callInto(t, path, &bus, "bus")
	if bus.Pending == nil || bus.Stats.Sent == 0 {
		t.Errorf("bus %+v", bus)
	}
	var proc struct {
		PID int `json:"pid"`
	}
	callInto(t, path, &proc, "process")
	if proc.PID != os.Getpid() {
		t.Errorf("process pid %d, want %d", proc.PID, os.Getpid())
	}
	var probe managementnode.ProbeReply
	callInto(t, path, &probe, "probe", "some-resource", "1")
	if probe.NodeUUID != st.NodeUUID {
		t.Errorf("probe %+v", probe)
	}
	for _, args := range [][]string{{"flows"}, {"flows", "all"}} {
		var flows struct {
			Owner string            `json:"owner"`
			Flows []json.RawMessage `json:"flows"`
		}
		callInto(t, path, &flows, args...)
		if flows.Flows == nil || (len(args) == 1 && flows.Owner != st.NodeUUID) {
			t.Errorf("%q: %+v", args, flows)
		}
	}

	// config show: every setting, and which can change live.
	var cs settingsAnswer
	callInto(t, path, &cs, "config", "show")
	var keys []string
	for _, s := range cs.Settings {
		keys = append(keys, s.Key)
		if s.Live != slices.Contains(cs.Live, s.Key) {
			t.Errorf("%s: live %v, but the live list is %q", s.Key, s.Live, cs.Live)
		}
	}
	if !slices.Equal(keys, conf.Keys()) {
		t.Errorf("config show keys %q, want %q", keys, conf.Keys())
	}
	liveWant := []string{"flow_retention", "host_ping_interval", "host_ping_max_failures", "job_timeout", "log_level", "quota_defaults", "vm_allocation_strategy", "vm_orphan_policy"}
	sort.Strings(cs.Live)
	if !slices.Equal(cs.Live, liveWant) {
		t.Errorf("live settings %q, want %q", cs.Live, liveWant)
	}
	if cs.value("admin_password") != "REDACTED" || cs.value("log_level") != "info" {
		t.Errorf("config show admin_password %q log_level %q", cs.value("admin_password"), cs.value("log_level"))
	}

	// config set log_level debug takes effect at once: commands are
	// logged at debug level, and were not before.
	const debugLine = `level=DEBUG msg="admin command" command=status`
	call(t, path, "status")
	if strings.Contains(logs.String(), debugLine) {
		t.Fatalf("a debug line at level info: %s", logs)
	}
	var set struct{ Key, Value, Previous string }
	callInto(t, path, &set, "config", "set", "log_level", "debug")
	if set.Key != "log_level" || set.Value != "debug" || set.Previous != "info" {
		t.Errorf("config set answer %+v", set)
	}
	call(t, path, "status")
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), debugLine) },
		"a debug line logged after config set log_level debug")
	if got := e.Config().LogLevel; got != "debug" {
		t.Errorf("Config().LogLevel = %q", got)
	}
	// log level is the same change; warn hides info lines.
	callInto(t, path, &set, "log", "level", "warn")
	if set.Previous != "debug" || set.Value != "warn" {
		t.Errorf("log level answer %+v", set)
	}
	before := logs.String()
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "log_level", "verbose"}, "log_level: must be one of debug, info, warn, error")
	callInto(t, path, &cs, "config", "show")
	if cs.value("log_level") != "warn" {
		t.Errorf("log_level %q after a refused change, want warn", cs.value("log_level"))
	}
	if after := logs.String(); strings.Contains(after[len(before):], "level=INFO") || strings.Contains(after[len(before):], "level=DEBUG") {
		t.Errorf("info or debug lines at level warn: %s", after[len(before):])
	}

	// Settings that cannot change live are refused, naming those that can.
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "api_listen", "127.0.0.1:1"},
		"api_listen cannot change while the node runs",
		"host_ping_interval, host_ping_max_failures, vm_allocation_strategy, vm_orphan_policy, job_timeout, flow_retention, quota_defaults, log_level")
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "admin_password", "x"}, "admin_password cannot change")
	if got := e.Config().APIListen; got != "127.0.0.1:0" {
		t.Errorf("api_listen changed to %q", got)
	}
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "nope", "1"}, `unknown setting "nope"`, "log_level")
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "host_ping_interval", "0s"}, "host_ping_interval: must be > 0")
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "host_ping_max_failures", "many"}, "want a whole number")
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "vm_allocation_strategy", "Packed"},
		`vm_allocation_strategy: must be one of LeastUsed, MostUsed, Random (got "Packed")`)
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "job_timeout", "0s"}, "job_timeout: must be > 0")
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "flow_retention", "-1h"}, "flow_retention: must be > 0")
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "flow_retention", "1d"}, "flow_retention: want a Go duration")

	// Bad arguments and unknown commands.
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "log_level"}, "missing argument VALUE", "usage: config set KEY VALUE")
	refused(t, path, errcode.InvalidArgument, []string{"status", "now"}, "too many arguments")
	refused(t, path, errcode.InvalidArgument, []string{"probe", "r", "soon"}, "SLEEP_MS must be a non-negative integer")
	refused(t, path, errcode.InvalidArgument, []string{"profile", "cpu", "0", "/tmp/x"}, "SECONDS must be a whole number from 1 to 600")
	refused(t, path, errcode.InvalidArgument, []string{"heap", "heap.prof"}, "FILE must be an absolute path")
	refused(t, path, errcode.ResourceNotFound, []string{"frobnicate"}, `unknown command "frobnicate"`)
	refused(t, path, errcode.ResourceNotFound, []string{"config"}, "config set, config show")
	// This node is not its process's: exit and respawn are refused.
	refused(t, path, errcode.InvalidState, []string{"exit"}, "does not own its process")
	refused(t, path, errcode.InvalidState, []string{"respawn"}, "does not own its process")

	// Profiles.
	out := t.TempDir()
	for _, words := range [][]string{{"heap", filepath.Join(out, "heap.prof")}, {"profile", "cpu", "1", filepath.Join(out, "cpu.prof")}} {
		var ans struct {
			File  string `json:"file"`
			Bytes int64  `json:"bytes"`
		}
		callInto(t, path, &ans, words...)
		if fi, err := os.Stat(ans.File); err != nil || fi.Size() == 0 || fi.Size() != ans.Bytes {
			t.Errorf("%q: %+v, file %v", words, ans, err)
		}
	}

	// The same table over HTTP on the API listener: read-only commands
	// only, to admin sessions only.
	login := func(account, password string) string {
		t.Helper()
		c, err := client.New(e.URL())
		if err != nil {
			t.Fatal(err)
		}
		sess, err := c.Login(context.Background(), account, password)
		if err != nil {
			t.Fatal(err)
		}
		return sess.UUID
	}
	session := login(auth.AdminName, servertest.Password)
	getAs := func(sess, method, url, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if sess != "" {
			req.Header.Set("Authorization", auth.Scheme+" "+sess)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	get := func(method, url, body string) (int, []byte) { t.Helper(); return getAs(session, method, url, body) }
	for _, path := range []string{"/admin/status", "/debug/pprof/", "/debug/pprof/symbol"} {
		if code, b := getAs("", "GET", e.URL()+path, ""); code != 401 || !strings.Contains(string(b), "SYS.1008") {
			t.Errorf("GET %s without a session: %d %s, want 401", path, code, b)
		}
	}
	if code, b := getAs("", "POST", e.URL()+"/admin/probe?resource=r1&sleepMs=1", ""); code != 401 {
		t.Errorf("POST /admin/probe without a session: %d %s, want 401", code, b)
	}
	if _, err := e.Auth().CreateAccount(context.Background(), "tenant", "tenant-password", auth.Normal); err != nil {
		t.Fatal(err)
	}
	if code, b := getAs(login("tenant", "tenant-password"), "GET", e.URL()+"/admin/status", ""); code != 403 || !strings.Contains(string(b), "SYS.1009") {
		t.Errorf("GET /admin/status as a normal account: %d %s, want 403", code, b)
	}
	if code, b := get("GET", e.URL()+"/debug/pprof/", ""); code != 200 {
		t.Errorf("GET /debug/pprof/ as admin: %d %.200s", code, b)
	}
	var hst managementnode.Status
	if code, b := get("GET", e.URL()+"/admin/status", ""); code != 200 || json.Unmarshal(b, &hst) != nil || hst.NodeUUID != st.NodeUUID {
		t.Errorf("GET /admin/status: %d %s", code, b)
	}
	if code, b := get("POST", e.URL()+"/admin/probe?resource=r1&sleepMs=1", ""); code != 200 || !strings.Contains(string(b), st.NodeUUID) {
		t.Errorf("POST /admin/probe: %d %s", code, b)
	}
	if code, b := get("GET", e.URL()+"/admin/config/show", ""); code != 200 || !strings.Contains(string(b), `"run_dir"`) {
		t.Errorf("GET /admin/config/show: %d %s", code, b)
	}
	if code, b := get("POST", e.URL()+"/admin/command", `{"command": ["log", "level", "debug"]}`); code != 403 || !strings.Contains(string(b), "SYS.1009") {
		t.Errorf("POST /admin/command log level on the API listener: %d %s", code, b)
	}

	// Stop removes the socket and the link.
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, filepath.Join(dir, admin.LinkName)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Stop: %v", p, err)
		}
	}
}

// TestAdminHostPingLive: host_ping_interval and host_ping_max_failures
// change the ping tracker of a running node.
func TestAdminHostPingLive(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1, Configure: func(c *conf.Config) {
		c.HostPingInterval = time.Hour // pings only when a round is kicked
		c.HostPingMaxFailures = 1000
	}})
	h := st.AddHost(t, servertest.AgentOptions{})
	path := st.AdminSocket()
	status := func() string {
		var s string
		if err := st.DB().Model(&hostsvc.HostVO{}).Where("uuid = ?", h.UUID).Pluck("status", &s).Error; err != nil {
			t.Fatal(err)
		}
		return s
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return status() == hostsvc.StatusConnected }, "host Connected")
	pings := func() uint64 { return h.Agent.Stats().Commands[protocol.PathPing] }

	before := pings()
	call(t, path, "config", "set", "host_ping_interval", "100ms")
	testenv.Eventually(t, 15*time.Second, func() bool { return pings() >= before+5 }, "5 pings at the new interval")

	// The agent goes down; with 1000 failures allowed the host would stay
	// Connected for 100s: at 1 it is Disconnected at the next ping.
	if err := h.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	call(t, path, "config", "set", "host_ping_max_failures", "1")
	testenv.Eventually(t, 15*time.Second, func() bool { return status() == hostsvc.StatusDisconnected }, "host Disconnected after one failed ping")
	if c := st.Config(); c.HostPingInterval != 100*time.Millisecond || c.HostPingMaxFailures != 1 {
		t.Errorf("Config() %v %d", c.HostPingInterval, c.HostPingMaxFailures)
	}
}

// TestAdminVMAndAPILive: vm_allocation_strategy, job_timeout and
// flow_retention reach their services from the configuration at the
// start, change them at once with config set, and are global
// configurations.
func TestAdminVMAndAPILive(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1, Configure: func(c *conf.Config) {
		c.VMAllocationStrategy, c.FlowRetention = conf.AllocationMostUsed, 3*time.Hour
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	path, vms := st.AdminSocket(), st.VMs()
	if got, r := vms.AllocationStrategy(), vms.FlowRetention(); got != conf.AllocationMostUsed || r != 3*time.Hour {
		t.Fatalf("started with MostUsed and 3h: the VM service has %s and %s", got, r)
	}

	var set struct{ Key, Value, Previous string }
	callInto(t, path, &set, "config", "set", "vm_allocation_strategy", "Random")
	if set.Value != "Random" || set.Previous != "MostUsed" || vms.AllocationStrategy() != conf.AllocationRandom {
		t.Errorf("config set vm_allocation_strategy Random: %+v, the VM service has %s", set, vms.AllocationStrategy())
	}
	callInto(t, path, &set, "config", "set", "flow_retention", "90s")
	if set.Value != "1m30s" || set.Previous != "3h0m0s" || vms.FlowRetention() != 90*time.Second {
		t.Errorf("config set flow_retention 90s: %+v, the VM service has %s", set, vms.FlowRetention())
	}

	// job_timeout: a call submitted under a timeout it cannot meet fails
	// with Timeout; under the previous one again, it succeeds.
	zone := func(name string) error {
		_, err := client.CreateAndWait[json.RawMessage](ctx, st.Client, "zones", map[string]any{"name": name})
		return err
	}
	callInto(t, path, &set, "config", "set", "job_timeout", "1ns")
	if set.Value != "1ns" || set.Previous != "30m0s" {
		t.Errorf("config set job_timeout 1ns: %+v", set)
	}
	if err := zone("in-no-time"); !errcode.Has(err, errcode.Timeout) {
		t.Errorf("a create under a 1ns job timeout: %v, want %s", err, errcode.Timeout)
	}
	call(t, path, "config", "set", "job_timeout", "30m")
	if err := zone("in-time"); err != nil {
		t.Errorf("a create under a 30m job timeout: %v", err)
	}
	refused(t, path, errcode.InvalidArgument, []string{"config", "set", "vm_allocation_strategy", "leastused"}, "must be one of LeastUsed, MostUsed, Random")
	if c := st.Config(); c.VMAllocationStrategy != conf.AllocationRandom || c.FlowRetention != 90*time.Second || c.JobTimeout != 30*time.Minute {
		t.Errorf("Config() %s %s %s", c.VMAllocationStrategy, c.FlowRetention, c.JobTimeout)
	}

	// Each is a global configuration, of its type, with its setting's
	// built-in default.
	rows, _, err := client.QueryAs[globalconfig.GlobalConfigVO](ctx, st.Client, "global-configurations", client.Query{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r.Category+"/"+r.Name] = r.Type + " " + r.DefaultValue
	}
	for id, want := range map[string]string{"hostAllocator/strategy": "String LeastUsed", "api/job.timeout": "Duration 30m0s",
		"flow/retention": "Duration 1h0m0s"} {
		if got[id] != want {
			t.Errorf("global configuration %s: %q, want %q (listed: %v)", id, got[id], want, got)
		}
	}
}
