package conf

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config is mplane's whole configuration. The zero value is not useful; start
// from Default or Load.
type Config struct {
	// DataDir holds the SQLite file and the agent state in embedded mode.
	DataDir string
	// BusURL is "memory://" (in-process bus) or an AMQP URL
	// "amqp://user:pass@host:port/vhost" ("amqps://" for TLS).
	BusURL string
	// BusPrefix starts every exchange and queue name, so several clusters or
	// test runs can share one broker.
	BusPrefix string
	// DatabaseDSN is "sqlite:<path>", "sqlite::memory:" or
	// "mysql://<go-sql-driver DSN>". Empty means the SQLite file
	// <DataDir>/mplane.db; use DatabaseURL for the effective value.
	DatabaseDSN string

	// APIListen is the host:port the HTTP API listens on.
	APIListen string
	// AdvertiseHost is the host other nodes and agents use to reach this
	// node. Empty derives it from APIListen or the host name; use
	// AdvertiseAddr for the effective address.
	AdvertiseHost string
	// AdminListen is the host:port for admin endpoints (metrics, health).
	// Empty serves them on the API listener.
	AdminListen string
	// RunDir holds the node's admin socket (mplane-<node uuid>.asok and the
	// link mplane.asok), created with mode 0700. Empty means <DataDir>/run;
	// use RunDirectory for the effective value.
	RunDir string

	// HeartbeatInterval is how often a management node writes its heartbeat.
	HeartbeatInterval time.Duration
	// HeartbeatThreshold is how many intervals may pass without a heartbeat
	// before a node is considered dead.
	HeartbeatThreshold int
	// DrainTimeout bounds how long a stopping node waits for in-flight work.
	DrainTimeout time.Duration
	// CallTimeout is the deadline given to bus calls whose context has none.
	CallTimeout time.Duration
	// StartupTimeout is how long a starting node keeps retrying the broker
	// and the database before giving up.
	StartupTimeout time.Duration
	// RingResyncInterval is how often a node rebuilds its consistent-hash
	// ring from the database, in case it missed a membership event.
	RingResyncInterval time.Duration

	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is text or json.
	LogFormat string

	// HostPingInterval is how often the owner of a host pings its agent;
	// after HostPingMaxFailures failed pings in a row the host is
	// Disconnected and reconnect attempts start.
	HostPingInterval    time.Duration
	HostPingMaxFailures int
	// HostChainLevel is how many commands may run at once on one host.
	HostChainLevel int

	// VMAllocationStrategy is how the hosts that can take a VM are
	// ordered: one of AllocationStrategies.
	VMAllocationStrategy string
	// VMOrphanPolicy is what reconciliation does with a VM a host runs
	// that the database has Stopped: OrphanStop or OrphanAdopt.
	VMOrphanPolicy string
	// VMCommandTimeout bounds one command of a VM operation on its agent
	// (start, stop, reboot, destroy); past it the owner asks the host what
	// happened.
	VMCommandTimeout time.Duration
	// VMCommandTimeouts overrides VMCommandTimeout per command, as
	// "start=10m,stop=2m" (commands: start, stop, reboot, destroy); empty
	// means none. VMCommandTimeoutsMap parses it.
	VMCommandTimeouts string
	// VMReconcileInterval is how often each node compares the VM lists of
	// the hosts it owns with the database and settles VMs left in a
	// transitional state.
	VMReconcileInterval time.Duration
	// JobTimeout bounds one API call, from its submission to its result.
	JobTimeout time.Duration
	// FlowRetention is how long the records of flows that finished
	// cleanly are kept before they are pruned.
	FlowRetention time.Duration
	// TLSCertFile and TLSKeyFile, both set, make the API listener serve
	// HTTPS with that certificate and key (PEM files); its URL, which
	// agents post their results to, is then https.
	TLSCertFile string
	TLSKeyFile  string
	// AgentNetworks are the networks (CIDRs, comma-separated) the agents
	// of hosts and backup storage may be on; empty is any.
	AgentNetworks string
	// AgentScheme is how the node reaches its agents: "http" or "https"
	// (agents started with --tls-cert and --tls-key); AgentCAFile is what
	// it trusts of their certificates, beside the system's.
	AgentScheme string
	AgentCAFile string
	// AccountSubmitRate bounds the calls per second each normal account
	// may submit on one node (bursts of twice as many); 0 is no bound.
	AccountSubmitRate int
	// AgentClaimToken is sent with every connect of a host's agent; an
	// agent started with the same --claim-token accepts only such a
	// connect to claim it.
	AgentClaimToken string
	// WebhookAllow are the networks (CIDRs, comma-separated) an X-Web-Hook
	// may reach although they are internal (loopback, link-local): the
	// node refuses those by default.
	WebhookAllow string
	// QuotaDefaults are the quotas of accounts without values of their
	// own: "name=value,..." (quota.ParseLimits).
	QuotaDefaults string
	// SessionTTL is how long a session lives after its login.
	SessionTTL time.Duration
	// JobRetention is how long finished API jobs are kept (their results
	// can be read that long), and expired sessions.
	JobRetention time.Duration

	// AdminPassword is the initial admin password. Empty means one is
	// generated at first start.
	AdminPassword string
}

