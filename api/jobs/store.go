package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sync"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/uid"
)

// MaxWebhookURLLen is the longest X-Web-Hook URL accepted.
const MaxWebhookURLLen = 2048

var validJobUUID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Migrate creates or updates the api_jobs table.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&Job{}); err != nil {
		return fmt.Errorf("migrate api_jobs: %w", err)
	}
	return nil
}

// Store keeps API jobs in the api_jobs table. It is safe for concurrent
// use, and several nodes may share one table.
type Store struct {
	db *gorm.DB

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when this store finishes a job

	waiting waitCounter // long polls in progress, for tests
}

// NewStore returns a Store on db (which must hold the table of Migrate).
func NewStore(db *gorm.DB) *Store {
	return &Store{db: db, changed: make(chan struct{})}
}

// NewJob describes a job to create.
type NewJob struct {
	// UUID is the client's X-Job-UUID: 1 to 64 letters, digits, '-' or
	// '_'. Empty generates one (32 hex digits, a ZStack UUID).
	UUID string
	// APIName names the call, e.g. "vm.StartVmInstance". Required.
	APIName      string
	ResourceUUID string
	AccountUUID  string
	// ClientUUID is the caller's X-Job-UUID: the job's UUID is then
	// ScopedUUID(AccountUUID, ClientUUID), and UUID is ignored.
	ClientUUID string
	// Digest identifies the request (RequestDigest).
	Digest string
	// WebhookURL is the client's X-Web-Hook: empty, or an absolute http or
	// https URL.
	WebhookURL string
	// Op and Body are what sends the work (Job.Op, Job.Body).
	Op   string
	Body string
}

// Create records a new job in state Processing. It is idempotent by UUID:
// if a job with n.UUID exists, it is returned with created == false and
// nothing is written, however many callers race (the primary key decides;
// the losers read the winner's row). A retry must then go on with the
// returned job (its ResourceUUID, its state) rather than with n, and must
// not send the work again. A UUID reused by another account or for another
// API is refused with InvalidArgument. Invalid UUIDs and webhook URLs are
// InvalidArgument.
func (s *Store) Create(ctx context.Context, n NewJob) (job Job, created bool, err error) {
	if n.APIName == "" {
		return Job{}, false, errors.New("create api job: APIName is required")
	}
	switch {
	case n.ClientUUID != "":
		if !validJobUUID.MatchString(n.ClientUUID) {
			return Job{}, false, errcode.New(errcode.InvalidArgument,
				"%s must be 1 to 64 letters, digits, '-' or '_', got %q", HeaderJobUUID, truncate(n.ClientUUID, 100))
		}
		n.UUID = ScopedUUID(n.AccountUUID, n.ClientUUID)
	case n.UUID == "":
		n.UUID = uid.New()
	case !validJobUUID.MatchString(n.UUID):
		return Job{}, false, errcode.New(errcode.InvalidArgument,
			"job UUID must be 1 to 64 letters, digits, '-' or '_', got %q", truncate(n.UUID, 100))
	}
	if err := checkWebhookURL(n.WebhookURL); err != nil {
		return Job{}, false, err
	}
	j := Job{
		UUID: n.UUID, APIName: n.APIName, ResourceUUID: n.ResourceUUID,
		AccountUUID: n.AccountUUID, ClientUUID: n.ClientUUID, Digest: n.Digest, WebhookURL: n.WebhookURL, State: Processing,
		Op: n.Op, Body: n.Body,
	}
	err = s.db.WithContext(ctx).Create(&j).Error
	if err == nil {
		return j, true, nil
	}
	if !errors.Is(err, gorm.ErrDuplicatedKey) {
		return Job{}, false, fmt.Errorf("create api job %s: %w", n.UUID, err)
	}
	existing, err := s.Get(ctx, n.UUID)
	if err != nil {
		return Job{}, false, fmt.Errorf("create api job %s: read the existing job: %w", n.UUID, err)
	}
	if existing.APIName != n.APIName || existing.AccountUUID != n.AccountUUID ||
		(existing.Digest != "" && n.Digest != "" && existing.Digest != n.Digest) {
		return Job{}, false, errcode.New(errcode.InvalidArgument,
			"%s %s was used for another request; a retry must repeat the request exactly, and a new request needs a new %s",
			HeaderJobUUID, truncate(existing.Name(), 100), HeaderJobUUID)
	}
	return existing, false, nil
}

func checkWebhookURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(raw) > MaxWebhookURLLen {
		return errcode.New(errcode.InvalidArgument,
			"%s must be an absolute http or https URL of at most %d bytes, got %q", HeaderWebHook, MaxWebhookURLLen, truncate(raw, 100))
	}
	return nil
}

// Get returns the job; an unknown UUID is ResourceNotFound.
func (s *Store) Get(ctx context.Context, jobUUID string) (Job, error) {
	var j Job
	err := s.db.WithContext(ctx).Where("uuid = ?", jobUUID).Take(&j).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Job{}, errcode.New(errcode.ResourceNotFound, "api job %s not found", truncate(jobUUID, 100))
	}
	if err != nil {
		return Job{}, fmt.Errorf("get api job %s: %w", jobUUID, err)
	}
	return j, nil
}

// Succeed finishes a processing job with result, any value that encodes to
// JSON (usually map[string]any{"inventory": inv}, or a json.RawMessage);
// nil stores {}. It returns the finished job, for webhook delivery. A job
// that has already finished is not changed: the error is InvalidState
// (check with errcode.Has), and the caller, which may be a redelivered
// message, has nothing more to do. An unknown job is ResourceNotFound.
func (s *Store) Succeed(ctx context.Context, jobUUID string, result any) (Job, error) {
	data := []byte("{}")
	if result != nil {
		var err error
		if data, err = json.Marshal(result); err != nil {
			return Job{}, fmt.Errorf("succeed api job %s: encode result: %w", jobUUID, err)
		}
	}
	return s.finish(ctx, jobUUID, map[string]any{"state": Succeeded, "result": string(data)})
}

// Fail finishes a processing job with e (nil stores an Internal error). It
// returns as Succeed does.
func (s *Store) Fail(ctx context.Context, jobUUID string, e *errcode.Error) (Job, error) {
	if e == nil {
		e = errcode.New(errcode.Internal, "job failed without an error")
	}
	data, err := json.Marshal(e)
	if err != nil {
		return Job{}, fmt.Errorf("fail api job %s: encode error: %w", jobUUID, err)
	}
	return s.finish(ctx, jobUUID, map[string]any{"state": Failed, "error": string(data)})
}

// FailUnstarted fails a processing job whose work has not started on the
// resource's owner (RunNode empty) with e, marked retryable: nothing ran,
// so the same request may be sent again. A job whose work started is left
// to the node running it; the error is then InvalidState, as for a
// finished job.
func (s *Store) FailUnstarted(ctx context.Context, jobUUID string, e *errcode.Error) (Job, error) {
	if e == nil {
		e = errcode.New(errcode.Internal, "job failed without an error")
	}
	c := *e
	c.Retryable = true
	data, err := json.Marshal(&c)
	if err != nil {
		return Job{}, fmt.Errorf("fail api job %s: encode error: %w", jobUUID, err)
	}
	return s.finish(ctx, jobUUID, map[string]any{"state": Failed, "error": string(data)}, "run_node = ''")
}

