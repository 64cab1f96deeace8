package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"mplane/api/rest"
	"mplane/internal/netguard"
)

// Defaults of Webhook.
const (
	DefaultWebhookAttempts = 3
	DefaultWebhookTimeout  = 10 * time.Second
	DefaultWebhookBackoff  = time.Second
)

// Webhook POSTs finished jobs to their X-Web-Hook URL. The zero value is
// ready to use.
type Webhook struct {
	// Client sends the POSTs. Nil means a client that does not follow
	// redirects (a 3xx answer is a failed delivery).
	Client *http.Client
	// Attempts is the number of tries. Zero means 3.
	Attempts int
	// Timeout bounds each attempt. Zero means 10s.
	Timeout time.Duration
	// Backoff is the pause before the second attempt, doubled before each
	// next one. Zero means 1s.
	Backoff time.Duration
	// Policy is which addresses a webhook may reach, checked on the
	// address dialled (after DNS), when Client is nil. The zero Policy
	// allows every address; see netguard.Internal for what the node
	// refuses by default.
	Policy netguard.Policy
}

// client is a client that does not follow redirects (a 3xx answer is a
// failed delivery) and dials only what the policy allows.
func (wh Webhook) client(timeout time.Duration) *http.Client {
	return &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		// Each attempt's context bounds it (post).
		Transport: &http.Transport{DialContext: wh.Policy.DialContext(timeout), DisableKeepAlives: true},
	}
}

// Deliver POSTs j's outcome to j.WebhookURL, ZStack style: the body is the
// stored result of a succeeded job (e.g. {"inventory": {...}}) or
// {"error": {...}} for a failed one, with headers X-Job-UUID and
// X-Job-Success ("true"/"false"). A 2xx answer is a delivery. Connection
// failures, timeouts, 408, 429 and 5xx are retried up to Attempts times with
// doubling Backoff; any other answer is final. Deliver returns within about
// Attempts*Timeout plus the backoffs, or when ctx is done; the error names
// the URL without its query (which may hold a token). A job without a
// webhook is a no-op.
//
// Deliver blocks: call it from a goroutine the caller owns and waits for.
// The URL is the client's choice: Policy decides which addresses it may
// reach (the portal refuses the node's own and link-local ones unless
// webhook_allow names them); other parts of the management network are
// best fenced at the network level too.
func (wh Webhook) Deliver(ctx context.Context, j Job) error {
	if j.WebhookURL == "" {
		return nil
	}
	if !j.Finished() {
		return fmt.Errorf("deliver api job %s: job is still %s", j.UUID, j.State)
	}
	attempts, timeout, backoff := wh.Attempts, wh.Timeout, wh.Backoff
	if attempts <= 0 {
		attempts = DefaultWebhookAttempts
	}
	if timeout <= 0 {
		timeout = DefaultWebhookTimeout
	}
	if backoff <= 0 {
		backoff = DefaultWebhookBackoff
	}
	client := wh.Client
	if client == nil {
		client = wh.client(timeout)
	}

	body := []byte(j.ResultJSON())
	if j.State == Failed {
		var err error
		if body, err = json.Marshal(rest.ErrorBody{Error: j.Err()}); err != nil {
			return fmt.Errorf("deliver api job %s: encode error: %w", j.UUID, err)
		}
	}
	where := redact(j.WebhookURL)

	var last error
	for attempt := 1; attempt <= attempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("deliver api job %s to %s: %w (last failure: %v)", j.UUID, where, ctx.Err(), last)
			case <-t.C:
			}
			backoff *= 2
		}
		retry, err := wh.post(ctx, client, timeout, j, body)
		if err == nil {
			return nil
		}
		last = fmt.Errorf("attempt %d of %d: %w", attempt, attempts, err)
		if !retry {
			break
		}
	}
	return fmt.Errorf("deliver api job %s to %s: %w", j.UUID, where, last)
}

// post makes one attempt; retry says whether another may succeed.
func (wh Webhook) post(ctx context.Context, client *http.Client, timeout time.Duration, j Job, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", rest.ContentType)
	req.Header.Set(HeaderJobUUID, j.Name())
	req.Header.Set(HeaderJobSuccess, strconv.FormatBool(j.State == Succeeded))
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, whose query may hold a token
		}
		return true, err
	}
	// Drain a little so the connection can be reused; never read unbounded.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return false, nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return true, fmt.Errorf("answered %s", resp.Status)
	default:
		return false, fmt.Errorf("answered %s", resp.Status)
	}
}

// redact drops the user info and query of a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
