package resource

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
)

// Base holds the columns every resource has. Embed it in a model:
//
//	type ZoneVO struct {
//	    resource.Base
//	    State string `gorm:"column:state;size:32;not null" json:"state"`
//	}
//
// GORM and encoding/json flatten it, so the table and the inventory have
// uuid, name, description, createDate and lastOpDate as their own.
type Base struct {
	UUID        string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name        string    `gorm:"column:name;size:255;not null" json:"name"`
	Description string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	CreateDate  time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate  time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// BaseOf returns b: it makes every model that embeds Base a Row.
func (b *Base) BaseOf() *Base { return b }

// Row is a model that embeds Base.
type Row interface{ BaseOf() *Base }

// NewBase returns the Base of a new resource. Its times are whole
// milliseconds, what the database keeps, so a row read back equals the
// one written.
func NewBase(uuid, name, description string) Base {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return Base{UUID: uuid, Name: name, Description: description, CreateDate: now, LastOpDate: now}
}

// Insert creates row (whose primary key is uuid); if a row with that uuid
// exists already (a redelivered create) it loads and returns that one.
func Insert[T any](ctx context.Context, db *gorm.DB, uuid string, row *T) (*T, error) {
	err := db.WithContext(ctx).Create(row).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		var existing T
		if lerr := db.WithContext(ctx).First(&existing, "uuid = ?", uuid).Error; lerr == nil {
			return &existing, nil
		}
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "insert %T %s", row, uuid)
	}
	return row, nil
}

// Load reads the row of uuid; a missing one is ResourceNotFound naming
// what ("zone").
func Load[T any](ctx context.Context, db *gorm.DB, what, uuid string) (*T, error) {
	var row T
	err := db.WithContext(ctx).Where("uuid = ?", uuid).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errcode.New(errcode.ResourceNotFound, "%s %s not found", what, uuid)
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "load %s %s", what, uuid)
	}
	return &row, nil
}

// MustExist refuses a reference to a missing row: InvalidArgument naming
// the field ("zoneUuid zone-x does not exist"), the caller's mistake.
func MustExist(ctx context.Context, db *gorm.DB, model any, field, uuid string) error {
	var n int64
	if err := db.WithContext(ctx).Model(model).Where("uuid = ?", uuid).Count(&n).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up %s %s", field, uuid)
	}
	if n == 0 {
		return errcode.New(errcode.InvalidArgument, "%s %s does not exist", field, uuid)
	}
	return nil
}

// Dependent is a kind of row that refers to a resource and keeps it from
// being deleted: rows of Table whose Column holds the resource's UUID,
// called What in the refusal ("clusters").
type Dependent struct {
	Table, Column, What string
}

// RefuseIfUsed fails with InvalidState while any dependent row refers to
// uuid: "zone z1 still has 2 clusters; delete them first". A dependent
// table that does not exist (its service is not part of this build) has no
// rows.
func RefuseIfUsed(ctx context.Context, db *gorm.DB, what, uuid string, deps ...Dependent) error {
	for _, d := range deps {
		var n int64
		if err := db.WithContext(ctx).Table(d.Table).Where(d.Column+" = ?", uuid).Count(&n).Error; err != nil {
			if db.Migrator().HasTable(d.Table) {
				return errcode.Wrap(errcode.Internal, err, "count %s of %s %s", d.What, what, uuid)
			}
			continue
		}
		if n > 0 {
			return errcode.New(errcode.InvalidState, "%s %s still has %d %s; delete them first", what, uuid, n, d.What)
		}
	}
	return nil
}