// Reopen makes a job that failed with a retryable error (nothing of its
// work remains: it never started, or it was rolled back) processing again,
// not started, so that the same request sent again (same X-Job-UUID) runs
// it again instead of answering the old failure. ok is false when the job
// is not such a failure any more (another retry reopened it first).
func (s *Store) Reopen(ctx context.Context, j Job) (reopened Job, ok bool, err error) {
	if !Rerunnable(j) {
		return j, false, nil
	}
	res := s.db.WithContext(ctx).Model(&Job{}).
		Where("uuid = ? AND state = ? AND error = ?", j.UUID, Failed, j.Error).
		Updates(map[string]any{"state": Processing, "error": "", "run_node": "", "redriven_at": nil})
	if res.Error != nil {
		return j, false, fmt.Errorf("reopen api job %s: %w", j.UUID, res.Error)
	}
	if res.RowsAffected != 1 {
		return j, false, nil
	}
	reopened, err = s.Get(ctx, j.UUID)
	return reopened, err == nil, err
}

// Rerunnable reports whether j failed in a way that left nothing behind
// and may be run again: a retryable error other than OutcomeUnknown, on a
// job that recorded its call.
func Rerunnable(j Job) bool {
	if j.State != Failed || j.Op == "" {
		return false
	}
	e := j.Err()
	return e.Retryable && e.Code != errcode.OutcomeUnknown
}

