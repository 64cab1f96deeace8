package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mplane/uid"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Defaults of the options.
const (
	DefaultRequestTimeout = time.Minute
	DefaultRetries        = 2
	DefaultRetryBackoff   = 200 * time.Millisecond
	DefaultPollMin        = 50 * time.Millisecond
	DefaultPollMax        = time.Second
	DefaultMaxAnswerBytes = 64 << 20
	DefaultUserAgent      = "mplane-client/1"
)

const (
	// HeaderJobUUID lets the client choose the id of the job a mutating
	// call starts; a retry with the same id gets the same job.
	HeaderJobUUID = "X-Job-UUID"

	authScheme      = "OAuth "
	contentTypeJSON = "application/json; charset=utf-8"
	maxBodySnippet  = 256
	maxRetryBackoff = 5 * time.Second
	apiVersionPath  = "/v1"
	apiJobsPath     = "api-jobs"
	idleConnPerHost = 32
)

// Option configures a Client in New.
type Option func(*options)

type options struct {
	httpClient     *http.Client
	session        string
	requestTimeout time.Duration
	retries        int
	retryBackoff   time.Duration
	pollMin        time.Duration
	pollMax        time.Duration
	maxAnswer      int64
	userAgent      string
}

// WithHTTPClient makes the client send every request with hc instead of a
// client of its own; WithRequestTimeout does not apply to it then.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.httpClient = hc } }

// WithSession sets the session sent in "Authorization: OAuth <session>"
// from the start (as SetSession does later).
func WithSession(session string) Option { return func(o *options) { o.session = session } }

// WithRequestTimeout bounds one HTTP exchange (connect, send, read the
// answer); default DefaultRequestTimeout. Waiting for a job is many
// exchanges and is bounded by its context only.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) { o.requestTimeout = d }
}

// WithRetries sets how many times a request is sent again after a
// transport failure (default DefaultRetries; 0 disables), waiting backoff
// before the first retry and twice as long before each next one (default
// DefaultRetryBackoff, at most 5 s).
func WithRetries(n int, backoff time.Duration) Option {
	return func(o *options) { o.retries, o.retryBackoff = n, backoff }
}

// WithPollInterval sets the backoff of Job.Wait: the first poll after
// first, then doubling up to limit (defaults DefaultPollMin,
// DefaultPollMax).
func WithPollInterval(first, limit time.Duration) Option {
	return func(o *options) { o.pollMin, o.pollMax = first, limit }
}

// WithMaxAnswerBytes bounds the body of one answer (default 64 MiB).
func WithMaxAnswerBytes(n int64) Option { return func(o *options) { o.maxAnswer = n } }

// WithUserAgent sets the User-Agent header (default DefaultUserAgent).
func WithUserAgent(ua string) Option { return func(o *options) { o.userAgent = ua } }

// Client talks to one mplane API endpoint. It is safe for concurrent use.
type Client struct {
	base  string // scheme://host[:port][/prefix]/v1, no trailing slash
	baseU *url.URL
	opts  options
	http  *http.Client
	ownTr *http.Transport

	mu      sync.RWMutex
	session string
}

// New returns a client of the API at baseURL: scheme://host[:port], with
// or without the API prefix ("http://127.0.0.1:8080",
// "http://127.0.0.1:8080/v1" and "http://127.0.0.1:8080/zstack/v1" all
// work; without a prefix /v1 is used).
func New(baseURL string, opts ...Option) (*Client, error) {
	o := options{
		requestTimeout: DefaultRequestTimeout,
		retries:        DefaultRetries,
		retryBackoff:   DefaultRetryBackoff,
		pollMin:        DefaultPollMin,
		pollMax:        DefaultPollMax,
		maxAnswer:      DefaultMaxAnswerBytes,
		userAgent:      DefaultUserAgent,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.retries < 0 {
		o.retries = 0
	}
	if o.retryBackoff <= 0 {
		o.retryBackoff = DefaultRetryBackoff
	}
	if o.pollMin <= 0 {
		o.pollMin = DefaultPollMin
	}
	if o.pollMax < o.pollMin {
		o.pollMax = o.pollMin
	}
	if o.maxAnswer <= 0 {
		o.maxAnswer = DefaultMaxAnswerBytes
	}
	base, u, err := normalizeBase(baseURL)
	if err != nil {
		return nil, err
	}
	c := &Client{base: base, baseU: u, opts: o, session: o.session}
	c.http = o.httpClient
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.MaxIdleConnsPerHost = idleConnPerHost
		c.ownTr = tr
		c.http = &http.Client{Transport: tr, Timeout: o.requestTimeout}
	}
	return c, nil
}

