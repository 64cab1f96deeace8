package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
)

// Job states as the client reports them to Wait's progress function. A
// state the server reports in a 202 answer ("state" or "status" field) is
// passed on as the server spells it.
const (
	JobProcessing = "processing"
	JobSucceeded  = "succeeded"
	JobFailed     = "failed"
)

// Job is the handle of an asynchronous API job: the 202 answer of a
// mutating call, or one named by Client.Job.
type Job struct {
	// UUID is the job's id: the X-Job-UUID the client sent, or the last
	// path segment of Location.
	UUID string
	// Location is the URL to poll: GET answers 202 while the job runs, 200
	// with the result when it succeeded, 503 with its error when it failed.
	Location string
	// Started is when the call was sent (or the handle made); Wait's
	// progress reports the time since then.
	Started time.Time

	c  *Client
	op string

	mu     sync.Mutex
	done   bool
	result json.RawMessage // the inventory; nil if the result had none
	err    error
}

// Job returns a handle on an existing job, named by its location URL (as
// printed by a call that did not wait) or by its UUID.
func (c *Client) Job(locationOrUUID string) (*Job, error) {
	s := strings.TrimSpace(locationOrUUID)
	if s == "" {
		return nil, invalid("job", "a job location or UUID is required")
	}
	j := &Job{Started: time.Now(), c: c}
	if strings.Contains(s, "/") {
		loc, err := c.resolve(s)
		if err != nil {
			return nil, invalid("job", "job location %q: %v", s, err)
		}
		j.Location = loc
		j.UUID = path.Base(strings.TrimRight(pathOf(loc), "/"))
	} else {
		j.UUID = s
		j.Location = c.url(apiJobsPath, s)
	}
	j.op = "job " + j.UUID
	return j, nil
}

func pathOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Path
}

// resolve makes a location absolute: relative references are taken from
// the API's base URL.
func (c *Client) resolve(loc string) (string, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", err
	}
	return c.baseU.ResolveReference(u).String(), nil
}

// jobAnswer is the body of a 202 (running job) answer.
type jobAnswer struct {
	Location string `json:"location"`
	State    string `json:"state"`
	Status   string `json:"status"`
}

// resultAnswer is the body of a finished job: ZStack's API event with the
// resource's inventory (absent for a delete).
type resultAnswer struct {
	Inventory json.RawMessage `json:"inventory"`
}

// startJob sends a mutating request and returns its job. A synchronous
// 200/201 answer with a result is accepted too, as a job already done.
func (c *Client) startJob(ctx context.Context, r request) (*Job, error) {
	if r.jobUUID == "" {
		r.jobUUID = NewJobUUID()
	}
	started := time.Now()
	a, err := c.call(ctx, r, nil, http.StatusAccepted, http.StatusOK, http.StatusCreated)
	if err != nil {
		return nil, err
	}
	j := &Job{UUID: r.jobUUID, Started: started, c: c, op: r.op + " (job " + r.jobUUID + ")"}
	if a.status != http.StatusAccepted {
		var res resultAnswer
		if len(strings.TrimSpace(string(a.body))) > 0 {
			if err := decodeAnswer(a.body, &res); err != nil {
				return nil, badAnswer(r, a, err)
			}
		}
		j.done, j.result = true, nullToNil(res.Inventory)
		return j, nil
	}
	var ja jobAnswer
	if err := decodeAnswer(a.body, &ja); err != nil {
		return nil, badAnswer(r, a, err)
	}
	loc := ja.Location
	if loc == "" {
		loc = a.header.Get("Location")
	}
	if loc == "" {
		return nil, badAnswer(r, a, fmt.Errorf("202 without a job location"))
	}
	if j.Location, err = c.resolve(loc); err != nil {
		return nil, badAnswer(r, a, fmt.Errorf("job location %q: %w", loc, err))
	}
	if id := path.Base(strings.TrimRight(pathOf(j.Location), "/")); id != "" && id != "." && id != "/" && id != j.UUID {
		// The server chose another id (it ignores X-Job-UUID): the
		// location is the truth.
		j.UUID = id
		j.op = r.op + " (job " + id + ")"
	}
	return j, nil
}

