package agentclient

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"mplane/errcode"
)

// Options configures a Client. Only CallbackURL is required for async calls.
type Options struct {
	// CallbackURL is the URL agents post results to: this node's address
	// plus the path where CallbackHandler is mounted (e.g.
	// http://10.0.0.5:8080/asyncrest/callback). Required by Start and Call.
	// Each command carries it with the call's token added as a query
	// parameter (CallbackTokenParam); it must not have a fragment nor a
	// parameter of that name.
	CallbackURL string
	// HTTPClient sends commands. Default: a client with its own transport
	// (up to 64 idle connections per agent), closed by Close. Deadlines come
	// from the calls' contexts; a Timeout set here applies too.
	HTTPClient *http.Client
	// DefaultTimeout is the deadline of a call whose context has none.
	// Default 5 minutes.
	DefaultTimeout time.Duration
	// MaxResultBytes bounds a result or sync answer body. Default 64 MiB.
	MaxResultBytes int64
	// RememberFinished is how many finished task UUIDs are remembered to
	// tell a late or duplicate result from a forged one in logs and Stats.
	// Default 4096.
	RememberFinished int
	// Logger receives the client's logs. Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.DefaultTimeout <= 0 {
		o.DefaultTimeout = 5 * time.Minute
	}
	if o.MaxResultBytes <= 0 {
		o.MaxResultBytes = 64 << 20
	}
	if o.RememberFinished <= 0 {
		o.RememberFinished = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Client sends commands to agents and completes async calls when their
// results arrive at CallbackHandler. It is safe for concurrent use.
type Client struct {
	opts  Options
	log   *slog.Logger
	http  *http.Client
	ownTr *http.Transport

	mu       sync.Mutex
	pending  map[string]*call
	finished tombstones
	closed   bool

	stats counters
}

// New returns a Client.
func New(opts Options) *Client {
	opts = opts.withDefaults()
	c := &Client{
		opts:     opts,
		log:      opts.Logger,
		pending:  map[string]*call{},
		finished: newTombstones(opts.RememberFinished),
	}
	c.http = opts.HTTPClient
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		c.ownTr = tr
		c.http = &http.Client{Transport: tr}
	}
	return c
}

// Close fails every pending call with errcode.ShuttingDown (retryable) and
// makes later calls fail the same way. It is idempotent.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	ids := make([]string, 0, len(c.pending))
	for id := range c.pending {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		if cl := c.take(id, outcomeShutdown); cl != nil {
			c.stats.shutdown.Add(1)
			cl.finish(Result{TaskUUID: id, Err: errcode.New(errcode.ShuttingDown,
				"agent %s%s (task %s): client closed", cl.agentURL, cl.path, id)})
		}
	}
	if c.ownTr != nil {
		c.ownTr.CloseIdleConnections()
	}
}
