package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"mplane/errcode"
)

// AccountType is the type of an account. The values are ZStack's.
type AccountType string

// The account types.
const (
	// Admin accounts see and act on every tenant's resources.
	Admin AccountType = "SystemAdmin"
	// Normal accounts see and act on their own resources only.
	Normal AccountType = "Normal"
)

// The admin account created at first start. The UUID is ZStack's, so
// scripts that hard-code it keep working.
const (
	AdminName = "admin"
	AdminUUID = "36c27e8ff05c4780bf6d2fa65700f22e"
)

// MaxAccountNameLen is the longest account name.
const MaxAccountNameLen = 255

// Account is a row of the accounts table.
type Account struct {
	UUID string      `gorm:"primaryKey;size:32" json:"uuid"`
	Name string      `gorm:"size:255;not null;uniqueIndex" json:"name"`
	Type AccountType `gorm:"size:32;not null" json:"type"`
	// Description is free text about the account.
	Description string `gorm:"size:2048;not null;default:''" json:"description,omitempty"`
	// PasswordHash is bcrypt of the raw SHA-512 digest of the password; it
	// never leaves the process.
	PasswordHash string    `gorm:"size:128;not null" json:"-"`
	CreatedAt    time.Time `json:"createDate"`
	UpdatedAt    time.Time `json:"lastOpDate"`
}

// TableName is the accounts table.
func (Account) TableName() string { return "accounts" }

// Migrate creates or updates the accounts and sessions tables.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&Account{}, &Session{}); err != nil {
		return fmt.Errorf("migrate auth tables: %w", err)
	}
	return nil
}

// EnsureAdmin creates the admin account (AdminName, AdminUUID) if it does
// not exist. Its password is password, or, when password is empty, a
// generated one, which is returned so that the caller can show it once:
// it is stored only as a hash. generated is empty whenever this call did
// not create the account, in particular on every later start: the
// configured password is used at first start only, and changing it later
// does not change the stored one. Safe when several nodes start at once:
// one of them creates the account and the others see it exists. Run
// Migrate first.
func EnsureAdmin(ctx context.Context, db *gorm.DB, password string) (generated string, err error) {
	return ensureAdmin(ctx, db, password, bcrypt.DefaultCost)
}

// EnsureAdminCost is EnsureAdmin hashing at a bcrypt cost of its own
// (bcrypt.MinCost makes the test stacks start fast); 0 is the default
// cost.
func EnsureAdminCost(ctx context.Context, db *gorm.DB, password string, cost int) (generated string, err error) {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	return ensureAdmin(ctx, db, password, cost)
}

// ensureAdmin is EnsureAdmin with a bcrypt cost, so tests can go fast.
func ensureAdmin(ctx context.Context, db *gorm.DB, password string, cost int) (generated string, err error) {
	db = db.WithContext(ctx)
	var n int64
	if err := db.Model(&Account{}).Where("uuid = ?", AdminUUID).Count(&n).Error; err != nil {
		return "", fmt.Errorf("look up admin account: %w", err)
	}
	if n > 0 {
		return "", nil
	}
	if password == "" {
		generated = rand.Text()
		password = generated
	}
	hash, err := hashPassword(password, cost)
	if err != nil {
		return "", fmt.Errorf("hash admin password: %w", err)
	}
	err = db.Create(&Account{UUID: AdminUUID, Name: AdminName, Type: Admin, PasswordHash: hash}).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return "", nil // another node created it meanwhile
	}
	if err != nil {
		return "", fmt.Errorf("create admin account: %w", err)
	}
	return generated, nil
}

// CreateAccount creates an account with the given name, password (plain or
// digest, see the package doc) and type. A taken name is InvalidArgument.
func (s *Service) CreateAccount(ctx context.Context, name, password string, typ AccountType) (Account, error) {
	switch {
	case strings.TrimSpace(name) == "" || len(name) > MaxAccountNameLen:
		return Account{}, errcode.New(errcode.InvalidArgument, "account name must be 1 to %d characters, got %q", MaxAccountNameLen, name)
	case password == "":
		return Account{}, errcode.New(errcode.InvalidArgument, "password must not be empty")
	case typ != Admin && typ != Normal:
		return Account{}, errcode.New(errcode.InvalidArgument, "account type must be %s or %s, got %q", Admin, Normal, typ)
	}
	return s.createAccount(ctx, name, password, "", typ)
}

// newUUID returns a ZStack-style UUID: 32 lowercase hex digits.
