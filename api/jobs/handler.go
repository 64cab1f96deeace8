package jobs

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"mplane/api/auth"
	"mplane/api/rest"
	"mplane/errcode"
)

// Defaults of HandlerOptions.
const (
	DefaultMaxWait      = time.Minute
	DefaultPollInterval = 500 * time.Millisecond
)

// HandlerOptions tunes Handler. The zero value is ready to use.
type HandlerOptions struct {
	// BaseURL is the public scheme://host[:port] of the API, used in
	// locations. Empty derives it from each request (see rest.URL).
	BaseURL string
	// MaxWait is the longest ?wait accepted. Zero means DefaultMaxWait (1m).
	MaxWait time.Duration
	// PollInterval is how often a long poll re-reads a job that another
	// node may finish. Zero means DefaultPollInterval (500ms).
	PollInterval time.Duration
}

// Location is the URL of a job for a client reached by r:
// <base><prefix>/api-jobs/<uuid>, under the prefix r came by.
func Location(r *http.Request, baseURL, jobUUID string) string {
	return rest.URL(r, baseURL, "/api-jobs/"+jobUUID)
}

// LocationBody is the answer to an accepted asynchronous call.
type LocationBody struct {
	Location string `json:"location"`
}

// Accepted answers a mutating call that started (or, on a retry, found) job
// j: 202 {"location": "<base>/v1/api-jobs/<name>"}, the job as its caller
// names it (its X-Job-UUID, if it gave one: Job.Name).
func Accepted(w http.ResponseWriter, r *http.Request, baseURL string, j Job) {
	rest.WriteJSON(w, http.StatusAccepted, LocationBody{Location: Location(r, baseURL, j.Name())})
}

// FromRequest fills a NewJob from a mutating request: X-Job-UUID,
// X-Web-Hook and the caller's account from the auth middleware. Create
// validates the headers.
func FromRequest(r *http.Request, apiName, resourceUUID string) NewJob {
	id, _ := auth.FromContext(r.Context())
	return NewJob{
		ClientUUID:   r.Header.Get(HeaderJobUUID),
		APIName:      apiName,
		ResourceUUID: resourceUUID,
		AccountUUID:  id.AccountUUID,
		WebhookURL:   r.Header.Get(HeaderWebHook),
	}
}

// Handler serves GET /v1/api-jobs/{uuid}; mount it with
// rest.Handle(mux, "GET /api-jobs/{uuid}", store.Handler(opts)) behind
// auth's middleware. It answers, as ZStack does:
//
//	202 {"location": "<base>/v1/api-jobs/<uuid>"}  still processing
//	200 <the stored result>, e.g. {"inventory": {...}}  succeeded
//	503 {"error": {...}}                            failed (the job's error)
//	404 {"error": {...}}                            no such job, or another account's (admins see all)
//	401 {"error": {...}}                            no identity in the request
//
// ?wait=<duration> ("30s", or a number of seconds) holds the answer until
// the job finishes or the duration passes (at most MaxWait; 400 beyond).
func (s *Store) Handler(opts HandlerOptions) http.Handler {
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait, err := parseWait(r.URL.Query().Get("wait"), opts.MaxWait)
		if err != nil {
			rest.WriteError(w, err)
			return
		}
		j, err := s.lookup(r.Context(), r.PathValue("uuid"))
		if err != nil {
			writeReadError(w, err)
			return
		}
		jobUUID := j.UUID
		if !j.Finished() && wait > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), wait)
			waited, err := s.Wait(ctx, jobUUID, opts.PollInterval)
			waitOver := errors.Is(ctx.Err(), context.DeadlineExceeded)
			cancel()
			switch {
			case err == nil:
				j = waited
			case waitOver && r.Context().Err() == nil:
				// The wait ended during a read: answer with the job as read
				// before waiting, still processing.
			default:
				writeReadError(w, err)
				return
			}
		}
		switch j.State {
		case Succeeded:
			rest.WriteJSON(w, http.StatusOK, j.ResultJSON())
		case Failed:
			rest.WriteJSON(w, http.StatusServiceUnavailable, rest.ErrorBody{Error: j.Err()})
		default:
			rest.WriteJSON(w, http.StatusAccepted, LocationBody{Location: Location(r, opts.BaseURL, j.Name())})
		}
	})
}

// writeReadError answers a failure to read the job (not the job's own
// failure): one the caller may retry (the database unavailable) carries
// Retry-After, which tells a client that a 503 is about the poll, not a
// failed job, so it polls again.
func writeReadError(w http.ResponseWriter, err error) {
	if errcode.IsRetryable(errcode.From(err)) {
		w.Header().Set(HeaderRetryAfter, "1")
	}
	rest.WriteError(w, err)
}

// lookup finds the job the caller names name: the job of that UUID if it
// may see it, else the one it named so by X-Job-UUID.
func (s *Store) lookup(ctx context.Context, name string) (Job, error) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return Job{}, errcode.New(errcode.Unauthenticated, "no session: the api-jobs handler must run behind the auth middleware")
	}
	j, err := s.Get(ctx, name)
	if err == nil && authorize(ctx, j) == nil {
		return j, nil
	}
	if err != nil && !errcode.Has(err, errcode.ResourceNotFound) {
		return Job{}, err
	}
	if validJobUUID.MatchString(name) {
		if named, nerr := s.Get(ctx, ScopedUUID(id.AccountUUID, name)); nerr == nil {
			return named, nil
		} else if !errcode.Has(nerr, errcode.ResourceNotFound) {
			return Job{}, nerr
		}
	}
	return Job{}, errcode.New(errcode.ResourceNotFound, "api job %s not found", truncate(name, 100))
}

// authorize lets an admin see every job and an account its own; another
// account's job is not found, as if it did not exist (no existence
// oracle).
func authorize(ctx context.Context, j Job) error {
	id, ok := auth.FromContext(ctx)
	switch {
	case !ok:
		return errcode.New(errcode.Unauthenticated, "no session: the api-jobs handler must run behind the auth middleware")
	case id.Admin || id.AccountUUID == j.AccountUUID:
		return nil
	}
	return errcode.New(errcode.ResourceNotFound, "api job %s not found", truncate(j.UUID, 100))
}

func parseWait(v string, max time.Duration) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, errcode.New(errcode.InvalidArgument, "wait must be a duration like 30s (or a number of seconds) from 0s to %s, got %q", max, v)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > max {
		return 0, errcode.New(errcode.InvalidArgument, "wait must be a duration like 30s (or a number of seconds) from 0s to %s, got %q", max, v)
	}
	return d, nil
}
