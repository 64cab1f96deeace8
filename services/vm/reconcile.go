package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/conf"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
	"mplane/services/host"
)

// Agent truth (docs/reliability.md, "VM state"): the database follows what
// the hosts say. Every VM fix runs on the VM's owner, behind Guard (so after
// a previous owner's work on it has ended) and in the VM's chain (so after
// this node's), and asks the host again there: a fix never acts on a stale
// view.
//
//   - transitional states (Starting, Stopping, Rebooting, Destroying) left
//     by an operation that ended without finishing (its node died, its
//     reply was lost) are resolved from the host's answer;
//   - each host's VM list is compared with the database on connect, after
//     a VM state event, and periodically: a VM the database has Running
//     that the host does not run (a ghost) becomes Stopped and gives its
//     capacity back; a VM the host runs that the database does not have
//     there (an orphan) is stopped on the host, or adopted if the database
//     has it Stopped and the policy says Adopt; a definition of a destroyed
//     or unknown VM is destroyed on the host.

// Orphan policies (vm/orphan.policy, conf.OrphanPolicies).
const (
	OrphanStop  = conf.OrphanStop
	OrphanAdopt = conf.OrphanAdopt
)

// ReconcileReq asks the VM's owner to make the VM's row agree with what the
// host says about it.
type ReconcileReq struct {
	UUID     string `json:"uuid"`
	HostUUID string `json:"hostUuid"`
	// Why names what found the mismatch, for the log.
	Why string `json:"why,omitempty"`
}

// ResourceUUID routes the request to the VM's owner.
func (r ReconcileReq) ResourceUUID() string { return r.UUID }

var msgReconcile = managementnode.NewOwnedMsg[ReconcileReq, cloudbus.Empty](BusService, "vm.Reconcile")

// ReconcileStats counts what reconciliation changed on this node.
type ReconcileStats struct {
	Ghosts      int64 `json:"ghosts"`      // Running in the database, not on the host: now Stopped
	Orphans     int64 `json:"orphans"`     // on the host, not there in the database: stopped or destroyed there
	Adopted     int64 `json:"adopted"`     // orphans adopted: Running in the database on that host
	Transients  int64 `json:"transients"`  // transitional states resolved
	Unknown     int64 `json:"unknown"`     // transitional states the host could not settle: now Unknown
	HostsListed int64 `json:"hostsListed"` // host VM lists compared
}

type reconcileCounters struct {
	ghosts, orphans, adopted, transients, unknown, hosts atomic.Int64
}

// ReconcileStats is what reconciliation has changed since the service
// started.
func (s *Service) ReconcileStats() ReconcileStats {
	c := &s.recon
	return ReconcileStats{Ghosts: c.ghosts.Load(), Orphans: c.orphans.Load(), Adopted: c.adopted.Load(),
		Transients: c.transients.Load(), Unknown: c.unknown.Load(), HostsListed: c.hosts.Load()}
}

// SetOrphanPolicy chooses what reconciliation does with a VM a host runs
// that the database has Stopped: OrphanStop (stop it there) or OrphanAdopt
// (mark it Running there, if the host has the capacity).
func (s *Service) SetOrphanPolicy(p string) error {
	if p != OrphanStop && p != OrphanAdopt {
		return fmt.Errorf("orphan policy must be %s or %s, got %q", OrphanStop, OrphanAdopt, p)
	}
	if old := s.OrphanPolicy(); old != p {
		s.log.Info("orphan policy changed", "policy", p, "previous", old)
	}
	s.orphanPolicy.Store(&p)
	return nil
}

// OrphanPolicy is the orphan policy now.
func (s *Service) OrphanPolicy() string { return *s.orphanPolicy.Load() }

var transitionalStates = []string{StateStarting, StateStopping, StateRebooting, StateDestroying}

func isTransitional(state string) bool { return slices.Contains(transitionalStates, state) }

// hostVMs is the host's VM list: state by VM UUID (absent: the host has no
// such VM).
func (s *Service) hostVMs(ctx context.Context, hostUUID string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rsp, err := onHost(ctx, s, hostUUID, protocol.ListVMs, struct{}{})
	if err != nil {
		return nil, fmt.Errorf("list the VMs of host %s: %w", hostUUID, err)
	}
	states := rsp.States
	if states == nil {
		states = map[string]string{}
		for _, v := range rsp.VMs {
			states[v.UUID] = v.State
		}
	}
	return states, nil
}

