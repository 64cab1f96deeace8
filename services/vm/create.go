package vm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/flow"
	"mplane/services/host"
	"mplane/services/volume"
	"mplane/uid"
)

// createData is what the create flow's steps share; it is recorded at
// every step (JSON) so a new owner can roll back what a dead one left.
type createData struct {
	VM  VmInstanceVO `json:"vm"`
	L3s []string     `json:"l3s"`
	// StaticIPs are the NICs' fixed addresses by L3 network, Bridges the
	// bridge of each L3 network's L2 network on the chosen host.
	StaticIPs map[string]string `json:"staticIps,omitempty"`
	Bridges   map[string]string `json:"bridges,omitempty"`
	NicUUIDs  []string          `json:"nicUuids"` // chosen before any IP is taken
	Spec      allocSpec         `json:"spec"`
	Hosts     []string          `json:"hosts,omitempty"` // candidates, best first
	// HostClusters and HostZones are the candidates' clusters (the
	// storage they reach) and zones.
	HostClusters map[string]string `json:"hostClusters,omitempty"`
	HostZones    map[string]string `json:"hostZones,omitempty"`
	HostUUID     string            `json:"hostUuid,omitempty"`
	// Disks are the root volume and the data volumes of
	// dataDiskOfferingUuids, in device order; their UUIDs are chosen
	// before anything is made, so a rollback finds what was.
	Disks []*volume.Disk `json:"disks"`
}

func (d *createData) diskUUIDs() []string {
	out := make([]string, len(d.Disks))
	for i, k := range d.Disks {
		out[i] = k.Volume.UUID
	}
	return out
}

func newMAC() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	// fa: locally administered, unicast (ZStack uses fa:xx too).
	return fmt.Sprintf("fa:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
}

