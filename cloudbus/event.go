package cloudbus

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"

	"mplane/errcode"
)

type subscription struct {
	pattern string
	fn      func(ctx context.Context, env *Envelope)
}

// Publish sends an event to every subscriber whose pattern matches its name,
// on every node (this one included).
func Publish[T any](ctx context.Context, b *Bus, ev Event[T], body T) error {
	if b.closed.Load() {
		return errcode.New(errcode.ShuttingDown, "bus of node %s is closed", b.node)
	}
	data, err := json.Marshal(body)
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "encode event %s", ev.Name())
	}
	env := &Envelope{ID: b.newID(), Name: ev.Name(), From: b.node, Body: data}
	fillMeta(ctx, env)
	raw, err := encodeEnvelope(env)
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "encode event envelope %s", ev.Name())
	}
	if err := b.tr.publishTopic(ctx, ev.Name(), raw); err != nil {
		return errcode.Wrap(errcode.BusUnavailable, err, "publish event %s", ev.Name())
	}
	return nil
}

// Subscribe calls fn for every event named ev.Name() published on any node.
// Subscribe before Start or after; either way the binding survives
// reconnects. An event that does not decode is logged and skipped.
func Subscribe[T any](b *Bus, ev Event[T], fn func(ctx context.Context, from string, body T)) error {
	return b.SubscribePattern(ev.Name(), func(ctx context.Context, env *Envelope) {
		var body T
		if err := json.Unmarshal(env.Body, &body); err != nil {
			b.stats.malformed.Add(1)
			b.log.Warn("undecodable event dropped", "event", env.Name, "err", err)
			return
		}
		fn(ctx, env.From, body)
	})
}

// SubscribePattern calls fn for every event whose name matches pattern
// (AMQP topic rules: "*" one word, "#" zero or more).
func (b *Bus) SubscribePattern(pattern string, fn func(ctx context.Context, env *Envelope)) error {
	b.subMu.Lock()
	b.subs = append(b.subs, subscription{pattern: pattern, fn: fn})
	b.subMu.Unlock()
	if err := b.tr.bindTopic(b.event, pattern); err != nil {
		return fmt.Errorf("cloudbus: subscribe %q: %w", pattern, err)
	}
	return nil
}

// onEvent runs the matching subscribers of one event, in subscription
// order, in a goroutine of its own.
func (b *Bus) onEvent(data []byte) {
	env, err := decodeEnvelope(data)
	if err != nil {
		b.stats.malformed.Add(1)
		return
	}
	b.subMu.RLock()
	var fns []func(context.Context, *Envelope)
	for _, s := range b.subs {
		if topicMatch(s.pattern, env.Name) {
			fns = append(fns, s.fn)
		}
	}
	b.subMu.RUnlock()
	if len(fns) == 0 || b.closed.Load() {
		return
	}
	b.stats.events.Add(1)
	b.handlers.Add(1)
	go func() {
		defer b.handlers.Done()
		ctx := withEnvelope(b.baseCtx, env)
		for _, fn := range fns {
			func() {
				defer func() {
					if r := recover(); r != nil {
						b.stats.panics.Add(1)
						b.log.Error("event subscriber panicked", "event", env.Name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
					}
				}()
				fn(ctx, env)
			}()
		}
	}()
}
