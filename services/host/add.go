package host

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/thread"
	"mplane/uid"
)

// AddKVMHostParams are the API parameters of POST /v1/hosts/kvm.
type AddKVMHostParams struct {
	Name         string `json:"name,omitempty"`
	Description  string `json:"description,omitempty"`
	ManagementIP string `json:"managementIp"`
	AgentPort    int    `json:"agentPort,omitempty"`
	ClusterUUID  string `json:"clusterUuid"`
	// Username, Password and SSHPort are ZStack's (it deploys the agent
	// over SSH); mplane's agents run already, so they are accepted and
	// unused.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	SSHPort  int    `json:"sshPort,omitempty"`
}

// Validate checks the parameters and fills defaults: agentPort 7070, the
// name from managementIp.
func (p *AddKVMHostParams) Validate() error {
	var problems []string
	if p.ClusterUUID == "" {
		problems = append(problems, "clusterUuid is required")
	}
	ip := net.ParseIP(p.ManagementIP)
	switch {
	case p.ManagementIP == "":
		problems = append(problems, "managementIp is required (the IPv4 or IPv6 address of the host's agent)")
	case ip == nil:
		problems = append(problems, "managementIp must be an IP address, got "+quote(p.ManagementIP))
	case ip.IsUnspecified() || ip.IsMulticast():
		problems = append(problems, "managementIp must be a unicast address, got "+quote(p.ManagementIP))
	}
	if p.AgentPort == 0 {
		p.AgentPort = DefaultAgentPort
	}
	if p.AgentPort < 1 || p.AgentPort > 65535 {
		problems = append(problems, "agentPort must be between 1 and 65535")
	}
	if len(p.Name) > 255 {
		problems = append(problems, "name must be at most 255 characters")
	}
	if p.Name == "" {
		p.Name = p.ManagementIP
	}
	if len(problems) > 0 {
		return errcode.New(errcode.InvalidArgument, "add KVM host: %s", strings.Join(problems, "; "))
	}
	return nil
}

func quote(s string) string { return "\"" + s + "\"" }

// addData is what the add-host flow's steps share.
type addData struct {
	Host HostVO `json:"host"`
}

