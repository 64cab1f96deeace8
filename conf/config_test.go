package conf

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDatabaseURL(t *testing.T) {
	c := Default()
	c.DataDir = "/var/lib/mplane"
	if got, want := c.DatabaseURL(), "sqlite:"+filepath.Join("/var/lib/mplane", "mplane.db"); got != want {
		t.Errorf("DatabaseURL() = %q, want %q", got, want)
	}
	c.DatabaseDSN = "mysql://root:@tcp(db:3306)/mplane"
	if got := c.DatabaseURL(); got != c.DatabaseDSN {
		t.Errorf("DatabaseURL() = %q, want %q", got, c.DatabaseDSN)
	}
}

func TestAdvertiseAddr(t *testing.T) {
	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "127.0.0.1"
	}
	tests := []struct {
		listen, advertise, want string
	}{
		{"127.0.0.1:8080", "", "127.0.0.1:8080"},
		{"10.0.0.5:9000", "", "10.0.0.5:9000"},
		{"0.0.0.0:8080", "", hostname + ":8080"},
		{":8080", "", hostname + ":8080"},
		{"[::]:8080", "", hostname + ":8080"},
		{"0.0.0.0:8080", "node1.example.com", "node1.example.com:8080"},
		{"127.0.0.1:8080", "fd00::1", "[fd00::1]:8080"},
	}
	for _, tt := range tests {
		c := Default()
		c.APIListen, c.AdvertiseHost = tt.listen, tt.advertise
		if got := c.AdvertiseAddr(); got != tt.want {
			t.Errorf("listen %q advertise %q: AdvertiseAddr() = %q, want %q", tt.listen, tt.advertise, got, tt.want)
		}
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	c := Default()
	c.LogLevel, c.LogFormat = "warn", "json"
	log := c.Logger(&buf)
	log.Info("hidden")
	log.Warn("shown", "node_uuid", "n1")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1: %q", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %v: %q", err, lines[0])
	}
	if rec["msg"] != "shown" || rec["node_uuid"] != "n1" {
		t.Errorf("record %v", rec)
	}

	buf.Reset()
	c.LogLevel, c.LogFormat = "debug", "text"
	c.Logger(&buf).Debug("dbg")
	if !strings.Contains(buf.String(), "level=DEBUG msg=dbg") {
		t.Errorf("text debug record missing: %q", buf.String())
	}
}

func TestLogValueRedacts(t *testing.T) {
	var buf bytes.Buffer
	c := Default()
	c.AdminPassword = "hunter2"
	c.BusURL = "amqp://guest:pw-bus@mq:5672/"
	c.DatabaseDSN = "mysql://root:pw-db@tcp(db:3306)/mplane"
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	out := buf.String()
	for _, secret := range []string{"hunter2", "pw-bus", "pw-db"} {
		if strings.Contains(out, secret) {
			t.Errorf("log leaks %q: %s", secret, out)
		}
	}
	for _, want := range []string{"config.admin_password=REDACTED", "config.heartbeat_interval=2s", "config.bus_prefix=mplane", "tcp(db:3306)/mplane"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q: %s", want, out)
		}
	}
}
