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

// add runs on the host's owner: it writes the host (Connecting), connects
// its agent in the host's chain and answers with the Connected host. If the
// agent cannot be connected, the host is removed again: no half-added host
// is left behind.
func (s *Service) add(ctx context.Context, req AddKVMHostReq) (HostVO, error) {
	now := time.Now().UTC()
	h := HostVO{
		UUID: req.UUID, Name: req.Name, Description: req.Description, ManagementIP: req.ManagementIP,
		AgentPort: req.AgentPort, ZoneUUID: req.ZoneUUID, ClusterUUID: req.ClusterUUID,
		HypervisorType: HypervisorKVM, State: StateEnabled, Status: StatusConnecting,
		Secret: uid.New(), CreateDate: now, LastOpDate: now,
	}
	if err := s.db.WithContext(ctx).Create(&h).Error; err != nil {
		if errors.Is(err, gorm.ErrDuplicatedKey) {
			var other HostVO
			if s.db.WithContext(ctx).Where("uuid = ? OR (management_ip = ? AND agent_port = ?)", h.UUID, h.ManagementIP, h.AgentPort).First(&other).Error == nil {
				if other.UUID == h.UUID {
					// A redelivered add (at-least-once): answer with the host.
					return other, nil
				}
				return HostVO{}, errcode.New(errcode.InvalidArgument, "a host with managementIp %s and agentPort %d already exists (uuid %s)", h.ManagementIP, h.AgentPort, other.UUID)
			}
		}
		return HostVO{}, errcode.Wrap(errcode.Internal, err, "add host %s", h.UUID)
	}
	_, err := thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(h.UUID), Name: "connect", Level: 1},
		func(ctx context.Context) (struct{}, error) { return struct{}{}, s.connect(ctx, &h, s.opts.ConnectWait) })
	if err != nil {
		// Remove the host with a context of its own: the caller's may be
		// what just ran out.
		delCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if derr := s.db.WithContext(delCtx).Delete(&HostVO{}, "uuid = ?", h.UUID).Error; derr != nil {
			s.log.Error("add host: remove the host after a failed connect", "host_uuid", h.UUID, "err", derr)
		}
		return HostVO{}, errcode.Wrap(errcode.AgentError, err, "add host %s: connect the agent at %s", h.UUID, agentURL(&h))
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
