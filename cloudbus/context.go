package cloudbus

import "context"

type envKey struct{}

// withEnvelope makes the envelope being handled visible to the handler and
// to every message it sends (which inherit its deadline, API id, resource
// and caller).
func withEnvelope(ctx context.Context, e *Envelope) context.Context {
	return context.WithValue(ctx, envKey{}, e)
}

// EnvelopeFrom returns the envelope of the message being handled, or nil
// outside a handler. Handlers must not modify it.
func EnvelopeFrom(ctx context.Context) *Envelope {
	e, _ := ctx.Value(envKey{}).(*Envelope)
	return e
}

// Metadata a caller can attach to the messages sent under ctx.
type metaKey struct{}

// Meta is tracing and identity data copied into every envelope sent under a
// context. Empty APIID and Caller are inherited from the envelope being
// handled; ResourceUUID is never inherited.
type Meta struct {
	APIID        string
	ResourceUUID string
	Caller       *Identity
}

// WithMeta returns a context whose outgoing messages carry m.
func WithMeta(ctx context.Context, m Meta) context.Context {
	return context.WithValue(ctx, metaKey{}, m)
}

func fillMeta(ctx context.Context, e *Envelope) {
	// The API id and caller follow the work; the resource does not: a
	// message about a host sent while handling one about a VM is routed by
	// the host, so each message names its resource (WithResource).
	if parent := EnvelopeFrom(ctx); parent != nil {
		e.APIID, e.Caller = parent.APIID, parent.Caller
	}
	if m, ok := ctx.Value(metaKey{}).(Meta); ok {
		if m.APIID != "" {
			e.APIID = m.APIID
		}
		if m.ResourceUUID != "" {
			e.ResourceUUID = m.ResourceUUID
		}
		if m.Caller != nil {
			e.Caller = m.Caller
		}
	}
}
