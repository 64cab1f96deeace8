package host

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"time"

	"gorm.io/gorm"

	"mplane/agents/agentclient"
	"mplane/cloudbus"
	mdb "mplane/db"
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
			var none noAgent
			if errors.As(err, &none) {
				// Nothing there answered as an agent: the caller learns
				// that, not what answered (adding hosts must not be a port
				// scanner). The operator finds the details in the log.
				s.log.Warn("add host: the agent could not be connected", "host_uuid", h.UUID, "address", s.agentURL(&h), "err", err)
				return errcode.New(errcode.AgentError, "add host %s: no agent could be connected at %s (%s); check managementIp and agentPort, "+
					"and that the agent runs there (the management node's log has the details)", h.UUID, s.agentURL(&h), connectFailure(err))
			}
			if err != nil {
				return errcode.Wrap(errcode.AgentError, err, "add host %s: connect the agent at %s", h.UUID, s.agentURL(&h))
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
	s.log.Info("host added", "host_uuid", h.UUID, "address", s.agentURL(&h))
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

// reconnectData is what the reconnect-host flow's step keeps.
type reconnectData struct {
	Host HostVO `json:"host"`
	// Superseded: a newer reconnect of the host, queued behind this one
	// before it ran, does the work instead.
	Superseded bool `json:"superseded,omitempty"`
}

// reconnectChain: connect the agent again, in the host's chain (echo,
// connect, capacity, Connected). Its undo marks the host Disconnected: a
// reconnect that failed, or whose node died half-way (the agent may be
// connected to that node, or half-connected), leaves the host to its
// owner's ping, which reconnects a Disconnected host. Recorded, so the
// host's new owner rolls an abandoned reconnect back.
func (s *Service) reconnectChain() (*flow.Chain[reconnectData], error) {
	return flow.New("reconnect-host", []flow.Step[reconnectData]{
		{Name: "connect-agent", Run: func(ctx context.Context, d *reconnectData) error {
			h := d.Host
			_, err := thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(h.UUID), Name: "reconnect", Level: s.opts.ChainLevel, DedupKey: "reconnect"},
				func(ctx context.Context) (struct{}, error) { return struct{}{}, s.connect(ctx, &h, 0) })
			if errors.Is(err, thread.ErrSuperseded) {
				d.Superseded = true
				return nil
			}
			return err
		}, Rollback: func(ctx context.Context, d *reconnectData) error {
			return s.setStatus(ctx, d.Host.UUID, StatusDisconnected)
		}},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

// reconnect connects a known host again, as the recorded flow
// reconnectChain; a failure leaves it Disconnected.
func (s *Service) reconnect(ctx context.Context, h *HostVO) error {
	d := &reconnectData{Host: *h}
	if err := s.reconnectF.Run(ctx, d, flow.RunOptions{Resource: h.UUID}); err != nil {
		if se := (*flow.StepError)(nil); errors.As(err, &se) && se.Step == "connect-agent" && len(se.RollbackErrors) == 0 {
			err = se.Err // the agent's failure; the host is Disconnected
		}
		return errcode.Wrap(errcode.AgentError, err, "reconnect host %s at %s", h.UUID, s.agentURL(h))
	}
	if d.Superseded {
		return nil // the newer reconnect runs the hooks
	}
	s.tracker.forget(h.UUID)
	s.connected(h.UUID)
	return nil
}

// deleteData is what the delete-host flow's steps share.
type deleteData struct {
	UUID string `json:"uuid"`
	// State is the host's state before the flow disabled it ("" when the
	// host did not exist).
	State string `json:"state,omitempty"`
}

// deleteChain: disable the host (no VM is placed on it from then on:
// Reserve takes only Enabled hosts) -> in one transaction, refuse if a VM
// is on it or holds capacity there, delete its row and what other services
// keep per host (OnDelete). A refusal, a failure or a takeover of a delete
// whose node died rolls the disabling back; the transaction has either
// happened or not. The whole flow runs in the host's chain after the
// commands still running on the host.
func (s *Service) deleteChain() (*flow.Chain[deleteData], error) {
	return flow.New("delete-host", []flow.Step[deleteData]{
		{Name: "disable-host", Run: func(ctx context.Context, d *deleteData) error {
			var h HostVO
			err := s.db.WithContext(ctx).Select("uuid", "state").Take(&h, "uuid = ?", d.UUID).Error
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return nil
			}
			if err != nil {
				return errcode.Wrap(errcode.Internal, err, "delete host %s", d.UUID)
			}
			d.State = h.State
			if err := s.db.WithContext(ctx).Model(&HostVO{}).Where("uuid = ?", d.UUID).
				Updates(map[string]any{"state": StateDisabled, "last_op_date": time.Now().UTC()}).Error; err != nil {
				return errcode.Wrap(errcode.Internal, err, "disable host %s before deleting it", d.UUID)
			}
			return nil
		}, Rollback: func(ctx context.Context, d *deleteData) error {
			if d.State == "" || d.State == StateDisabled {
				return nil
			}
			return s.db.WithContext(ctx).Model(&HostVO{}).Where("uuid = ? AND state = ?", d.UUID, StateDisabled).
				Updates(map[string]any{"state": d.State, "last_op_date": time.Now().UTC()}).Error
		}},
		{Name: "delete-records", Run: func(ctx context.Context, d *deleteData) error {
			if d.State == "" {
				return nil // nothing to delete
			}
			s.hooksMu.RLock()
			hooks := append([]func(*gorm.DB, string) error{}, s.delHooks...)
			s.hooksMu.RUnlock()
			return mdb.Transaction(ctx, s.db, func(tx *gorm.DB) error {
				// Checked here, in the host's chain and with the host
				// disabled: a VM may have been placed on it since the API
				// node checked.
				if err := refuseIfRunsVMs(ctx, tx, d.UUID); err != nil {
					return err
				}
				var held int64
				if err := tx.Model(&ReservationVO{}).Where("host_uuid = ?", d.UUID).Count(&held).Error; err != nil {
					return errcode.Wrap(errcode.Internal, err, "count the capacity held on host %s", d.UUID)
				}
				if held > 0 {
					return errcode.New(errcode.InvalidState, "host %s: %d VMs hold capacity on it; stop or destroy them first", d.UUID, held)
				}
				for _, fn := range hooks {
					if err := fn(tx, d.UUID); err != nil {
						return err
					}
				}
				if err := tx.Delete(&HostVO{}, "uuid = ?", d.UUID).Error; err != nil {
					return errcode.Wrap(errcode.Internal, err, "delete host %s", d.UUID)
				}
				return nil
			})
		}},
	}, flow.Options{Recorder: s.recorder, Node: s.node.UUID(), Logger: s.log, Transient: s.node.Transient})
}

// OnDelete registers fn to run in the transaction that deletes a host's
// row, to delete what its service keeps per host (the bridges made there,
// a LocalStorage's directory on it); an error refuses the deletion.
func (s *Service) OnDelete(fn func(tx *gorm.DB, hostUUID string) error) {
	s.hooksMu.Lock()
	s.delHooks = append(s.delHooks, fn)
	s.hooksMu.Unlock()
}

// delete removes a host, as the recorded flow deleteChain, in the host's
// chain at level 1 after the commands still running on it. Deleting a
// host that does not exist succeeds.
func (s *Service) delete(ctx context.Context, ref HostRef) (cloudbus.Empty, error) {
	_, err := thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(ref.UUID), Name: "delete", Level: 1},
		func(ctx context.Context) (struct{}, error) {
			return struct{}{}, s.deleteF.Run(ctx, &deleteData{UUID: ref.UUID}, flow.RunOptions{Resource: ref.UUID})
		})
	s.tracker.forget(ref.UUID)
	if err == nil {
		s.log.Info("host deleted", "host_uuid", ref.UUID)
	}
	return cloudbus.Empty{}, err
}

// connectFailure says in a few fixed words why an agent could not be
// connected, without what the address answered.
func connectFailure(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errcode.Has(err, errcode.Timeout), errors.As(err, &ne) && ne.Timeout():
		return "no answer in time"
	case errors.As(err, new(*agentclient.StatusError)):
		return "what answered is not an agent, or refused the connect"
	}
	return "not reachable as an agent"
}
