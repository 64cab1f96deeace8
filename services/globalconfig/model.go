package globalconfig

import (
	"crypto/md5"
	"encoding/hex"
	"time"
)

// Types of configurations, ZStack's names: how a value is written.
const (
	TypeInteger  = "Integer"
	TypeDuration = "Duration" // a Go duration: "2s", "1m30s"
	TypeString   = "String"
)

// GlobalConfigVO is a row of global_configs and, as JSON, ZStack's
// GlobalConfigInventory, plus its type and version (0: never changed).
// (category, name) is unique; the primary key is UUID, derived from them,
// since a query schema has one key field.
type GlobalConfigVO struct {
	// UUID is mplane's: ConfigUUID(category, name), the id its owner and
	// its chain are chosen by, and that GET
	// /v1/global-configurations/{uuid} takes.
	UUID         string    `gorm:"column:uuid;primaryKey;size:32" json:"uuid"`
	Category     string    `gorm:"column:category;size:64;not null;uniqueIndex:idx_global_configs_category_name" json:"category"`
	Name         string    `gorm:"column:name;size:128;not null;uniqueIndex:idx_global_configs_category_name" json:"name"`
	Description  string    `gorm:"column:description;size:2048" json:"description"`
	DefaultValue string    `gorm:"column:default_value;size:1024;not null" json:"defaultValue"`
	Value        string    `gorm:"column:value;size:1024;not null" json:"value"`
	Type         string    `gorm:"column:type;size:32;not null" json:"type"`
	Version      int64     `gorm:"column:version;not null" json:"version"`
	CreateDate   time.Time `gorm:"column:create_date;not null" json:"createDate"`
	LastOpDate   time.Time `gorm:"column:last_op_date;not null" json:"lastOpDate"`
}

// TableName is global_configs.
func (GlobalConfigVO) TableName() string { return "global_configs" }

// Definition is one global configuration this build knows. Its default
// value is the built-in default of the setting Key (conf.Default).
type Definition struct {
	Category    string // "host"
	Name        string // "ping.interval"
	Description string
	Type        string // TypeInteger, TypeDuration, TypeString
	// Key is the node setting (the conf key) the configuration changes:
	// "host_ping_interval".
	Key string
}

// ID is "<category>/<name>".
func (d Definition) ID() string { return d.Category + "/" + d.Name }

// ConfigUUID is the configuration's id: the hex MD5 of "category/name".
// Deterministic, so every node routes the updates of one configuration to
// one owner.
func ConfigUUID(category, name string) string {
	sum := md5.Sum([]byte(category + "/" + name))
	return hex.EncodeToString(sum[:])
}