// ReconcileHost compares the host's VM list with the database and asks the
// owner of every VM that differs to fix it. It runs on any node (the host's
// owner, usually).
func (s *Service) ReconcileHost(ctx context.Context, hostUUID, why string) error {
	states, err := s.hostVMs(ctx, hostUUID)
	if err != nil {
		return err
	}
	s.recon.hosts.Add(1)
	var rows []VmInstanceVO
	if err := s.db.WithContext(ctx).Select("uuid", "state", "host_uuid", "last_host_uuid").
		Where("host_uuid = ? OR last_host_uuid = ?", hostUUID, hostUUID).Find(&rows).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "list the VMs of host %s", hostUUID)
	}
	known := map[string]VmInstanceVO{}
	for _, v := range rows {
		known[v.UUID] = v
	}
	var suspects []string
	for uuid, st := range states {
		v, ok := known[uuid]
		if !ok || mismatch(v, hostUUID, st, true) {
			suspects = append(suspects, uuid)
		}
	}
	for _, v := range rows {
		if _, ok := states[v.UUID]; !ok && mismatch(v, hostUUID, "", false) {
			suspects = append(suspects, v.UUID)
		}
	}
	var errs []error
	for _, uuid := range suspects {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err := managementnode.CallOwner(rctx, s.node, msgReconcile, ReconcileReq{UUID: uuid, HostUUID: hostUUID, Why: why})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("VM %s: %w", uuid, err))
		}
	}
	return errors.Join(errs...)
}

// mismatch reports whether the host's view of VM v (agentState, present)
// disagrees with the row in a way reconcile fixes.
func mismatch(v VmInstanceVO, hostUUID, agentState string, present bool) bool {
	running := present && agentState != protocol.VMStateShutdown && agentState != protocol.VMStateCrashed
	onHost := v.HostUUID == hostUUID
	switch {
	case isTransitional(v.State):
		return onHost || v.HostUUID == ""
	case v.State == StateRunning && onHost:
		return !running
	case v.State == StateUnknown && onHost:
		return true
	case running:
		return true // runs here, the row says elsewhere or not running
	case present:
		// Defined but stopped here: fine for a Stopped VM whose last host
		// this is; a destroyed VM's definition goes.
		return v.State == StateDestroyed || v.State == StateExpunging
	}
	return false
}

// handleReconcile runs on the VM's owner, in its chain.
func (s *Service) handleReconcile(ctx context.Context, req ReconcileReq) (cloudbus.Empty, error) {
	if n, err := s.unfinishedFlows(ctx, req.UUID); err != nil || n > 0 {
		return cloudbus.Empty{}, err // a flow runs, or the takeover rolls it back first
	}
	return inChain(ctx, s, req.UUID, "reconcile", func(ctx context.Context) (cloudbus.Empty, error) {
		return cloudbus.Empty{}, s.reconcile(ctx, req)
	})
}