func nullToNil(raw json.RawMessage) json.RawMessage {
	if s := strings.TrimSpace(string(raw)); s == "" || s == "null" {
		return nil
	}
	return raw
}

// Poll asks once how the job is. done is false while it runs (state is
// then the server's word for it, or JobProcessing); when it is done, err
// is the job's failure (a *StatusError, usually 503, unwrapping to the
// job's *errcode.Error) or nil and inventory is its result (nil when the
// result had none, as for a delete). A transport failure is returned with
// done false.
func (j *Job) Poll(ctx context.Context) (done bool, state string, inventory json.RawMessage, err error) {
	j.mu.Lock()
	if j.done {
		defer j.mu.Unlock()
		return true, finalState(j.err), j.result, j.err
	}
	j.mu.Unlock()

	r := request{op: j.op, method: http.MethodGet, url: j.Location}
	a, err := j.c.send(ctx, r)
	if err != nil {
		return false, "", nil, err
	}
	switch a.status {
	case http.StatusAccepted:
		var ja jobAnswer
		_ = json.Unmarshal(a.body, &ja) // the state is a courtesy
		state := JobProcessing
		if ja.State != "" {
			state = ja.State
		} else if ja.Status != "" {
			state = ja.Status
		}
		return false, state, nil, nil
	case http.StatusOK:
		var res resultAnswer
		if len(strings.TrimSpace(string(a.body))) > 0 {
			if derr := decodeAnswer(a.body, &res); derr != nil {
				// Not the job's failure: the job's outcome is unknown.
				return false, "", nil, badAnswer(r, a, derr)
			}
		}
		j.finish(nullToNil(res.Inventory), nil)
	default:
		se := errorFromAnswer(r, a)
		if a.header.Get("Retry-After") != "" {
			// The server could not read the job now (its database was
			// unavailable): not the job's outcome.
			return false, "", nil, &pollLater{se}
		}
		if a.status != http.StatusServiceUnavailable || se.Err == nil {
			// Not the contract's failed job (a 401 for an expired
			// session, a 404 for an unknown job, a proxy's page):
			// report it, but the job's outcome is still unknown.
			return false, "", nil, se
		}
		j.finish(nil, se)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return true, finalState(j.err), j.result, j.err
}

func (j *Job) finish(result json.RawMessage, err error) {
	j.mu.Lock()
	j.done, j.result, j.err = true, result, err
	j.mu.Unlock()
}

func finalState(err error) string {
	if err != nil {
		return JobFailed
	}
	return JobSucceeded
}

// Wait polls the job until it is done and returns its inventory (nil when
// the result had none), or the job's failure as a *StatusError. progress,
// if not nil, is called after every poll with the time since the job
// started and its state (JobSucceeded or JobFailed last). Polls back off
// from the client's minimum interval doubling to its maximum. When ctx
// ends first, Wait returns ctx's error; the job goes on on the server and
// can be waited for again.
func (j *Job) Wait(ctx context.Context, progress func(elapsed time.Duration, state string)) (json.RawMessage, error) {
	interval := j.c.opts.pollMin
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if !j.Done() {
			if timer == nil {
				timer = time.NewTimer(interval)
			} else {
				timer.Reset(interval)
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("wait for %s: %w", j.op, ctx.Err())
			case <-timer.C:
			}
			interval = min(2*interval, j.c.opts.pollMax)
		}
		done, state, inv, err := j.Poll(ctx)
		var later *pollLater
		if !done && errors.As(err, &later) {
			continue // the server asked to be polled again
		}
		if !done && err != nil {
			return nil, err // already says which job and what failed
		}
		if progress != nil {
			progress(time.Since(j.Started), state)
		}
		if done {
			return inv, err
		}
	}
}

// pollLater is a poll's answer that says nothing of the job (a 503 with
// Retry-After: the server could not read it now); Wait polls again.
type pollLater struct{ *StatusError }

func (p *pollLater) Unwrap() error { return p.StatusError }

// Done reports whether the job's outcome is known to the handle.
func (j *Job) Done() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done
}
