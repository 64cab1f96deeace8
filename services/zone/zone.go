// Package zone is the zone resource: a group of clusters and networks.
package zone

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/resource"
)

// ZoneVO is a row of zones and, as JSON, the zone inventory.
type ZoneVO struct {
	UUID        string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name        string    `gorm:"column:name;size:255;not null" json:"name"`
	Description string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	State       string    `gorm:"column:state;size:32;not null" json:"state"`
	Type        string    `gorm:"column:type;size:32;not null" json:"type"`
	CreateDate  time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate  time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is zones.
func (ZoneVO) TableName() string { return "zones" }

// CreateParams are the API parameters of a zone.
type CreateParams struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// Validate checks the parameters' shape.
func (p *CreateParams) Validate() error {
	if strings.TrimSpace(p.Name) == "" {
		return errcode.New(errcode.InvalidArgument, "name is required")
	}
	if len(p.Name) > 255 {
		return errcode.New(errcode.InvalidArgument, "name must be at most 255 characters")
	}
	return nil
}

// Kind is the zone's resource kind.
var Kind = resource.Kind{Name: "zone", Model: &ZoneVO{}, Create: create, Delete: remove}

func create(ctx context.Context, db *gorm.DB, uuid string, raw json.RawMessage) (any, error) {
	var p CreateParams
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, errcode.Wrap(errcode.InvalidArgument, err, "zone params")
	}
	now := time.Now().UTC()
	return resource.Insert(ctx, db, uuid, &ZoneVO{UUID: uuid, Name: p.Name, Description: p.Description,
		State: "Enabled", Type: "zstack", CreateDate: now, LastOpDate: now})
}

func remove(ctx context.Context, db *gorm.DB, uuid string) error {
	for _, dep := range []struct{ table, what string }{{"clusters", "clusters"}, {"l3_networks", "L3 networks"}, {"hosts", "hosts"}} {
		if err := resource.RefuseIfUsed(ctx, db, "zone", uuid, dep.table, "zone_uuid", dep.what); err != nil {
			return err
		}
	}
	return db.WithContext(ctx).Delete(&ZoneVO{}, "uuid = ?", uuid).Error
}
