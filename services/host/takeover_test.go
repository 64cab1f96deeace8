package host_test

import (
	"encoding/json"
	"testing"
	"time"

	"mplane/conf"
	"mplane/flow"
	"mplane/internal/testenv"
	"mplane/services/host"
	"mplane/uid"
)

// TestAbandonedAddIsRolledBack: a node dies in the middle of adding a host,
// after writing its row (Connecting) and before its agent answered. The
// host's new owner rolls the add back: no host is left Connecting, which
// no node would ever ping or connect.
func TestAbandonedAddIsRolledBack(t *testing.T) {
	st, ctx := startStack(t, func(c *conf.Config) { c.HeartbeatInterval = 100 * time.Millisecond })
	db := st.DB()
	now := time.Now().UTC()
	h := host.HostVO{UUID: uid.New(), Name: "half-added", ManagementIP: "192.0.2.7", AgentPort: 7070, ZoneUUID: st.Defaults["zone"],
		ClusterUUID: st.Defaults["cluster"], HypervisorType: host.HypervisorKVM, State: host.StateEnabled, Status: host.StatusConnecting,
		Secret: uid.New(), CreateDate: now, LastOpDate: now}
	if err := db.Create(&h).Error; err != nil {
		t.Fatal(err)
	}
	dead := uid.New()
	data, _ := json.Marshal(map[string]any{"host": h})
	rec := flow.Record{ID: uid.New(), Chain: "add-host", Owner: dead, Resource: h.UUID, State: flow.Running, Applied: 2, Total: 2,
		Step: "connect-agent", Data: data}
	recorder := flow.NewGormRecorder(db)
	if err := recorder.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	st.AddDeadNode(t, dead)
	testenv.Eventually(t, time.Minute, func() bool {
		r, err := recorder.Get(ctx, rec.ID)
		return err == nil && r.State == flow.RolledBack
	}, "the abandoned add is rolled back")
	var n int64
	if err := db.Model(&host.HostVO{}).Where("uuid = ?", h.UUID).Count(&n).Error; err != nil || n != 0 {
		t.Fatalf("the half-added host is still there (%d, %v)", n, err)
	}
}
