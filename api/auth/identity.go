package auth

import "context"

// Identity is who a request acts for, as the middleware established it.
type Identity struct {
	AccountUUID string
	AccountName string
	// Admin is true for an account of type SystemAdmin, which sees and acts
	// on every tenant's resources.
	Admin       bool
	SessionUUID string
}

type identityKey struct{}

// WithIdentity returns ctx carrying id. The middleware uses it; so may the
// bus portal, which receives the caller's identity in a message envelope,
// and tests.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity in ctx; ok is false if there is none
// (the request did not pass through the middleware, or took a public path).
func FromContext(ctx context.Context) (id Identity, ok bool) {
	id, ok = ctx.Value(identityKey{}).(Identity)
	return id, ok
}
