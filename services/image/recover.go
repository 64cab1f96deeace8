package image

import (
	"context"

	"mplane/flow"
	"mplane/managementnode"
)

// recoverAbandoned rolls back the image creates whose owner node is gone
// and whose image this node now owns: their files are deleted on every
// backup storage and their rows removed. It runs after every ring change;
// each record is claimed first (one conditional update), so only one node
// rolls it back.
func (s *Service) recoverAbandoned(ctx context.Context) {
	recs, err := s.recorder.Unfinished(ctx)
	if err != nil {
		s.log.Warn("list unfinished image flows", "err", err)
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
			s.log.Error("roll back an abandoned image flow", "flow", rec.Chain, "flow_id", rec.ID, "image_uuid", rec.Resource, "err", err)
		}
	}
}

func (s *Service) rollbackOne(ctx context.Context, rec flow.Record) error {
	claimed, ok, err := s.recorder.Claim(ctx, rec.ID, rec.Owner, s.node.UUID())
	if err != nil || !ok {
		return err // someone else has it
	}
	s.log.Warn("rolling back an image create left by a departed node", "flow", rec.Chain, "flow_id", rec.ID, "image_uuid", rec.Resource,
		"dead_owner", rec.Owner, "steps_applied", rec.Applied)
	return s.flows.RollbackAbandoned(ctx, claimed)
}
