package kvm

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// attachNic plugs a NIC into a running VM (kvmagent's /vm/attachnic). The
// NIC's bridge must exist on the host; plugging a NIC the VM has (same
// MAC) again succeeds, one on a taken device id fails.
func (a *Agent) attachNic(ctx context.Context, req *agentserver.Request, cmd protocol.NicCmd) (protocol.VMRsp, error) {
	id, nic := cmd.VMUUID, cmd.Nic
	if id == "" {
		return protocol.VMRsp{}, errors.New("vmUuid is required")
	}
	if nic.Mac == "" || nic.UUID == "" {
		return protocol.VMRsp{}, errors.New("nic.mac and nic.uuid are required")
	}
	defer a.enterVM(id, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	if nic.BridgeName != "" && !a.net.has(nic.BridgeName) {
		return protocol.VMRsp{VMState: a.stateOf(id)}, fmt.Errorf("unable to attach nic %s to vm[uuid:%s]: bridge %s does not exist on this host",
			nic.Mac, id, nic.BridgeName)
	}
	a.mu.Lock()
	vm := a.vms[id]
	if vm == nil || vm.State != protocol.VMStateRunning {
		state := stateOf(vm)
		a.mu.Unlock()
		return protocol.VMRsp{VMState: state}, fmt.Errorf("unable to attach nic %s to vm[uuid:%s]: the vm is not running on this host (%q)", nic.Mac, id, state)
	}
	if slices.ContainsFunc(vm.NICs, func(n protocol.NicTO) bool { return n.Mac == nic.Mac }) {
		a.mu.Unlock()
		return protocol.VMRsp{VMState: vm.State}, nil // attached before
	}
	if i := slices.IndexFunc(vm.NICs, func(n protocol.NicTO) bool { return n.DeviceID == nic.DeviceID }); i >= 0 {
		other := vm.NICs[i].Mac
		a.mu.Unlock()
		return protocol.VMRsp{VMState: vm.State}, fmt.Errorf("unable to attach nic %s to vm[uuid:%s] at deviceId %d: nic %s is there", nic.Mac, id, nic.DeviceID, other)
	}
	vm.NICs = append(vm.NICs, nic)
	a.version++
	state := vm.State
	a.mu.Unlock()
	return protocol.VMRsp{VMState: state}, a.committed()
}

// detachNic unplugs a NIC (by MAC) from a VM (kvmagent's /vm/detachnic);
// a VM or NIC the host does not have is not an error (it is unplugged).
func (a *Agent) detachNic(ctx context.Context, req *agentserver.Request, cmd protocol.NicCmd) (protocol.VMRsp, error) {
	id := cmd.VMUUID
	if id == "" {
		return protocol.VMRsp{}, errors.New("vmUuid is required")
	}
	if cmd.Nic.Mac == "" {
		return protocol.VMRsp{}, errors.New("nic.mac is required")
	}
	defer a.enterVM(id, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	a.mu.Lock()
	vm := a.vms[id]
	if vm == nil {
		a.mu.Unlock()
		return protocol.VMRsp{}, nil
	}
	i := slices.IndexFunc(vm.NICs, func(n protocol.NicTO) bool { return n.Mac == cmd.Nic.Mac })
	if i < 0 {
		state := vm.State
		a.mu.Unlock()
		return protocol.VMRsp{VMState: state}, nil
	}
	vm.NICs = slices.Delete(vm.NICs, i, i+1)
	a.version++
	state := vm.State
	a.mu.Unlock()
	return protocol.VMRsp{VMState: state}, a.committed()
}

func (a *Agent) stateOf(vmUUID string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return stateOf(a.vms[vmUUID])
}