func normalizeBase(raw string) (string, *url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", nil, fmt.Errorf("api url %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", nil, fmt.Errorf("api url %q: want http://host[:port] or https://host[:port]", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", nil, fmt.Errorf("api url %q: must not have a query, fragment or user info", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if !strings.HasSuffix(u.Path, apiVersionPath) {
		u.Path += apiVersionPath
	}
	return u.String(), u, nil
}

// BaseURL is the API root every path is appended to, e.g.
// "http://127.0.0.1:8080/v1".
func (c *Client) BaseURL() string { return c.base }

// SetSession sets the session sent with every call but Login
// ("Authorization: OAuth <session>"); "" sends none.
func (c *Client) SetSession(session string) {
	c.mu.Lock()
	c.session = session
	c.mu.Unlock()
}

// Session is the session in use ("" for none).
func (c *Client) Session() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.session
}

// Close releases the idle connections of the client's own transport. The
// client still works afterwards (it opens new connections).
func (c *Client) Close() {
	if c.ownTr != nil {
		c.ownTr.CloseIdleConnections()
	}
}

// url builds base + "/" + the escaped segments of path.
func (c *Client) url(path ...string) string {
	var b strings.Builder
	b.WriteString(c.base)
	for _, p := range path {
		for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
			if seg == "" {
				continue
			}
			b.WriteByte('/')
			b.WriteString(url.PathEscape(seg))
		}
	}
	return b.String()
}

// request is one call of the contract, sent as many times as transport
// failures require.
type request struct {
	op      string // what the caller is doing, for errors: "create zones"
	method  string
	url     string
	body    []byte     // nil: no body
	jobUUID string     // sent as X-Job-UUID when not empty
	query   url.Values // CallOptions' query parameters, added to url by applyOpts
	tags    []string   // CallOptions' system tags, added to body by applyOpts
	noAuth  bool       // Login: send no session
}

// answer is what the server said.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// send performs r, retrying transport failures (connection refused or
// dropped, no or partial answer) with the same X-Job-UUID; an answer, any
// status, is returned as is.
func (c *Client) send(ctx context.Context, r request) (*answer, error) {
	backoff := c.opts.retryBackoff
	var lastErr error
	for attempt := 0; ; attempt++ {
		a, err := c.sendOnce(ctx, r)
		if err == nil {
			return a, nil
		}
		lastErr = err
		if ctx.Err() != nil || attempt >= c.opts.retries || !retryable(err) {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%s: %w (after %d attempts, last: %v)", r.op, ctx.Err(), attempt+1, lastErr)
		case <-t.C:
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
	return nil, fmt.Errorf("%s: %w", r.op, lastErr)
}

// errAnswerTooLarge is not retried: the same answer would come again.
var errAnswerTooLarge = errors.New("answer too large")

func retryable(err error) bool { return !errors.Is(err, errAnswerTooLarge) }

func (c *Client) sendOnce(ctx context.Context, r request) (*answer, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	hr, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", c.opts.userAgent)
	if r.body != nil {
		hr.Header.Set("Content-Type", contentTypeJSON)
	}
	if r.jobUUID != "" {
		hr.Header.Set(HeaderJobUUID, r.jobUUID)
	}
	// The session goes only to the API's own origin, never to another host
	// a job location might name.
	if s := c.Session(); s != "" && !r.noAuth && hr.URL.Scheme == c.baseU.Scheme && hr.URL.Host == c.baseU.Host {
		hr.Header.Set("Authorization", authScheme+s)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: HTTP %d: read answer: %w", r.method, r.url, resp.StatusCode, err)
	}
	if int64(len(data)) > c.opts.maxAnswer {
		return nil, fmt.Errorf("%s %s: HTTP %d: %w (more than %d bytes)", r.method, r.url, resp.StatusCode, errAnswerTooLarge, c.opts.maxAnswer)
	}
	return &answer{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// call sends r and decodes a successful answer (one of ok) into out, which
// may be nil. Any other status becomes a *StatusError.
func (c *Client) call(ctx context.Context, r request, out any, ok ...int) (*answer, error) {
	a, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	for _, s := range ok {
		if a.status == s {
			if out != nil {
				if err := decodeAnswer(a.body, out); err != nil {
					return a, badAnswer(r, a, err)
				}
			}
			return a, nil
		}
	}
	return a, errorFromAnswer(r, a)
}

// decodeAnswer decodes a JSON object; empty bodies decode to nothing.
func decodeAnswer(body []byte, out any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return errors.New("empty answer, want a JSON object")
	}
	if trimmed[0] != '{' {
		return errors.New("answer is not a JSON object")
	}
	return json.Unmarshal(trimmed, out)
}

func marshalBody(op string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", op, err)
	}
	return data, nil
}

// NewJobUUID returns a new job UUID (32 hex digits), the form X-Job-UUID
// must have.
func NewJobUUID() string { return uid.New() }
