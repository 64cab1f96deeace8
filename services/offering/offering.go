// Package offering is the instance offering resource: the CPU and memory
// size of a VM.
package offering

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/resource"
)

// Limits of an offering.
const (
	MaxCPUNum     = 1024
	MinMemorySize = 16 << 20 // 16 MiB
)

// InstanceOfferingVO is a row of instance_offerings and, as JSON, the
// instance offering inventory. MemorySize is in bytes.
type InstanceOfferingVO struct {
	UUID        string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Name        string    `gorm:"column:name;size:255;not null" json:"name"`
	Description string    `gorm:"column:description;size:2048" json:"description,omitempty"`
	CPUNum      int       `gorm:"column:cpu_num;not null" json:"cpuNum"`
	CPUSpeed    int64     `gorm:"column:cpu_speed;not null" json:"cpuSpeed"`
	MemorySize  int64     `gorm:"column:memory_size;not null" json:"memorySize"`
	State       string    `gorm:"column:state;size:32;not null" json:"state"`
	Type        string    `gorm:"column:type;size:32;not null" json:"type"`
	CreateDate  time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate  time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is instance_offerings.
func (InstanceOfferingVO) TableName() string { return "instance_offerings" }

// CreateParams are the API parameters of an offering.
type CreateParams struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	CPUNum      int    `json:"cpuNum"`
	CPUSpeed    int64  `json:"cpuSpeed,omitempty"`
	MemorySize  int64  `json:"memorySize"`
}

// Validate checks the parameters.
func (p *CreateParams) Validate() error {
	var problems []string
	if strings.TrimSpace(p.Name) == "" {
		problems = append(problems, "name is required")
	}
	if p.CPUNum < 1 || p.CPUNum > MaxCPUNum {
		problems = append(problems, "cpuNum must be between 1 and 1024")
	}
	if p.MemorySize < MinMemorySize {
		problems = append(problems, "memorySize must be at least 16777216 bytes (16 MiB)")
	}
	if p.CPUSpeed < 0 {
		problems = append(problems, "cpuSpeed must not be negative")
	}
	if len(problems) > 0 {
		return errcode.New(errcode.InvalidArgument, "%s", strings.Join(problems, "; "))
	}
	return nil
}

// Kind is the offering's resource kind.
var Kind = resource.Kind{Name: "instance-offering", Model: &InstanceOfferingVO{}, Create: create, Delete: remove}

func create(ctx context.Context, db *gorm.DB, uuid string, raw json.RawMessage) (any, error) {
	var p CreateParams
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, errcode.Wrap(errcode.InvalidArgument, err, "instance offering params")
	}
	now := time.Now().UTC()
	return resource.Insert(ctx, db, uuid, &InstanceOfferingVO{UUID: uuid, Name: p.Name, Description: p.Description,
		CPUNum: p.CPUNum, CPUSpeed: p.CPUSpeed, MemorySize: p.MemorySize, State: "Enabled", Type: "UserVm",
		CreateDate: now, LastOpDate: now})
}

func remove(ctx context.Context, db *gorm.DB, uuid string) error {
	return db.WithContext(ctx).Delete(&InstanceOfferingVO{}, "uuid = ?", uuid).Error
}
