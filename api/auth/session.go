package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/uid"
)

// Defaults of Options.
const (
	DefaultSessionTTL = 2 * time.Hour
	DefaultCacheTTL   = 5 * time.Second
	DefaultCacheSize  = 10000
)

// maxSessionIDLen bounds what Validate looks up; longer values are unknown.
const maxSessionIDLen = 64

// Session is a row of the sessions table and, in JSON, ZStack's session
// inventory.
type Session struct {
	UUID        string    `gorm:"primaryKey;size:32" json:"uuid"`
	AccountUUID string    `gorm:"size:32;not null;index" json:"accountUuid"`
	ExpiredDate time.Time `gorm:"not null;index" json:"expiredDate"`
	CreateDate  time.Time `gorm:"not null" json:"createDate"`
}

// TableName is the sessions table.
func (Session) TableName() string { return "sessions" }

// Options tunes a Service. The zero value is ready to use.
type Options struct {
	// SessionTTL is how long a session lives after login. Zero means
	// DefaultSessionTTL (2h).
	SessionTTL time.Duration
	// Now is the clock sessions are created and expired by. Nil means
	// time.Now. Nodes must have synchronised clocks (NTP): a session's
	// expiry written by one node is checked against another's clock.
	Now func() time.Time
	// BcryptCost is the cost of password hashes made by CreateAccount.
	// Zero means bcrypt.DefaultCost (10); tests use bcrypt.MinCost.
	BcryptCost int
	// CacheTTL is how long a validated session is trusted without reading
	// the database again. Zero means DefaultCacheTTL (5s); negative turns
	// the cache off. See the package doc for what may be stale.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached sessions. Zero means
	// DefaultCacheSize (10000).
	CacheSize int
	// Logger gets the login lockouts; nil discards them.
	Logger *slog.Logger
}

// Service logs accounts in and validates their sessions. It is safe for
// concurrent use.
type Service struct {
	db    *gorm.DB
	ttl   time.Duration
	now   func() time.Time
	cost  int
	cache *sessionCache

	// dummyHash is compared against when the account does not exist, so
	// that a wrong name costs the same time as a wrong password.
	dummyOnce sync.Once
	dummyHash string

	limit *loginLimiter
}

// New returns a Service on db (which must hold the tables of Migrate).
func New(db *gorm.DB, opts Options) *Service {
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BcryptCost == 0 {
		opts.BcryptCost = bcrypt.DefaultCost
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{db: db, ttl: opts.SessionTTL, now: opts.Now, cost: opts.BcryptCost, limit: newLoginLimiter(opts.Now, opts.Logger)}
	if opts.CacheTTL > 0 {
		s.cache = newSessionCache(opts.CacheTTL, opts.CacheSize)
	}
	return s
}

// clock is the service's time in UTC at the precision stored.
func (s *Service) clock() time.Time {
	return s.now().UTC().Truncate(time.Millisecond)
}

func wrongCredentials() *errcode.Error {
	return errcode.New(errcode.Unauthenticated, "wrong account name or password")
}

// Login checks an account's password (plain or SHA-512 digest) and opens a
// session. A wrong name and a wrong password give the same
// errcode.Unauthenticated error, in about the same time. Names are
// case-sensitive on every backend.
func (s *Service) Login(ctx context.Context, accountName, password string) (Session, error) {
	return s.login(ctx, "", accountName, password)
}

// login is Login for a client (its address; "" for none): a client locked
// out of the account after failed logins is refused before any check, and
// the password checks wait for a free slot (loginLimiter).
func (s *Service) login(ctx context.Context, client, accountName, password string) (Session, error) {
	if client != "" {
		if err := s.limit.allow(client, accountName); err != nil {
			return Session{}, err
		}
	}
	fail := func() (Session, error) {
		if client != "" {
			s.limit.failed(client, accountName)
		}
		return Session{}, wrongCredentials()
	}
	var a Account
	err := s.db.WithContext(ctx).Where("name = ?", accountName).Take(&a).Error
	if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && a.Name != accountName) {
		if _, cerr := s.limit.check(ctx, func() bool { return checkPassword(s.dummy(), password) }); cerr != nil {
			return Session{}, cerr
		}
		return fail()
	}
	if err != nil {
		return Session{}, fmt.Errorf("log in %q: %w", accountName, err)
	}
	ok, cerr := s.limit.check(ctx, func() bool { return checkPassword(a.PasswordHash, password) })
	if cerr != nil {
		return Session{}, cerr
	}
	if !ok {
		return fail()
	}
	if client != "" {
		s.limit.succeeded(client, accountName)
	}
	now := s.clock()
	sess := Session{UUID: uid.New(), AccountUUID: a.UUID, ExpiredDate: now.Add(s.ttl), CreateDate: now}
	row := sess
	row.UUID = StoredID(sess.UUID) // the table holds no live session id
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return Session{}, fmt.Errorf("log in %q: create session: %w", accountName, err)
	}
	return sess, nil
}

