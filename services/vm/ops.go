package vm

import (
	"context"
	"time"

	"mplane/agents/protocol"
	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/services/host"
	"mplane/services/volume"
)

// begin loads the VM, checks that op may start from its state and shows
// the operation's transitional state.
func (s *Service) begin(ctx context.Context, uuid, op string) (*VmInstanceVO, string, error) {
	v, err := s.loadWaiting(ctx, uuid)
	if err != nil {
		return nil, "", err
	}
	prev, err := s.beginOn(ctx, v, op)
	if err != nil {
		return nil, "", err
	}
	return v, prev, nil
}

// beginOn is begin on a VM loaded already (in its chain): it answers the
// state the VM had.
func (s *Service) beginOn(ctx context.Context, v *VmInstanceVO, op string) (prev string, err error) {
	if err := checkTransition(v.UUID, op, v.State); err != nil {
		return "", err
	}
	prev = v.State
	if err := s.setState(ctx, v, transitional[op], nil); err != nil {
		return "", err
	}
	return prev, nil
}

// loadWaiting is load, waiting out a database outage (untilDB).
func (s *Service) loadWaiting(ctx context.Context, uuid string) (v *VmInstanceVO, err error) {
	err = s.untilDB(ctx, func(ctx context.Context) error {
		v, err = s.load(ctx, uuid)
		return err
	})
	return v, err
}

func deref(v *VmInstanceVO) VmInstanceVO {
	if v == nil {
		return VmInstanceVO{}
	}
	return *v
}

// doneState is the state an operation leaves a VM in.
var doneState = map[string]string{
	"start": StateRunning, "stop": StateStopped, "reboot": StateRunning, "destroy": StateDestroyed,
}

// alreadyDone answers, for the run of a job whose runner died
// (route.IsRerun), whether the operation had completed: a VM left in a
// transitional state is first settled from its host's answer (reconcile),
// then a VM already in the operation's end state is the job's success (a
// gone VM for an expunge). Otherwise, and for every other run, done is
// false and the operation runs.
func (s *Service) alreadyDone(ctx context.Context, uuid, op string) (v *VmInstanceVO, done bool, err error) {
	if !route.IsRerun(ctx) {
		return nil, false, nil
	}
	v, err = s.loadWaiting(ctx, uuid)
	if op == "expunge" && errcode.Has(err, errcode.ResourceNotFound) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	if isTransitional(v.State) {
		if err := s.reconcile(ctx, ReconcileReq{UUID: uuid, Why: "re-run of a job whose node died"}); err != nil {
			return nil, false, err
		}
		if v, err = s.loadWaiting(ctx, uuid); err != nil {
			return nil, false, err
		}
	}
	if want, ok := doneState[op]; ok && v.State == want {
		s.log.Info("re-run of a job whose node died: the VM is already where the call wanted it", "vm_uuid", uuid, "op", op, "state", v.State)
		return v, true, nil
	}
	return v, false, nil
}

// fail puts a VM back in the state it had before a failed operation.
func (s *Service) fail(v *VmInstanceVO, prev string, cause error) error {
	if err := s.setState(context.Background(), v, prev, nil); err != nil {
		s.log.Error("restore VM state after a failed operation", "vm_uuid", v.UUID, "state", prev, "err", err)
	}
	return cause
}

// reply reads the VM an operation leaves, for its answer: the work is done,
// so the read waits out a database outage (untilDB) rather than fail it.
func (s *Service) reply(ctx context.Context, uuid string) (VmInstanceVO, error) {
	v, err := s.loadWaiting(ctx, uuid)
	if err != nil {
		return VmInstanceVO{}, err
	}
	return *v, nil
}

// startData is shared by the start flow's steps.
type startData struct {
	VMUUID   string    `json:"vmUuid"`
	Name     string    `json:"name"`
	CPUNum   int       `json:"cpuNum"`
	Memory   int64     `json:"memory"`
	Spec     allocSpec `json:"spec"`
	Hosts    []string  `json:"hosts,omitempty"`
	HostUUID string    `json:"hostUuid,omitempty"`
	// Cmd is the start command, with the VM's volumes and NICs.
	Cmd protocol.StartVMCmd `json:"cmd"`
}

