package conf

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunDirectory(t *testing.T) {
	c := Default()
	c.DataDir = "/var/lib/mplane"
	if got, want := c.RunDirectory(), filepath.Join("/var/lib/mplane", "run"); got != want {
		t.Errorf("RunDirectory() = %q, want %q", got, want)
	}
	c.RunDir = "/run/mplane"
	if got := c.RunDirectory(); got != "/run/mplane" {
		t.Errorf("RunDirectory() = %q, want /run/mplane", got)
	}
	l, err := Load("", []string{"MPLANE_RUN_DIR=/tmp/r"}, nil)
	if err != nil || l.RunDir != "/tmp/r" {
		t.Errorf("MPLANE_RUN_DIR: %q, %v", l.RunDir, err)
	}
}

func TestSettings(t *testing.T) {
	c := Default()
	c.AdminPassword = "hunter2"
	c.BusURL = "amqp://guest:pw-bus@mq:5672/"
	got := c.Settings()
	if len(got) != len(Keys()) {
		t.Fatalf("%d settings, %d keys", len(got), len(Keys()))
	}
	byKey := map[string]Setting{}
	for i, s := range got {
		if s.Key != Keys()[i] || s.Description == "" {
			t.Errorf("setting %d: %+v", i, s)
		}
		byKey[s.Key] = s
	}
	for key, want := range map[string]string{"admin_password": "REDACTED", "bus_url": "amqp://guest:xxxxx@mq:5672/",
		"heartbeat_interval": "2s", "host_ping_max_failures": "3", "run_dir": ""} {
		if byKey[key].Value != want {
			t.Errorf("%s = %q, want %q", key, byKey[key].Value, want)
		}
	}
	if c.Display("admin_password") != "REDACTED" || c.Display("nope") != "" {
		t.Error("Display does not redact or knows an unknown key")
	}
}

func TestWith(t *testing.T) {
	c := Default()
	n, err := c.With("host_ping_interval", "250ms")
	if err != nil || n.HostPingInterval != 250*time.Millisecond || c.HostPingInterval != 5*time.Second {
		t.Errorf("With host_ping_interval: %v, %v (original %v)", n.HostPingInterval, err, c.HostPingInterval)
	}
	if _, err := c.With("host_ping_interval", "5"); err == nil || !strings.Contains(err.Error(), `host_ping_interval: want a Go duration`) {
		t.Errorf("bare number: %v", err)
	}
	if _, err := c.With("nope", "1"); err == nil || !strings.Contains(err.Error(), `unknown setting "nope"; known settings: data_dir`) {
		t.Errorf("unknown key: %v", err)
	}
}

func TestNewLoggerLevelChangesLive(t *testing.T) {
	var buf bytes.Buffer
	c := Default()
	level := new(slog.LevelVar)
	log := c.NewLogger(&buf, level).With("component", "x")
	log.Debug("hidden")
	level.Set(slog.LevelDebug)
	log.Debug("shown")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, "msg=shown component=x") {
		t.Errorf("log: %q", out)
	}
	for s, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "Warn": slog.LevelWarn, "error": slog.LevelError} {
		if l, err := ParseLevel(s); err != nil || l != want {
			t.Errorf("ParseLevel(%q) = %v, %v", s, l, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("ParseLevel(loud) succeeded")
	}
}
