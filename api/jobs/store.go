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
	// WebhookURL is the client's X-Web-Hook: empty, or an absolute http or
	// https URL.
	WebhookURL string
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
	if n.UUID == "" {
		n.UUID = uid.New()
	} else if !validJobUUID.MatchString(n.UUID) {
		return Job{}, false, errcode.New(errcode.InvalidArgument,
			"%s must be 1 to 64 letters, digits, '-' or '_', got %q", HeaderJobUUID, truncate(n.UUID, 100))
	}
	if err := checkWebhookURL(n.WebhookURL); err != nil {
		return Job{}, false, err
	}
	j := Job{
		UUID: n.UUID, APIName: n.APIName, ResourceUUID: n.ResourceUUID,
		AccountUUID: n.AccountUUID, WebhookURL: n.WebhookURL, State: Processing,
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
	if existing.APIName != n.APIName || existing.AccountUUID != n.AccountUUID {
		return Job{}, false, errcode.New(errcode.InvalidArgument,
			"%s %s is already used by another request; choose a new one", HeaderJobUUID, n.UUID)
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

// FailStale fails every job that has been processing for longer than age,
// measured from its creation by this node's clock, with a Timeout error:
// the node running it has most likely gone away. It returns how many. Like
// Fail it changes only jobs still processing, so it cannot overwrite an
// outcome stored meanwhile. Webhooks of these jobs are not delivered.
func (s *Store) FailStale(ctx context.Context, age time.Duration) (int64, error) {
	e := errcode.New(errcode.Timeout, "api job still processing after %s: the management node running it may have stopped", age)
	data, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("fail stale api jobs: encode error: %w", err)
	}
	cutoff := time.Now().UTC().Add(-age)
	res := s.db.WithContext(ctx).Model(&Job{}).
		Where("state = ? AND created_at < ?", Processing, cutoff).
		Updates(map[string]any{"state": Failed, "error": string(data)})
	if res.Error != nil {
		return 0, fmt.Errorf("fail stale api jobs: %w", res.Error)
	}
	if res.RowsAffected > 0 {
		s.signal()
	}
	return res.RowsAffected, nil
}

// finish applies a final state only if the job is still processing: the
// WHERE clause makes the transition atomic across goroutines and nodes.
func (s *Store) finish(ctx context.Context, jobUUID string, values map[string]any) (Job, error) {
	res := s.db.WithContext(ctx).Model(&Job{}).
		Where("uuid = ? AND state = ?", jobUUID, Processing).
		Updates(values)
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
