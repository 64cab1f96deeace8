package conf

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"mplane/internal/netguard"
)

var busPrefixRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// maxBusPrefix leaves room under AMQP's 255-byte name limit for the rest of
// every exchange and queue name.
const maxBusPrefix = 64

// Validate checks every setting and returns all problems joined with
// errors.Join, or nil. Each message names the setting, says what is wrong
// with the value it got, and where to set it, e.g.
//
//	heartbeat_interval: must be > 0 (got 0s); set MPLANE_HEARTBEAT_INTERVAL or heartbeat_interval in the config file (or flag --heartbeat-interval)
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		f := fieldByKeyMust(key)
		errs = append(errs, fmt.Errorf("%s: %s; %s", key, fmt.Sprintf(format, args...), f.where()))
	}

	if strings.TrimSpace(c.DataDir) == "" {
		bad("data_dir", "must not be empty (got %q)", c.DataDir)
	}

	if msg := checkBusURL(c.BusURL); msg != "" {
		bad("bus_url", "%s", msg)
	}

	switch {
	case !busPrefixRE.MatchString(c.BusPrefix):
		bad("bus_prefix", "must match %s (got %q)", busPrefixRE, c.BusPrefix)
	case len(c.BusPrefix) > maxBusPrefix:
		bad("bus_prefix", "must be at most %d characters (got %d)", maxBusPrefix, len(c.BusPrefix))
	}

	if msg := checkDSN(c.DatabaseDSN); msg != "" {
		bad("database_dsn", "%s", msg)
	}

	if msg := checkListen(c.APIListen); msg != "" {
		bad("api_listen", "%s", msg)
	}
	if c.AdminListen != "" {
		if msg := checkListen(c.AdminListen); msg != "" {
			bad("admin_listen", "%s", msg)
		} else if c.AdminListen == c.APIListen {
			bad("admin_listen", "must differ from api_listen, or be empty to serve admin endpoints on the API listener (got %q)", c.AdminListen)
		}
	}
	if msg := checkHost(c.AdvertiseHost); msg != "" {
		bad("advertise_host", "%s", msg)
	}

	positive := []struct {
		key string
		d   time.Duration
	}{
		{"heartbeat_interval", c.HeartbeatInterval},
		{"call_timeout", c.CallTimeout},
		{"startup_timeout", c.StartupTimeout},
		{"ring_resync_interval", c.RingResyncInterval},
		{"host_ping_interval", c.HostPingInterval},
		{"job_timeout", c.JobTimeout},
		{"vm_command_timeout", c.VMCommandTimeout},
		{"vm_reconcile_interval", c.VMReconcileInterval},
		{"flow_retention", c.FlowRetention},
		{"session_ttl", c.SessionTTL},
		{"job_retention", c.JobRetention},
	}
	for _, p := range positive {
		if p.d <= 0 {
			bad(p.key, "must be > 0 (got %s)", p.d)
		}
	}
	if _, err := netguard.ParsePrefixes(c.AgentNetworks); err != nil {
		bad("agent_networks", "%v", err)
	}
	if _, err := netguard.ParsePrefixes(c.WebhookAllow); err != nil {
		bad("webhook_allow", "%v", err)
	}
	if _, err := ParseQuotas(c.QuotaDefaults); err != nil {
		bad("quota_defaults", "%v", err)
	}
	if _, err := c.VMCommandTimeoutsMap(); err != nil {
		bad("vm_command_timeouts", "%v", err)
	}
	if c.DrainTimeout < 0 {
		bad("drain_timeout", "must be >= 0 (got %s)", c.DrainTimeout)
	}
	if c.HeartbeatThreshold < 1 {
		bad("heartbeat_threshold", "must be >= 1 (got %d)", c.HeartbeatThreshold)
	}
	if c.HostPingMaxFailures < 1 {
		bad("host_ping_max_failures", "must be >= 1 (got %d)", c.HostPingMaxFailures)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("tls_cert_file", "tls_cert_file and tls_key_file are set together (got only one)")
	}
	if c.AgentScheme != "http" && c.AgentScheme != "https" {
		bad("agent_scheme", "must be http or https (got %q)", c.AgentScheme)
	}
	if c.AccountSubmitRate < 0 {
		bad("account_submit_rate", "must be >= 0 (got %d)", c.AccountSubmitRate)
	}
	if c.HostChainLevel < 1 {
		bad("host_chain_level", "must be >= 1 (got %d)", c.HostChainLevel)
	}

	if !slices.Contains(OrphanPolicies(), c.VMOrphanPolicy) {
		bad("vm_orphan_policy", "must be one of %s (got %q)", strings.Join(OrphanPolicies(), ", "), c.VMOrphanPolicy)
	}
	if !slices.Contains(AllocationStrategies(), c.VMAllocationStrategy) {
		bad("vm_allocation_strategy", "must be one of %s (got %q)", strings.Join(AllocationStrategies(), ", "), c.VMAllocationStrategy)
	}

	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be one of debug, info, warn, error (got %q)", c.LogLevel)
	}
	switch strings.ToLower(c.LogFormat) {
	case "text", "json":
	default:
		bad("log_format", "must be text or json (got %q)", c.LogFormat)
	}

	return errors.Join(errs...)
}