func (s *Service) reconcile(ctx context.Context, req ReconcileReq) error {
	if n, err := s.unfinishedFlows(ctx, req.UUID); err != nil || n > 0 {
		return err // the takeover rolls those back first
	}
	v, err := s.load(ctx, req.UUID)
	if errcode.Has(err, errcode.ResourceNotFound) {
		v = nil
	} else if err != nil {
		return err
	}
	hostUUID := req.HostUUID
	if hostUUID == "" && v != nil {
		hostUUID = v.HostUUID
		if hostUUID == "" {
			hostUUID = v.LastHostUUID
		}
	}
	if hostUUID == "" {
		if v != nil && isTransitional(v.State) {
			// No host was ever involved: the operation ended before it
			// sent anything.
			return s.settleTo(ctx, v, StateStopped, req.Why, "no host")
		}
		return nil
	}
	states, err := s.hostVMs(ctx, hostUUID)
	if err != nil {
		if v != nil && isTransitional(v.State) {
			s.recon.unknown.Add(1)
			s.log.Warn("VM left in a transitional state and its host cannot be asked: now Unknown", "vm_uuid", v.UUID,
				"state", v.State, "host_uuid", hostUUID, "why", req.Why, "err", err)
			return s.setState(ctx, v, StateUnknown, nil)
		}
		return err
	}
	agentState, present := states[req.UUID]
	running := present && agentState != protocol.VMStateShutdown && agentState != protocol.VMStateCrashed
	if v == nil || v.State == StateDestroyed || v.State == StateExpunging {
		if !present {
			return nil
		}
		s.recon.orphans.Add(1)
		s.log.Warn("host has a VM the database has destroyed or never had: destroying it there", "vm_uuid", req.UUID,
			"host_uuid", hostUUID, "agent_state", agentState, "why", req.Why)
		return agentCommand(ctx, s, hostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: req.UUID})
	}
	onHost := v.HostUUID == hostUUID || (v.HostUUID == "" && isTransitional(v.State))
	switch {
	case v.State == StateDestroying && onHost:
		if present {
			if err := agentCommand(ctx, s, hostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: v.UUID}); err != nil {
				return err
			}
		}
		s.recon.transients.Add(1)
		s.log.Warn("finishing a destroy left half-done", "vm_uuid", v.UUID, "host_uuid", hostUUID, "why", req.Why)
		return s.finishDestroy(ctx, v)
	case onHost && running && v.State != StateRunning:
		if v.HostUUID == "" {
			// A start that ended before it recorded the host: the VM
			// runs without its capacity; stop it (it is Stopped below).
			if err := agentCommand(ctx, s, hostUUID, protocol.StopVM, protocol.StopVMCmd{UUID: v.UUID, Type: "cold"}); err != nil {
				return err
			}
			return s.settleTo(ctx, v, StateStopped, req.Why, "stopped on its host: the start that began it was not finished")
		}
		return s.settleTo(ctx, v, StateRunning, req.Why, "running on its host")
	case onHost && !running && v.State != StateStopped:
		if v.State == StateRunning {
			s.recon.ghosts.Add(1)
		}
		return s.settleTo(ctx, v, StateStopped, req.Why, "not running on its host")
	case !onHost && running:
		// An orphan: the host runs a VM the database has elsewhere or not
		// running.
		if v.State == StateStopped && s.OrphanPolicy() == OrphanAdopt {
			if err := host.Reserve(ctx, s.db, hostUUID, v.UUID, int64(v.CPUNum), v.MemorySize); err == nil {
				s.recon.adopted.Add(1)
				s.log.Warn("adopted a VM its host runs although the database had it Stopped", "vm_uuid", v.UUID, "host_uuid", hostUUID, "why", req.Why)
				return s.setState(ctx, v, StateRunning, map[string]any{"host_uuid": hostUUID, "last_host_uuid": hostUUID})
			} else if !errors.Is(err, host.ErrNoCapacity) {
				return err
			}
		}
		s.recon.orphans.Add(1)
		s.log.Warn("host runs a VM the database does not have running there: stopping it there", "vm_uuid", v.UUID,
			"host_uuid", hostUUID, "db_state", v.State, "db_host_uuid", v.HostUUID, "why", req.Why)
		if v.State == StateStopped && v.LastHostUUID == hostUUID {
			// Its definition stays on its last host, stopped.
			return agentCommand(ctx, s, hostUUID, protocol.StopVM, protocol.StopVMCmd{UUID: v.UUID, Type: "cold"})
		}
		return agentCommand(ctx, s, hostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: v.UUID})
	}
	return nil
}

// settleTo ends a mismatch by setting the VM to state (Running: it keeps
// its host and capacity; Stopped: the capacity goes back).
func (s *Service) settleTo(ctx context.Context, v *VmInstanceVO, state, why, what string) error {
	prev := v.State
	extra := map[string]any{}
	if state == StateStopped {
		if err := host.Release(ctx, s.db, v.UUID); err != nil {
			return errcode.Wrap(errcode.Internal, err, "release capacity of VM %s", v.UUID)
		}
		extra["host_uuid"] = ""
		if v.HostUUID != "" {
			extra["last_host_uuid"] = v.HostUUID
		}
	}
	if err := s.setState(ctx, v, state, extra); err != nil {
		return err
	}
	if isTransitional(prev) {
		s.recon.transients.Add(1)
	}
	s.log.Warn("VM state set from its host's answer", "vm_uuid", v.UUID, "from", prev, "to", state, "reason", what, "why", why)
	return nil
}

