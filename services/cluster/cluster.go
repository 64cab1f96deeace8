// Package cluster is the cluster resource: hosts of one hypervisor type in
// a zone.
package cluster

import (
	"context"

	"gorm.io/gorm"

	"mplane/services/resource"
	"mplane/services/zone"
)

// ClusterVO is a row of clusters and, as JSON, the cluster inventory.
type ClusterVO struct {
	resource.Base
	ZoneUUID       string `gorm:"column:zone_uuid;size:32;not null;index" json:"zoneUuid"`
	HypervisorType string `gorm:"column:hypervisor_type;size:32;not null" json:"hypervisorType"`
	State          string `gorm:"column:state;size:32;not null" json:"state"`
	Type           string `gorm:"column:type;size:32;not null" json:"type"`
}

// TableName is clusters.
func (ClusterVO) TableName() string { return "clusters" }

// CreateParams are the API parameters of a cluster.
type CreateParams struct {
	resource.Params
	ZoneUUID       string `json:"zoneUuid"`
	HypervisorType string `json:"hypervisorType,omitempty"`
}

// Validate checks the parameters' shape; hypervisorType defaults to KVM.
func (p *CreateParams) Validate() error {
	problems := p.Problems()
	if p.ZoneUUID == "" {
		problems = append(problems, "zoneUuid is required")
	}
	if p.HypervisorType == "" {
		p.HypervisorType = "KVM"
	}
	if p.HypervisorType != "KVM" {
		problems = append(problems, "hypervisorType must be KVM, got \""+p.HypervisorType+"\"")
	}
	return resource.Invalid(problems)
}

// Kind is the cluster's simple kind: POST/GET/DELETE /v1/clusters,
// updateCluster.
var Kind = resource.NewKind(resource.Spec[ClusterVO, CreateParams]{
	Name: "cluster", Noun: "Cluster", Path: "clusters",
	Check: func(ctx context.Context, db *gorm.DB, p *CreateParams) error {
		return resource.MustExist(ctx, db, &zone.ZoneVO{}, "zoneUuid", p.ZoneUUID)
	},
	New: func(b resource.Base, p CreateParams) ClusterVO {
		return ClusterVO{Base: b, ZoneUUID: p.ZoneUUID, HypervisorType: p.HypervisorType, State: "Enabled", Type: "zstack"}
	},
	Dependents: []resource.Dependent{{Table: "hosts", Column: "cluster_uuid", What: "hosts"}},
})
