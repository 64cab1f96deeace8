package host

import (
	"context"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/errcode"
)

// AgentVersion is what this node reports to agents at connect.
const AgentVersion = "mplane-1"

// connect brings a host's agent under this node: wait (up to waitUp) for
// /host/echo, /host/connect with the host's UUID, this node's event URL and
// the host's secret, then /host/capacity; the host is then Connected with
// its capacity recorded.
func (s *Service) connect(ctx context.Context, h *HostVO, waitUp time.Duration) error {
	url := s.agentURL(h)
	if err := s.waitEcho(ctx, url, waitUp); err != nil {
		return noAgent{err}
	}
	secret := agentclient.WithSecret(h.Secret)
	var crsp protocol.ConnectRsp
	cmd := protocol.ConnectCmd{HostUUID: h.UUID, SendCommandURL: s.eventURL(h), Version: AgentVersion, Secret: h.Secret}
	opts := []agentclient.CallOption{secret, s.fence()}
	if s.opts.ClaimToken != "" {
		opts = append(opts, agentclient.WithHeader(protocol.ClaimHeader, s.opts.ClaimToken))
	}
	if err := s.agents.CallSync(ctx, url, protocol.PathConnect, cmd, &crsp, opts...); err != nil {
		return err
	}
	var cap protocol.CapacityRsp
	if err := s.agents.Call(ctx, url, protocol.PathCapacity, struct{}{}, &cap, secret, s.fence()); err != nil {
		return err
	}
	return s.recordConnected(ctx, h.UUID, cap)
}

func (s *Service) waitEcho(ctx context.Context, url string, waitUp time.Duration) error {
	deadline := time.Now().Add(waitUp)
	backoff := 50 * time.Millisecond
	for {
		err := s.agents.CallSync(ctx, url, protocol.PathEcho, nil, nil)
		if err == nil {
			return nil
		}
		if time.Now().Add(backoff).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errcode.Wrap(errcode.Timeout, err, "agent at %s did not answer echo", url)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// recordConnected stores the capacity reported by the agent. The first
// connect sets the available capacity to what the agent has free; later
// connects move it by the change of the total, keeping reservations. It is
// one UPDATE relative to the row's current values, so a Reserve or Release
// running meanwhile is never overwritten with a stale available capacity.
// The available columns are assigned before the totals: MySQL evaluates
// the assignments left to right, so they read the old totals there too
// (clause.Set keeps the order). A GORM update, so the write fence
// (managementnode.FenceWrites) conditions it on this node's membership.
func (s *Service) recordConnected(ctx context.Context, uuid string, cap protocol.CapacityRsp) error {
	totalCPU, totalMem := int64(cap.CPUNum), cap.TotalMemory
	freeCPU, freeMem := totalCPU-int64(cap.UsedCPU), totalMem-cap.UsedMemory
	set := func(col string, v any) clause.Assignment {
		return clause.Assignment{Column: clause.Column{Name: col}, Value: v}
	}
	err := s.db.WithContext(ctx).Model(&HostVO{}).Where("uuid = ?", uuid).Clauses(clause.Set{
		set("available_cpu", gorm.Expr("CASE WHEN total_cpu > 0 OR total_memory > 0 THEN available_cpu + (? - total_cpu) ELSE ? END", totalCPU, freeCPU)),
		set("available_memory", gorm.Expr("CASE WHEN total_cpu > 0 OR total_memory > 0 THEN available_memory + (? - total_memory) ELSE ? END", totalMem, freeMem)),
		set("total_cpu", totalCPU), set("total_memory", totalMem), set("cpu_num", cap.CPUNum),
		set("status", StatusConnected), set("last_op_date", time.Now().UTC()),
	}).Updates(map[string]any{}).Error
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, "record host %s connected", uuid)
	}
	s.log.Info("host connected", "host_uuid", uuid, "cpu", cap.CPUNum, "memory", cap.TotalMemory)
	return nil
}

// pingOnce pings a host's agent; mismatch reports whether the agent
// answered for another host UUID or another event URL (it restarted or was
// connected by someone else): the host must be reconnected.
func (s *Service) pingOnce(ctx context.Context, h *HostVO) (mismatch bool, err error) {
	var rsp protocol.PingRsp
	if err := s.agents.Call(ctx, s.agentURL(h), protocol.PathPing, protocol.PingCmd{HostUUID: h.UUID}, &rsp,
		agentclient.WithSecret(h.Secret), s.fence(), agentclient.WithTimeout(s.opts.PingInterval)); err != nil {
		return false, err
	}
	return rsp.HostUUID != h.UUID || rsp.SendCommandURL != s.eventURL(h), nil
}

// OnConnected registers fn to run after one of this node's hosts is added
// or reconnected: on the host's owner, outside the host's chain (fn may
// send the host commands), bounded by a minute and by the service's stop.
// Storage uses it to measure the host's directories.
func (s *Service) OnConnected(fn func(ctx context.Context, h HostVO)) {
	s.hooksMu.Lock()
	s.connHooks = append(s.connHooks, fn)
	s.hooksMu.Unlock()
}

// connected runs the OnConnected hooks of host uuid in the background;
// the returned channel is closed when they are done (an add waits for
// them: a host is usable, its storage measured, once its add answers).
func (s *Service) connected(uuid string) <-chan struct{} {
	done := make(chan struct{})
	s.hooksMu.RLock()
	hooks := append([]func(context.Context, HostVO){}, s.connHooks...)
	s.hooksMu.RUnlock()
	if len(hooks) == 0 || s.ctx.Err() != nil {
		close(done)
		return done
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(done)
		ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
		defer cancel()
		h, err := s.load(ctx, uuid)
		if err != nil {
			return
		}
		var wg sync.WaitGroup
		for _, fn := range hooks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fn(ctx, *h)
			}()
		}
		wg.Wait()
	}()
	return done
}

// noAgent is a connect that failed before an agent answered its echo:
// nothing at the address is known to be an agent.
type noAgent struct{ err error }

func (e noAgent) Error() string { return e.err.Error() }
func (e noAgent) Unwrap() error { return e.err }
