// Package offering is the instance offering resource: the CPU and memory
// size of a VM.
package offering

import (
	"fmt"

	"mplane/api/route"
	"mplane/services/resource"
)

// Limits of an offering.
const (
	MaxCPUNum     = 1024
	MinMemorySize = 16 << 20 // 16 MiB
	MaxMemorySize = 64 << 40 // 64 TiB
)

// InstanceOfferingVO is a row of instance_offerings and, as JSON, the
// instance offering inventory. MemorySize is in bytes.
type InstanceOfferingVO struct {
	resource.Base
	CPUNum     int    `gorm:"column:cpu_num;not null" json:"cpuNum"`
	CPUSpeed   int64  `gorm:"column:cpu_speed;not null" json:"cpuSpeed"`
	MemorySize int64  `gorm:"column:memory_size;not null" json:"memorySize"`
	State      string `gorm:"column:state;size:32;not null" json:"state"`
	Type       string `gorm:"column:type;size:32;not null" json:"type"`
}

// TableName is instance_offerings.
func (InstanceOfferingVO) TableName() string { return "instance_offerings" }

// CreateParams are the API parameters of an offering.
type CreateParams struct {
	resource.Params
	CPUNum     int   `json:"cpuNum"`
	CPUSpeed   int64 `json:"cpuSpeed,omitempty"`
	MemorySize int64 `json:"memorySize"`
}

// Validate checks the parameters.
func (p *CreateParams) Validate() error {
	problems := p.Problems()
	if p.CPUNum < 1 || p.CPUNum > MaxCPUNum {
		problems = append(problems, "cpuNum must be between 1 and 1024")
	}
	if p.MemorySize < MinMemorySize || p.MemorySize > MaxMemorySize {
		problems = append(problems, fmt.Sprintf("memorySize must be from %d bytes (16 MiB) to %d bytes (64 TiB), got %d", MinMemorySize, int64(MaxMemorySize), p.MemorySize))
	}
	if p.CPUSpeed < 0 {
		problems = append(problems, "cpuSpeed must not be negative")
	}
	return resource.Invalid(problems)
}

// Kind is the offering's simple kind: POST/GET/DELETE
// /v1/instance-offerings, updateInstanceOffering.
var Kind = resource.NewKind(resource.Spec[InstanceOfferingVO, CreateParams]{
	Name: "instance-offering", Noun: "InstanceOffering", Path: "instance-offerings", Access: route.Shared, What: "instance offering",
	New: func(b resource.Base, p CreateParams) InstanceOfferingVO {
		return InstanceOfferingVO{Base: b, CPUNum: p.CPUNum, CPUSpeed: p.CPUSpeed, MemorySize: p.MemorySize, State: "Enabled", Type: "UserVm"}
	},
})
