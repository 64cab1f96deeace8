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
	wrap     Interceptor
}

// Interceptor runs around every handler of a Mux: it may call next (the
// handler) or answer by itself. The management node uses one to forward
// messages for resources the node does not own and to hold a resource while
// its handler runs.
type Interceptor func(ctx context.Context, env *Envelope, next func(context.Context) (json.RawMessage, error)) (json.RawMessage, error)

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

// Intercept installs fn around every handler of m (one interceptor per Mux;
// a second call replaces the first). Messages with no handler are answered
// with errcode.UnknownMessage before the interceptor runs.
func (m *Mux) Intercept(fn Interceptor) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wrap = fn
}

func (m *Mux) register(name string, h handlerFunc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.handlers[name]; dup {
		panic(fmt.Sprintf("cloudbus: handler for %q registered twice", name))
	}
	m.handlers[name] = h
}

func (m *Mux) lookup(name string) (handlerFunc, Interceptor) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.handlers[name], m.wrap
}
