package host

import (
	"context"
	"sync"
	"time"

	"mplane/agents/agentclient"
)

// tracker pings every host this node owns, every PingInterval. A host whose
// agent fails MaxPingFailures pings in a row turns Disconnected; a
// Disconnected host gets reconnect attempts with exponential backoff; a
// ping answered for another host UUID or event URL triggers a reconnect.
// Each round reads the hosts from the database and keeps those this node
// owns, so a ring change (which kicks a round at once) is a rescan.
type tracker struct {
	s     *Service
	mu    sync.Mutex
	state map[string]*trackState
	kickC chan struct{}
}

type trackState struct {
	failures      int
	busy          bool
	backoff       time.Duration
	nextReconnect time.Time
}

func (t *tracker) init(s *Service) {
	t.s = s
	t.state = map[string]*trackState{}
	t.kickC = make(chan struct{}, 1)
}

// kick asks for a round now (after a ring change or an add); kicks that
// arrive while one is pending coalesce.
func (t *tracker) kick() {
	select {
	case t.kickC <- struct{}{}:
	default:
	}
}

// kicked runs the rounds asked for by kick, outside the periodic schedule,
// until the service stops. The service starts it and waits for it.
func (t *tracker) kicked(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kickC:
			_ = t.round(ctx) // errors are logged inside
		}
	}
}

func (t *tracker) forget(uuid string) {
	t.mu.Lock()
	delete(t.state, uuid)
	t.mu.Unlock()
}

// round checks every owned host once, at most 32 at a time.
func (t *tracker) round(ctx context.Context) error {
	var hosts []HostVO
	if err := t.s.db.WithContext(ctx).Where("status <> ?", StatusConnecting).Find(&hosts).Error; err != nil {
		t.s.log.Warn("ping round: list hosts", "err", err)
		return nil
	}
	owned := map[string]bool{}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range hosts {
		h := &hosts[i]
		if !t.s.node.IsMine(h.UUID) {
			continue
		}
		owned[h.UUID] = true
		st := t.claim(h.UUID)
		if st == nil {
			continue // a check of this host is still running
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			t.check(ctx, h, st)
		}()
	}
	wg.Wait()
	t.mu.Lock()
	for uuid := range t.state {
		if !owned[uuid] {
			delete(t.state, uuid) // no longer ours: its new owner tracks it
		}
	}
	t.mu.Unlock()
	return nil
}

func (t *tracker) claim(uuid string) *trackState {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.state[uuid]
	if st == nil {
		st = &trackState{}
		t.state[uuid] = st
	}
	if st.busy {
		return nil
	}
	st.busy = true
	return st
}

func (t *tracker) check(ctx context.Context, h *HostVO, st *trackState) {
	defer func() {
		t.mu.Lock()
		st.busy = false
		t.mu.Unlock()
	}()
	s := t.s
	if h.Status == StatusDisconnected {
		if time.Now().Before(st.nextReconnect) {
			return
		}
		if err := s.reconnect(ctx, h); err != nil {
			st.backoff = min(max(st.backoff*2, s.opts.ReconnectMin), s.opts.ReconnectMax)
			st.nextReconnect = time.Now().Add(st.backoff)
			s.log.Info("reconnect failed; retrying later", "host_uuid", h.UUID, "retry_in", st.backoff, "err", err)
			return
		}
		st.failures, st.backoff = 0, 0
		return
	}
	mismatch, err := s.pingOnce(ctx, h)
	if err != nil {
		st.failures++
		s.log.Info("ping failed", "host_uuid", h.UUID, "failures", st.failures, "err", err)
		if agentclient.Refused(err) {
			// Nothing listens at the agent's address: it died, with the
			// commands it ran; their results will not come.
			if n := s.agents.AgentGone(s.agentURL(h), err); n > 0 {
				s.log.Warn("the host's agent went away: its commands in flight failed", "host_uuid", h.UUID, "commands", n)
			}
		}
		if st.failures >= s.maxPingFailures() {
			if err := s.setStatus(ctx, h.UUID, StatusDisconnected); err != nil {
				s.log.Warn("record host disconnected", "host_uuid", h.UUID, "err", err)
				return
			}
			s.log.Warn("host disconnected", "host_uuid", h.UUID, "failed_pings", st.failures)
			st.backoff = s.opts.ReconnectMin
			st.nextReconnect = time.Now().Add(st.backoff)
		}
		return
	}
	st.failures = 0
	if mismatch {
		s.log.Info("agent answered for another host or node; reconnecting", "host_uuid", h.UUID)
		if err := s.reconnect(ctx, h); err != nil {
			s.log.Warn("reconnect after ping mismatch", "host_uuid", h.UUID, "err", err)
		}
	}
}
