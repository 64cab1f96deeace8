package conf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mplane.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// flags returns a FlagSet with every flag bound and args parsed.
func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse flags %v: %v", args, err)
	}
	return fs
}

func TestLoadPrecedence(t *testing.T) {
	file := writeFile(t, `
heartbeat_interval: 5s
bus_prefix: fromfile
log_level: warn
heartbeat_threshold: 7
`)
	tests := []struct {
		name    string
		path    string
		environ []string
		args    []string
		check   func(t *testing.T, c Config)
	}{
		{
			name: "defaults only",
			check: func(t *testing.T, c Config) {
				if c != Default() {
					t.Errorf("got %+v, want Default() %+v", c, Default())
				}
			},
		},
		{
			name: "file over default",
			path: file,
			check: func(t *testing.T, c Config) {
				want := Default()
				want.HeartbeatInterval = 5 * time.Second
				want.BusPrefix = "fromfile"
				want.LogLevel = "warn"
				want.HeartbeatThreshold = 7
				if c != want {
					t.Errorf("got %+v, want %+v", c, want)
				}
			},
		},
		{
			name:    "env over file",
			path:    file,
			environ: []string{"MPLANE_HEARTBEAT_INTERVAL=7s", "MPLANE_BUS_PREFIX=fromenv", "PATH=/bin"},
			check: func(t *testing.T, c Config) {
				if c.HeartbeatInterval != 7*time.Second || c.BusPrefix != "fromenv" {
					t.Errorf("env did not override file: %+v", c)
				}
				if c.LogLevel != "warn" || c.HeartbeatThreshold != 7 {
					t.Errorf("file values not set by env were lost: %+v", c)
				}
			},
		},
		{
			name:    "flag over env",
			path:    file,
			environ: []string{"MPLANE_HEARTBEAT_INTERVAL=7s", "MPLANE_BUS_PREFIX=fromenv"},
			args:    []string{"--heartbeat-interval=9s", "--heartbeat-threshold", "4"},
			check: func(t *testing.T, c Config) {
				if c.HeartbeatInterval != 9*time.Second || c.HeartbeatThreshold != 4 {
					t.Errorf("flag did not override: %+v", c)
				}
				if c.BusPrefix != "fromenv" {
					t.Errorf("unset flag's default overrode env: bus_prefix %q", c.BusPrefix)
				}
			},
		},
		{
			name:    "empty env var counts as unset",
			path:    file,
			environ: []string{"MPLANE_BUS_PREFIX="},
			check: func(t *testing.T, c Config) {
				if c.BusPrefix != "fromfile" {
					t.Errorf("bus_prefix %q, want fromfile", c.BusPrefix)
				}
			},
		},
		{
			name:    "first duplicate env entry wins",
			environ: []string{"MPLANE_BUS_PREFIX=first", "MPLANE_BUS_PREFIX=second"},
			check: func(t *testing.T, c Config) {
				if c.BusPrefix != "first" {
					t.Errorf("bus_prefix %q, want first", c.BusPrefix)
				}
			},
		},
		{
			name:    "file from MPLANE_CONFIG",
			environ: []string{"MPLANE_CONFIG=" + file},
			check: func(t *testing.T, c Config) {
				if c.BusPrefix != "fromfile" {
					t.Errorf("bus_prefix %q, want fromfile", c.BusPrefix)
				}
			},
		},
		{
			name:    "file from --config over MPLANE_CONFIG",
			environ: []string{"MPLANE_CONFIG=/nonexistent/mplane.yaml"},
			args:    []string{"--config", file},
			check: func(t *testing.T, c Config) {
				if c.BusPrefix != "fromfile" {
					t.Errorf("bus_prefix %q, want fromfile", c.BusPrefix)
				}
			},
		},
		{
			name:    "every setting from env and flags",
			environ: []string{"MPLANE_DATA_DIR=/var/lib/mplane", "MPLANE_BUS_URL=amqp://u:p@mq:5672/", "MPLANE_DATABASE_DSN=mysql://root:@tcp(db:3306)/mplane", "MPLANE_ADMIN_PASSWORD=s3cret"},
			args: []string{"--api-listen=0.0.0.0:9000", "--advertise-host=node1", "--admin-listen=127.0.0.1:9100",
				"--drain-timeout=1m", "--call-timeout=5s", "--startup-timeout=2m", "--ring-resync-interval=1s",
				"--log-format=json", "--log-level=debug", "--host-ping-interval=750ms", "--host-ping-max-failures=4",
				"--host-chain-level=2", "--vm-allocation-strategy=MostUsed", "--vm-orphan-policy=Adopt", "--vm-command-timeout=2m", "--vm-command-timeouts=start=10m,stop=1m", "--vm-reconcile-interval=30s", "--job-timeout=5m", "--flow-retention=90m",
				"--session-ttl=30m", "--job-retention=24h", "--quota-defaults=vm.num=5", "--account-submit-rate=7", "--agent-scheme=https"},
			check: func(t *testing.T, c Config) {
				want := Config{
					DataDir: "/var/lib/mplane", BusURL: "amqp://u:p@mq:5672/", BusPrefix: "mplane",
					DatabaseDSN: "mysql://root:@tcp(db:3306)/mplane", APIListen: "0.0.0.0:9000",
					AdvertiseHost: "node1", AdminListen: "127.0.0.1:9100",
					HeartbeatInterval: 2 * time.Second, HeartbeatThreshold: 3, DrainTimeout: time.Minute,
					CallTimeout: 5 * time.Second, StartupTimeout: 2 * time.Minute, RingResyncInterval: time.Second,
					LogLevel: "debug", LogFormat: "json", AdminPassword: "s3cret",
					HostPingInterval: 750 * time.Millisecond, HostPingMaxFailures: 4, HostChainLevel: 2,
					VMAllocationStrategy: AllocationMostUsed, VMOrphanPolicy: OrphanAdopt, VMCommandTimeout: 2 * time.Minute, VMCommandTimeouts: "start=10m,stop=1m", VMReconcileInterval: 30 * time.Second, JobTimeout: 5 * time.Minute, FlowRetention: 90 * time.Minute,
					SessionTTL: 30 * time.Minute, JobRetention: 24 * time.Hour, QuotaDefaults: "vm.num=5", AccountSubmitRate: 7, AgentScheme: "https",
				}
				if c != want {
					t.Errorf("got  %+v\nwant %+v", c, want)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.path, tt.environ, flags(t, tt.args...))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadNilFlagSet(t *testing.T) {
	c, err := Load("", []string{"MPLANE_LOG_LEVEL=error"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "error" {
		t.Errorf("log_level %q, want error", c.LogLevel)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    string // YAML content; "" means no file
		path    string // explicit path instead of file
		environ []string
		want    []string // substrings of the error, all required
	}{
		{
			name: "unknown key",
			file: "bus_prefix: x\nheartbeat_intervall: 2s\n",
			want: []string{`line 2: unknown key "heartbeat_intervall"; known keys: data_dir, bus_url`},
		},
		{
			name: "duplicate key",
			file: "bus_prefix: a\nbus_prefix: b\n",
			want: []string{`line 2: key "bus_prefix" already given on line 1`},
		},
		{
			name: "bare number for a duration",
			file: "heartbeat_interval: 2\n",
			want: []string{`line 1: heartbeat_interval: want a Go duration such as "2s" or "1m30s" (got "2")`},
		},
		{
			name: "bad int",
			file: "heartbeat_threshold: three\n",
			want: []string{`heartbeat_threshold: want a whole number such as 3 (got "three")`},
		},
		{
			name: "list value",
			file: "bus_url:\n  - memory://\n",
			want: []string{`line 2: bus_url: want a single value, not a list or mapping`},
		},
		{
			name: "top level not a mapping",
			file: "- a\n- b\n",
			want: []string{"want a mapping of key: value at the top level"},
		},
		{
			name: "malformed yaml",
			file: "bus_url: [\n",
			want: []string{"config file ", "yaml:"},
		},
		{
			name: "missing file",
			path: "/nonexistent/mplane.yaml",
			want: []string{"read config file: open /nonexistent/mplane.yaml"},
		},
		{
			name:    "bad env duration",
			environ: []string{"MPLANE_HEARTBEAT_INTERVAL=abc"},
			want:    []string{`environment variable MPLANE_HEARTBEAT_INTERVAL: want a Go duration such as "2s" or "1m30s" (got "abc")`},
		},
		{
			name:    "bad env int",
			environ: []string{"MPLANE_HEARTBEAT_THRESHOLD=1.5"},
			want:    []string{`environment variable MPLANE_HEARTBEAT_THRESHOLD: want a whole number such as 3 (got "1.5")`},
		},
		{
			name:    "all parse problems reported together",
			file:    "nope: 1\n",
			environ: []string{"MPLANE_CALL_TIMEOUT=x", "MPLANE_DRAIN_TIMEOUT=y"},
			want:    []string{`unknown key "nope"`, "MPLANE_CALL_TIMEOUT", "MPLANE_DRAIN_TIMEOUT"},
		},
		{
			name: "unknown allocation strategy in the file",
			file: "vm_allocation_strategy: Packed\n",
			want: []string{`vm_allocation_strategy: must be one of LeastUsed, MostUsed, Random (got "Packed"); set MPLANE_VM_ALLOCATION_STRATEGY or vm_allocation_strategy in the config file`},
		},
		{
			name:    "zero job timeout and flow retention",
			environ: []string{"MPLANE_JOB_TIMEOUT=0s", "MPLANE_FLOW_RETENTION=0"},
			want: []string{"job_timeout: must be > 0 (got 0s); set MPLANE_JOB_TIMEOUT",
				"flow_retention: must be > 0 (got 0s); set MPLANE_FLOW_RETENTION"},
		},
		{
			name:    "valid syntax, invalid value",
			environ: []string{"MPLANE_HEARTBEAT_INTERVAL=0s"},
			want:    []string{"heartbeat_interval: must be > 0 (got 0s); set MPLANE_HEARTBEAT_INTERVAL or heartbeat_interval in the config file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			c, err := Load(path, tt.environ, nil)
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want error", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadNullAndEmptyFile(t *testing.T) {
	for _, content := range []string{"", "# only a comment\n", "bus_prefix:\n"} {
		c, err := Load(writeFile(t, content), nil, nil)
		if err != nil {
			t.Fatalf("file %q: %v", content, err)
		}
		if c != Default() {
			t.Errorf("file %q: got %+v, want defaults", content, c)
		}
	}
}

func TestBindFlagsNames(t *testing.T) {
	fs := flags(t)
	for _, f := range fields {
		fl := fs.Lookup(f.flag())
		if fl == nil {
			t.Errorf("flag --%s not registered", f.flag())
			continue
		}
		if !strings.Contains(fl.Usage, f.env()) {
			t.Errorf("--%s usage %q does not mention %s", f.flag(), fl.Usage, f.env())
		}
	}
	if fs.Lookup("config") == nil {
		t.Error("flag --config not registered")
	}
	if got := fs.Lookup("heartbeat-interval").DefValue; got != "2s" {
		t.Errorf("--heartbeat-interval default %q, want 2s", got)
	}
}
