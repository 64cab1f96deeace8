package conf

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateDefault(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default() is invalid: %v", err)
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // the whole message
	}{
		{"empty data_dir", func(c *Config) { c.DataDir = "" },
			`data_dir: must not be empty (got ""); set MPLANE_DATA_DIR or data_dir in the config file (or flag --data-dir)`},
		{"bus_url scheme", func(c *Config) { c.BusURL = "nats://u:secret@h:4222" },
			`bus_url: scheme "nats" is not supported; use "memory://" or "amqp://user:pass@host:port/vhost" (amqps:// for TLS) (got "nats://u:xxxxx@h:4222"); set MPLANE_BUS_URL or bus_url in the config file (or flag --bus-url)`},
		{"bus_url no scheme", func(c *Config) { c.BusURL = "localhost" },
			`bus_url: must be "memory://" or "amqp://user:pass@host:port/vhost" (amqps:// for TLS) (got "localhost"); set MPLANE_BUS_URL or bus_url in the config file (or flag --bus-url)`},
		{"bus_url no host", func(c *Config) { c.BusURL = "amqp:///vhost" },
			`bus_url: must name the broker host, e.g. amqp://guest:guest@127.0.0.1:5672/ (got "amqp:///vhost"); set MPLANE_BUS_URL or bus_url in the config file (or flag --bus-url)`},
		{"bus_url bad port", func(c *Config) { c.BusURL = "amqp://h:99999/" },
			`bus_url: port must be 1-65535 (got "amqp://h:99999/"); set MPLANE_BUS_URL or bus_url in the config file (or flag --bus-url)`},
		{"bus_prefix chars", func(c *Config) { c.BusPrefix = "a.b" },
			`bus_prefix: must match ^[a-zA-Z0-9_-]+$ (got "a.b"); set MPLANE_BUS_PREFIX or bus_prefix in the config file (or flag --bus-prefix)`},
		{"bus_prefix empty", func(c *Config) { c.BusPrefix = "" },
			`bus_prefix: must match ^[a-zA-Z0-9_-]+$ (got ""); set MPLANE_BUS_PREFIX or bus_prefix in the config file (or flag --bus-prefix)`},
		{"bus_prefix long", func(c *Config) { c.BusPrefix = strings.Repeat("a", 65) },
			`bus_prefix: must be at most 64 characters (got 65); set MPLANE_BUS_PREFIX or bus_prefix in the config file (or flag --bus-prefix)`},
		{"database_dsn scheme", func(c *Config) { c.DatabaseDSN = "postgres://u:secret@h/db" },
			`database_dsn: unsupported form "postgres:..."; use sqlite:<path>, sqlite::memory: or mysql://user:pass@tcp(host:3306)/dbname, or leave empty for sqlite:<data_dir>/mplane.db; set MPLANE_DATABASE_DSN or database_dsn in the config file (or flag --database-dsn)`},
		{"database_dsn sqlite without path", func(c *Config) { c.DatabaseDSN = "sqlite:" },
			`database_dsn: sqlite needs a path, e.g. sqlite:/var/lib/mplane/mplane.db or sqlite::memory: (got "sqlite:"); set MPLANE_DATABASE_DSN or database_dsn in the config file (or flag --database-dsn)`},
		{"database_dsn mysql unparseable", func(c *Config) { c.DatabaseDSN = "mysql://root:secret@127.0.0.1/db" },
			`database_dsn: cannot parse the mysql DSN (default addr for network '127.0.0.1' unknown); want mysql://user:pass@tcp(host:3306)/dbname; set MPLANE_DATABASE_DSN or database_dsn in the config file (or flag --database-dsn)`},
		{"database_dsn mysql without database", func(c *Config) { c.DatabaseDSN = "mysql://root:secret@tcp(db:3306)/" },
			`database_dsn: mysql DSN must name a database, e.g. mysql://root:@tcp(127.0.0.1:3306)/mplane (got "mysql://root:xxxxx@tcp(db:3306)/"); set MPLANE_DATABASE_DSN or database_dsn in the config file (or flag --database-dsn)`},
		{"api_listen no port", func(c *Config) { c.APIListen = "127.0.0.1" },
			`api_listen: must be host:port, e.g. 127.0.0.1:8080 or :8080 (got "127.0.0.1"); set MPLANE_API_LISTEN or api_listen in the config file (or flag --api-listen)`},
		{"api_listen bad port", func(c *Config) { c.APIListen = "127.0.0.1:http" },
			`api_listen: port must be a number 0-65535 (got "127.0.0.1:http"); set MPLANE_API_LISTEN or api_listen in the config file (or flag --api-listen)`},
		{"admin_listen bad", func(c *Config) { c.AdminListen = "9100" },
			`admin_listen: must be host:port, e.g. 127.0.0.1:8080 or :8080 (got "9100"); set MPLANE_ADMIN_LISTEN or admin_listen in the config file (or flag --admin-listen)`},
		{"admin_listen same as api", func(c *Config) { c.AdminListen = c.APIListen },
			`admin_listen: must differ from api_listen, or be empty to serve admin endpoints on the API listener (got "127.0.0.1:8080"); set MPLANE_ADMIN_LISTEN or admin_listen in the config file (or flag --admin-listen)`},
		{"advertise_host with port", func(c *Config) { c.AdvertiseHost = "node1:8080" },
			`advertise_host: must be a host name or IP address, without scheme or port (got "node1:8080"); set MPLANE_ADVERTISE_HOST or advertise_host in the config file (or flag --advertise-host)`},
		{"heartbeat_interval zero", func(c *Config) { c.HeartbeatInterval = 0 },
			`heartbeat_interval: must be > 0 (got 0s); set MPLANE_HEARTBEAT_INTERVAL or heartbeat_interval in the config file (or flag --heartbeat-interval)`},
		{"vm_command_timeouts unknown command", func(c *Config) { c.VMCommandTimeouts = "start=10m,migrate=1h" },
			`vm_command_timeouts: want command=duration pairs separated by commas, commands start, stop, reboot, destroy, like start=10m,stop=2m (got "migrate=1h"); set MPLANE_VM_COMMAND_TIMEOUTS or vm_command_timeouts in the config file (or flag --vm-command-timeouts)`},
		{"vm_command_timeouts bad duration", func(c *Config) { c.VMCommandTimeouts = "stop=0s" },
			`vm_command_timeouts: the timeout of stop must be a duration > 0 like 10m (got "0s"); set MPLANE_VM_COMMAND_TIMEOUTS or vm_command_timeouts in the config file (or flag --vm-command-timeouts)`},
		{"vm_command_timeouts twice", func(c *Config) { c.VMCommandTimeouts = "stop=1m, stop=2m" },
			`vm_command_timeouts: stop is given twice; set MPLANE_VM_COMMAND_TIMEOUTS or vm_command_timeouts in the config file (or flag --vm-command-timeouts)`},
		{"heartbeat_threshold zero", func(c *Config) { c.HeartbeatThreshold = 0 },
			`heartbeat_threshold: must be >= 1 (got 0); set MPLANE_HEARTBEAT_THRESHOLD or heartbeat_threshold in the config file (or flag --heartbeat-threshold)`},
		{"drain_timeout negative", func(c *Config) { c.DrainTimeout = -time.Second },
			`drain_timeout: must be >= 0 (got -1s); set MPLANE_DRAIN_TIMEOUT or drain_timeout in the config file (or flag --drain-timeout)`},
		{"call_timeout zero", func(c *Config) { c.CallTimeout = 0 },
			`call_timeout: must be > 0 (got 0s); set MPLANE_CALL_TIMEOUT or call_timeout in the config file (or flag --call-timeout)`},
		{"startup_timeout negative", func(c *Config) { c.StartupTimeout = -time.Minute },
			`startup_timeout: must be > 0 (got -1m0s); set MPLANE_STARTUP_TIMEOUT or startup_timeout in the config file (or flag --startup-timeout)`},
		{"ring_resync_interval zero", func(c *Config) { c.RingResyncInterval = 0 },
			`ring_resync_interval: must be > 0 (got 0s); set MPLANE_RING_RESYNC_INTERVAL or ring_resync_interval in the config file (or flag --ring-resync-interval)`},
		{"vm_allocation_strategy unknown", func(c *Config) { c.VMAllocationStrategy = "FirstFit" },
			`vm_allocation_strategy: must be one of LeastUsed, MostUsed, Random (got "FirstFit"); set MPLANE_VM_ALLOCATION_STRATEGY or vm_allocation_strategy in the config file (or flag --vm-allocation-strategy)`},
		{"vm_allocation_strategy wrong case", func(c *Config) { c.VMAllocationStrategy = "leastused" },
			`vm_allocation_strategy: must be one of LeastUsed, MostUsed, Random (got "leastused"); set MPLANE_VM_ALLOCATION_STRATEGY or vm_allocation_strategy in the config file (or flag --vm-allocation-strategy)`},
		{"vm_allocation_strategy empty", func(c *Config) { c.VMAllocationStrategy = "" },
			`vm_allocation_strategy: must be one of LeastUsed, MostUsed, Random (got ""); set MPLANE_VM_ALLOCATION_STRATEGY or vm_allocation_strategy in the config file (or flag --vm-allocation-strategy)`},
		{"job_timeout zero", func(c *Config) { c.JobTimeout = 0 },
			`job_timeout: must be > 0 (got 0s); set MPLANE_JOB_TIMEOUT or job_timeout in the config file (or flag --job-timeout)`},
		{"job_timeout negative", func(c *Config) { c.JobTimeout = -time.Minute },
			`job_timeout: must be > 0 (got -1m0s); set MPLANE_JOB_TIMEOUT or job_timeout in the config file (or flag --job-timeout)`},
		{"flow_retention zero", func(c *Config) { c.FlowRetention = 0 },
			`flow_retention: must be > 0 (got 0s); set MPLANE_FLOW_RETENTION or flow_retention in the config file (or flag --flow-retention)`},
		{"log_level", func(c *Config) { c.LogLevel = "verbose" },
			`log_level: must be one of debug, info, warn, error (got "verbose"); set MPLANE_LOG_LEVEL or log_level in the config file (or flag --log-level)`},
		{"log_format", func(c *Config) { c.LogFormat = "xml" },
			`log_format: must be text or json (got "xml"); set MPLANE_LOG_FORMAT or log_format in the config file (or flag --log-format)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate succeeded, want error")
			}
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("message leaks a password: %s", err)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
	}{
		{"amqp url", func(c *Config) { c.BusURL = "amqp://guest:guest@127.0.0.1:5672/" }},
		{"amqps url", func(c *Config) { c.BusURL = "amqps://mq.example.com/prod" }},
		{"sqlite path", func(c *Config) { c.DatabaseDSN = "sqlite:/var/lib/mplane/mplane.db" }},
		{"sqlite memory", func(c *Config) { c.DatabaseDSN = "sqlite::memory:" }},
		{"mysql", func(c *Config) { c.DatabaseDSN = "mysql://root:@tcp(127.0.0.1:3306)/mplane" }},
		{"wildcard listen and admin", func(c *Config) { c.APIListen = ":8080"; c.AdminListen = ":9100" }},
		{"ipv6 advertise host", func(c *Config) { c.AdvertiseHost = "fd00::1" }},
		{"upper-case level", func(c *Config) { c.LogLevel = "DEBUG"; c.LogFormat = "JSON" }},
		{"zero drain", func(c *Config) { c.DrainTimeout = 0 }},
		{"most used", func(c *Config) { c.VMAllocationStrategy = AllocationMostUsed }},
		{"random", func(c *Config) { c.VMAllocationStrategy = AllocationRandom }},
		{"per-command timeouts", func(c *Config) { c.VMCommandTimeouts = " start=10m, reboot=90s ,destroy=1h" }},
		{"short job timeout and retention", func(c *Config) { c.JobTimeout = time.Second; c.FlowRetention = time.Millisecond }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(&c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	c := Default()
	c.HeartbeatInterval = 0
	c.LogLevel = "loud"
	c.BusPrefix = "a b"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate succeeded, want error")
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("error %T is not a joined error", err)
	}
	if n := len(joined.Unwrap()); n != 3 {
		t.Errorf("got %d problems, want 3:\n%v", n, err)
	}
	for _, key := range []string{"heartbeat_interval:", "log_level:", "bus_prefix:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not mention %s:\n%v", key, err)
		}
	}
}
