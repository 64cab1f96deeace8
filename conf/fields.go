package conf

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// field describes one setting. Its YAML key is the only name written down;
// the environment variable and the flag are derived from it so the three
// spellings stay consistent.
type field struct {
	key    string
	usage  string
	secret bool
	// ptr returns a pointer into c: *string, *int or *time.Duration.
	ptr func(c *Config) any
}

// env returns the environment variable for f, e.g. MPLANE_HEARTBEAT_INTERVAL.
func (f field) env() string { return "MPLANE_" + strings.ToUpper(f.key) }

// flag returns the command-line flag name for f, e.g. heartbeat-interval.
func (f field) flag() string { return strings.ReplaceAll(f.key, "_", "-") }

// where tells the user the places f can be set, for error messages.
func (f field) where() string {
	return fmt.Sprintf("set %s or %s in the config file (or flag --%s)", f.env(), f.key, f.flag())
}

// set parses s into f's field of c. The error says which form was expected
// but not where the value came from; callers add that.
func (f field) set(c *Config, s string) error {
	switch p := f.ptr(c).(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("want a whole number such as 3 (got %q)", s)
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("want a Go duration such as \"2s\" or \"1m30s\" (got %q)", s)
		}
		*p = d
	default:
		panic(fmt.Sprintf("conf: field %s has unsupported type %T", f.key, p))
	}
	return nil
}

// display renders f's value in c for logs and messages, with secrets hidden.
func (f field) display(c *Config) string {
	var s string
	switch p := f.ptr(c).(type) {
	case *string:
		s = *p
	case *int:
		s = strconv.Itoa(*p)
	case *time.Duration:
		s = p.String()
	}
	switch {
	case s == "":
		return ""
	case f.secret:
		return "REDACTED"
	case f.key == "bus_url":
		return redactURL(s)
	case f.key == "database_dsn":
		return redactDSN(s)
	}
	return s
}

const configEnv = "MPLANE_CONFIG"
const configFlag = "config"

