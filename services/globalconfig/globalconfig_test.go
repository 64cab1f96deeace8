package globalconfig_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/conf"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/globalconfig"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func update(ctx context.Context, st *servertest.Stack, category, name, value string) (globalconfig.GlobalConfigVO, error) {
	return client.ActionAndWait[globalconfig.GlobalConfigVO](ctx, st.Client, "global-configurations/"+category, name, "updateGlobalConfig",
		map[string]any{"value": value})
}

func reset(ctx context.Context, st *servertest.Stack, category, name string) (globalconfig.GlobalConfigVO, error) {
	return client.ActionAndWait[globalconfig.GlobalConfigVO](ctx, st.Client, "global-configurations/"+category, name, "resetGlobalConfig",
		map[string]any{})
}

// row reads a configuration from the database.
func row(t *testing.T, st *servertest.Stack, category, name string) globalconfig.GlobalConfigVO {
	t.Helper()
	var r globalconfig.GlobalConfigVO
	if err := st.DB().Take(&r, "category = ? AND name = ?", category, name).Error; err != nil {
		t.Fatal(err)
	}
	return r
}

// wantRow checks a configuration's value and version in the database.
func wantRow(t *testing.T, st *servertest.Stack, category, name, value string, version int64) {
	t.Helper()
	if r := row(t, st, category, name); r.Value != value || r.Version != version {
		t.Errorf("%s/%s in the database: %q at version %d, want %q at version %d", category, name, r.Value, r.Version, value, version)
	}
}