// ClaimRun records that node starts the job's work, if the job is still
// processing and its RunNode is still from (empty: not started; another
// node: taken over from it). ok is false when another node was first or
// the job changed.
func (s *Store) ClaimRun(ctx context.Context, jobUUID, from, node string) (ok bool, err error) {
	res := s.db.WithContext(ctx).Model(&Job{}).
		Where("uuid = ? AND state = ? AND run_node = ?", jobUUID, Processing, from).
		Update("run_node", node)
	if res.Error != nil {
		return false, fmt.Errorf("claim the run of api job %s: %w", jobUUID, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// Orphans lists jobs still processing that no node may be driving: their
// work has not started although they are older than idle (the message that
// carried them may be lost), or the node that started it is not one of
// live. Jobs a node sent again less than idle ago are left out, as are
// jobs without an Op (made before jobs could be sent again) and jobs older
// than maxAge (the sweeper fails those).
func (s *Store) Orphans(ctx context.Context, live []string, idle, maxAge time.Duration, limit int) ([]Job, error) {
	now := time.Now().UTC()
	q := s.db.WithContext(ctx).Where("state = ? AND op <> '' AND created_at > ?", Processing, now.Add(-maxAge)).
		Where("redriven_at IS NULL OR redriven_at < ?", now.Add(-idle))
	if len(live) > 0 {
		q = q.Where("(run_node = '' AND created_at < ?) OR (run_node <> '' AND run_node NOT IN ?)", now.Add(-idle), live)
	} else {
		q = q.Where("run_node <> '' OR created_at < ?", now.Add(-idle))
	}
	var out []Job
	if err := q.Order("created_at").Limit(limit).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list orphaned api jobs: %w", err)
	}
	return out, nil
}

// ClaimRedrive records that this node sends job j again now, unless another
// node did since j was read; ok says whether this node won.
func (s *Store) ClaimRedrive(ctx context.Context, j Job) (ok bool, err error) {
	q := s.db.WithContext(ctx).Model(&Job{}).Where("uuid = ? AND state = ?", j.UUID, Processing)
	if j.RedrivenAt == nil {
		q = q.Where("redriven_at IS NULL")
	} else {
		q = q.Where("redriven_at = ?", *j.RedrivenAt)
	}
	res := q.Update("redriven_at", time.Now().UTC().Truncate(time.Millisecond))
	if res.Error != nil {
		return false, fmt.Errorf("claim api job %s to send it again: %w", j.UUID, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// PurgeFinished deletes up to limit jobs that finished before olderThan
// ago, and returns how many: their results are no longer read.
func (s *Store) PurgeFinished(ctx context.Context, olderThan time.Duration, limit int) (int64, error) {
	cutoff := time.Now().UTC().Add(-olderThan)
	var ids []string
	err := s.db.WithContext(ctx).Model(&Job{}).Where("state IN ? AND updated_at < ?", []State{Succeeded, Failed}, cutoff).
		Limit(limit).Pluck("uuid", &ids).Error
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	res := s.db.WithContext(ctx).Where("uuid IN ? AND state IN ?", ids, []State{Succeeded, Failed}).Delete(&Job{})
	if res.Error != nil {
		return 0, fmt.Errorf("purge finished api jobs: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// FailStale fails every job that has been processing for longer than age,
// measured from its creation by this node's clock: with OutcomeUnknown when
// its work had started (it may have run), else with a retryable Timeout.
// It returns how many. Like Fail it changes only jobs still processing, so
// it cannot overwrite an outcome stored meanwhile. Webhooks of these jobs
// are not delivered.
func (s *Store) FailStale(ctx context.Context, age time.Duration) (int64, error) {
	unknown := errcode.New(errcode.OutcomeUnknown, "api job still processing after %s: the management node running it may have stopped; read the resource to learn what was done", age)
	unstarted := errcode.New(errcode.Timeout, "api job still processing after %s and its work never started; send it again", age)
	unstarted.Retryable = true
	cutoff := time.Now().UTC().Add(-age)
	var total int64
	for _, c := range []struct {
		e     *errcode.Error
		where string
	}{{unknown, "run_node <> ''"}, {unstarted, "run_node = ''"}} {
		data, err := json.Marshal(c.e)
		if err != nil {
			return total, fmt.Errorf("fail stale api jobs: encode error: %w", err)
		}
		res := s.db.WithContext(ctx).Model(&Job{}).
			Where("state = ? AND created_at < ?", Processing, cutoff).Where(c.where).
			Updates(map[string]any{"state": Failed, "error": string(data)})
		if res.Error != nil {
			return total, fmt.Errorf("fail stale api jobs: %w", res.Error)
		}
		total += res.RowsAffected
	}
	if total > 0 {
		s.signal()
	}
	return total, nil
}

// finish applies a final state only if the job is still processing (and
// matches the extra conditions): the WHERE clause makes the transition
// atomic across goroutines and nodes.
func (s *Store) finish(ctx context.Context, jobUUID string, values map[string]any, conds ...string) (Job, error) {
	q := s.db.WithContext(ctx).Model(&Job{}).Where("uuid = ? AND state = ?", jobUUID, Processing)
	for _, c := range conds {
		q = q.Where(c)
	}
	res := q.Updates(values)
	if res.Error != nil {
		return Job{}, fmt.Errorf("finish api job %s: %w", jobUUID, res.Error)
	}
	j, err := s.Get(ctx, jobUUID)
	if err != nil {
		return Job{}, err
	}
	if res.RowsAffected == 0 {
		return j, errcode.New(errcode.InvalidState, "api job %s already %s", jobUUID, j.State)
	}
	s.signal()
	return j, nil
}

func (s *Store) signal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Store) changedChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Wait returns the job once it has finished, or, still processing, when ctx
// is done. A job finished through this Store wakes it at once; one
// finished by another node is seen within poll.
func (s *Store) Wait(ctx context.Context, jobUUID string, poll time.Duration) (Job, error) {
	s.waiting.add(1)
	defer s.waiting.add(-1)
	timer := time.NewTimer(poll)
	defer timer.Stop()
	var last Job
	for {
		changed := s.changedChan() // before the read, so no finish is missed
		j, err := s.Get(ctx, jobUUID)
		if err != nil && ctx.Err() != nil && last.UUID != "" {
			return last, nil // ctx ended during the read
		}
		if err != nil || j.Finished() {
			return j, err
		}
		last = j
		timer.Reset(poll)
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			return j, nil
		}
	}
}

type waitCounter struct {
	mu sync.Mutex
	n  int
}

func (c *waitCounter) add(d int) {
	c.mu.Lock()
	c.n += d
	c.mu.Unlock()
}

func (c *waitCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
