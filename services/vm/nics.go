package vm

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/api/route"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
	"mplane/services/resource"
	"mplane/uid"
)

// StaticIPTag is the prefix of ZStack's system tag that gives a VM's NIC on
// an L3 network a fixed address: staticIp::<l3NetworkUuid>::<ip>.
const StaticIPTag = "staticIp::"

// staticIPs reads the staticIp system tags of a create: L3 network UUID ->
// address. Other system tags are left to whoever reads them. A tag on an
// L3 network the VM is not on, a bad address or two addresses for one L3
// network are InvalidArgument.
func staticIPs(tags []string, l3s []string) (map[string]string, error) {
	on := map[string]bool{}
	for _, l3 := range l3s {
		on[l3] = true
	}
	var out map[string]string
	for _, t := range tags {
		if !strings.HasPrefix(t, StaticIPTag) {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(t, StaticIPTag), "::")
		if len(parts) != 2 || parts[0] == "" {
			return nil, errcode.New(errcode.InvalidArgument, "system tag %q: want staticIp::<l3NetworkUuid>::<ip>", t)
		}
		l3, ip := parts[0], parts[1]
		if err := checkIPv4("system tag "+t, ip); err != nil {
			return nil, err
		}
		if !on[l3] {
			return nil, errcode.New(errcode.InvalidArgument, "system tag %q names L3 network %s, which is not in l3NetworkUuids", t, l3)
		}
		if prev, ok := out[l3]; ok && prev != ip {
			return nil, errcode.New(errcode.InvalidArgument, "system tags give L3 network %s two static IPs, %s and %s", l3, prev, ip)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[l3] = ip
	}
	return out, nil
}

func checkIPv4(what, ip string) error {
	if p := net.ParseIP(ip); p == nil || p.To4() == nil || strings.Contains(ip, ":") {
		return errcode.New(errcode.InvalidArgument, "%s: %q is not an IPv4 address", what, ip)
	}
	return nil
}

// NicReq attaches an L3 network to a VM (a new NIC), or detaches a NIC, or
// sets the static IP of the VM's NIC on an L3 network; on the VM's owner,
// in the VM's chain.
type NicReq struct {
	VMUUID  string `json:"vmInstanceUuid"`
	L3UUID  string `json:"l3NetworkUuid,omitempty"`
	NicUUID string `json:"vmNicUuid,omitempty"`
	IP      string `json:"ip,omitempty"`
}

// ResourceUUID is the VM.
func (r NicReq) ResourceUUID() string { return r.VMUUID }

// UpdateReq changes a VM's name, description or default L3 network
// (ZStack's updateVmInstance); empty fields stay.
type UpdateReq struct {
	VMUUID string       `json:"uuid"`
	Params UpdateParams `json:"params"`
}

// ResourceUUID is the VM.
func (r UpdateReq) ResourceUUID() string { return r.VMUUID }

// Messages of the VM's NICs.
var (
	MsgAttachL3    = managementnode.NewOwnedMsg[NicReq, VmInstanceVO](BusService, "vm.AttachL3NetworkToVm")
	MsgDetachNic   = managementnode.NewOwnedMsg[NicReq, VmInstanceVO](BusService, "vm.DetachL3NetworkFromVm")
	MsgSetStaticIP = managementnode.NewOwnedMsg[NicReq, VmInstanceVO](BusService, "vm.SetVmStaticIp")
	MsgUpdate      = managementnode.NewOwnedMsg[UpdateReq, VmInstanceVO](BusService, "vm.UpdateVmInstance")
)

// AttachL3Params are the params of POST
// /v1/vm-instances/{vmInstanceUuid}/l3-networks/{l3NetworkUuid}.
type AttachL3Params struct {
	VMInstanceUUID string `json:"vmInstanceUuid"`
	L3NetworkUUID  string `json:"l3NetworkUuid"`
	StaticIP       string `json:"staticIp,omitempty"`
}

// Validate checks the static IP's form.
func (p *AttachL3Params) Validate() error {
	if p.StaticIP != "" {
		return checkIPv4("staticIp", p.StaticIP)
	}
	return nil
}

// DetachNicParams are the params of DELETE /v1/vm-instances/nics/{vmNicUuid}.
type DetachNicParams struct {
	VMNicUUID string `json:"vmNicUuid"`
}

// StaticIPParams are the params of the setVmStaticIp action.
type StaticIPParams struct {
	L3NetworkUUID string `json:"l3NetworkUuid"`
	IP            string `json:"ip"`
}

// Validate checks that both are given.
func (p *StaticIPParams) Validate() error {
	if p.L3NetworkUUID == "" {
		return errcode.New(errcode.InvalidArgument, "setVmStaticIp.l3NetworkUuid is required")
	}
	return checkIPv4("setVmStaticIp.ip", p.IP)
}

// UpdateParams are the params of the updateVmInstance action.
type UpdateParams struct {
	Name                 *string `json:"name,omitempty"`
	Description          *string `json:"description,omitempty"`
	DefaultL3NetworkUUID *string `json:"defaultL3NetworkUuid,omitempty"`
}

// Validate refuses an empty name.
func (p *UpdateParams) Validate() error {
	if p.Name != nil && strings.TrimSpace(*p.Name) == "" {
		return errcode.New(errcode.InvalidArgument, "updateVmInstance.name must not be empty")
	}
	if p.DefaultL3NetworkUUID != nil && *p.DefaultL3NetworkUUID == "" {
		return errcode.New(errcode.InvalidArgument, "updateVmInstance.defaultL3NetworkUuid must not be empty")
	}
	return nil
}

// nicAPI is the REST surface of the VMs' NICs: QueryVmNic (with each
// NIC's usedIps), AttachL3NetworkToVm, DetachL3NetworkFromVm, and the VM
// actions setVmStaticIp and updateVmInstance.
func (s *Service) nicAPI() (route.Resource, []route.Op, []route.Op) {
	nics := route.Resource{Path: "vm-instances/nics", Name: "VM NIC", Access: route.Owned, Query: route.QueryOf[VmNicVO](route.Preload("UsedIPs"))}
	calls := []route.Op{
		route.Call(http.MethodPost, "vm-instances/{vmInstanceUuid}/l3-networks/{l3NetworkUuid}", MsgAttachL3,
			func(ctx context.Context, in route.In[AttachL3Params]) (NicReq, error) {
				p := in.Params
				if err := resource.MustExist(ctx, in.DB, &VmInstanceVO{}, "vmInstanceUuid", p.VMInstanceUUID); err != nil {
					return NicReq{}, err
				}
				if err := s.opts.IPAM.Usable(ctx, p.L3NetworkUUID); err != nil {
					return NicReq{}, err
				}
				v, err := loadVM(ctx, in.DB, p.VMInstanceUUID)
				if err != nil {
					return NicReq{}, err
				}
				if err := checkNicPlacement(ctx, s.opts.IPAM, v, p.L3NetworkUUID); err != nil {
					return NicReq{}, err
				}
				return NicReq{VMUUID: p.VMInstanceUUID, L3UUID: p.L3NetworkUUID, IP: p.StaticIP}, nil
			}),
		route.Call(http.MethodDelete, "vm-instances/nics/{vmNicUuid}", MsgDetachNic,
			func(ctx context.Context, in route.In[DetachNicParams]) (NicReq, error) {
				var nic VmNicVO
				err := in.DB.Take(&nic, "uuid = ?", in.Params.VMNicUUID).Error
				if errors.Is(err, gorm.ErrRecordNotFound) {
					return NicReq{}, errcode.New(errcode.ResourceNotFound, "VM NIC %s not found", in.Params.VMNicUUID)
				}
				if err != nil {
					return NicReq{}, errcode.Wrap(errcode.Internal, err, "look up VM NIC %s", in.Params.VMNicUUID)
				}
				return NicReq{VMUUID: nic.VMInstanceUUID, NicUUID: nic.UUID}, nil
			}),
	}
	actions := []route.Op{
		route.Action("setVmStaticIp", MsgSetStaticIP, func(_ context.Context, in route.In[StaticIPParams]) (NicReq, error) {
			return NicReq{VMUUID: in.UUID, L3UUID: in.Params.L3NetworkUUID, IP: in.Params.IP}, nil
		}),
		route.Action("updateVmInstance", MsgUpdate, func(_ context.Context, in route.In[UpdateParams]) (UpdateReq, error) {
			return UpdateReq{VMUUID: in.UUID, Params: in.Params}, nil
		}),
	}
	return nics, calls, actions
}

// nicAttachable are the VM states in which NICs change: a running VM gets
// the change on its hypervisor at once, a stopped one with its next start.
func nicAttachable(v *VmInstanceVO, op string) error {
	if v.State != StateRunning && v.State != StateStopped {
		return errcode.New(errcode.InvalidState, "cannot %s: VM %s is %s; it must be Running or Stopped", op, v.UUID, v.State)
	}
	return nil
}

// nicData is what the attach-nic flow's steps share (recorded at each
// step, so a new owner can roll back what a dead one left).
type nicData struct {
	VMUUID   string  `json:"vmUuid"`
	HostUUID string  `json:"hostUuid,omitempty"` // the running VM's host
	StaticIP string  `json:"staticIp,omitempty"`
	Nic      VmNicVO `json:"nic"`
	Default  bool    `json:"default,omitempty"` // the VM had no default L3 network
}

// attachNicChain: allocate the IP -> record the NIC -> (a running VM) make
// its L2 network's bridge on the host and plug the NIC in. A failure
// rolls back: no NIC row and no IP stay.
func (s *Service) attachNicChain() (*flow.Chain[nicData], error) {
	return flow.New("attach-nic", []flow.Step[nicData]{
		{Name: "allocate-ip", Run: func(ctx context.Context, d *nicData) error {
			ip, err := s.opts.IPAM.Allocate(ctx, d.Nic.L3NetworkUUID, d.Nic.UUID, d.StaticIP)
			if err != nil {
				return err
			}
			d.Nic.IP, d.Nic.Netmask, d.Nic.Gateway, d.Nic.UsedIPUUID = ip.IP, ip.Netmask, ip.Gateway, ip.UsedIPUUID
			return nil
		}, Rollback: func(ctx context.Context, d *nicData) error { return s.opts.IPAM.ReleaseByOwner(ctx, d.Nic.UUID) }},
		{Name: "record-nic", Run: func(ctx context.Context, d *nicData) error {
			return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
				row := d.Nic
				row.UsedIPs = nil
				if err := tx.Create(&row).Error; err != nil {
					return errcode.Wrap(errcode.Internal, err, "write NIC %s of VM %s", d.Nic.UUID, d.VMUUID)
				}
				if d.Default {
					return tx.Model(&VmInstanceVO{}).Where("uuid = ?", d.VMUUID).Update("default_l3_network_uuid", d.Nic.L3NetworkUUID).Error
				}
				return nil
			})
		}, Rollback: func(ctx context.Context, d *nicData) error {
			return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
				if err := tx.Delete(&VmNicVO{}, "uuid = ?", d.Nic.UUID).Error; err != nil {
					return err
				}
				if d.Default {
					return tx.Model(&VmInstanceVO{}).Where("uuid = ? AND default_l3_network_uuid = ?", d.VMUUID, d.Nic.L3NetworkUUID).
						Update("default_l3_network_uuid", "").Error
				}
				return nil
			})
		}},
		{Name: "attach-on-hypervisor", Run: func(ctx context.Context, d *nicData) error {
			if d.HostUUID == "" {
				return nil
			}
			to, err := s.nicTO(ctx, d.HostUUID, d.Nic)
			if err != nil {
				return err
			}
			return agentCommand(ctx, s, d.HostUUID, protocol.AttachNic, protocol.NicCmd{VMUUID: d.VMUUID, Nic: to})
		}, Rollback: func(ctx context.Context, d *nicData) error {
			if d.HostUUID == "" {
				return nil
			}
			// The hypervisor may never have plugged it; tried again while
			// the host's owner is briefly unreachable.
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			to := nicTOOf(d.Nic, "")
			return s.undoneOnHost(agentCommand(ctx, s, d.HostUUID, protocol.DetachNic, protocol.NicCmd{VMUUID: d.VMUUID, Nic: to}),
				"unplug NIC", "vm_uuid", d.VMUUID, "nic_uuid", d.Nic.UUID)
		}},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