// startChain: allocate host (the last one first) -> reserve capacity ->
// start on the hypervisor.
func (s *Service) startChain() (*flow.Chain[startData], error) {
	return flow.New("start-vm", []flow.Step[startData]{
		{Name: "allocate-host", Run: func(ctx context.Context, d *startData) error {
			net, err := s.opts.IPAM.Placement(ctx, l3sOf(d.Cmd.Nics))
			if err != nil {
				return err
			}
			d.Spec.Net = net
			hosts, err := candidates(ctx, s.db, d.Spec, s.AllocationStrategy())
			if err != nil {
				return err
			}
			for _, h := range hosts {
				d.Hosts = append(d.Hosts, h.UUID)
			}
			return nil
		}},
		{Name: "reserve-capacity", Run: func(ctx context.Context, d *startData) error {
			h, err := reserveOn(ctx, s.db, d.VMUUID, d.Spec, d.Hosts, nil)
			d.HostUUID = h
			return err
		}, Rollback: func(ctx context.Context, d *startData) error { return host.Release(ctx, s.db, d.VMUUID) }},
		{Name: "prepare-network", Run: func(ctx context.Context, d *startData) error {
			bridges, err := s.opts.IPAM.Realize(ctx, d.HostUUID, l3sOf(d.Cmd.Nics))
			if err != nil {
				return err
			}
			onBridges(d.Cmd.Nics, bridges)
			return nil
		}},
		{Name: "start-on-hypervisor", Run: func(ctx context.Context, d *startData) error {
			return s.startOnHost(ctx, d.HostUUID, d.Cmd)
		}, Rollback: func(ctx context.Context, d *startData) error {
			// The start may have run (a lost reply, a dead owner): stop
			// it, again while the host's owner or the database is briefly
			// unreachable; an agent that refuses or is down is left to
			// reconciliation, which stops what this misses.
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			return s.undoneOnHost(agentCommand(ctx, s, d.HostUUID, protocol.StopVM, protocol.StopVMCmd{UUID: d.VMUUID, Type: "cold"}),
				"stop VM on its host", "vm_uuid", d.VMUUID, "host_uuid", d.HostUUID)
		}},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

func (s *Service) handleStart(ctx context.Context, req OpReq) (VmInstanceVO, error) {
	return inChain(ctx, s, req.UUID, "start", func(ctx context.Context) (VmInstanceVO, error) {
		if v, done, err := s.alreadyDone(ctx, req.UUID, "start"); err != nil || done {
			return deref(v), err
		}
		v, prev, err := s.begin(ctx, req.UUID, "start")
		if err != nil {
			return VmInstanceVO{}, err
		}
		// The VM runs where its volumes are: on the host of a local
		// storage volume, in a cluster its shared storage is attached to.
		onHost, clusters, err := volume.Reach(ctx, s.db, v.AllVolumes)
		if err != nil {
			return VmInstanceVO{}, s.fail(v, prev, err)
		}
		tos, err := volume.TOs(ctx, s.db, v.AllVolumes)
		if err != nil {
			return VmInstanceVO{}, s.fail(v, prev, err)
		}
		d := &startData{VMUUID: v.UUID, Name: v.Name, CPUNum: v.CPUNum, Memory: v.MemorySize, Cmd: s.startCmd(v, v.VMNics, tos),
			Spec: allocSpec{CPU: int64(v.CPUNum), Memory: v.MemorySize, ZoneUUID: v.ZoneUUID, ClusterUUID: v.ClusterUUID, Prefer: v.LastHostUUID,
				HostUUID: onHost, Clusters: clusters}}
		if err := s.startF.Run(ctx, d, flow.RunOptions{Resource: v.UUID}); err != nil {
			return VmInstanceVO{}, s.fail(v, prev, err)
		}
		if err := s.setState(ctx, v, StateRunning, map[string]any{"host_uuid": d.HostUUID, "last_host_uuid": d.HostUUID}); err != nil {
			return VmInstanceVO{}, err
		}
		return s.reply(ctx, v.UUID)
	})
}

// opData is what the stop, reboot, destroy and expunge flows' steps share: the VM
// (in its transitional state once the first step ran), the state it had
// before (empty until then), and the stop's type.
type opData struct {
	VM   VmInstanceVO `json:"vm"`
	Prev string       `json:"prev"`
	Type string       `json:"type,omitempty"`
}

// opChain builds the recorded flow of a VM operation: the transitional
// state (begin; the run is recorded before it, so before any command),
// the command on the host, then the writes that finish it. The first
// step's rollback puts the VM back in its previous state if it is still in
// the transitional one (a command that surely did not run; an unknown
// outcome has made it Unknown, which stays); a node that takes over an
// unfinished run rolls it back the same way and then asks the host what
// the VM really is (reconcile, the takeover's After), so a command that
// did run is found out, not undone.
func (s *Service) opChain(op string, command, finish func(ctx context.Context, d *opData) error) (*flow.Chain[opData], error) {
	return flow.New(op+"-vm", []flow.Step[opData]{
		{Name: "set-" + transitional[op], Run: func(ctx context.Context, d *opData) error {
			prev, err := s.beginOn(ctx, &d.VM, op)
			d.Prev = prev
			return err
		}, Rollback: func(ctx context.Context, d *opData) error {
			if d.Prev == "" || d.Prev == transitional[op] {
				return nil // begin refused, or the VM was in it already: nothing to put back
			}
			return s.untilDB(ctx, func(ctx context.Context) error {
				v, err := s.load(ctx, d.VM.UUID)
				if errcode.Has(err, errcode.ResourceNotFound) {
					return nil
				}
				if err != nil || v.State != transitional[op] {
					return err
				}
				return setState(ctx, s.db, v, d.Prev, nil)
			})
		}},
		{Name: op + "-on-host", Run: command},
		{Name: "finish-" + op, Run: finish},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

// opChains are the chains of the operations opChain builds whose command
// may have run on a host, for the takeover's After (expunge's runs on
// storage, and is finished by the next expunge).
var opChains = map[string]bool{"stop-vm": true, "reboot-vm": true, "destroy-vm": true}

func (s *Service) stopChain() (*flow.Chain[opData], error) {
	return s.opChain("stop", func(ctx context.Context, d *opData) error {
		v := &d.VM
		if err := agentCommand(ctx, s, v.HostUUID, protocol.StopVM, protocol.StopVMCmd{UUID: v.UUID, Type: d.Type}); err != nil {
			did, uerr := s.commandOutcome(ctx, v, v.HostUUID, "stop", err, func(st string, present bool) bool {
				return !present || st == protocol.VMStateShutdown || st == protocol.VMStateCrashed
			})
			if uerr != nil {
				return uerr
			}
			if !did {
				return err
			}
		}
		return nil
	}, func(ctx context.Context, d *opData) error {
		v := &d.VM
		if err := s.untilDB(ctx, func(ctx context.Context) error { return host.Release(ctx, s.db, v.UUID) }); err != nil {
			return errcode.Wrap(errcode.Internal, err, "release capacity of VM %s", v.UUID)
		}
		return s.setState(ctx, v, StateStopped, map[string]any{"host_uuid": "", "last_host_uuid": v.HostUUID})
	})
}

func (s *Service) rebootChain() (*flow.Chain[opData], error) {
	return s.opChain("reboot", func(ctx context.Context, d *opData) error {
		v := &d.VM
		if err := agentCommand(ctx, s, v.HostUUID, protocol.RebootVM, protocol.RebootVMCmd{UUID: v.UUID}); err != nil {
			did, uerr := s.commandOutcome(ctx, v, v.HostUUID, "reboot", err, func(st string, present bool) bool {
				return present && st == protocol.VMStateRunning
			})
			if uerr != nil {
				return uerr
			}
			if !did {
				return err // not running any more: a reboot that stopped it
			}
		}
		return nil
	}, func(ctx context.Context, d *opData) error {
		return s.setState(ctx, &d.VM, StateRunning, nil)
	})
}

func (s *Service) destroyChain() (*flow.Chain[opData], error) {
	return s.opChain("destroy", func(ctx context.Context, d *opData) error {
		v := &d.VM
		switch {
		case v.HostUUID != "":
			if err := agentCommand(ctx, s, v.HostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: v.UUID}); err != nil {
				did, uerr := s.commandOutcome(ctx, v, v.HostUUID, "destroy", err, func(_ string, present bool) bool { return !present })
				if uerr != nil {
					return uerr
				}
				if !did {
					return err
				}
			}
		case v.LastHostUUID != "":
			// A stopped VM's definition stays on its last host: remove it
			// there. A host that cannot take the command now gets it from
			// the reconciliation of its VM list.
			if err := agentCommand(ctx, s, v.LastHostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: v.UUID}); err != nil {
				s.log.Info("destroy a stopped VM's definition on its last host: left to reconciliation", "vm_uuid", v.UUID,
					"host_uuid", v.LastHostUUID, "err", err)
			}
		}
		return nil
	}, func(ctx context.Context, d *opData) error {
		return s.finishDestroy(ctx, &d.VM)
	})
}

// runOp runs a stop, reboot or destroy: settled first if it is the re-run
// of a job whose node died, then run as its recorded flow.
func (s *Service) runOp(ctx context.Context, req OpReq, op string, chain *flow.Chain[opData]) (VmInstanceVO, error) {
	return inChain(ctx, s, req.UUID, op, func(ctx context.Context) (VmInstanceVO, error) {
		v, done, err := s.runOpFlow(ctx, req, op, chain)
		if done {
			return deref(v), err
		}
		if err != nil {
			return VmInstanceVO{}, err
		}
		return s.reply(ctx, v.UUID)
	})
}

// runOpFlow is runOp's work in the VM's chain: done (with the VM, nil if
// gone) when the re-run of a job finds op done already, else op's flow
// run on the VM it loaded.
func (s *Service) runOpFlow(ctx context.Context, req OpReq, op string, chain *flow.Chain[opData]) (_ *VmInstanceVO, done bool, _ error) {
	if v, done, err := s.alreadyDone(ctx, req.UUID, op); err != nil || done {
		return v, true, err
	}
	// Refused before anything is recorded when the VM is not in a state
	// op starts from; the flow's first step begins on the VM loaded here
	// (nothing else writes it: this is its chain).
	v, err := s.loadWaiting(ctx, req.UUID)
	if err != nil {
		return nil, false, err
	}
	if err := checkTransition(v.UUID, op, v.State); err != nil {
		return nil, false, err
	}
	return v, false, chain.Run(ctx, &opData{VM: *v, Type: req.Type}, flow.RunOptions{Resource: v.UUID})
}

func (s *Service) handleStop(ctx context.Context, req OpReq) (VmInstanceVO, error) {
	return s.runOp(ctx, req, "stop", s.stopF)
}

func (s *Service) handleReboot(ctx context.Context, req OpReq) (VmInstanceVO, error) {
	return s.runOp(ctx, req, "reboot", s.rebootF)
}

// handleDestroy stops the VM on its host if it runs, gives back its
// capacity and IPs, and leaves it Destroyed (expunge removes the row).
func (s *Service) handleDestroy(ctx context.Context, req OpReq) (VmInstanceVO, error) {
	return s.runOp(ctx, req, "destroy", s.destroyF)
}

// expungeChain: Expunging -> the volumes (the root one goes for good, the
// data ones are detached) -> the VM's row deleted. A failure or a takeover
// puts the VM back to Destroyed (some volumes may be gone already): the
// next expunge, or the job's re-run, finishes it.
func (s *Service) expungeChain() (*flow.Chain[opData], error) {
	return s.opChain("expunge", func(ctx context.Context, d *opData) error {
		if err := s.vols.ExpungeOfVM(ctx, d.VM.UUID); err != nil {
			return errcode.Wrap(errcode.AgentError, err, "expunge the volumes of VM %s (expunge it again to finish)", d.VM.UUID)
		}
		return nil
	}, func(ctx context.Context, d *opData) error {
		// The volumes are gone: the row goes too, once the database can
		// be reached.
		return s.untilDB(ctx, func(ctx context.Context) error {
			if err := s.db.WithContext(ctx).Delete(&VmInstanceVO{}, "uuid = ?", d.VM.UUID).Error; err != nil {
				return errcode.Wrap(errcode.Internal, err, "expunge VM %s", d.VM.UUID)
			}
			return nil
		})
	})
}

// handleExpunge removes a Destroyed VM for good, as the recorded flow
// expungeChain.
func (s *Service) handleExpunge(ctx context.Context, req OpReq) (cloudbus.Empty, error) {
	return inChain(ctx, s, req.UUID, "expunge", func(ctx context.Context) (cloudbus.Empty, error) {
		_, _, err := s.runOpFlow(ctx, req, "expunge", s.expungeF)
		return cloudbus.Empty{}, err
	})
}
