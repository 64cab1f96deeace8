// Package cluster is the cluster resource: hosts of one hypervisor type in
// a zone.
package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/resource"
	"mplane/services/zone"
)

// ClusterVO is a row of clusters and, as JSON, the cluster inventory.
type ClusterVO struct {
	UUID           string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name           string    `gorm:"column:name;size:255;not null" json:"name"`
	Description    string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	ZoneUUID       string    `gorm:"column:zone_uuid;size:32;not null;index" json:"zoneUuid"`
	HypervisorType string    `gorm:"column:hypervisor_type;size:32;not null" json:"hypervisorType"`
	State          string    `gorm:"column:state;size:32;not null" json:"state"`
	Type           string    `gorm:"column:type;size:32;not null" json:"type"`
	CreateDate     time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate     time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is clusters.
func (ClusterVO) TableName() string { return "clusters" }

// CreateParams are the API parameters of a cluster.
type CreateParams struct {
	Name           string `json:"name"`
	Description    string `json:"description,omitempty"`
	ZoneUUID       string `json:"zoneUuid"`
	HypervisorType string `json:"hypervisorType,omitempty"`
}

// Validate checks the parameters' shape; hypervisorType defaults to KVM.
func (p *CreateParams) Validate() error {
	var problems []string
	if strings.TrimSpace(p.Name) == "" {
		problems = append(problems, "name is required")
	}
	if p.ZoneUUID == "" {
		problems = append(problems, "zoneUuid is required")
	}
	if p.HypervisorType == "" {
		p.HypervisorType = "KVM"
	}
	if p.HypervisorType != "KVM" {
		problems = append(problems, "hypervisorType must be KVM, got \""+p.HypervisorType+"\"")
	}
	if len(problems) > 0 {
		return errcode.New(errcode.InvalidArgument, "%s", strings.Join(problems, "; "))
	}
	return nil
}

// Check verifies the references: the zone must exist.
func (p *CreateParams) Check(ctx context.Context, db *gorm.DB) error {
	return resource.Exists(ctx, db, &zone.ZoneVO{}, "zoneUuid", p.ZoneUUID)
}

// Kind is the cluster's resource kind.
var Kind = resource.Kind{Name: "cluster", Model: &ClusterVO{}, Create: create, Delete: remove}

func create(ctx context.Context, db *gorm.DB, uuid string, raw json.RawMessage) (any, error) {
	var p CreateParams
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, errcode.Wrap(errcode.InvalidArgument, err, "cluster params")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	return resource.Insert(ctx, db, uuid, &ClusterVO{UUID: uuid, Name: p.Name, Description: p.Description, ZoneUUID: p.ZoneUUID,
		HypervisorType: p.HypervisorType, State: "Enabled", Type: "zstack", CreateDate: now, LastOpDate: now})
}

func remove(ctx context.Context, db *gorm.DB, uuid string) error {
	if err := resource.RefuseIfUsed(ctx, db, "cluster", uuid, "hosts", "cluster_uuid", "hosts"); err != nil {
		return err
	}
	return db.WithContext(ctx).Delete(&ClusterVO{}, "uuid = ?", uuid).Error
}