// createChain: record (the VM and its volumes) -> allocate host ->
// reserve capacity (the host's CPU and memory, and room for every volume
// on primary storage the host reaches) -> allocate IPs -> make the volumes
// (the root from the image, cached on the storage first) -> start on the
// hypervisor -> Running. Any failure rolls back what ran, in reverse: no
// reserved capacity, no volume file, no IP and no VM row stay behind.
func (s *Service) createChain() (*flow.Chain[createData], error) {
	return flow.New("create-vm", []flow.Step[createData]{
		{Name: "create-record", Run: s.stepRecord, Rollback: s.undoRecord},
		{Name: "allocate-host", Run: s.stepAllocateHost},
		{Name: "reserve-capacity", Run: s.stepReserve, Rollback: s.undoReserve},
		{Name: "allocate-ip", Run: s.stepAllocateIPs, Rollback: s.undoIPs},
		// The volumes' files are undone with their reservations
		// (reserve-capacity), found from the reservation rows.
		{Name: "create-volumes", Run: s.stepCreateVolumes},
		// The bridges stay: other VMs of the host may use them.
		{Name: "prepare-network", Run: func(ctx context.Context, d *createData) error {
			b, err := s.opts.IPAM.Realize(ctx, d.HostUUID, d.L3s)
			d.Bridges = b
			return err
		}},
		{Name: "start-on-hypervisor", Run: s.stepStartOnHost, Rollback: s.undoStartOnHost},
		{Name: "set-running", Run: s.stepSetRunning},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

func (s *Service) handleCreate(ctx context.Context, req CreateReq) (VmInstanceVO, error) {
	return inChain(ctx, s, req.UUID, "create", func(ctx context.Context) (VmInstanceVO, error) {
		if v, err := s.load(ctx, req.UUID); err == nil {
			return *v, nil // a redelivered create: answer with what exists
		}
		var avoid []string
		var last error
		for attempt := 1; ; attempt++ {
			// Reads only: waits out a database outage (untilDB).
			var d *createData
			err := s.untilDB(ctx, func(ctx context.Context) (err error) {
				d, err = s.prepareCreate(ctx, req)
				return err
			})
			if err != nil {
				return VmInstanceVO{}, err
			}
			d.Spec.Avoid = append(d.Spec.Avoid, avoid...)
			err = s.create.Run(ctx, d, flow.RunOptions{Resource: req.UUID})
			if err == nil {
				// The flow wrote every column: answer from its data, no re-read.
				return d.VM, nil
			}
			var se *flow.StepError
			errors.As(err, &se)
			if last != nil && se != nil && (se.Step == "allocate-host" || se.Step == "reserve-capacity") {
				return VmInstanceVO{}, last // no other host: the first host's failure says why
			}
			if !s.reschedule(ctx, req, d, se, attempt) {
				return VmInstanceVO{}, err
			}
			s.log.Warn("create: the chosen host's agent cannot be reached or failed; the create was rolled back and tries the next host",
				"vm_uuid", req.UUID, "host_uuid", d.HostUUID, "attempt", attempt, "err", err)
			avoid, last = append(avoid, d.HostUUID), err
		}
	})
}

// createAttempts bounds the hosts one create tries.
const createAttempts = 3

// reschedule says whether a create that failed (se) tries another host, as
// a scheduler reschedules: the host's agent could not be reached or failed
// the command (a refused connection, a restarted agent that lacks a
// bridge), every rollback succeeded (nothing of the create remains on that
// host, or reconciliation removes it), no host was asked for, and attempts
// and time remain.
func (s *Service) reschedule(ctx context.Context, req CreateReq, d *createData, se *flow.StepError, attempt int) bool {
	return se != nil && len(se.RollbackErrors) == 0 && d.HostUUID != "" && req.Params.HostUUID == "" &&
		attempt < createAttempts && ctx.Err() == nil && errcode.Has(se.Err, errcode.AgentError)
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
		L3s:       p.L3NetworkUUIDs,
		StaticIPs: req.StaticIPs,
		Spec:      allocSpec{CPU: int64(sz.CPUNum), Memory: sz.MemorySize, ZoneUUID: p.ZoneUUID, ClusterUUID: p.ClusterUUID, HostUUID: p.HostUUID},
	}
	for range p.L3NetworkUUIDs {
		d.NicUUIDs = append(d.NicUUIDs, uid.New())
	}
	root, err := volume.RootDisk(ctx, s.db, req.UUID, uid.New(), p.Name, p.ImageUUID)
	if err != nil {
		return nil, err
	}
	d.VM.RootVolumeUUID = root.Volume.UUID
	d.Disks = append(d.Disks, root)
	for i, off := range p.DataDiskOfferingUUIDs {
		disk, err := volume.DataDisk(ctx, s.db, req.UUID, uid.New(), p.Name, off, i+1)
		if err != nil {
			return nil, err
		}
		d.Disks = append(d.Disks, disk)
	}
	return d, nil
}

func (s *Service) stepRecord(ctx context.Context, d *createData) error {
	row := d.VM
	row.VMNics, row.AllVolumes = nil, nil // written by allocate-ip, and here by the volume service
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&row).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "write VM %s", d.VM.UUID)
		}
		return volume.RecordDisks(ctx, tx, d.Disks)
	})
}

// undoRecord removes the VM's rows; a volume whose file could not be
// deleted stays, as Error (volume.DropDisks).
func (s *Service) undoRecord(ctx context.Context, d *createData) error {
	if err := volume.DropDisks(ctx, s.db, d.diskUUIDs()); err != nil {
		return err
	}
	if err := s.db.WithContext(ctx).Delete(&VmNicVO{}, "vm_instance_uuid = ?", d.VM.UUID).Error; err != nil {
		return err
	}
	return s.db.WithContext(ctx).Delete(&VmInstanceVO{}, "uuid = ?", d.VM.UUID).Error
}

func (s *Service) stepAllocateHost(ctx context.Context, d *createData) error {
	net, err := s.opts.IPAM.Placement(ctx, d.L3s)
	if err != nil {
		return err
	}
	d.Spec.Net = net
	hosts, err := candidates(ctx, s.db, d.Spec, s.AllocationStrategy())
	if err != nil {
		return err
	}
	d.HostClusters, d.HostZones = map[string]string{}, map[string]string{}
	for _, h := range hosts {
		d.Hosts = append(d.Hosts, h.UUID)
		d.HostClusters[h.UUID], d.HostZones[h.UUID] = h.ClusterUUID, h.ZoneUUID
	}
	return nil
}

