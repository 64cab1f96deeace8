package vm

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"

	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/flow"
	"mplane/services/host"
	"mplane/uid"
)

// createData is what the create flow's steps share; it is recorded at
// every step (JSON) so a new owner can roll back what a dead one left.
type createData struct {
	VM       VmInstanceVO `json:"vm"`
	L3s      []string     `json:"l3s"`
	NicUUIDs []string     `json:"nicUuids"` // chosen before any IP is taken
	Spec     allocSpec    `json:"spec"`
	Hosts    []string     `json:"hosts,omitempty"` // candidates, best first
	HostUUID string       `json:"hostUuid,omitempty"`
}

func newMAC() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	// fa: locally administered, unicast (ZStack uses fa:xx too).
	return fmt.Sprintf("fa:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
}

// createChain: record -> allocate host -> reserve capacity -> allocate IPs
// -> start on the hypervisor -> Running. Any failure rolls back what ran,
// in reverse: no reserved capacity, no IP and no VM row stay behind.
func (s *Service) createChain() (*flow.Chain[createData], error) {
	return flow.New("create-vm", []flow.Step[createData]{
		{Name: "create-record", Run: s.stepRecord, Rollback: s.undoRecord},
		{Name: "allocate-host", Run: s.stepAllocateHost},
		{Name: "reserve-capacity", Run: s.stepReserve, Rollback: s.undoReserve},
		{Name: "allocate-ip", Run: s.stepAllocateIPs, Rollback: s.undoIPs},
		{Name: "start-on-hypervisor", Run: s.stepStartOnHost, Rollback: s.undoStartOnHost},
		{Name: "set-running", Run: s.stepSetRunning},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log})
}

func (s *Service) handleCreate(ctx context.Context, req CreateReq) (VmInstanceVO, error) {
	return inChain(ctx, s, req.UUID, "create", func(ctx context.Context) (VmInstanceVO, error) {
		if v, err := s.load(ctx, req.UUID); err == nil {
			return *v, nil // a redelivered create: answer with what exists
		}
		d, err := s.prepareCreate(ctx, req)
		if err != nil {
			return VmInstanceVO{}, err
		}
		if err := s.create.Run(ctx, d, flow.RunOptions{Resource: req.UUID}); err != nil {
			return VmInstanceVO{}, err
		}
		// The flow wrote every column: answer from its data, no re-read.
		return d.VM, nil
	})
}

// prepareCreate resolves the offering and image into the VM's row.
func (s *Service) prepareCreate(ctx context.Context, req CreateReq) (*createData, error) {
	p := req.Params
	sz := req.Sizing
	if sz == nil {
		off, img, err := lookupRefs(ctx, s.db, &p)
		if err != nil {
			return nil, err
		}
		sz = &Sizing{CPUNum: off.CPUNum, MemorySize: off.MemorySize, Platform: img.Platform}
	}
	now := time.Now().UTC()
	def := p.DefaultL3NetworkUUID
	if def == "" && len(p.L3NetworkUUIDs) > 0 {
		def = p.L3NetworkUUIDs[0]
	}
	d := &createData{
		VM: VmInstanceVO{UUID: req.UUID, Name: p.Name, Description: p.Description, ZoneUUID: p.ZoneUUID,
			ClusterUUID: p.ClusterUUID, InstanceOfferingUUID: p.InstanceOfferingUUID, ImageUUID: p.ImageUUID, DefaultL3NetworkUUID: def,
			Type: "UserVm", HypervisorType: "KVM", Platform: sz.Platform, CPUNum: sz.CPUNum, MemorySize: sz.MemorySize,
			State: StateStarting, CreateDate: now, LastOpDate: now},
		L3s:  p.L3NetworkUUIDs,
		Spec: allocSpec{CPU: int64(sz.CPUNum), Memory: sz.MemorySize, ZoneUUID: p.ZoneUUID, ClusterUUID: p.ClusterUUID, HostUUID: p.HostUUID},
	}
	for range p.L3NetworkUUIDs {
		d.NicUUIDs = append(d.NicUUIDs, uid.New())
	}
	return d, nil
}

func (s *Service) stepRecord(ctx context.Context, d *createData) error {
	row := d.VM
	row.VMNics = nil // written by allocate-ip
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "write VM %s", d.VM.UUID)
	}
	return nil
}

func (s *Service) undoRecord(ctx context.Context, d *createData) error {
	if err := s.db.WithContext(ctx).Delete(&VmNicVO{}, "vm_instance_uuid = ?", d.VM.UUID).Error; err != nil {
		return err
	}
	return s.db.WithContext(ctx).Delete(&VmInstanceVO{}, "uuid = ?", d.VM.UUID).Error
}