// nicTO is nic as a command carries it, with the bridge of its L2 network
// on host, made there first if it is not yet.
func (s *Service) nicTO(ctx context.Context, hostUUID string, nic VmNicVO) (protocol.NicTO, error) {
	bridges, err := s.opts.IPAM.Realize(ctx, hostUUID, []string{nic.L3NetworkUUID})
	if err != nil {
		return protocol.NicTO{}, err
	}
	return nicTOOf(nic, bridges[nic.L3NetworkUUID]), nil
}

// checkNicPlacement refuses (InvalidArgument) an L3 network outside the
// VM's zone or, for a VM placed in a cluster, one whose L2 network the
// cluster lacks.
func checkNicPlacement(ctx context.Context, ipam IPAM, v *VmInstanceVO, l3UUID string) error {
	net, err := ipam.Placement(ctx, []string{l3UUID})
	if err != nil {
		return err
	}
	if v.ZoneUUID != "" && net.Zone != v.ZoneUUID {
		return errcode.New(errcode.InvalidArgument, "L3 network %s is in zone %s, VM %s in zone %s: attach an L3 network of the VM's zone",
			l3UUID, net.Zone, v.UUID, v.ZoneUUID)
	}
	if len(net.L2s) > 0 && v.ClusterUUID != "" && !slices.Contains(net.Clusters, v.ClusterUUID) {
		return errcode.New(errcode.InvalidArgument,
			"the L2 network %s of L3 network %s is not attached to cluster %s of VM %s: attach it to the cluster first",
			strings.Join(net.L2s, ", "), l3UUID, v.ClusterUUID, v.UUID)
	}
	return nil
}

