package image

import (
	"context"

	"mplane/services/resource"
)

// takeover rolls back the image creates whose owner node is gone and
// whose image this node now owns: their files are deleted on every backup
// storage and their rows removed (resource.Takeover).
func (s *Service) takeover() resource.Takeover {
	return resource.Takeover{DB: s.db, Node: s.node, Recorder: s.recorder, Flows: s.flows, Log: s.log, What: "image",
		InChain: func(ctx context.Context, uuid, op string, fn func(context.Context) error) error {
			_, err := inChain(ctx, s, uuid, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
			return err
		},
	}
}