// stepReserve takes, on the first candidate where both hold, the host's
// CPU and memory and room for every volume on storage the host reaches.
func (s *Service) stepReserve(ctx context.Context, d *createData) error {
	h, err := reserveOn(ctx, s.db, d.VM.UUID, d.Spec, d.Hosts, func(ctx context.Context, h string) (bool, error) {
		return s.vols.PlaceDisks(ctx, d.Disks, h, d.HostClusters[h], d.HostZones[h])
	})
	if err != nil {
		return err
	}
	d.HostUUID = h
	return nil
}

// undoReserve deletes the volumes' files, if any were made, with their
// reservations, then gives the host's capacity back.
func (s *Service) undoReserve(ctx context.Context, d *createData) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return errors.Join(s.vols.UndoDisks(ctx, d.Disks), host.Release(ctx, s.db, d.VM.UUID))
}

func (s *Service) stepCreateVolumes(ctx context.Context, d *createData) error {
	return s.vols.MakeDisks(ctx, d.Disks, d.HostUUID)
}

func (s *Service) stepAllocateIPs(ctx context.Context, d *createData) error {
	now := time.Now().UTC()
	for i, l3 := range d.L3s {
		ip, err := s.opts.IPAM.Allocate(ctx, l3, d.NicUUIDs[i], d.StaticIPs[l3])
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
	tos := make([]protocol.VolumeTO, len(d.Disks))
	for i, k := range d.Disks {
		tos[i] = volume.TO(k.Volume, k.URL, k.PSType)
	}
	cmd := s.startCmd(&d.VM, d.VM.VMNics, tos)
	onBridges(cmd.Nics, d.Bridges)
	return s.startOnHost(ctx, d.HostUUID, cmd)
}

// startOnHost sends the start of cmd's VM to host hostUUID. An agent that
// refuses it for a missing bridge restarted since the bridges were made
// (the records of realized bridges do not know it until the host's next
// ping): the bridges are sent again and the start once more, which the
// refusal proves did not run.
func (s *Service) startOnHost(ctx context.Context, hostUUID string, cmd protocol.StartVMCmd) error {
	err := agentCommand(ctx, s, hostUUID, protocol.StartVM, cmd)
	if !bridgeMissing(err) {
		return err
	}
	s.log.Warn("host lacks a bridge it had: making the VM's bridges again", "host_uuid", hostUUID, "vm_uuid", cmd.VMInstanceUUID, "err", err)
	bridges, rerr := s.opts.IPAM.RealizeAgain(ctx, hostUUID, l3sOf(cmd.Nics))
	if rerr != nil {
		return fmt.Errorf("%w; making the bridges again: %w", err, rerr)
	}
	onBridges(cmd.Nics, bridges)
	return agentCommand(ctx, s, hostUUID, protocol.StartVM, cmd)
}

// bridgeMissing reports whether err is an agent's refusal of a command for
// a NIC whose bridge the host does not have.
func bridgeMissing(err error) bool {
	if errcode.CodeOf(err) != errcode.AgentError {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "bridge ") && strings.Contains(msg, "does not exist on this host")
}

// startCmd is the StartVmCmd of VM v with its NICs and volumes (root
// first), in ZStack's shape.
func (s *Service) startCmd(v *VmInstanceVO, nics []VmNicVO, vols []protocol.VolumeTO) protocol.StartVMCmd {
	cmd := protocol.StartVMCmd{VMInstanceUUID: v.UUID, VMName: v.Name, CPUNum: v.CPUNum, SocketNum: 1, CPUOnSocket: v.CPUNum,
		Memory: v.MemorySize, BootDev: []string{"hd"}, Timeout: int64(s.commandTimeout(protocol.PathStartVM) / time.Second), ConsoleMode: "vnc",
		DataVolumes: []protocol.VolumeTO{}, Nics: []protocol.NicTO{}}
	for _, to := range vols {
		if to.Type == volume.TypeRoot {
			to := to
			cmd.RootVolume = &to
		} else {
			cmd.DataVolumes = append(cmd.DataVolumes, to)
		}
	}
	for _, n := range nics {
		cmd.Nics = append(cmd.Nics, nicTOOf(n, ""))
	}
	return cmd
}

func (s *Service) undoStartOnHost(ctx context.Context, d *createData) error {
	if d.HostUUID == "" {
		return nil
	}
	// The agent may never have started it. Tried again while the host's
	// owner or the database is briefly unreachable (the flow's Transient);
	// an agent that refuses or is down is left to reconciliation, which
	// destroys what this misses.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return s.undoneOnHost(agentCommand(ctx, s, d.HostUUID, protocol.DestroyVM, protocol.DestroyVMCmd{UUID: d.VM.UUID}),
		"destroy VM on its host", "vm_uuid", d.VM.UUID, "host_uuid", d.HostUUID)
}