// l3sOf are the L3 networks of a command's NICs.
func l3sOf(nics []protocol.NicTO) []string {
	out := make([]string, len(nics))
	for i, n := range nics {
		out[i] = n.L3NetworkUUID
	}
	return out
}

// onBridges puts each NIC on its L3 network's bridge (Realize's answer).
func onBridges(nics []protocol.NicTO, bridges map[string]string) {
	for i := range nics {
		nics[i].BridgeName = bridges[nics[i].L3NetworkUUID]
	}
}

func nicTOOf(n VmNicVO, bridge string) protocol.NicTO {
	return protocol.NicTO{UUID: n.UUID, Mac: n.Mac, IP: n.IP, Netmask: n.Netmask, Gateway: n.Gateway,
		L3NetworkUUID: n.L3NetworkUUID, BridgeName: bridge, DeviceID: n.DeviceID, UseVirtio: true}
}

// handleAttachL3 gives the VM a NIC on the L3 network, with an IP (the
// static one if asked), plugged into the VM if it runs. An L3 network the
// VM already has a NIC on is refused (InvalidArgument), as is one outside
// the VM's zone or, for a running VM, one whose L2 network its host's
// cluster lacks.
func (s *Service) handleAttachL3(ctx context.Context, req NicReq) (VmInstanceVO, error) {
	return inChain(ctx, s, req.VMUUID, "attach-l3", func(ctx context.Context) (VmInstanceVO, error) {
		v, err := s.load(ctx, req.VMUUID)
		if err != nil {
			return VmInstanceVO{}, err
		}
		if err := nicAttachable(v, "attach L3 network "+req.L3UUID); err != nil {
			return VmInstanceVO{}, err
		}
		dev := 0
		for _, n := range v.VMNics {
			if n.L3NetworkUUID == req.L3UUID {
				return VmInstanceVO{}, errcode.New(errcode.InvalidArgument, "VM %s already has NIC %s on L3 network %s", v.UUID, n.UUID, req.L3UUID)
			}
			dev = max(dev, n.DeviceID+1)
		}
		if err := checkNicPlacement(ctx, s.opts.IPAM, v, req.L3UUID); err != nil {
			return VmInstanceVO{}, err
		}
		d := &nicData{VMUUID: v.UUID, StaticIP: req.IP, Default: v.DefaultL3NetworkUUID == "",
			Nic: VmNicVO{UUID: uid.New(), VMInstanceUUID: v.UUID, L3NetworkUUID: req.L3UUID, Mac: newMAC(), DeviceID: dev, CreateDate: time.Now().UTC()}}
		if v.State == StateRunning {
			d.HostUUID = v.HostUUID
		}
		if err := s.attachNic.Run(ctx, d, flow.RunOptions{Resource: v.UUID}); err != nil {
			return VmInstanceVO{}, err
		}
		return s.reply(ctx, v.UUID)
	})
}

