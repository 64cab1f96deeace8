package kvm

import (
	"net/http"

	"mplane/agents/protocol"
)

// event is an event to post to the management node. url and secret are
// taken when the event happens: it goes to the node the agent was
// connected to then.
type event struct {
	url    string
	path   string
	body   any
	secret string
}

// eventLocked builds an event with the current connection; the zero event
// (no url) when the agent is not connected.
func (a *Agent) eventLocked(path string, body any) event {
	return event{url: a.sendCommandURL, path: path, body: body, secret: a.secret}
}

// emit queues an event without blocking; an event with no URL (agent not
// connected) or that finds the queue full is dropped and counted.
func (a *Agent) emit(ev event) {
	if ev.path == "" {
		return
	}
	if ev.url == "" {
		a.counters.eventsUnsent.Add(1)
		return
	}
	select {
	case a.events <- ev:
		a.counters.eventsQueued.Add(1)
	default:
		a.counters.eventsDropped.Add(1)
		a.log.Warn("event queue full, event dropped", "commandpath", ev.path)
	}
}

// sendEvents posts queued events one at a time, in order, each retried on
// connection errors like a result. It returns when the queue is drained
// after Shutdown, or at once when eventsCtx ends.
func (a *Agent) sendEvents() {
	defer close(a.eventsDone)
	for {
		select {
		case ev := <-a.events:
			a.post(ev)
		case <-a.drain:
			for {
				select {
				case ev := <-a.events:
					a.post(ev)
				default:
					return
				}
			}
		case <-a.eventsCtx.Done():
			return
		}
	}
}

func (a *Agent) post(ev event) {
	if a.eventsCtx.Err() != nil {
		return
	}
	var h http.Header
	if ev.secret != "" {
		h = http.Header{protocol.SecretHeader: {ev.secret}}
	}
	if err := a.srv.PostEvent(a.eventsCtx, ev.url, ev.path, ev.body, h); err != nil {
		a.log.Warn("event not delivered", "commandpath", ev.path, "url", ev.url, "err", err)
	}
}
