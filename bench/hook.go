package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mplane/api/client"
	"mplane/api/jobs"
	"mplane/errcode"
)

// result is how a job ended, as its webhook (or a poll) told.
type result struct {
	at        time.Time
	inventory json.RawMessage
	err       error
}

// waiting is one job whose result has not come yet.
type waiting struct {
	ch  chan result // buffered: complete never blocks
	job *client.Job // nil until the call that started it answered
}

// tracker receives the webhooks of the run's jobs (POST with X-Job-UUID
// and X-Job-Success, the body being the job's result or its error) and
// hands each result to whoever waits for that job. A job is registered
// before its call is sent: a fast job's webhook may come before the 202.
type tracker struct {
	mu      sync.Mutex
	pending map[string]*waiting

	// last is when the last result came (unix nanoseconds), for the stall
	// sweep; unknown counts webhooks of jobs nobody waits for (late
	// duplicates of a retried delivery).
	last    atomic.Int64
	unknown atomic.Int64
}

func newTracker() *tracker { return &tracker{pending: map[string]*waiting{}} }

func (t *tracker) register(jobUUID string) <-chan result {
	w := &waiting{ch: make(chan result, 1)}
	t.mu.Lock()
	t.pending[jobUUID] = w
	t.mu.Unlock()
	return w.ch
}

// attach records the job handle, for polling it if its webhook is late.
func (t *tracker) attach(jobUUID string, j *client.Job) {
	t.mu.Lock()
	if w := t.pending[jobUUID]; w != nil {
		w.job = j
	}
	t.mu.Unlock()
}

func (t *tracker) forget(jobUUID string) {
	t.mu.Lock()
	delete(t.pending, jobUUID)
	t.mu.Unlock()
}

// complete delivers r to the waiter of jobUUID; false if there is none
// (already completed, or never registered).
func (t *tracker) complete(jobUUID string, r result) bool {
	t.mu.Lock()
	w := t.pending[jobUUID]
	delete(t.pending, jobUUID)
	t.mu.Unlock()
	if w == nil {
		return false
	}
	t.last.Store(r.at.UnixNano())
	w.ch <- r
	return true
}

// outstanding returns the jobs registered, answered and not completed.
func (t *tracker) outstanding() map[string]*client.Job {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]*client.Job{}
	for id, w := range t.pending {
		if w.job != nil {
			out[id] = w.job
		}
	}
	return out
}

// maxWebhookBody bounds what the receiver reads of one webhook.
const maxWebhookBody = 4 << 20

func (t *tracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	id := r.Header.Get(jobs.HeaderJobUUID)
	body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody))
	if err != nil || id == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	// Answer 200 to anything well formed, known or not: a non-2xx would
	// make the node deliver again.
	w.WriteHeader(http.StatusOK)
	res := decodeWebhook(id, r.Header.Get(jobs.HeaderJobSuccess) == "true", body)
	res.at = at
	if !t.complete(id, res) {
		t.unknown.Add(1)
	}
}

// decodeWebhook reads a job's result ({"inventory": ...}) or its error
// ({"error": {...}}).
func decodeWebhook(jobUUID string, success bool, body []byte) result {
	if success {
		var ok struct {
			Inventory json.RawMessage `json:"inventory"`
		}
		if err := json.Unmarshal(body, &ok); err != nil {
			return result{err: fmt.Errorf("job %s: webhook body is not a job result: %v", jobUUID, err)}
		}
		if s := strings.TrimSpace(string(ok.Inventory)); s == "null" {
			ok.Inventory = nil
		}
		return result{inventory: ok.Inventory}
	}
	var failed struct {
		Error *errcode.Error `json:"error"`
	}
	if err := json.Unmarshal(body, &failed); err != nil || failed.Error == nil {
		return result{err: fmt.Errorf("job %s failed; webhook body: %.200s", jobUUID, body)}
	}
	return result{err: fmt.Errorf("job %s failed: %w", jobUUID, failed.Error)}
}

// sweep polls every outstanding job once (n at a time) and completes the
// finished ones: the safety net for a webhook that never came.
func (t *tracker) sweep(ctx context.Context, n int) (completed int) {
	jobsLeft := t.outstanding()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var done atomic.Int64
	for id, j := range jobsLeft {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			finished, _, inv, err := j.Poll(ctx)
			if !finished {
				return
			}
			if t.complete(id, result{at: time.Now(), inventory: inv, err: err}) {
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(done.Load())
}

// webhookHeader adds X-Web-Hook to every mutating request of the API
// client, so that each job's result is POSTed to the run's receiver.
type webhookHeader struct {
	base http.RoundTripper
	url  string
}

func (h webhookHeader) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		return h.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set(jobs.HeaderWebHook, h.url)
	return h.base.RoundTrip(r)
}
