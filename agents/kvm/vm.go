package kvm

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// The VM commands are idempotent where kvmagent's are (start of a running
// VM, stop of a stopped or unknown VM, destroy of an unknown VM, attach of
// an attached volume, detach of a detached one succeed), so a command
// delivered twice does no harm.

func (a *Agent) startVM(ctx context.Context, req *agentserver.Request, cmd protocol.StartVMCmd) (protocol.VMRsp, error) {
	id := cmd.VMInstanceUUID
	if id == "" {
		return protocol.VMRsp{}, fmt.Errorf("vmInstanceUuid is required")
	}
	vols, err := startVolumes(cmd)
	if err != nil {
		return protocol.VMRsp{}, err
	}
	var nics []protocol.NicTO
	if len(cmd.Nics) > 0 {
		nics = slices.Clone(cmd.Nics)
		slices.SortStableFunc(nics, func(x, y protocol.NicTO) int { return cmp.Compare(x.DeviceID, y.DeviceID) })
	}
	defer a.enterVM(id, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	// A running VM is left as it is (no file check); else the volume files
	// are checked without the lock, and the VM looked at again.
	if a.running(id) {
		return protocol.VMRsp{VMState: protocol.VMStateRunning}, nil
	}
	if err := a.checkVolumeFiles(vols); err != nil {
		return protocol.VMRsp{VMState: protocol.VMStateShutdown}, fmt.Errorf("unable to start vm[uuid:%s]: %w", id, err)
	}
	a.mu.Lock()
	vm := a.vms[id]
	if vm != nil && vm.State == protocol.VMStateRunning {
		a.mu.Unlock()
		return protocol.VMRsp{VMState: protocol.VMStateRunning}, nil
	}
	_, usedMem := a.usedLocked()
	if usedMem+cmd.Memory > a.opts.MemoryBytes {
		a.mu.Unlock()
		return protocol.VMRsp{VMState: protocol.VMStateShutdown}, fmt.Errorf(
			"not enough memory on host to start vm[uuid:%s]: %d bytes asked, %d free",
			id, cmd.Memory, a.opts.MemoryBytes-usedMem)
	}
	if vm == nil {
		vm = &protocol.VM{UUID: id}
		a.vms[id] = vm
	}
	vm.Name, vm.CPUNum, vm.Memory = cmd.VMName, cmd.CPUNum, cmd.Memory
	vm.Volumes, vm.NICs = vols, nics
	ev := a.setStateLocked(vm, protocol.VMStateRunning)
	a.mu.Unlock()
	return protocol.VMRsp{VMState: protocol.VMStateRunning}, a.committed(ev)
}

// running reports whether the agent has VM id running.
func (a *Agent) running(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	vm := a.vms[id]
	return vm != nil && vm.State == protocol.VMStateRunning
}

func (a *Agent) stopVM(ctx context.Context, req *agentserver.Request, cmd protocol.StopVMCmd) (protocol.VMRsp, error) {
	if cmd.UUID == "" {
		return protocol.VMRsp{}, fmt.Errorf("uuid is required")
	}
	defer a.enterVM(cmd.UUID, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	a.mu.Lock()
	vm := a.vms[cmd.UUID]
	if vm == nil || vm.State == protocol.VMStateShutdown {
		a.mu.Unlock()
		return protocol.VMRsp{VMState: protocol.VMStateShutdown}, nil
	}
	ev := a.setStateLocked(vm, protocol.VMStateShutdown)
	a.mu.Unlock()
	return protocol.VMRsp{VMState: protocol.VMStateShutdown}, a.committed(ev)
}

func (a *Agent) rebootVM(ctx context.Context, req *agentserver.Request, cmd protocol.RebootVMCmd) (protocol.VMRsp, error) {
	if cmd.UUID == "" {
		return protocol.VMRsp{}, fmt.Errorf("uuid is required")
	}
	defer a.enterVM(cmd.UUID, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	a.mu.Lock()
	vm := a.vms[cmd.UUID]
	if vm == nil || vm.State != protocol.VMStateRunning {
		state := ""
		if vm != nil {
			state = vm.State
		}
		a.mu.Unlock()
		return protocol.VMRsp{VMState: state}, fmt.Errorf("vm[uuid:%s] is not running, cannot reboot it", cmd.UUID)
	}
	ev := a.eventLocked(protocol.EventReportVMReboot, protocol.VMEvent{VMUUID: cmd.UUID})
	a.mu.Unlock()
	a.emit(ev)
	return protocol.VMRsp{VMState: protocol.VMStateRunning}, nil
}

func (a *Agent) destroyVM(ctx context.Context, req *agentserver.Request, cmd protocol.DestroyVMCmd) (protocol.VMRsp, error) {
	if cmd.UUID == "" {
		return protocol.VMRsp{}, fmt.Errorf("uuid is required")
	}
	defer a.enterVM(cmd.UUID, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	a.mu.Lock()
	vm := a.vms[cmd.UUID]
	if vm == nil {
		a.mu.Unlock()
		return protocol.VMRsp{}, nil
	}
	var ev event
	if vm.State != protocol.VMStateShutdown {
		ev = a.setStateLocked(vm, protocol.VMStateShutdown)
	}
	delete(a.vms, cmd.UUID)
	a.version++
	a.mu.Unlock()
	return protocol.VMRsp{}, a.committed(ev)
}

func (a *Agent) listVMs(ctx context.Context, req *agentserver.Request, _ struct{}) (protocol.ListVMsRsp, error) {
	if err := a.simulate(ctx, req); err != nil {
		return protocol.ListVMsRsp{}, err
	}
	vms := a.VMs()
	states := make(map[string]string, len(vms))
	for _, vm := range vms {
		states[vm.UUID] = vm.State
	}
	return protocol.ListVMsRsp{VMs: vms, States: states}, nil
}

// VMs returns the VMs the agent has, sorted by UUID.
func (a *Agent) VMs() []protocol.VM {
	a.mu.Lock()
	out := make([]protocol.VM, 0, len(a.vms))
	for _, vm := range a.vms {
		out = append(out, cloneVM(vm))
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].UUID < out[j].UUID })
	return out
}

// setStateLocked changes a VM's state and returns the state event to send
// once the change is persisted.
func (a *Agent) setStateLocked(vm *protocol.VM, state string) event {
	vm.State = state
	a.version++
	return a.eventLocked(protocol.EventReportVMState,
		protocol.VMStateEvent{HostUUID: a.hostUUID, VMUUID: vm.UUID, VMState: state})
}

// committed persists the state and then sends the events of the change.
func (a *Agent) committed(evs ...event) error {
	err := a.persist()
	for _, ev := range evs {
		a.emit(ev)
	}
	return err
}

// enterVM accounts a command on a VM as running until the returned function
// is called; a second command on the same VM meanwhile is an overlap.
func (a *Agent) enterVM(vmUUID, path string) (leave func()) {
	a.vmArrivals.add(Arrival{At: time.Now(), Path: path, VMUUID: vmUUID})
	leave = a.tracker.enter(vmUUID)
	if a.testHookEntered != nil {
		a.testHookEntered(vmUUID, path)
	}
	return leave
}