// checkBusURL returns what is wrong with s, or "".
func checkBusURL(s string) string {
	const forms = `"memory://" or "amqp://user:pass@host:port/vhost" (amqps:// for TLS)`
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return fmt.Sprintf("must be %s (got %q)", forms, redactURL(s))
	}
	switch u.Scheme {
	case "memory":
		return ""
	case "amqp", "amqps":
		if u.Hostname() == "" {
			return fmt.Sprintf("must name the broker host, e.g. amqp://guest:guest@127.0.0.1:5672/ (got %q)", u.Redacted())
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return fmt.Sprintf("port must be 1-65535 (got %q)", u.Redacted())
			}
		}
		return ""
	default:
		return fmt.Sprintf("scheme %q is not supported; use %s (got %q)", u.Scheme, forms, u.Redacted())
	}
}

// checkDSN returns what is wrong with s, or "".
func checkDSN(s string) string {
	const forms = `sqlite:<path>, sqlite::memory: or mysql://user:pass@tcp(host:3306)/dbname, or leave empty for sqlite:<data_dir>/mplane.db`
	switch {
	case s == "":
		return ""
	case strings.HasPrefix(s, "sqlite:"):
		if strings.TrimSpace(strings.TrimPrefix(s, "sqlite:")) == "" {
			return fmt.Sprintf("sqlite needs a path, e.g. sqlite:/var/lib/mplane/mplane.db or sqlite::memory: (got %q)", s)
		}
		return ""
	case strings.HasPrefix(s, "mysql://"):
		cfg, err := mysql.ParseDSN(strings.TrimPrefix(s, "mysql://"))
		if err != nil {
			// The driver's messages never echo the DSN, which may hold a password.
			return fmt.Sprintf("cannot parse the mysql DSN (%v); want mysql://user:pass@tcp(host:3306)/dbname", err)
		}
		if cfg.DBName == "" {
			return fmt.Sprintf("mysql DSN must name a database, e.g. mysql://root:@tcp(127.0.0.1:3306)/mplane (got %q)", redactDSN(s))
		}
		return ""
	default:
		scheme, _, _ := strings.Cut(s, ":")
		return fmt.Sprintf("unsupported form %q; use %s", scheme+":...", forms)
	}
}

// checkListen returns what is wrong with the listen address s, or "".
func checkListen(s string) string {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("must be host:port, e.g. 127.0.0.1:8080 or :8080 (got %q)", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("port must be a number 0-65535 (got %q)", s)
	}
	return ""
}

// checkHost returns what is wrong with the advertise host s, or "".
func checkHost(s string) string {
	switch {
	case s == "":
		return ""
	case net.ParseIP(s) != nil:
		return ""
	case strings.ContainsAny(s, ":/ \t@"):
		return fmt.Sprintf("must be a host name or IP address, without scheme or port (got %q)", s)
	}
	return ""
}

// VMCommands are the commands vm_command_timeouts may name.
var VMCommands = []string{"start", "stop", "reboot", "destroy"}

// VMCommandTimeoutsMap parses VMCommandTimeouts ("start=10m,stop=2m") into
// timeouts by command; empty gives an empty map.
func (c Config) VMCommandTimeoutsMap() (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, part := range strings.Split(c.VMCommandTimeouts, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || !slices.Contains(VMCommands, name) {
			return nil, fmt.Errorf("want command=duration pairs separated by commas, commands %s, like start=10m,stop=2m (got %q)",
				strings.Join(VMCommands, ", "), part)
		}
		d, err := time.ParseDuration(strings.TrimSpace(val))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("the timeout of %s must be a duration > 0 like 10m (got %q)", name, val)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s is given twice", name)
		}
		out[name] = d
	}
	return out, nil
}