// handleDetachNic unplugs the NIC from the running VM, gives its IP back
// and deletes it; the VM's default L3 network moves to its first other
// NIC's. A NIC already gone is answered with the VM as it is (a repeated
// detach).
func (s *Service) handleDetachNic(ctx context.Context, req NicReq) (VmInstanceVO, error) {
	return inChain(ctx, s, req.VMUUID, "detach-nic", func(ctx context.Context) (VmInstanceVO, error) {
		v, err := s.load(ctx, req.VMUUID)
		if err != nil {
			return VmInstanceVO{}, err
		}
		var nic *VmNicVO
		for i := range v.VMNics {
			if v.VMNics[i].UUID == req.NicUUID {
				nic = &v.VMNics[i]
			}
		}
		if nic == nil {
			return *v, nil
		}
		if err := nicAttachable(v, "detach NIC "+nic.UUID); err != nil {
			return VmInstanceVO{}, err
		}
		if v.State == StateRunning {
			if err := agentCommand(ctx, s, v.HostUUID, protocol.DetachNic, protocol.NicCmd{VMUUID: v.UUID, Nic: nicTOOf(*nic, "")}); err != nil {
				return VmInstanceVO{}, errcode.Wrap(errcode.AgentError, err, "unplug NIC %s of VM %s", nic.UUID, v.UUID)
			}
		}
		// The IP first: a detach cut short after it is finished by the
		// next (the NIC row is still there to name).
		if err := s.opts.IPAM.ReleaseByOwner(ctx, nic.UUID); err != nil {
			return VmInstanceVO{}, errcode.Wrap(errcode.Internal, err, "release IP %s of NIC %s", nic.IP, nic.UUID)
		}
		def := v.DefaultL3NetworkUUID
		if def == nic.L3NetworkUUID {
			def = ""
			for _, n := range v.VMNics {
				if n.UUID != nic.UUID {
					def = n.L3NetworkUUID
					break
				}
			}
		}
		err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if err := tx.Delete(&VmNicVO{}, "uuid = ?", nic.UUID).Error; err != nil {
				return err
			}
			return tx.Model(&VmInstanceVO{}).Where("uuid = ?", v.UUID).Update("default_l3_network_uuid", def).Error
		})
		if err != nil {
			return VmInstanceVO{}, errcode.Wrap(errcode.Internal, err, "delete NIC %s of VM %s", nic.UUID, v.UUID)
		}
		return s.reply(ctx, v.UUID)
	})
}