// put sends a raw PUT to the configurations' actions path, for the bodies
// the client does not send, and answers the status and the error's
// details.
func put(t *testing.T, st *servertest.Stack, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPut, st.URL+"/v1/global-configurations/"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "OAuth "+st.NewSession(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Error struct {
			Details string `json:"details"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatalf("PUT %s: HTTP %d, not an error answer: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode, answer.Error.Details
}

// TestListDefaults: the configurations are listed with the built-in
// defaults of their settings, never changed; one is found by its uuid.
func TestListDefaults(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx := testCtx(t)
	rows, _, err := client.QueryAs[globalconfig.GlobalConfigVO](ctx, st.Client, "global-configurations", client.Query{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{ // id -> type, default
		"host/ping.interval":     {"Duration", conf.Default().HostPingInterval.String()},
		"host/ping.maxFailures":  {"Integer", "3"},
		"log/level":              {"String", "info"},
		"hostAllocator/strategy": {"String", "LeastUsed"},
		"api/job.timeout":        {"Duration", "30m0s"},
		"flow/retention":         {"Duration", "1h0m0s"},
		"vm/orphan.policy":       {"String", "Stop"},
		"quota/defaults":         {"String", conf.Default().QuotaDefaults},
	}
	if len(rows) != len(want) {
		t.Errorf("%d configurations listed, want %d: %+v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		w, ok := want[r.Category+"/"+r.Name]
		if !ok {
			t.Errorf("unexpected configuration %+v", r)
			continue
		}
		if r.Type != w[0] || r.DefaultValue != w[1] || r.Value != w[1] || r.Version != 0 || r.Description == "" ||
			r.UUID != globalconfig.ConfigUUID(r.Category, r.Name) || r.CreateDate.IsZero() {
			t.Errorf("%s/%s listed as %+v, want type %s, default and value %s, version 0", r.Category, r.Name, r, w[0], w[1])
		}
	}
	one, err := client.GetAs[globalconfig.GlobalConfigVO](ctx, st.Client, "global-configurations", globalconfig.ConfigUUID("log", "level"))
	if err != nil || one.Category != "log" || one.Name != "level" {
		t.Errorf("GET by uuid: %+v, %v", one, err)
	}
	filtered, _, err := client.QueryAs[globalconfig.GlobalConfigVO](ctx, st.Client, "global-configurations", client.Query{Q: []string{"category=host"}})
	if err != nil || len(filtered) != 2 {
		t.Errorf("query category=host: %d rows, %v", len(filtered), err)
	}
}

// TestUpdate: an update is a job answering the inventory at the next
// version, stored in the form the node's configuration shows it, and in
// effect on the node when the job ends.
func TestUpdate(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx := testCtx(t)
	cases := []struct {
		category, name, value, stored string
		version                       int64
		applied                       func(conf.Config) bool
	}{
		{"host", "ping.interval", "2s", "2s", 1, func(c conf.Config) bool { return c.HostPingInterval == 2*time.Second }},
		{"host", "ping.interval", "1500ms", "1.5s", 2, func(c conf.Config) bool { return c.HostPingInterval == 1500*time.Millisecond }},
		{"host", "ping.maxFailures", " 7", "7", 1, func(c conf.Config) bool { return c.HostPingMaxFailures == 7 }},
		{"log", "level", "debug", "debug", 1, func(c conf.Config) bool { return c.LogLevel == "debug" }},
		{"hostAllocator", "strategy", "MostUsed", "MostUsed", 1, func(c conf.Config) bool {
			return c.VMAllocationStrategy == "MostUsed" && st.VMs().AllocationStrategy() == "MostUsed"
		}},
		{"hostAllocator", "strategy", "Random", "Random", 2, func(c conf.Config) bool {
			return c.VMAllocationStrategy == "Random" && st.VMs().AllocationStrategy() == "Random"
		}},
		{"api", "job.timeout", "90s", "1m30s", 1, func(c conf.Config) bool { return c.JobTimeout == 90*time.Second }},
		{"flow", "retention", "2h", "2h0m0s", 1, func(c conf.Config) bool {
			return c.FlowRetention == 2*time.Hour && st.VMs().FlowRetention() == 2*time.Hour
		}},
	}
	for _, tc := range cases {
		t.Run(tc.category+"/"+tc.name+"="+tc.value, func(t *testing.T) {
			inv, err := update(ctx, st, tc.category, tc.name, tc.value)
			if err != nil {
				t.Fatal(err)
			}
			if inv.Value != tc.stored || inv.Version != tc.version || inv.Category != tc.category || inv.Name != tc.name {
				t.Errorf("inventory %+v, want %q at version %d", inv, tc.stored, tc.version)
			}
			wantRow(t, st, tc.category, tc.name, tc.stored, tc.version)
			if cfg := st.Config(); !tc.applied(cfg) {
				t.Errorf("the node's configuration shows %s = %s, want %s", inv.Name, cfg.Display(keyOf(tc.category, tc.name)), tc.stored)
			}
		})
	}
}

func keyOf(category, name string) string {
	return map[string]string{"host/ping.interval": "host_ping_interval", "host/ping.maxFailures": "host_ping_max_failures",
		"log/level": "log_level", "hostAllocator/strategy": "vm_allocation_strategy", "api/job.timeout": "job_timeout",
		"flow/retention": "flow_retention"}[category+"/"+name]
}

// TestUpdateRefused: a value the node's configuration refuses, a missing
// value, an unknown configuration or action, and a body that contradicts
// the path are refused at once and change nothing.
func TestUpdateRefused(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx := testCtx(t)
	for _, bad := range []string{"-1s", "0s", "abc", "", "5"} {
		_, err := update(ctx, st, "host", "ping.interval", bad)
		if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, errcode.InvalidArgument) ||
			!strings.Contains(err.Error(), "host/ping.interval") {
			t.Errorf("update host/ping.interval to %q: %v, want 400 %s naming the configuration", bad, err, errcode.InvalidArgument)
		}
	}
	for _, bad := range []string{"0", "x"} {
		if _, err := update(ctx, st, "host", "ping.maxFailures", bad); client.StatusCode(err) != http.StatusBadRequest {
			t.Errorf("update host/ping.maxFailures to %q: %v, want 400", bad, err)
		}
	}
	if _, err := update(ctx, st, "log", "level", "verbose"); client.StatusCode(err) != http.StatusBadRequest {
		t.Errorf("update log/level to verbose: %v, want 400", err)
	}
	for _, bad := range []string{"Packed", "leastused", ""} {
		_, err := update(ctx, st, "hostAllocator", "strategy", bad)
		if client.StatusCode(err) != http.StatusBadRequest || (bad != "" && !strings.Contains(err.Error(), "must be one of LeastUsed, MostUsed, Random")) {
			t.Errorf("update hostAllocator/strategy to %q: %v, want 400 listing the strategies", bad, err)
		}
	}
	for _, c := range [][2]string{{"api", "job.timeout"}, {"flow", "retention"}} {
		if _, err := update(ctx, st, c[0], c[1], "0s"); client.StatusCode(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "must be > 0") {
			t.Errorf("update %s/%s to 0s: %v, want 400 saying it must be > 0", c[0], c[1], err)
		}
	}
	for _, unknown := range [][2]string{{"host", "no.such"}, {"nope", "level"}} {
		_, err := update(ctx, st, unknown[0], unknown[1], "1")
		if client.StatusCode(err) != http.StatusNotFound || !strings.Contains(err.Error(), "api/job.timeout, flow/retention, host/ping.interval, host/ping.maxFailures, hostAllocator/strategy, log/level") {
			t.Errorf("update %s/%s: %v, want 404 listing the known configurations", unknown[0], unknown[1], err)
		}
		if _, err := reset(ctx, st, unknown[0], unknown[1]); client.StatusCode(err) != http.StatusNotFound {
			t.Errorf("reset %s/%s: %v, want 404", unknown[0], unknown[1], err)
		}
	}
	for _, tc := range []struct{ body, detail string }{
		{`{"updateGlobalConfig": {}}`, "value is required"},
		{`{"resetGlobalConfig": {"value": "1s"}}`, `unknown field "value"`},
		{`{"deleteGlobalConfig": {}}`, "updateGlobalConfig, resetGlobalConfig"},
		{`{"updateGlobalConfig": {"value": "1s", "name": "ping.maxFailures"}}`, `the body gives name "ping.maxFailures" but the path gives "ping.interval"`},
		{`{"params": {"value": "1s"}}`, "updateGlobalConfig"},
	} {
		code, body := put(t, st, "host/ping.interval/actions", tc.body)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.detail) {
			t.Errorf("PUT %s: %d %s, want 400 saying %q", tc.body, code, body, tc.detail)
		}
	}
	def := conf.Default()
	wantRow(t, st, "host", "ping.interval", def.HostPingInterval.String(), 0)
	wantRow(t, st, "host", "ping.maxFailures", "3", 0)
	wantRow(t, st, "log", "level", "info", 0)
	wantRow(t, st, "hostAllocator", "strategy", "LeastUsed", 0)
	wantRow(t, st, "api", "job.timeout", "30m0s", 0)
	wantRow(t, st, "flow", "retention", "1h0m0s", 0)
	if cfg := st.Config(); cfg.HostPingInterval != def.HostPingInterval || cfg.HostPingMaxFailures != 3 || cfg.LogLevel != "info" ||
		cfg.VMAllocationStrategy != def.VMAllocationStrategy || cfg.JobTimeout != def.JobTimeout || cfg.FlowRetention != def.FlowRetention {
		t.Errorf("refused updates changed the node: %s, %d, %s, %s, %s, %s", cfg.HostPingInterval, cfg.HostPingMaxFailures, cfg.LogLevel,
			cfg.VMAllocationStrategy, cfg.JobTimeout, cfg.FlowRetention)
	}
	if got := st.VMs().AllocationStrategy(); got != "LeastUsed" {
		t.Errorf("refused updates changed the VM service's allocation strategy to %s", got)
	}
}

// TestReset: resetGlobalConfig sets the default again, as an update (the
// next version): the node applies the default.
func TestReset(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx := testCtx(t)
	if _, err := update(ctx, st, "host", "ping.interval", "2s"); err != nil {
		t.Fatal(err)
	}
	def := conf.Default().HostPingInterval
	inv, err := reset(ctx, st, "host", "ping.interval")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Value != def.String() || inv.DefaultValue != def.String() || inv.Version != 2 {
		t.Errorf("reset answered %+v, want the default %s at version 2", inv, def)
	}
	wantRow(t, st, "host", "ping.interval", def.String(), 2)
	if got := st.Config().HostPingInterval; got != def {
		t.Errorf("after the reset the node pings every %s, want %s", got, def)
	}
}

// TestStageRejected: a node that refuses the change at stage (its test
// hook) aborts the transaction: the job fails with the node and its
// reason, and nothing changes, in the database or on the node.
func TestStageRejected(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx := testCtx(t)
	// The one node is the API node (whose check passes) and the stage's
	// only participant (which reads the hook at every stage).
	t.Setenv(globalconfig.RejectEnv, "host/ping.maxFailures")
	_, err := update(ctx, st, "host", "ping.maxFailures", "9")
	if err == nil || !strings.Contains(err.Error(), "rejected by this node's test hook ("+globalconfig.RejectEnv+")") ||
		!strings.Contains(err.Error(), st.Node().UUID()) || !errcode.Has(err, errcode.InvalidArgument) {
		t.Fatalf("an update the node rejects at stage: %v; want %s with the hook's reason, naming node %s", err, errcode.InvalidArgument, st.Node().UUID())
	}
	wantRow(t, st, "host", "ping.maxFailures", "3", 0)
	if got := st.Config().HostPingMaxFailures; got != 3 {
		t.Errorf("after the aborted update the node's max failures are %d, want 3", got)
	}
	// The hook names one configuration: the others still change.
	if inv, err := update(ctx, st, "host", "ping.interval", "3s"); err != nil || inv.Version != 1 {
		t.Errorf("an update the hook does not name: %+v, %v", inv, err)
	}
}

// TestResync: a change written by another node whose commit this node
// missed (the database moved behind its back) is applied by the resync;
// a version not newer than the one applied is not applied again.
func TestResync(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx := testCtx(t)
	behind := func(value string, version int64) {
		t.Helper()
		if err := st.DB().Model(&globalconfig.GlobalConfigVO{}).Where("category = ? AND name = ?", "host", "ping.maxFailures").
			Updates(map[string]any{"value": value, "version": version}).Error; err != nil {
			t.Fatal(err)
		}
		if err := st.GlobalConfigs().Resync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	behind("6", 5)
	if got := st.Config().HostPingMaxFailures; got != 6 {
		t.Fatalf("after the resync the node's max failures are %d, want 6 (version 5)", got)
	}
	behind("4", 5) // the same version: applied already
	if got := st.Config().HostPingMaxFailures; got != 6 {
		t.Errorf("a version applied already was applied again: max failures %d", got)
	}
	behind("8", 6)
	if got := st.Config().HostPingMaxFailures; got != 8 {
		t.Errorf("after version 6 the node's max failures are %d, want 8", got)
	}
	// The next update goes on from the database's version.
	if inv, err := update(ctx, st, "host", "ping.maxFailures", "5"); err != nil || inv.Version != 7 || st.Config().HostPingMaxFailures != 5 {
		t.Errorf("update after the resync: %+v, %v (node %d)", inv, err, st.Config().HostPingMaxFailures)
	}
}

// TestChangedValueWinsAtStart: a node that starts on a database with a
// changed configuration applies it over its own configuration; one never
// changed leaves the node's own value.
func TestChangedValueWinsAtStart(t *testing.T) {
	dir := t.TempDir()
	first := servertest.Start(t, servertest.Options{Hosts: -1, Configure: func(c *conf.Config) { c.DataDir = dir }})
	for _, u := range [][3]string{{"host", "ping.interval", "2s"}, {"hostAllocator", "strategy", "MostUsed"}, {"flow", "retention", "3h"}} {
		if _, err := update(testCtx(t), first, u[0], u[1], u[2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := servertest.Start(t, servertest.Options{Hosts: -1, Configure: func(c *conf.Config) {
		c.DataDir, c.HostPingInterval, c.HostPingMaxFailures = dir, 7*time.Second, 7
		c.VMAllocationStrategy, c.FlowRetention, c.JobTimeout = "Random", 5*time.Minute, 5*time.Minute
	}})
	if cfg := second.Config(); cfg.HostPingInterval != 2*time.Second || cfg.HostPingMaxFailures != 7 {
		t.Errorf("restarted with ping interval 7s and max failures 7: the node has %s and %d, want the global 2s and its own 7",
			cfg.HostPingInterval, cfg.HostPingMaxFailures)
	}
	// The VM service starts with the node's own values, then the changed
	// global ones win; the job timeout, never changed, stays the node's.
	vms := second.VMs()
	if cfg := second.Config(); cfg.VMAllocationStrategy != "MostUsed" || vms.AllocationStrategy() != "MostUsed" ||
		cfg.FlowRetention != 3*time.Hour || vms.FlowRetention() != 3*time.Hour || cfg.JobTimeout != 5*time.Minute {
		t.Errorf("restarted with strategy Random, flow retention 5m and job timeout 5m: the node has %s (VMs %s), %s (VMs %s) and %s, "+
			"want the global MostUsed and 3h and its own 5m", cfg.VMAllocationStrategy, vms.AllocationStrategy(), cfg.FlowRetention,
			vms.FlowRetention(), cfg.JobTimeout)
	}
}
