package cloudbus

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"mplane/errcode"
)

// handlerFunc is the untyped form every typed handler is adapted to. It
// returns the reply body already encoded.
type handlerFunc func(ctx context.Context, env *Envelope) (json.RawMessage, error)

// Mux maps message names to the handlers of one service. A Mux is served on
// a node queue (Bus.Serve) or a shared queue (Bus.ServeShared).
type Mux struct {
	mu       sync.RWMutex
	handlers map[string]handlerFunc
	before   func(ctx context.Context, env *Envelope) (handled bool, rep json.RawMessage, err error)
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{handlers: map[string]handlerFunc{}} }

// Handle registers fn as the handler of msg on m. The request body is
// decoded into Req; a body that does not decode is answered with
// errcode.MalformedMessage without calling fn. Registering a name twice
// panics (a programming error found at start-up).
func Handle[Req, Rep any](m *Mux, msg Msg[Req, Rep], fn func(ctx context.Context, req Req) (Rep, error)) {
	m.register(msg.Name(), func(ctx context.Context, env *Envelope) (json.RawMessage, error) {
		var req Req
		if len(env.Body) > 0 {
			if err := json.Unmarshal(env.Body, &req); err != nil {
				return nil, errcode.Wrap(errcode.MalformedMessage, err, "decode body of %s", env.Name)
			}
		}
		rep, err := fn(ctx, req)
		if err != nil {
			return nil, err
		}
		data, err := json.Marshal(rep)
		if err != nil {
			return nil, errcode.Wrap(errcode.Internal, err, "encode reply of %s", env.Name)
		}
		return data, nil
	})
}

// Before installs a hook run before every handler of m. If it reports
// handled, its reply (or error) is sent and the handler is not called; the
// management node uses it to forward messages for resources it no longer
// owns.
func (m *Mux) Before(fn func(ctx context.Context, env *Envelope) (handled bool, rep json.RawMessage, err error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.before = fn
}

func (m *Mux) register(name string, h handlerFunc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.handlers[name]; dup {
		panic(fmt.Sprintf("cloudbus: handler for %q registered twice", name))
	}
	m.handlers[name] = h
}

func (m *Mux) lookup(name string) (handlerFunc, func(context.Context, *Envelope) (bool, json.RawMessage, error)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.handlers[name], m.before
}