// Default returns the configuration used when nothing else is given: an
// embedded single node with an in-process bus and a SQLite file under
// ./mplane-data.
func Default() Config {
	return Config{
		DataDir:              "mplane-data",
		BusURL:               "memory://",
		BusPrefix:            "mplane",
		DatabaseDSN:          "",
		APIListen:            "127.0.0.1:8080",
		AdvertiseHost:        "",
		AdminListen:          "",
		RunDir:               "",
		HeartbeatInterval:    2 * time.Second,
		HeartbeatThreshold:   3,
		DrainTimeout:         30 * time.Second,
		CallTimeout:          30 * time.Second,
		StartupTimeout:       60 * time.Second,
		RingResyncInterval:   10 * time.Second,
		HostPingInterval:     5 * time.Second,
		HostPingMaxFailures:  3,
		HostChainLevel:       10,
		VMAllocationStrategy: AllocationLeastUsed,
		VMOrphanPolicy:       OrphanStop,
		VMCommandTimeout:     5 * time.Minute,
		VMReconcileInterval:  time.Minute,
		JobTimeout:           30 * time.Minute,
		FlowRetention:        time.Hour,
		SessionTTL:           2 * time.Hour,
		AccountSubmitRate:    100,
		AgentScheme:          "http",
		QuotaDefaults:        "vm.num=20,vm.cpuNum=80,vm.memorySize=85899345920,volume.data.num=40,volume.capacity=10995116277760,snapshot.volume.num=200",
		JobRetention:         7 * 24 * time.Hour,
		LogLevel:             "info",
		LogFormat:            "text",
		AdminPassword:        "",
	}
}

// The VM allocation strategies (vm_allocation_strategy): how services/vm
// orders the hosts that have the CPU and memory a VM needs. The host a
// stopped VM last ran on comes first in each. The names live here, not in
// services/vm, so that Validate refuses a bad value at the start; the VM
// service checks its setter against the same list.
const (
	// AllocationLeastUsed: the host with the largest share of free memory
	// and CPU first (spread), random among hosts within 5% of each other.
	// The default.
	AllocationLeastUsed = "LeastUsed"
	// AllocationMostUsed: the host with the smallest share of free memory
	// and CPU that still fits first (pack), so whole hosts stay free.
	AllocationMostUsed = "MostUsed"
	// AllocationRandom: any host that fits, in random order.
	AllocationRandom = "Random"
)

// AllocationStrategies are the valid values of vm_allocation_strategy,
// the default first.
func AllocationStrategies() []string {
	return []string{AllocationLeastUsed, AllocationMostUsed, AllocationRandom}
}

// The orphan policies (vm_orphan_policy): what reconciliation does with a
// VM a host runs that the database has Stopped. A VM the database has
// destroyed, or does not have, is always destroyed on the host.
const (
	// OrphanStop: stop it on the host (the default).
	OrphanStop = "Stop"
	// OrphanAdopt: mark it Running on that host, if the host has its
	// CPU and memory free; else stop it.
	OrphanAdopt = "Adopt"
)

// OrphanPolicies are the valid values of vm_orphan_policy, the default
// first.
func OrphanPolicies() []string { return []string{OrphanStop, OrphanAdopt} }

// DatabaseURL returns the effective database DSN: DatabaseDSN, or
// "sqlite:<DataDir>/mplane.db" when it is empty.
func (c Config) DatabaseURL() string {
	if c.DatabaseDSN != "" {
		return c.DatabaseDSN
	}
	return "sqlite:" + filepath.Join(c.DataDir, "mplane.db")
}

// RunDirectory returns the effective run directory: RunDir, or
// <DataDir>/run when it is empty.
func (c Config) RunDirectory() string {
	if c.RunDir != "" {
		return c.RunDir
	}
	return filepath.Join(c.DataDir, "run")
}

// AdvertiseAddr returns the host:port other nodes should use to reach this
// node's API. The host is AdvertiseHost if set; otherwise the APIListen host,
// unless that is a wildcard (empty, 0.0.0.0, ::), in which case it is the
// machine's host name (127.0.0.1 if that cannot be read). The port is always
// APIListen's; with port 0 the caller must use the listener's real address.
func (c Config) AdvertiseAddr() string {
	host, port, err := net.SplitHostPort(c.APIListen)
	if err != nil {
		// Validate rejects this; keep the method total anyway.
		host, port = c.APIListen, ""
	}
	switch {
	case c.AdvertiseHost != "":
		host = c.AdvertiseHost
	case isWildcardHost(host):
		host = "127.0.0.1"
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

func isWildcardHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// Logger builds the process logger writing to w, with the level and format
// from LogLevel and LogFormat. Unknown values fall back to info and text;
// Validate rejects them, so that only happens with an unvalidated Config.
func (c Config) Logger(w io.Writer) *slog.Logger {
	return c.NewLogger(w, new(slog.LevelVar))
}

// NewLogger is Logger with its level held in level, which it sets to
// LogLevel: changing level later (level.Set) changes what the logger
// writes, at once, for every logger derived from it (With, WithGroup).
func (c Config) NewLogger(w io.Writer, level *slog.LevelVar) *slog.Logger {
	l, err := ParseLevel(c.LogLevel)
	if err != nil {
		l = slog.LevelInfo
	}
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// ParseLevel reads a log_level value: debug, info, warn or error, in any
// case.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("must be one of debug, info, warn, error (got %q)", s)
}

// LogValue makes a Config safe to log whole, e.g.
// log.Info("starting", "config", cfg): secrets are redacted.
func (c Config) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		attrs = append(attrs, slog.String(f.key, f.display(&c)))
	}
	return slog.GroupValue(attrs...)
}