// addChain: write the host (Connecting) -> connect its agent in the host's
// chain (Connected). A failed connect rolls the row back: no half-added
// host is left. Recorded: if this node dies half-way, the host's new owner
// rolls the add back (a host left Connecting would be pinged by nobody),
// and the add's job, run again there, adds it anew.
func (s *Service) addChain() (*flow.Chain[addData], error) {
	return flow.New("add-host", []flow.Step[addData]{
		{Name: "record-host", Run: func(ctx context.Context, d *addData) error {
			if err := s.db.WithContext(ctx).Create(&d.Host).Error; err != nil {
				return errcode.Wrap(errcode.Internal, err, "add host %s", d.Host.UUID)
			}
			return nil
		}, Rollback: func(ctx context.Context, d *addData) error {
			defer s.tracker.forget(d.Host.UUID)
			return s.db.WithContext(ctx).Delete(&HostVO{}, "uuid = ? AND status = ?", d.Host.UUID, StatusConnecting).Error
		}},
		{Name: "connect-agent", Run: func(ctx context.Context, d *addData) error {
			h := d.Host
			_, err := thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(h.UUID), Name: "connect", Level: 1},
				func(ctx context.Context) (struct{}, error) { return struct{}{}, s.connect(ctx, &h, s.opts.ConnectWait) })
			if err != nil {
				return errcode.Wrap(errcode.AgentError, err, "add host %s: connect the agent at %s", h.UUID, agentURL(&h))
			}
			return nil
		}},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

// add runs on the host's owner: it writes the host (Connecting), connects
// its agent in the host's chain and answers with the Connected host, as
// the recorded flow addChain. If the agent cannot be connected, the host
// is removed again.
func (s *Service) add(ctx context.Context, req AddKVMHostReq) (HostVO, error) {
	now := time.Now().UTC()
	h := HostVO{
		UUID: req.UUID, Name: req.Name, Description: req.Description, ManagementIP: req.ManagementIP,
		AgentPort: req.AgentPort, ZoneUUID: req.ZoneUUID, ClusterUUID: req.ClusterUUID,
		HypervisorType: HypervisorKVM, State: StateEnabled, Status: StatusConnecting,
		Secret: uid.New(), CreateDate: now, LastOpDate: now,
	}
	var other HostVO
	if err := s.db.WithContext(ctx).Where("uuid = ? OR (management_ip = ? AND agent_port = ?)", h.UUID, h.ManagementIP, h.AgentPort).
		Take(&other).Error; err == nil {
		if other.UUID == h.UUID {
			// A redelivered add (at-least-once): answer with the host.
			return other, nil
		}
		return HostVO{}, errcode.New(errcode.InvalidArgument, "a host with managementIp %s and agentPort %d already exists (uuid %s)", h.ManagementIP, h.AgentPort, other.UUID)
	} else if !errors.Is(err, gorm.ErrRecordNotFound) {
		return HostVO{}, errcode.Wrap(errcode.Internal, err, "add host %s", h.UUID)
	}
	if err := s.addF.Run(ctx, &addData{Host: h}, flow.RunOptions{Resource: h.UUID}); err != nil {
		if errcode.Has(err, errcode.Internal) && errors.Is(err, gorm.ErrDuplicatedKey) {
			// Added meanwhile by another request: say which.
			return HostVO{}, errcode.New(errcode.InvalidArgument, "a host with managementIp %s and agentPort %d already exists", h.ManagementIP, h.AgentPort)
		}
		return HostVO{}, err
	}
	s.tracker.forget(h.UUID)
	select {
	case <-s.connected(h.UUID):
	case <-ctx.Done():
	}
	loaded, err := s.load(ctx, h.UUID)
	if err != nil {
		return HostVO{}, err
	}
	s.log.Info("host added", "host_uuid", h.UUID, "address", agentURL(&h))
	return *loaded, nil
}

func (s *Service) reconnectMsg(ctx context.Context, ref HostRef) (HostVO, error) {
	h, err := s.load(ctx, ref.UUID)
	if err != nil {
		return HostVO{}, err
	}
	if err := s.reconnect(ctx, h); err != nil {
		return HostVO{}, err
	}
	h, err = s.load(ctx, ref.UUID)
	if err != nil {
		return HostVO{}, err
	}
	return *h, nil
}

// reconnect connects a known host again, in its chain.
func (s *Service) reconnect(ctx context.Context, h *HostVO) error {
	_, err := thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(h.UUID), Name: "reconnect", Level: s.opts.ChainLevel, DedupKey: "reconnect"},
		func(ctx context.Context) (struct{}, error) { return struct{}{}, s.connect(ctx, h, 0) })
	if err != nil {
		if serr := s.setStatus(context.Background(), h.UUID, StatusDisconnected); serr != nil {
			s.log.Warn("record host status", "host_uuid", h.UUID, "err", serr)
		}
		return errcode.Wrap(errcode.AgentError, err, "reconnect host %s at %s", h.UUID, agentURL(h))
	}
	s.tracker.forget(h.UUID)
	s.connected(h.UUID)
	return nil
}

// delete removes a host. Commands still running on it finish first: the
// deletion runs in the host's chain at level 1 after them.
func (s *Service) delete(ctx context.Context, ref HostRef) (cloudbus.Empty, error) {
	_, err := thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(ref.UUID), Name: "delete", Level: 1},
		func(ctx context.Context) (struct{}, error) {
			// Checked again here: a VM may have been placed on the host
			// since the API node checked.
			if err := refuseIfRunsVMs(ctx, s.db, ref.UUID); err != nil {
				return struct{}{}, err
			}
			res := s.db.WithContext(ctx).Delete(&HostVO{}, "uuid = ?", ref.UUID)
			if res.Error != nil {
				return struct{}{}, errcode.Wrap(errcode.Internal, res.Error, "delete host %s", ref.UUID)
			}
			return struct{}{}, nil
		})
	s.tracker.forget(ref.UUID)
	return cloudbus.Empty{}, err
}