func (s *Service) dummy() string {
	s.dummyOnce.Do(func() {
		s.dummyHash, _ = hashPassword(uid.New(), s.cost)
	})
	return s.dummyHash
}

// Validate returns the identity of a session that exists and has not
// expired. An unknown, malformed or expired session, or one whose account
// is gone, is errcode.Unauthenticated.
func (s *Service) Validate(ctx context.Context, sessionUUID string) (Identity, error) {
	now := s.clock()
	if s.cache != nil {
		if id, ok := s.cache.get(sessionUUID, now); ok {
			return id, nil
		}
	}
	if sessionUUID == "" || len(sessionUUID) > maxSessionIDLen {
		return Identity{}, errcode.New(errcode.Unauthenticated, "unknown session")
	}
	var row struct {
		UUID        string
		AccountUUID string
		ExpiredDate time.Time
		Name        string
		Type        AccountType
	}
	err := s.db.WithContext(ctx).Model(&Session{}).
		Select("sessions.uuid, sessions.account_uuid, sessions.expired_date, accounts.name, accounts.type").
		Joins("JOIN accounts ON accounts.uuid = sessions.account_uuid").
		Where("sessions.uuid = ?", StoredID(sessionUUID)).
		Take(&row).Error
	// MariaDB's default collation matches "ABC" to "abc": compare exactly.
	if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && row.UUID != StoredID(sessionUUID)) {
		return Identity{}, errcode.New(errcode.Unauthenticated, "unknown session")
	}
	if err != nil {
		return Identity{}, fmt.Errorf("validate session: %w", err)
	}
	if !now.Before(row.ExpiredDate) {
		return Identity{}, errcode.New(errcode.Unauthenticated, "session expired at %s; log in again", row.ExpiredDate.UTC().Format(time.RFC3339))
	}
	id := Identity{AccountUUID: row.AccountUUID, AccountName: row.Name, Admin: row.Type == Admin, SessionUUID: sessionUUID}
	if s.cache != nil {
		s.cache.put(sessionUUID, id, row.ExpiredDate, now)
	}
	return id, nil
}

// StoredID is what the sessions table holds for the session id: the first
// 128 bits of its SHA-256, in hex. A copy of the table (a backup, a stolen
// database file) gives no live session: the id is 122 random bits, so the
// hash cannot be turned back into it.
func StoredID(sessionUUID string) string {
	sum := sha256.Sum256([]byte(sessionUUID))
	return hex.EncodeToString(sum[:16])
}

// Logout deletes a session. Logging out a session that does not exist
// (already logged out, expired and purged) is not an error.
func (s *Service) Logout(ctx context.Context, sessionUUID string) error {
	if s.cache != nil {
		s.cache.remove(sessionUUID)
	}
	if err := s.db.WithContext(ctx).Where("uuid = ?", StoredID(sessionUUID)).Delete(&Session{}).Error; err != nil {
		return fmt.Errorf("log out: %w", err)
	}
	return nil
}

// PurgeExpired deletes the sessions that expired before now and returns how
// many. Run it periodically; Validate refuses expired sessions either way.
func (s *Service) PurgeExpired(ctx context.Context) (int64, error) {
	res := s.db.WithContext(ctx).Where("expired_date <= ?", s.clock()).Delete(&Session{})
	if res.Error != nil {
		return 0, fmt.Errorf("purge expired sessions: %w", res.Error)
	}
	return res.RowsAffected, nil
}