// handleSetStaticIP gives the VM's NIC on the L3 network the address: it
// takes the new one, then gives the old one back (an address in use is
// refused, InvalidState, and the NIC keeps its own). A running VM's guest
// sees the new address when it next asks for one (DHCP), as in ZStack.
func (s *Service) handleSetStaticIP(ctx context.Context, req NicReq) (VmInstanceVO, error) {
	return inChain(ctx, s, req.VMUUID, "set-static-ip", func(ctx context.Context) (VmInstanceVO, error) {
		v, err := s.load(ctx, req.VMUUID)
		if err != nil {
			return VmInstanceVO{}, err
		}
		var nic *VmNicVO
		for i := range v.VMNics {
			if v.VMNics[i].L3NetworkUUID == req.L3UUID {
				nic = &v.VMNics[i]
			}
		}
		if nic == nil {
			return VmInstanceVO{}, errcode.New(errcode.InvalidArgument, "VM %s has no NIC on L3 network %s", v.UUID, req.L3UUID)
		}
		if nic.IP == req.IP {
			return *v, nil
		}
		if err := nicAttachable(v, "set a static IP"); err != nil {
			return VmInstanceVO{}, err
		}
		ip, err := s.opts.IPAM.Allocate(ctx, req.L3UUID, nic.UUID, req.IP)
		if err != nil {
			return VmInstanceVO{}, err
		}
		err = s.db.WithContext(ctx).Model(&VmNicVO{}).Where("uuid = ?", nic.UUID).
			Updates(map[string]any{"ip": ip.IP, "netmask": ip.Netmask, "gateway": ip.Gateway, "used_ip_uuid": ip.UsedIPUUID}).Error
		if err != nil {
			return VmInstanceVO{}, errors.Join(errcode.Wrap(errcode.Internal, err, "set IP of NIC %s", nic.UUID),
				s.opts.IPAM.Release(context.WithoutCancel(ctx), ip.UsedIPUUID))
		}
		if nic.UsedIPUUID != "" {
			if err := s.opts.IPAM.Release(ctx, nic.UsedIPUUID); err != nil {
				return VmInstanceVO{}, errcode.Wrap(errcode.Internal, err, "release the old IP %s of NIC %s", nic.IP, nic.UUID)
			}
		}
		return s.reply(ctx, v.UUID)
	})
}

