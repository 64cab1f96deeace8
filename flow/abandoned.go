package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Definition is a chain of any data type, as kept in a Registry. *Chain[T]
// is the only implementation.
type Definition interface {
	Name() string
	rollbackAbandoned(ctx context.Context, rec Record) error
}

// Registry maps chain names to their definitions, so that a node can roll
// back runs it did not start.
type Registry struct {
	defs map[string]Definition
}

// NewRegistry builds a registry; two definitions with one name are an error.
func NewRegistry(defs ...Definition) (*Registry, error) {
	r := &Registry{defs: make(map[string]Definition, len(defs))}
	for _, d := range defs {
		if _, dup := r.defs[d.Name()]; dup {
			return nil, fmt.Errorf("flow: chain %q registered twice", d.Name())
		}
		r.defs[d.Name()] = d
	}
	return r, nil
}

// Has reports whether chain is registered: a service rolls back only the
// records of its own chains (all share one table).
func (r *Registry) Has(chain string) bool {
	_, ok := r.defs[chain]
	return ok
}

// RollbackAbandoned rolls back what the run of rec did, for a run whose
// owner died: the rollbacks of steps [0, rec.Applied) run in reverse order
// on the data decoded from rec.Data, under the chain definition registered
// as rec.Chain, recording progress with that definition's Recorder and Node.
//
// The definition's Node must own rec (claim it first, e.g. with
// GormRecorder.Claim): otherwise the first save fails with ErrNotOwner and
// nothing is rolled back. A record that is not unfinished (Running or
// RollingBack) is left alone and nil returned, so calling this twice is
// harmless. The error joins the *StepError of every rollback that failed;
// all were attempted.
func (r *Registry) RollbackAbandoned(ctx context.Context, rec Record) error {
	d, ok := r.defs[rec.Chain]
	if !ok {
		return fmt.Errorf("roll back run %s: chain %q: %w", rec.ID, rec.Chain, ErrUnknownChain)
	}
	return d.rollbackAbandoned(ctx, rec)
}

func (c *Chain[T]) rollbackAbandoned(ctx context.Context, rec Record) error {
	if !rec.State.Unfinished() {
		return nil
	}
	if rec.Applied < 0 || rec.Applied > len(c.steps) {
		return fmt.Errorf("flow %q: roll back run %s: record has %d steps applied, the chain has %d steps", c.name, rec.ID, rec.Applied, len(c.steps))
	}
	data := new(T)
	if len(rec.Data) > 0 {
		if err := json.Unmarshal(rec.Data, data); err != nil {
			return fmt.Errorf("flow %q: roll back run %s: decode data: %w", c.name, rec.ID, err)
		}
	}
	cause := rec.Error
	if rec.State == Running {
		cause = fmt.Sprintf("owner %q abandoned the run at step %q", rec.Owner, rec.Step)
	}
	defer activate(rec.ID)()
	r := &run[T]{c: c, rec: rec}
	r.rec.Owner, r.rec.Total = c.opts.Node, len(c.steps)
	r.rec.State, r.rec.Error = RollingBack, cause
	// This save is the ownership check: it must succeed before anything
	// is undone, or two nodes might roll back one run at once.
	if err := r.save(ctx); err != nil {
		return fmt.Errorf("flow %q: roll back run %s: %w", c.name, rec.ID, err)
	}
	if errs := c.rollback(ctx, r, data, cause, false); len(errs) > 0 {
		return fmt.Errorf("flow %q: roll back run %s: %w", c.name, rec.ID, errors.Join(errs...))
	}
	return nil
}
