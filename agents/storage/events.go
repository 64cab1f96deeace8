package storage

import (
	"context"
	"net/http"
	"sync"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// event is an event for the management node; url and secret are the
// connection's when the event happened.
type event struct {
	url    string
	path   string
	body   any
	secret string
}

// eventQueue sends events one at a time, in order, each retried on
// connection errors (agentserver.PostEvent, through a server of its own
// that outlives the command server's shutdown, so that the events of the
// last commands still go). Its goroutine is the agent's only one of its
// own; stop drains the queue within its context.
type eventQueue struct {
	a       *Agent
	poster  *agentserver.Server
	ch      chan event
	ctx     context.Context
	cancel  context.CancelFunc
	drain   chan struct{}
	done    chan struct{}
	stopped sync.Once
}

func (q *eventQueue) start(a *Agent, size int, so agentserver.Options) {
	q.a = a
	so.Admit = nil
	q.poster = agentserver.New(so)
	q.ch = make(chan event, size)
	q.ctx, q.cancel = context.WithCancel(context.Background())
	q.drain = make(chan struct{})
	q.done = make(chan struct{})
	go q.run()
}

// emit queues an event without blocking: with no connection yet, or a
// full queue, the event is dropped (progress events are advisory).
func (q *eventQueue) emit(path string, body any) {
	a := q.a
	a.mu.Lock()
	ev := event{url: a.sendCommandURL, path: path, body: body, secret: a.secret}
	a.mu.Unlock()
	if ev.url == "" {
		return
	}
	select {
	case <-q.drain:
		return
	default:
	}
	select {
	case q.ch <- ev:
	default:
		a.log.Warn("event queue full, event dropped", "commandpath", path)
	}
}

func (q *eventQueue) run() {
	defer close(q.done)
	for {
		select {
		case ev := <-q.ch:
			q.post(ev)
		case <-q.drain:
			for {
				select {
				case ev := <-q.ch:
					q.post(ev)
				default:
					return
				}
			}
		case <-q.ctx.Done():
			return
		}
	}
}

func (q *eventQueue) post(ev event) {
	if q.ctx.Err() != nil {
		return
	}
	var h http.Header
	if ev.secret != "" {
		h = http.Header{protocol.SecretHeader: {ev.secret}}
	}
	if err := q.poster.PostEvent(q.ctx, ev.url, ev.path, ev.body, h); err != nil {
		q.a.log.Warn("event not delivered", "commandpath", ev.path, "url", ev.url, "err", err)
	}
}

// stop sends what is queued until ctx ends, then gives up the rest.
func (q *eventQueue) stop(ctx context.Context) {
	q.stopped.Do(func() { close(q.drain) })
	select {
	case <-q.done:
	case <-ctx.Done():
		q.cancel()
		<-q.done
	}
	q.cancel()
	_ = q.poster.Shutdown(ctx)
}
