package kvm

import (
	"context"
	"fmt"
	"slices"

	"mplane/agents/agentclient"
	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// migrateVM hands a running VM to the destination agent (its
// /vm/migrate/incoming), then forgets it. The source sends no event: the
// destination reports the VM Running with its own host UUID, which is how
// the management node learns where the VM is.
func (a *Agent) migrateVM(ctx context.Context, req *agentserver.Request, cmd protocol.MigrateVMCmd) (protocol.VMRsp, error) {
	if cmd.VMUUID == "" || cmd.DestAgentURL == "" {
		return protocol.VMRsp{}, fmt.Errorf("vmUuid and destAgentUrl are required")
	}
	defer a.enterVM(cmd.VMUUID, req.Path)()
	if err := a.simulate(ctx, req); err != nil {
		return protocol.VMRsp{}, err
	}
	a.mu.Lock()
	vm := a.vms[cmd.VMUUID]
	if vm == nil || vm.State != protocol.VMStateRunning {
		a.mu.Unlock()
		return protocol.VMRsp{}, fmt.Errorf("vm[uuid:%s] is not running on this host, cannot migrate it", cmd.VMUUID)
	}
	moving := cloneVM(vm)
	source := a.hostUUID
	a.mu.Unlock()

	var opts []agentclient.CallOption
	if cmd.DestSecret != "" {
		opts = append(opts, agentclient.WithSecret(cmd.DestSecret))
	}
	var rsp protocol.VMRsp
	err := a.client.CallSync(ctx, cmd.DestAgentURL, protocol.PathIncomingVM,
		protocol.IncomingVMCmd{VM: moving, SourceHostUUID: source}, &rsp, opts...)
	if err != nil {
		return protocol.VMRsp{VMState: protocol.VMStateRunning}, fmt.Errorf("migrate vm %s to %s: %w", cmd.VMUUID, cmd.DestAgentURL, err)
	}
	a.mu.Lock()
	delete(a.vms, cmd.VMUUID)
	a.version++
	a.mu.Unlock()
	return protocol.VMRsp{VMState: protocol.VMStateRunning}, a.persist()
}

// incomingVM receives a migrating VM: it runs here from now on.
func (a *Agent) incomingVM(_ context.Context, req *agentserver.Request, cmd protocol.IncomingVMCmd) (protocol.VMRsp, error) {
	in := cmd.VM
	if in.UUID == "" {
		return protocol.VMRsp{}, fmt.Errorf("vm.uuid is required")
	}
	defer a.enterVM(in.UUID, req.Path)()
	a.mu.Lock()
	if vm := a.vms[in.UUID]; vm != nil && vm.State == protocol.VMStateRunning {
		a.mu.Unlock()
		return protocol.VMRsp{VMState: protocol.VMStateRunning}, nil
	}
	_, usedMem := a.usedLocked()
	if usedMem+in.Memory > a.opts.MemoryBytes {
		a.mu.Unlock()
		return protocol.VMRsp{}, fmt.Errorf("not enough memory to receive vm[uuid:%s]", in.UUID)
	}
	// The VM keeps its disks and NICs: the same files, reached from here.
	vm := &protocol.VM{UUID: in.UUID, Name: in.Name, CPUNum: in.CPUNum, Memory: in.Memory,
		Volumes: slices.Clone(in.Volumes), NICs: slices.Clone(in.NICs)}
	a.vms[in.UUID] = vm
	ev := a.setStateLocked(vm, protocol.VMStateRunning)
	a.mu.Unlock()
	return protocol.VMRsp{VMState: protocol.VMStateRunning}, a.committed(ev)
}
