package vm

import (
	"context"
	"time"

	"mplane/flow"
	"mplane/services/resource"
)

// takeover rolls back the VM flows whose owner node is gone and whose VM
// this node now owns: a create that died half-way leaves no VM, capacity
// or IP behind; a start that died half-way gives its capacity back and the
// VM is Stopped again (resource.Takeover: each record is claimed first, so
// only one node rolls it back).
func (s *Service) takeover() resource.Takeover {
	return resource.Takeover{DB: s.db, Node: s.node, Recorder: s.recorder, Flows: s.flows, Log: s.log, What: "VM",
		InChain: func(ctx context.Context, uuid, op string, fn func(context.Context) error) error {
			_, err := inChain(ctx, s, uuid, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
			return err
		},
		After: func(ctx context.Context, rec flow.Record) error {
			if rec.Chain != s.startF.Name() {
				return nil
			}
			if v, err := s.load(ctx, rec.Resource); err == nil && v.State == StateStarting {
				return s.setState(ctx, v, StateStopped, map[string]any{"host_uuid": ""})
			}
			return nil
		},
	}
}

// prune deletes the records of flows that finished cleanly longer than the
// flow retention ago (SetFlowRetention).
func (s *Service) prune(ctx context.Context) error {
	n, err := s.recorder.Prune(ctx, time.Now().Add(-s.FlowRetention()))
	if n > 0 {
		s.log.Debug("pruned finished flow records", "records", n)
	}
	return err
}
