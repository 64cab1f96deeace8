package managementnode

import "time"

// Node states in management_nodes.
const (
	StateJoining = "joining"
	StateRunning = "running"
	StateLeaving = "leaving"
)

// NodeVO is a row of management_nodes: one per running process (each
// process start is a new UUID, an incarnation).
type NodeVO struct {
	UUID    string `gorm:"column:uuid;primaryKey;size:64"`
	Host    string `gorm:"column:host;size:255;not null"`
	APIPort int    `gorm:"column:api_port;not null"`
	State   string `gorm:"column:state;size:16;not null;index"`
	// HeartbeatAt is written from the database's clock, so nodes with
	// skewed clocks still agree on staleness.
	HeartbeatAt time.Time `gorm:"column:heartbeat_at;not null;index"`
	JoinedAt    time.Time `gorm:"column:joined_at;not null"`
}

// TableName is management_nodes.
func (NodeVO) TableName() string { return "management_nodes" }

// RingVO is the single row of management_ring. Its epoch is bumped in the
// same transaction as every membership change, so all nodes reading the
// same members also read the same epoch.
type RingVO struct {
	ID    int   `gorm:"column:id;primaryKey;autoIncrement:false"`
	Epoch int64 `gorm:"column:epoch;not null"`
}

// TableName is management_ring.
func (RingVO) TableName() string { return "management_ring" }