// finishDestroy does what a destroy does once the VM is gone from its host:
// capacity and IPs back, NICs gone, Destroyed.
func (s *Service) finishDestroy(ctx context.Context, v *VmInstanceVO) error {
	// Each write is idempotent and waits out a database outage (untilDB):
	// the host has already dropped the VM.
	if err := s.untilDB(ctx, func(ctx context.Context) error { return host.Release(ctx, s.db, v.UUID) }); err != nil {
		return errcode.Wrap(errcode.Internal, err, "release capacity of VM %s", v.UUID)
	}
	for _, nic := range v.VMNics {
		if err := s.untilDB(ctx, func(ctx context.Context) error { return s.opts.IPAM.ReleaseByOwner(ctx, nic.UUID) }); err != nil {
			return errcode.Wrap(errcode.Internal, err, "release IP %s of VM %s", nic.IP, v.UUID)
		}
	}
	if err := s.untilDB(ctx, func(ctx context.Context) error {
		return s.db.WithContext(ctx).Delete(&VmNicVO{}, "vm_instance_uuid = ?", v.UUID).Error
	}); err != nil {
		return errcode.Wrap(errcode.Internal, err, "delete NICs of VM %s", v.UUID)
	}
	last := v.HostUUID
	if last == "" {
		last = v.LastHostUUID
	}
	return s.setState(ctx, v, StateDestroyed, map[string]any{"host_uuid": "", "last_host_uuid": last})
}

func (s *Service) unfinishedFlows(ctx context.Context, uuid string) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&flow.RecordVO{}).
		Where("resource = ? AND state IN ?", uuid, []string{string(flow.Running), string(flow.RollingBack)}).Count(&n).Error
	return n, err
}

// repairTransients sends a reconcile for every VM this node owns that is in
// a transitional state: one whose operation is still running here waits in
// the chain and is then no longer transitional (reconcile changes nothing).
func (s *Service) repairTransients(ctx context.Context) error {
	var rows []VmInstanceVO
	if err := s.db.WithContext(ctx).Select("uuid", "host_uuid", "state", "last_op_date").
		Where("state IN ?", transitionalStates).Find(&rows).Error; err != nil {
		return err
	}
	for _, v := range rows {
		if !s.node.IsMine(v.UUID) || time.Since(v.LastOpDate) < 5*time.Second {
			continue // another node's, or too recent to be left over
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err := managementnode.CallOwner(rctx, s.node, msgReconcile, ReconcileReq{UUID: v.UUID, HostUUID: v.HostUUID, Why: "transitional state " + v.State})
		cancel()
		if err != nil {
			s.log.Warn("repair a VM left in a transitional state", "vm_uuid", v.UUID, "state", v.State, "err", err)
		}
	}
	return nil
}

// reconcileOwnedHosts compares the VM list of every connected host this
// node owns with the database.
func (s *Service) reconcileOwnedHosts(ctx context.Context) error {
	var hosts []string
	if err := s.db.WithContext(ctx).Model(&host.HostVO{}).Where("status = ?", host.StatusConnected).Pluck("uuid", &hosts).Error; err != nil {
		return err
	}
	for _, h := range hosts {
		if !s.node.IsMine(h) {
			continue
		}
		if err := s.ReconcileHost(ctx, h, "periodic"); err != nil {
			s.log.Warn("reconcile a host's VMs", "host_uuid", h, "err", err)
		}
	}
	return nil
}

// HostConnected reconciles a host that (re)connected; the host service
// calls it (host.Service.OnConnected) on the host's owner.
func (s *Service) HostConnected(ctx context.Context, hostUUID string) {
	if err := s.ReconcileHost(ctx, hostUUID, "host connected"); err != nil {
		s.log.Warn("reconcile the VMs of a connected host", "host_uuid", hostUUID, "err", err)
	}
}

// AgentEvent handles a host's VM state events (host.Service.OnAgentEvent):
// the VM's owner asks the host and fixes the row if they differ.
func (s *Service) AgentEvent(_ context.Context, ev host.AgentEvent) {
	switch ev.Path {
	case protocol.EventReportVMState, protocol.EventReportVMReboot, protocol.EventReportVMShutdown,
		protocol.EventReportVMStart, protocol.EventReportVMCrash:
	default:
		return
	}
	var body protocol.VMStateEvent
	if json.Unmarshal(ev.Body, &body) != nil || body.VMUUID == "" || s.ctx.Err() != nil {
		return
	}
	hostUUID, path, vmUUID := ev.HostUUID, ev.Path, body.VMUUID
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Let the operation that caused the event (if any) finish first:
		// its own write is the truth for the state it sets.
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(eventSettle):
		}
		rctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
		defer cancel()
		v, err := s.load(rctx, vmUUID)
		if err == nil && !mismatchAfterEvent(v, hostUUID, path) {
			return
		}
		if _, err := managementnode.CallOwner(rctx, s.node, msgReconcile, ReconcileReq{UUID: vmUUID, HostUUID: hostUUID, Why: "event " + path}); err != nil {
			s.log.Warn("reconcile a VM after its host's event", "vm_uuid", vmUUID, "host_uuid", hostUUID, "event", path, "err", err)
		}
	}()
}