// undoneOnHost is the outcome of a rollback's command to a host (err): nil
// when it succeeded or failed for good (logged; reconciliation removes what
// it missed), err when it failed transiently, so the flow tries it again.
func (s *Service) undoneOnHost(err error, what string, args ...any) error {
	if err == nil {
		return nil
	}
	s.log.Warn("rollback: "+what, append(args, "err", err)...)
	if s.node.Transient(err) {
		return err
	}
	return nil
}

func (s *Service) stepSetRunning(ctx context.Context, d *createData) error {
	// The row is as create-record wrote it (version 0): this chain is the
	// only writer of a VM that is being created.
	// The VM runs on its host by now: while the database is unavailable
	// this step waits for it (untilDB) rather than rolling the VM back. An
	// attempt whose commit answer was lost leaves the row one version on:
	// the next attempt takes that as done.
	v := d.VM
	err := s.untilDB(ctx, func(ctx context.Context) error {
		v = d.VM
		err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if err := volume.DisksReady(ctx, tx, d.Disks); err != nil {
				return err
			}
			// The VM is in its host's cluster and zone from now on.
			return setState(ctx, tx, &v, StateRunning, map[string]any{"host_uuid": d.HostUUID, "last_host_uuid": d.HostUUID,
				"cluster_uuid": d.HostClusters[d.HostUUID], "zone_uuid": d.HostZones[d.HostUUID]})
		})
		if errcode.Has(err, errcode.Conflict) && s.committed(ctx, &v, StateRunning) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	d.VM.State, d.VM.Version, d.VM.HostUUID, d.VM.LastHostUUID, d.VM.LastOpDate = v.State, v.Version, d.HostUUID, d.HostUUID, time.Now().UTC()
	d.VM.ClusterUUID, d.VM.ZoneUUID = d.HostClusters[d.HostUUID], d.HostZones[d.HostUUID]
	d.VM.AllVolumes = make([]volume.VolumeVO, len(d.Disks))
	for i, k := range d.Disks {
		d.VM.AllVolumes[i] = k.Volume
	}
	return nil
}

// agentCommand sends one VM command to a host's agent through the host's
// owner, bounded by its timeout (commandTimeout; see onHost).
func agentCommand[Cmd any](ctx context.Context, s *Service, hostUUID string, c protocol.Command[Cmd, protocol.VMRsp], cmd Cmd) error {
	ctx, cancel := context.WithTimeout(ctx, s.commandTimeout(c.Path))
	defer cancel()
	if _, err := onHost(ctx, s, hostUUID, c, cmd); err != nil {
		return fmt.Errorf("%s on host %s: %w", c.Path, hostUUID, err)
	}
	return nil
}

// onHost runs a command on a host through its owner. When the host's owner
// goes away under the call, host.Run sends the command again, through the
// new owner once the ring has changed, until ctx ends: a VM's operation is
// not hostage to the node that owns its host.
func onHost[Cmd, Rsp any](ctx context.Context, s *Service, hostUUID string, c protocol.Command[Cmd, Rsp], cmd Cmd) (Rsp, error) {
	return host.Run(ctx, s.node, hostUUID, c, cmd)
}

// commandNames are the agent paths of the VM commands whose timeout
// Options.CommandTimeouts may set, by name.
var commandNames = map[string]string{
	protocol.PathStartVM: "start", protocol.PathStopVM: "stop", protocol.PathRebootVM: "reboot", protocol.PathDestroyVM: "destroy",
}

// commandTimeout bounds the VM command at path: its own timeout if set,
// else AgentTimeout.
func (s *Service) commandTimeout(path string) time.Duration {
	if d, ok := s.opts.CommandTimeouts[commandNames[path]]; ok && d > 0 {
		return d
	}
	return s.opts.AgentTimeout
}
