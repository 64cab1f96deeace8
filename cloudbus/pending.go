package cloudbus

import (
	"sort"
	"sync"
	"time"

	"mplane/errcode"
)

const pendingShards = 32

// pendingTable holds the calls waiting for a reply, keyed by message id.
// It is sharded so that many concurrent callers do not contend on one lock.
type pendingTable struct {
	shards [pendingShards]pendingShard
}

type pendingShard struct {
	mu    sync.Mutex
	calls map[string]*pendingCall
}

type pendingCall struct {
	ch     chan *Envelope // buffered 1: exactly one reply or failure is kept
	target string
	name   string
	since  time.Time
}

func (t *pendingTable) init() {
	for i := range t.shards {
		t.shards[i].calls = map[string]*pendingCall{}
	}
}

func (t *pendingTable) shard(id string) *pendingShard {
	// FNV-1a over the id's tail, which holds the sequence number.
	var h uint32 = 2166136261
	for i := len(id) - 1; i >= 0 && i >= len(id)-8; i-- {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return &t.shards[h%pendingShards]
}

func (t *pendingTable) add(id, target, name string) *pendingCall {
	p := &pendingCall{ch: make(chan *Envelope, 1), target: target, name: name, since: time.Now()}
	s := t.shard(id)
	s.mu.Lock()
	s.calls[id] = p
	s.mu.Unlock()
	return p
}

func (t *pendingTable) remove(id string) {
	s := t.shard(id)
	s.mu.Lock()
	delete(s.calls, id)
	s.mu.Unlock()
}

// deliver hands a reply to its caller and reports whether one was waiting.
func (t *pendingTable) deliver(id string, env *Envelope) bool {
	s := t.shard(id)
	s.mu.Lock()
	p := s.calls[id]
	delete(s.calls, id)
	s.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case p.ch <- env:
	default:
	}
	return true
}

func (t *pendingTable) failOne(id string, err *errcode.Error) {
	t.deliver(id, &Envelope{ID: id, Reply: true, Error: err})
}

func (t *pendingTable) fail(match func(target string) bool, err *errcode.Error) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for id, p := range s.calls {
			if match(p.target) {
				delete(s.calls, id)
				select {
				case p.ch <- &Envelope{ID: id, Reply: true, Error: err}:
				default:
				}
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

func (t *pendingTable) failAll(err *errcode.Error) int {
	return t.fail(func(string) bool { return true }, err)
}

// PendingCall describes one call waiting for its reply (admin endpoint).
type PendingCall struct {
	ID     string        `json:"id"`
	Name   string        `json:"name"`
	Target string        `json:"target"`
	Age    time.Duration `json:"ageNs"`
}

// Pending lists the calls waiting for a reply, oldest first.
func (b *Bus) Pending() []PendingCall {
	var out []PendingCall
	now := time.Now()
	for i := range b.pending.shards {
		s := &b.pending.shards[i]
		s.mu.Lock()
		for id, p := range s.calls {
			out = append(out, PendingCall{ID: id, Name: p.name, Target: p.target, Age: now.Sub(p.since)})
		}
		s.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Age > out[j].Age })
	return out
}