// handleUpdate changes the VM's name, description or default L3 network
// (which must be one of its NICs').
func (s *Service) handleUpdate(ctx context.Context, req UpdateReq) (VmInstanceVO, error) {
	return inChain(ctx, s, req.VMUUID, "update", func(ctx context.Context) (VmInstanceVO, error) {
		v, err := s.load(ctx, req.VMUUID)
		if err != nil {
			return VmInstanceVO{}, err
		}
		p := req.Params
		upd := map[string]any{}
		if p.Name != nil {
			upd["name"] = *p.Name
		}
		if p.Description != nil {
			upd["description"] = *p.Description
		}
		if p.DefaultL3NetworkUUID != nil {
			found := false
			for _, n := range v.VMNics {
				found = found || n.L3NetworkUUID == *p.DefaultL3NetworkUUID
			}
			if !found {
				return VmInstanceVO{}, errcode.New(errcode.InvalidArgument, "defaultL3NetworkUuid %s: VM %s has no NIC on it; attach it first",
					*p.DefaultL3NetworkUUID, v.UUID)
			}
			upd["default_l3_network_uuid"] = *p.DefaultL3NetworkUUID
		}
		if len(upd) == 0 {
			return *v, nil
		}
		upd["last_op_date"] = time.Now().UTC()
		if err := s.db.WithContext(ctx).Model(&VmInstanceVO{}).Where("uuid = ?", v.UUID).Updates(upd).Error; err != nil {
			return VmInstanceVO{}, errcode.Wrap(errcode.Internal, err, "update VM %s", v.UUID)
		}
		return s.reply(ctx, v.UUID)
	})
}

// NicUsedIP is a used_ips row as a NIC's inventory shows it (the network
// service's table, read only here).
type NicUsedIP struct {
	UUID          string `gorm:"column:uuid;primaryKey" json:"uuid"`
	L3NetworkUUID string `gorm:"column:l3_network_uuid" json:"l3NetworkUuid"`
	IPRangeUUID   string `gorm:"column:ip_range_uuid" json:"ipRangeUuid"`
	IP            string `gorm:"column:ip" json:"ip"`
	IPInLong      int64  `gorm:"column:ip_in_long" json:"ipInLong"`
	Netmask       string `gorm:"column:netmask" json:"netmask"`
	Gateway       string `gorm:"column:gateway" json:"gateway"`
	IPVersion     int    `gorm:"column:ip_version" json:"ipVersion"`
	VMNicUUID     string `gorm:"column:vm_nic_uuid" json:"vmNicUuid"`
}

func (NicUsedIP) TableName() string { return "used_ips" }
