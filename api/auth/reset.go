package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"mplane/errcode"
)

// ResetPassword sets the password of the account named name, directly in
// the database (the offline way out for an operator locked out of admin:
// `mplane admin reset-password`), and ends every session of the account.
// An empty password generates one, which is returned to be shown once.
// cost 0 is bcrypt's default. Other nodes trust a cached session for up to
// CacheTTL more.
func ResetPassword(ctx context.Context, db *gorm.DB, name, password string, cost int) (generated string, err error) {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if password == "" {
		generated = rand.Text()
		password = generated
	} else if err := checkPasswordValue(password); err != nil {
		return "", err
	}
	var a Account
	err = db.WithContext(ctx).Where("name = ?", name).Take(&a).Error
	if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && a.Name != name) {
		return "", errcode.New(errcode.ResourceNotFound, "no account named %q", name)
	}
	if err != nil {
		return "", fmt.Errorf("find account %q: %w", name, err)
	}
	hash, err := hashPassword(password, cost)
	if err != nil {
		return "", fmt.Errorf("hash the password: %w", err)
	}
	return generated, db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&Account{}).Where("uuid = ?", a.UUID).Update("password_hash", hash).Error; err != nil {
			return fmt.Errorf("set the password of %q: %w", name, err)
		}
		if err := tx.Where("account_uuid = ?", a.UUID).Delete(&Session{}).Error; err != nil {
			return fmt.Errorf("end the sessions of %q: %w", name, err)
		}
		return nil
	})
}

// AdminPasswordIs reports whether password is the admin account's (false
// if it cannot tell).
func AdminPasswordIs(ctx context.Context, db *gorm.DB, password string) bool {
	var a Account
	if err := db.WithContext(ctx).Where("uuid = ?", AdminUUID).Take(&a).Error; err != nil {
		return false
	}
	return checkPassword(a.PasswordHash, password)
}