var fields = []field{
	{key: "data_dir", usage: "directory for the SQLite file and agent state in embedded mode",
		ptr: func(c *Config) any { return &c.DataDir }},
	{key: "bus_url", usage: `message bus: "memory://" or "amqp://user:pass@host:port/vhost" (amqps:// for TLS)`,
		ptr: func(c *Config) any { return &c.BusURL }},
	{key: "bus_prefix", usage: "prefix for every exchange and queue name ([a-zA-Z0-9_-]+)",
		ptr: func(c *Config) any { return &c.BusPrefix }},
	{key: "database_dsn", usage: `database: "sqlite:<path>", "sqlite::memory:" or "mysql://user:pass@tcp(host:3306)/dbname"; empty means sqlite:<data_dir>/mplane.db`,
		ptr: func(c *Config) any { return &c.DatabaseDSN }},
	{key: "api_listen", usage: "host:port for the HTTP API",
		ptr: func(c *Config) any { return &c.APIListen }},
	{key: "advertise_host", usage: "host other nodes use to reach this one; empty derives it from api_listen or the host name",
		ptr: func(c *Config) any { return &c.AdvertiseHost }},
	{key: "admin_listen", usage: "host:port for admin endpoints; empty serves them on the API listener",
		ptr: func(c *Config) any { return &c.AdminListen }},
	{key: "run_dir", usage: "directory of the admin socket (mode 0700), for `mplane daemon`; empty means <data_dir>/run",
		ptr: func(c *Config) any { return &c.RunDir }},
	{key: "heartbeat_interval", usage: "how often a management node writes its heartbeat",
		ptr: func(c *Config) any { return &c.HeartbeatInterval }},
	{key: "heartbeat_threshold", usage: "missed heartbeat intervals before a node is considered dead",
		ptr: func(c *Config) any { return &c.HeartbeatThreshold }},
	{key: "drain_timeout", usage: "how long a stopping node waits for in-flight work",
		ptr: func(c *Config) any { return &c.DrainTimeout }},
	{key: "call_timeout", usage: "deadline for bus calls made without one",
		ptr: func(c *Config) any { return &c.CallTimeout }},
	{key: "startup_timeout", usage: "how long a starting node retries the broker and the database",
		ptr: func(c *Config) any { return &c.StartupTimeout }},
	{key: "ring_resync_interval", usage: "how often the consistent-hash ring is rebuilt from the database",
		ptr: func(c *Config) any { return &c.RingResyncInterval }},
	{key: "host_ping_interval", usage: "how often the owner of a host pings its agent",
		ptr: func(c *Config) any { return &c.HostPingInterval }},
	{key: "host_ping_max_failures", usage: "failed pings in a row before a host is Disconnected",
		ptr: func(c *Config) any { return &c.HostPingMaxFailures }},
	{key: "host_chain_level", usage: "how many commands may run at once on one host",
		ptr: func(c *Config) any { return &c.HostChainLevel }},
	{key: "vm_allocation_strategy", usage: "how a VM's host is chosen among those that fit: LeastUsed (spread), MostUsed (pack) or Random",
		ptr: func(c *Config) any { return &c.VMAllocationStrategy }},
	{key: "vm_orphan_policy", usage: "what reconciliation does with a VM a host runs that the database has Stopped: Stop (stop it there) or Adopt (mark it Running there if the host has room)",
		ptr: func(c *Config) any { return &c.VMOrphanPolicy }},
	{key: "vm_command_timeout", usage: "how long one command of a VM operation may take on its agent; past it the host is asked what happened",
		ptr: func(c *Config) any { return &c.VMCommandTimeout }},
	{key: "vm_command_timeouts", usage: "vm_command_timeout for some commands only, as start=10m,stop=2m (start, stop, reboot, destroy); empty for none",
		ptr: func(c *Config) any { return &c.VMCommandTimeouts }},
	{key: "vm_reconcile_interval", usage: "how often each node compares its hosts' VM lists with the database and settles VMs left in a transitional state",
		ptr: func(c *Config) any { return &c.VMReconcileInterval }},
	{key: "job_timeout", usage: "how long one API call may take, from its submission to its result",
		ptr: func(c *Config) any { return &c.JobTimeout }},
	{key: "flow_retention", usage: "how long the records of flows that finished cleanly are kept",
		ptr: func(c *Config) any { return &c.FlowRetention }},
	{key: "tls_cert_file", usage: "PEM certificate of the API listener: with tls_key_file it serves HTTPS (agents then post results over HTTPS)",
		ptr: func(c *Config) any { return &c.TLSCertFile }},
	{key: "tls_key_file", usage: "PEM private key of tls_cert_file",
		ptr: func(c *Config) any { return &c.TLSKeyFile }},
	{key: "agent_networks", usage: "networks (CIDRs, comma-separated) the agents of hosts and backup storage may be on; the node connects nowhere else; empty for any",
		ptr: func(c *Config) any { return &c.AgentNetworks }},
	{key: "agent_scheme", usage: "how the node reaches its agents: http, or https (agents started with --tls-cert and --tls-key)",
		ptr: func(c *Config) any { return &c.AgentScheme }},
	{key: "agent_ca_file", usage: "PEM certificates the node trusts, beside the system's, for agents that serve HTTPS",
		ptr: func(c *Config) any { return &c.AgentCAFile }},
	{key: "account_submit_rate", usage: "calls per second each normal account may submit on one node (bursts of twice as many); 0 for no bound",
		ptr: func(c *Config) any { return &c.AccountSubmitRate }},
	{key: "agent_claim_token", usage: "token sent with every agent connect; an agent started with the same --claim-token is claimed only with it", secret: true,
		ptr: func(c *Config) any { return &c.AgentClaimToken }},
	{key: "webhook_allow", usage: "networks (CIDRs, comma-separated) an X-Web-Hook may reach although internal (loopback, link-local, refused by default)",
		ptr: func(c *Config) any { return &c.WebhookAllow }},
	{key: "quota_defaults", usage: "the quotas of accounts without values of their own: name=value,... of vm.num, vm.cpuNum, vm.memorySize, volume.data.num, volume.capacity, snapshot.volume.num",
		ptr: func(c *Config) any { return &c.QuotaDefaults }},
	{key: "session_ttl", usage: "how long a session lives after its login",
		ptr: func(c *Config) any { return &c.SessionTTL }},
	{key: "job_retention", usage: "how long finished API jobs (and their results) are kept before they are purged",
		ptr: func(c *Config) any { return &c.JobRetention }},
	{key: "log_level", usage: "log level: debug, info, warn or error",
		ptr: func(c *Config) any { return &c.LogLevel }},
	{key: "log_format", usage: "log format: text or json",
		ptr: func(c *Config) any { return &c.LogFormat }},
	{key: "admin_password", usage: "initial admin password; empty generates one at first start", secret: true,
		ptr: func(c *Config) any { return &c.AdminPassword }},
}

func fieldByKey(key string) (field, bool) {
	for _, f := range fields {
		if f.key == key {
			return f, true
		}
	}
	return field{}, false
}

func fieldByKeyMust(key string) field {
	f, ok := fieldByKey(key)
	if !ok {
		panic("conf: no field " + key)
	}
	return f
}

func knownKeys() string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	return strings.Join(keys, ", ")
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		// Cannot tell where a password would be; show only the scheme.
		if i := strings.Index(s, "://"); i >= 0 {
			return s[:i+3] + "..."
		}
		return "..."
	}
	if u.User == nil {
		// Nothing to hide; url.URL drops the "//" of an empty host.
		return s
	}
	return u.Redacted()
}

func redactDSN(s string) string {
	rest, ok := strings.CutPrefix(s, "mysql://")
	if !ok {
		return s
	}
	cfg, err := mysql.ParseDSN(rest)
	if err != nil {
		return "mysql://..."
	}
	if cfg.Passwd != "" {
		cfg.Passwd = "xxxxx"
	}
	return "mysql://" + cfg.FormatDSN()
}
