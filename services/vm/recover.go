package vm

import (
	"context"
	"time"

	"mplane/flow"
	"mplane/managementnode"
)

// recoverAbandoned rolls back the VM flows whose owner node is gone and
// whose VM this node now owns: a create that died half-way leaves no VM,
// capacity or IP behind; a start that died half-way gives its capacity back
// and the VM is Stopped again. It runs after every ring change; each record
// is claimed first (one conditional update), so only one node rolls it back.
func (s *Service) recoverAbandoned(ctx context.Context) {
	recs, err := s.recorder.Unfinished(ctx)
	if err != nil {
		s.log.Warn("list unfinished VM flows", "err", err)
		return
	}
	if len(recs) == 0 {
		return
	}
	var rows []managementnode.NodeVO
	if err := s.db.WithContext(ctx).Find(&rows).Error; err != nil {
		s.log.Warn("list management nodes", "err", err)
		return
	}
	alive := map[string]bool{}
	for _, r := range rows {
		alive[r.UUID] = true
	}
	for _, rec := range recs {
		if alive[rec.Owner] || !s.flows.Has(rec.Chain) || !s.node.IsMine(rec.Resource) {
			continue
		}
		if _, err := inChain(ctx, s, rec.Resource, "recover-"+rec.Chain, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, s.rollbackOne(ctx, rec)
		}); err != nil {
			s.log.Error("roll back an abandoned VM flow", "flow", rec.Chain, "flow_id", rec.ID, "vm_uuid", rec.Resource, "err", err)
		}
	}
}

func (s *Service) rollbackOne(ctx context.Context, rec flow.Record) error {
	claimed, ok, err := s.recorder.Claim(ctx, rec.ID, rec.Owner, s.node.UUID())
	if err != nil || !ok {
		return err // someone else has it
	}
	s.log.Warn("rolling back a VM flow left by a departed node", "flow", rec.Chain, "flow_id", rec.ID, "vm_uuid", rec.Resource,
		"dead_owner", rec.Owner, "steps_applied", rec.Applied)
	if err := s.flows.RollbackAbandoned(ctx, claimed); err != nil {
		return err
	}
	if rec.Chain == s.startF.Name() {
		if v, err := s.load(ctx, rec.Resource); err == nil && v.State == StateStarting {
			return s.setState(ctx, v, StateStopped, map[string]any{"host_uuid": ""})
		}
	}
	return nil
}

// prune deletes the records of flows that finished cleanly an hour ago.
func (s *Service) prune(ctx context.Context) error {
	n, err := s.recorder.Prune(ctx, time.Now().Add(-time.Hour))
	if n > 0 {
		s.log.Debug("pruned finished flow records", "records", n)
	}
	return err
}
