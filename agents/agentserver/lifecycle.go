package agentserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Lifecycle gives an agent the lifecycle of every mplane component: Start
// listens and serves in the background, Stop shuts down and waits for the
// serving to end. An agent embeds it, built with its own serve and
// shutdown functions (its http.Server's, with the agent's draining).
type Lifecycle struct {
	listen   string
	serve    func(net.Listener) error
	shutdown func(context.Context) error

	mu      sync.Mutex
	addr    string
	served  chan error
	stopped bool
	stopErr error
}

// NewLifecycle returns the lifecycle of an agent listening on listen.
func NewLifecycle(listen string, serve func(net.Listener) error, shutdown func(context.Context) error) *Lifecycle {
	return &Lifecycle{listen: listen, serve: serve, shutdown: shutdown}
}

// Start listens on the agent's address and serves it until Stop. It fails
// if the address cannot be listened on, or if the agent was started or
// stopped already.
func (l *Lifecycle) Start(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.served != nil || l.stopped {
		return errors.New("agent started or stopped already")
	}
	ln, err := net.Listen("tcp", l.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", l.listen, err)
	}
	l.addr = ln.Addr().String()
	l.served = make(chan error, 1)
	go func() { l.served <- l.serve(ln) }()
	return nil
}

// Addr is the address the agent listens on once started (the chosen port
// when the address had port 0).
func (l *Lifecycle) Addr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// Stop shuts the agent down within ctx (running commands finish and
// deliver their results, queued events go) and waits for the serving to
// end. It is idempotent; it also stops an agent that was never started.
func (l *Lifecycle) Stop(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return l.stopErr
	}
	l.stopped = true
	err := l.shutdown(ctx)
	if l.served != nil {
		err = errors.Join(err, <-l.served)
	}
	l.stopErr = err
	return err
}
