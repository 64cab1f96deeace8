package route

import "context"

type rerunKey struct{}

// WithRerun marks ctx as the run of an API job that a node that has since
// died had started: the work may have completed without its outcome being
// recorded, so an owner that finds the resource already where the call
// wanted it (a VM Stopped for a stop) answers success instead of refusing
// the call for the resource's state.
func WithRerun(ctx context.Context) context.Context {
	return context.WithValue(ctx, rerunKey{}, true)
}

// IsRerun reports whether ctx is such a run (WithRerun).
func IsRerun(ctx context.Context) bool {
	v, _ := ctx.Value(rerunKey{}).(bool)
	return v
}
