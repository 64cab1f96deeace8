// Package diskoffering is the disk offering resource: the size of a data
// volume, named once and used by many volume creates.
package diskoffering

import (
	"fmt"
	"mplane/api/route"

	"mplane/services/resource"
)

// Limits of a disk offering.
const (
	MinDiskSize = 1 << 20  // 1 MiB
	MaxDiskSize = 64 << 40 // 64 TiB
)

// DiskOfferingVO is a row of disk_offerings and, as JSON, ZStack's
// DiskOfferingInventory. DiskSize is in bytes.
type DiskOfferingVO struct {
	resource.Base
	DiskSize int64  `gorm:"column:disk_size;not null" json:"diskSize"`
	SortKey  int    `gorm:"column:sort_key;not null" json:"sortKey"`
	State    string `gorm:"column:state;size:32;not null" json:"state"`
	Type     string `gorm:"column:type;size:32;not null" json:"type"`
	// AllocatorStrategy names the primary storage allocation strategy of
	// the volumes made from it ("" is the default).
	AllocatorStrategy string `gorm:"column:allocator_strategy;size:64" json:"allocatorStrategy,omitempty"`
}

// TableName is disk_offerings.
func (DiskOfferingVO) TableName() string { return "disk_offerings" }

// CreateParams are the API parameters of a disk offering (ZStack's
// CreateDiskOffering).
type CreateParams struct {
	resource.Params
	DiskSize          int64  `json:"diskSize"`
	SortKey           int    `json:"sortKey,omitempty"`
	AllocatorStrategy string `json:"allocationStrategy,omitempty"`
}

// Validate checks the parameters.
func (p *CreateParams) Validate() error {
	problems := p.Problems()
	if p.DiskSize < MinDiskSize || p.DiskSize > MaxDiskSize {
		problems = append(problems, fmt.Sprintf("diskSize must be between %d bytes (1 MiB) and %d bytes (64 TiB), got %d", int64(MinDiskSize), int64(MaxDiskSize), p.DiskSize))
	}
	return resource.Invalid(problems)
}

// Kind is the disk offering's simple kind: POST/GET/DELETE
// /v1/disk-offerings, updateDiskOffering.
var Kind = resource.NewKind(resource.Spec[DiskOfferingVO, CreateParams]{
	Name: "disk-offering", Noun: "DiskOffering", Path: "disk-offerings", Access: route.Shared, What: "disk offering",
	New: func(b resource.Base, p CreateParams) DiskOfferingVO {
		return DiskOfferingVO{Base: b, DiskSize: p.DiskSize, SortKey: p.SortKey, AllocatorStrategy: p.AllocatorStrategy,
			State: "Enabled", Type: "DefaultDiskOfferingType"}
	},
})
