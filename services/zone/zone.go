// Package zone is the zone resource: a group of clusters and networks.
package zone

import (
	"mplane/api/route"
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
	resource.Params
}

// Validate checks the parameters' shape.
func (p *CreateParams) Validate() error { return resource.Invalid(p.Problems()) }

// Kind is the zone's simple kind: POST/GET/DELETE /v1/zones, updateZone.
var Kind = resource.NewKind(resource.Spec[ZoneVO, CreateParams]{
	Name: "zone", Noun: "Zone", Path: "zones", Access: route.ReadOnly,
	New: func(b resource.Base, _ CreateParams) ZoneVO { return ZoneVO{Base: b, State: "Enabled", Type: "zstack"} },
	Dependents: []resource.Dependent{
		{Table: "clusters", Column: "zone_uuid", What: "clusters"},
		{Table: "l2_networks", Column: "zone_uuid", What: "L2 networks"},
		{Table: "l3_networks", Column: "zone_uuid", What: "L3 networks"},
		{Table: "hosts", Column: "zone_uuid", What: "hosts"},
	},
})
