package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"mplane/errcode"
)

// State is the state of an API job.
type State string

// The job states. A job is created Processing and finishes once, as
// Succeeded or Failed; it never changes after that.
const (
	Processing State = "processing"
	Succeeded  State = "succeeded"
	Failed     State = "failed"
)

// Headers of the job protocol.
const (
	// HeaderJobUUID, on a mutating request, names the job in the caller's
	// account: a retry with the same value and the same request gets the
	// same job; each account has its own names (ScopedUUID). On a webhook
	// POST it names the job as its caller did.
	HeaderJobUUID = "X-Job-UUID"
	// HeaderWebHook, on a mutating request, is the URL to POST the job's
	// outcome to when it finishes.
	HeaderWebHook = "X-Web-Hook"
	// HeaderJobSuccess, on a webhook POST, is "true" or "false".
	HeaderJobSuccess = "X-Job-Success"
	// HeaderRetryAfter on an error answer to GET /api-jobs/{uuid} says the
	// answer is about reading the job (the database was unavailable), not
	// the job's outcome: poll again after that many seconds.
	HeaderRetryAfter = "Retry-After"
)

// Job is a row of the api_jobs table: one asynchronous API call.
type Job struct {
	UUID    string `gorm:"primaryKey;size:64" json:"uuid"`
	APIName string `gorm:"size:128;not null" json:"apiName"`
	// ResourceUUID is the resource the call acts on (or creates).
	ResourceUUID string `gorm:"size:64;index" json:"resourceUuid,omitempty"`
	State        State  `gorm:"size:16;not null;index" json:"state"`
	// Result is the JSON answer of a succeeded job, e.g. {"inventory": {...}}.
	Result string `json:"result,omitempty"`
	// Error is the JSON *errcode.Error of a failed job.
	Error       string `json:"error,omitempty"`
	AccountUUID string `gorm:"size:64;index" json:"accountUuid,omitempty"`
	// ClientUUID is the caller's X-Job-UUID, if it gave one; the job's
	// UUID is then ScopedUUID(AccountUUID, ClientUUID).
	ClientUUID string `gorm:"size:64;not null;default:''" json:"-"`
	// Digest identifies the request (method, URL and body): a retry with
	// the same X-Job-UUID but another request is refused.
	Digest     string `gorm:"size:64;not null;default:''" json:"-"`
	WebhookURL string `gorm:"size:2048" json:"webhookUrl,omitempty"`
	// Op is the call (its key in the portal's registry) and Body the
	// request the portal built for it: with them any node can send the work
	// again (jobs.Store.Orphans). Empty for jobs made before they existed.
	Op   string `gorm:"size:200" json:"-"`
	Body string `gorm:"type:text" json:"-"`
	// RunNode is the node that started the work on the resource's owner;
	// empty while it has not started, so sending it again is safe.
	RunNode string `gorm:"size:64;not null;default:''" json:"-"`
	// RedrivenAt is when a node last sent the job again (Store.ClaimRedrive).
	RedrivenAt *time.Time `json:"-"`
	CreatedAt  time.Time  `json:"createDate"`
	UpdatedAt  time.Time  `json:"lastOpDate"`
}

// TableName is api_jobs.
func (Job) TableName() string { return "api_jobs" }

// Finished reports whether the job has succeeded or failed.
func (j Job) Finished() bool { return j.State == Succeeded || j.State == Failed }

// ResultJSON is the stored result of a succeeded job; {} when it has none.
func (j Job) ResultJSON() json.RawMessage {
	if j.Result == "" || j.Result == "null" {
		return json.RawMessage("{}")
	}
	return json.RawMessage(j.Result)
}

// Err is the error of a failed job, nil for any other state. A stored error
// that cannot be decoded comes back as an Internal error saying so.
func (j Job) Err() *errcode.Error {
	if j.State != Failed {
		return nil
	}
	var e errcode.Error
	if err := json.Unmarshal([]byte(j.Error), &e); err != nil || e.Code == "" {
		return errcode.New(errcode.Internal, "job %s failed with an unreadable error: %.200s", j.UUID, j.Error)
	}
	return &e
}

// ScopedUUID is the UUID of the job an account names clientUUID (its
// X-Job-UUID): 32 hex digits of a SHA-256 of both, so that each account has
// a namespace of its own: no account can take, or learn of, a name another
// uses.
func ScopedUUID(account, clientUUID string) string {
	sum := sha256.Sum256([]byte(account + "\x00" + clientUUID))
	return hex.EncodeToString(sum[:16])
}

// Name is how the job's caller names it: its X-Job-UUID, or the UUID.
func (j Job) Name() string {
	if j.ClientUUID != "" {
		return j.ClientUUID
	}
	return j.UUID
}
