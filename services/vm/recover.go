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
// VM is Stopped again; a stop, reboot or destroy is put back and the VM
// then settled from its host's answer (resource.Takeover: each record is claimed first, so
// only one node rolls it back).
func (s *Service) takeover() resource.Takeover {
	return resource.Takeover{DB: s.db, Node: s.node, Recorder: s.recorder, Flows: s.flows, Log: s.log, What: "VM",
		InChain: func(ctx context.Context, uuid, op string, fn func(context.Context) error) error {
			_, err := inChain(ctx, s, uuid, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
			return err
		},
		After: func(ctx context.Context, rec flow.Record) error {
			if opChains[rec.Chain] {
				// A stop, reboot or destroy: its command may have run;
				// the host says what the VM is now.
				return s.reconcile(ctx, ReconcileReq{UUID: rec.Resource, Why: "took over " + rec.Chain + " of a departed node"})
			}
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