// eventSettle is how long after a VM state event its VM is compared with the
// host.
const eventSettle = 3 * time.Second

// mismatchAfterEvent reports whether an event may show a difference worth
// asking the host about (a Running VM reported stopped or crashed, or any
// report about a VM the row does not place on that host).
func mismatchAfterEvent(v *VmInstanceVO, hostUUID, path string) bool {
	if v.HostUUID != hostUUID {
		return true
	}
	switch path {
	case protocol.EventReportVMStart, protocol.EventReportVMReboot:
		return v.State != StateRunning
	}
	return true
}

// kickRepair looks for VMs left in a transitional state in the background,
// a few seconds after a ring change (the takeover rolls back the dead
// owner's flows first).
func (s *Service) kickRepair() {
	if s.ctx.Err() != nil || !s.repairing.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.repairing.Store(false)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		if err := s.repairTransients(s.ctx); err != nil {
			s.log.Warn("look for VMs left in a transitional state", "err", err)
		}
	}()
}

// sentAndUnknown reports whether a failed agent command may have run: the
// agent did not answer it (a timeout, a lost reply, the host's owner went
// away). A command refused before it was sent (host not connected, bad
// request), one that could not reach the agent (retryable: it did not run)
// and one the agent answered with a failure are definite.
func sentAndUnknown(err error) bool {
	e := errcode.From(err)
	switch e.Code {
	case errcode.InvalidState, errcode.InvalidArgument, errcode.ResourceNotFound, errcode.PermissionDenied:
		return false
	case errcode.AgentError:
		return e.Cause != nil && !e.Retryable // success:false has no cause
	}
	return !e.Retryable // Timeout and OutcomeUnknown among them
}

// commandOutcome settles a VM command that failed with cmdErr by asking the
// host: did reports whether the host shows the command's effect (done says
// what that looks like). A command that surely did not run is did=false.
// When the host cannot be asked the VM is set Unknown and the error is
// OutcomeUnknown.
func (s *Service) commandOutcome(ctx context.Context, v *VmInstanceVO, hostUUID, op string, cmdErr error,
	done func(agentState string, present bool) bool) (did bool, err error) {
	if !sentAndUnknown(cmdErr) {
		return false, nil
	}
	// The command's own context may be used up: ask with a fresh one.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	states, lerr := s.hostVMs(actx, hostUUID)
	if lerr != nil {
		s.recon.unknown.Add(1)
		if serr := s.setState(actx, v, StateUnknown, nil); serr != nil {
			s.log.Error("set VM Unknown after a command of unknown outcome", "vm_uuid", v.UUID, "err", serr)
		}
		return false, errcode.Wrap(errcode.OutcomeUnknown, cmdErr,
			"%s VM %s: the command may have run on host %s, which cannot be asked (%v); the VM is Unknown until the host answers", op, v.UUID, hostUUID, lerr)
	}
	st, present := states[v.UUID]
	did = done(st, present)
	if did {
		s.log.Warn("the host shows the command's effect although the command failed", "vm_uuid", v.UUID, "op", op,
			"host_uuid", hostUUID, "agent_state", st, "err", cmdErr)
	}
	return did, nil
}
