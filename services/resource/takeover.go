package resource

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"

	"mplane/flow"
	"mplane/managementnode"
)

// Takeover rolls back the recorded flows that departed nodes left: a
// service runs it after every ring change and every TakeoverInterval. A
// record qualifies when its chain is one of Flows', its resource is now
// this node's and its owner is no longer a member, has released it, or is
// this node without the run in progress (its last writes failed, e.g. the
// database was down longer than the rollback's retries); it is claimed
// first (one conditional update), so exactly one node rolls it back, in the
// resource's chain (InChain). A record this node left behind on a resource
// that is now another node's is released to that node.
type Takeover struct {
	DB       *gorm.DB
	Node     *managementnode.Node
	Recorder *flow.GormRecorder
	Flows    *flow.Registry
	Log      *slog.Logger
	// What names the resources in logs ("VM", "volume").
	What string
	// InChain runs fn in the resource's chain.
	InChain func(ctx context.Context, uuid, op string, fn func(ctx context.Context) error) error
	// After, if set, runs after a record was rolled back (still in the
	// chain), for what the rollbacks cannot know (a VM's state).
	After func(ctx context.Context, rec flow.Record) error
}

// Watch runs the takeover in the background until ctx ends: once now,
// and after every ring change (changes that come while a pass runs make
// one more pass). The goroutine is counted in wg.
func (t Takeover) Watch(ctx context.Context, wg *sync.WaitGroup) {
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
				t.Run(ctx)
			}
		}
	}()
	t.Node.OnRingChange(func(context.Context, *managementnode.Ring) { poke() })
	poke()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(TakeoverInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				poke()
			}
		}
	}()
}

// LeftBehindAfter is how long a record of this node's that no run in
// progress here holds must have gone unwritten before the takeover takes it
// up (a margin: the run's own rollback tries its writes again for two
// minutes, so such records come from longer outages).
var LeftBehindAfter = 20 * time.Second

// TakeoverInterval is how often a takeover looks for records left behind
// between ring changes.
var TakeoverInterval = 10 * time.Second

// Run rolls back every qualifying record; failures are logged.
func (t Takeover) Run(ctx context.Context) {
	recs, err := t.Recorder.Unfinished(ctx)
	if err != nil {
		t.Log.Warn("list unfinished flows", "what", t.What, "err", err)
		return
	}
	if len(recs) == 0 {
		return
	}
	var rows []managementnode.NodeVO
	if err := t.DB.WithContext(ctx).Find(&rows).Error; err != nil {
		t.Log.Warn("list management nodes", "err", err)
		return
	}
	alive := map[string]bool{}
	for _, r := range rows {
		alive[r.UUID] = true
	}
	self := t.Node.UUID()
	for _, rec := range recs {
		if !t.Flows.Has(rec.Chain) || flow.Active(rec.ID) {
			continue
		}
		if rec.Owner == self && time.Since(rec.UpdatedAt) < LeftBehindAfter {
			continue // this node's, just written: leave it a margin
		}
		if rec.Owner == self && !t.Node.IsMine(rec.Resource) {
			// Left behind here, on a resource that is another node's now:
			// released, it is that node's to roll back.
			if _, ok, err := t.Recorder.Claim(ctx, rec.ID, self, ""); err != nil {
				t.Log.Warn("release a flow left behind", "flow", rec.Chain, "flow_id", rec.ID, "err", err)
			} else if ok {
				t.Log.Warn("released a flow this node left behind to the resource's owner", "what", t.What, "flow", rec.Chain,
					"flow_id", rec.ID, "resource_uuid", rec.Resource)
			}
			continue
		}
		if (alive[rec.Owner] && rec.Owner != self) || !t.Node.IsMine(rec.Resource) {
			continue
		}
		if err := t.InChain(ctx, rec.Resource, "recover-"+rec.Chain, func(ctx context.Context) error { return t.rollback(ctx, rec) }); err != nil {
			t.Log.Error("roll back an abandoned flow", "what", t.What, "flow", rec.Chain, "flow_id", rec.ID, "resource_uuid", rec.Resource, "err", err)
		}
	}
}

func (t Takeover) rollback(ctx context.Context, rec flow.Record) error {
	claimed, ok, err := t.Recorder.Claim(ctx, rec.ID, rec.Owner, t.Node.UUID())
	if err != nil || !ok {
		return err // another node has it
	}
	why := "rolling back a flow left by a departed node"
	if rec.Owner == t.Node.UUID() {
		why = "rolling back a flow this node left unfinished"
	}
	t.Log.Warn(why, "what", t.What, "flow", rec.Chain, "flow_id", rec.ID,
		"resource_uuid", rec.Resource, "dead_owner", rec.Owner, "steps_applied", rec.Applied)
	if err := t.Flows.RollbackAbandoned(ctx, claimed); err != nil {
		return err
	}
	if t.After != nil {
		return t.After(ctx, rec)
	}
	return nil
}
