// Package zone is the zone resource: a group of clusters and networks.
package zone

import (
	"mplane/errcode"
	"mplane/services/resource"
)

// ZoneVO is a row of zones and, as JSON, the zone inventory.
type ZoneVO struct {
	resource.Base
	State string `gorm:"column:state;size:32;not null" json:"state"`
	Type  string `gorm:"column:type;size:32;not null" json:"type"`
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
	if err := resource.ValidateName(p.Name); err != nil {
		return err
	}
	if len(p.Description) > resource.MaxDescriptionLen {
		return errcode.New(errcode.InvalidArgument, "description must be at most %d characters", resource.MaxDescriptionLen)
	}
	return nil
}

// Kind is the zone's simple kind: POST/GET/DELETE /v1/zones, updateZone.
var Kind = resource.NewKind(resource.Spec[ZoneVO, CreateParams]{
	Name: "zone", Noun: "Zone", Path: "zones",
	New: func(b resource.Base, p CreateParams) ZoneVO {
		b.Name, b.Description = p.Name, p.Description
		return ZoneVO{Base: b, State: "Enabled", Type: "zstack"}
	},
	Dependents: []resource.Dependent{
		{Table: "clusters", Column: "zone_uuid", What: "clusters"},
		{Table: "l3_networks", Column: "zone_uuid", What: "L3 networks"},
		{Table: "hosts", Column: "zone_uuid", What: "hosts"},
	},
})
