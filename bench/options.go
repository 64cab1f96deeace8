package bench

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
)

// The operations of a run, in the order they may run.
const (
	OpCreate  = "create"
	OpStop    = "stop"
	OpStart   = "start"
	OpDestroy = "destroy"
)

// AllOps is the default sequence.
var AllOps = []string{OpCreate, OpStop, OpStart, OpDestroy}

// How a run learns that a job is done.
const (
	WaitWebhook = "webhook"
	WaitPoll    = "poll"
)

// Defaults of Options.
const (
	DefaultVMs           = 100
	DefaultConcurrency   = 16
	DefaultAccount       = "admin"
	DefaultWebhookListen = "127.0.0.1:0"
	DefaultTimeout       = time.Hour
	// DefaultLocalStorageURL is the url of the bench's LocalStorage, as
	// `mplane run` serves its own (server.DefaultLocalStorageURL).
	DefaultLocalStorageURL = "/mplane/local"
	// maxVMs bounds --vms: the bench keeps a record per VM and the /16 the
	// setup creates has 65,533 addresses.
	maxVMs = 60000
)

// Options configures Run. Zero fields take the defaults above.
type Options struct {
	// APIURLs are the API base URLs; calls are spread round-robin.
	APIURLs []string
	// Account and Password log in (one session per URL).
	Account, Password string
	// VMs is how many VMs each phase handles; Concurrency how many API
	// calls are in flight (each with its job, unless SubmitAll).
	VMs, Concurrency int
	// AgentURLs are the simulated agents: their arrival logs give the
	// API-call-to-agent latency, their stats the overlap check, and Setup
	// adds them as hosts.
	AgentURLs []string
	// NodeURLs are the management nodes whose /admin endpoints are read;
	// empty means APIURLs.
	NodeURLs []string
	// Ops is the sequence of phases; create must come first.
	Ops []string
	// Setup creates the bench cloud when it does not exist (no instance
	// offering named "bench").
	Setup bool
	// LocalStorageURL is the url of the LocalStorage primary storage Setup
	// creates: every agent of AgentURLs must serve its own directory at
	// it (mplane agent kvm --storage URL=DIR), where the VMs' root volumes
	// go.
	LocalStorageURL string
	// SubmitAll starts every job of a phase (Concurrency calls at a time)
	// before waiting for any.
	SubmitAll bool
	// Wait is WaitWebhook (default) or WaitPoll.
	Wait string
	// WebhookListen is where the webhook receiver listens; the nodes must
	// reach it.
	WebhookListen string
	// ProfileSeconds > 0 saves a CPU profile of that many seconds of each
	// node, taken from the start of the create phase, into ProfileDir.
	ProfileSeconds int
	ProfileDir     string
	// Label names the run in the report and the profiles' file names.
	Label string
	// Timeout bounds the whole run.
	Timeout time.Duration
	// Progress receives progress lines (nil: none); ProgressTTY redraws
	// one line instead.
	Progress    io.Writer
	ProgressTTY bool
}

func (o Options) withDefaults() Options {
	if o.Account == "" {
		o.Account = DefaultAccount
	}
	if o.VMs == 0 {
		o.VMs = DefaultVMs
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if len(o.NodeURLs) == 0 {
		o.NodeURLs = o.APIURLs
	}
	if len(o.Ops) == 0 {
		o.Ops = AllOps
	}
	if o.Wait == "" {
		o.Wait = WaitWebhook
	}
	if o.WebhookListen == "" {
		o.WebhookListen = DefaultWebhookListen
	}
	if o.ProfileDir == "" {
		o.ProfileDir = "."
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.LocalStorageURL == "" {
		o.LocalStorageURL = DefaultLocalStorageURL
	}
	return o
}

// Validate reports every problem of the options (after defaults), each
// naming the flag of `mplane bench` that sets it.
func (o Options) Validate() error {
	nodes := o.NodeURLs // checked only when given: the default is APIURLs
	o = o.withDefaults()
	var errs []error
	if len(o.APIURLs) == 0 {
		errs = append(errs, errors.New("--url: at least one API URL is required, e.g. --url http://127.0.0.1:8080"))
	}
	errs = append(errs, checkURLs("--url", o.APIURLs)...)
	errs = append(errs, checkURLs("--nodes", nodes)...)
	errs = append(errs, checkURLs("--agents", o.AgentURLs)...)
	if o.Password == "" {
		errs = append(errs, errors.New("no password: set --password or MPLANE_BENCH_PASSWORD (mplane run prints the admin password at its first start)"))
	}
	if o.VMs < 1 || o.VMs > maxVMs {
		errs = append(errs, fmt.Errorf("--vms must be between 1 and %d, got %d", maxVMs, o.VMs))
	}
	if o.Concurrency < 1 || o.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("--concurrency must be between 1 and 4096, got %d", o.Concurrency))
	}
	if err := checkOps(o.Ops); err != nil {
		errs = append(errs, err)
	}
	if o.Wait != WaitWebhook && o.Wait != WaitPoll {
		errs = append(errs, fmt.Errorf("--wait must be %s or %s, got %q", WaitWebhook, WaitPoll, o.Wait))
	}
	if o.ProfileSeconds < 0 || o.ProfileSeconds > 600 {
		errs = append(errs, fmt.Errorf("--profile-seconds must be between 0 and 600, got %d", o.ProfileSeconds))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--timeout must not be negative, got %v", o.Timeout))
	}
	if u := o.LocalStorageURL; !strings.HasPrefix(u, "/") || path.Clean(u) != u || u == "/" {
		errs = append(errs, fmt.Errorf("--local-storage-url must be an absolute directory path such as %s, got %q", DefaultLocalStorageURL, u))
	}
	return errors.Join(errs...)
}

// checkURLs wants http(s)://host[:port] with at most a path.
func checkURLs(flag string, urls []string) []error {
	var errs []error
	for _, raw := range urls {
		u, err := url.Parse(raw)
		switch {
		case err != nil, (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs = append(errs, fmt.Errorf("%s %q: want http://host:port (a base URL with scheme and host)", flag, raw))
		case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			errs = append(errs, fmt.Errorf("%s %q: must not have a query, fragment or user info", flag, raw))
		}
	}
	return errs
}

func checkOps(ops []string) error {
	seen := map[string]bool{}
	for _, op := range ops {
		if !slices.Contains(AllOps, op) {
			return fmt.Errorf("--ops: unknown operation %q; use a comma list of %s", op, strings.Join(AllOps, ", "))
		}
		if seen[op] {
			return fmt.Errorf("--ops: %s is listed twice", op)
		}
		seen[op] = true
	}
	if len(ops) == 0 || ops[0] != OpCreate {
		return fmt.Errorf("--ops must start with create (the other operations act on the VMs it creates), got %q", strings.Join(ops, ","))
	}
	return nil
}

// SplitList splits a comma list, trimming spaces and dropping empty items
// and trailing slashes (for URLs).
func SplitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimRight(strings.TrimSpace(item), "/"); item != "" {
			out = append(out, item)
		}
	}
	return out
}
