package servertest

import (
	"testing"
	"time"

	"mplane/managementnode"
)

// AddDeadNode writes the membership row a management node uuid that died
// an hour ago leaves behind (its heartbeat that old). The stack's node
// evicts it at its next heartbeat, and the ring change makes the services
// take over the flows it left: call it after writing those records.
func (s *Stack) AddDeadNode(t testing.TB, uuid string) {
	t.Helper()
	old := time.Now().Add(-time.Hour).UTC()
	if err := s.DB().Create(&managementnode.NodeVO{UUID: uuid, Host: "192.0.2.1", APIPort: 8080, State: managementnode.StateRunning,
		HeartbeatAt: old, JoinedAt: old}).Error; err != nil {
		t.Fatalf("add the row of dead node %s: %v", uuid, err)
	}
}