func (s *Service) stepAllocateHost(ctx context.Context, d *createData) error {
	hosts, err := candidates(ctx, s.db, d.Spec)
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		return errcode.New(errcode.CapacityExhausted, "no Connected and Enabled host%s has %d vCPUs and %d bytes of memory free",
			scopeOf(d.Spec), d.Spec.CPU, d.Spec.Memory)
	}
	d.Hosts = hosts
	return nil
}

func scopeOf(spec allocSpec) string {
	var parts []string
	if spec.HostUUID != "" {
		parts = append(parts, "host "+spec.HostUUID)
	}
	if spec.ClusterUUID != "" {
		parts = append(parts, "cluster "+spec.ClusterUUID)
	}
	if spec.ZoneUUID != "" {
		parts = append(parts, "zone "+spec.ZoneUUID)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (in " + strings.Join(parts, ", ") + ")"
}

func (s *Service) stepReserve(ctx context.Context, d *createData) error {
	h, err := reserveOn(ctx, s.db, d.VM.UUID, d.Spec, d.Hosts)
	if err != nil {
		return err
	}
	d.HostUUID = h
	return nil
}

func (s *Service) undoReserve(ctx context.Context, d *createData) error {
	return host.Release(ctx, s.db, d.VM.UUID)
}

func (s *Service) stepAllocateIPs(ctx context.Context, d *createData) error {
	now := time.Now().UTC()
	for i, l3 := range d.L3s {
		ip, err := s.opts.IPAM.Allocate(ctx, l3, d.NicUUIDs[i])
		if err != nil {
			return err
		}
		nic := VmNicVO{UUID: d.NicUUIDs[i], VMInstanceUUID: d.VM.UUID, L3NetworkUUID: l3, IP: ip.IP, Netmask: ip.Netmask,
			Gateway: ip.Gateway, Mac: newMAC(), DeviceID: i, UsedIPUUID: ip.UsedIPUUID, CreateDate: now}
		if err := s.db.WithContext(ctx).Create(&nic).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "write NIC of VM %s", d.VM.UUID)
		}
		d.VM.VMNics = append(d.VM.VMNics, nic)
	}
	return nil
}

func (s *Service) undoIPs(ctx context.Context, d *createData) error {
	var firstErr error
	for _, nic := range d.NicUUIDs {
		if err := s.opts.IPAM.ReleaseByOwner(ctx, nic); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if err := s.db.WithContext(ctx).Delete(&VmNicVO{}, "vm_instance_uuid = ?", d.VM.UUID).Error; err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

func (s *Service) stepStartOnHost(ctx context.Context, d *createData) error {
	return agentCommand(ctx, s, d.HostUUID, protocol.StartVM, protocol.StartVMCmd{VMInstanceUUID: d.VM.UUID, VMName: d.VM.Name,
		CPUNum: d.VM.CPUNum, Memory: d.VM.MemorySize})
}

func (s *Service) undoStartOnHost(ctx context.Context, d *createData) error {
	if d.HostUUID == "" {
		return nil
	}
	// Best effort: the agent may never have started it.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := agentCommand(ctx, s, d.HostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: d.VM.UUID})
	if err != nil {
		s.log.Warn("rollback: destroy VM on its host", "vm_uuid", d.VM.UUID, "host_uuid", d.HostUUID, "err", err)
	}
	return nil
}

func (s *Service) stepSetRunning(ctx context.Context, d *createData) error {
	// The row is as create-record wrote it (version 0): this chain is the
	// only writer of a VM that is being created.
	v := d.VM
	if err := s.setState(ctx, &v, StateRunning, map[string]any{"host_uuid": d.HostUUID, "last_host_uuid": d.HostUUID}); err != nil {
		return err
	}
	d.VM.State, d.VM.Version, d.VM.HostUUID, d.VM.LastHostUUID, d.VM.LastOpDate = v.State, v.Version, d.HostUUID, d.HostUUID, time.Now().UTC()
	return nil
}

// agentCommand sends one VM command to a host's agent through the host's
// owner, bounded by AgentTimeout.
func agentCommand[Cmd any](ctx context.Context, s *Service, hostUUID string, c protocol.Command[Cmd, protocol.VMRsp], cmd Cmd) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.AgentTimeout)
	defer cancel()
	if _, err := host.Run(ctx, s.node, hostUUID, c, cmd); err != nil {
		return fmt.Errorf("%s on host %s: %w", c.Path, hostUUID, err)
	}
	return nil
}
