package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"mplane/agents/kvm"
	"mplane/managementnode"
	"mplane/services/cluster"
	hostsvc "mplane/services/host"
	"mplane/services/image"
	"mplane/services/network"
	"mplane/services/offering"
	"mplane/services/resource"
	"mplane/services/zone"
	"mplane/uid"
)

// EmbeddedOptions configure a whole single-node cloud in one process.
type EmbeddedOptions struct {
	Options
	// Hosts is the number of simulated KVM hosts (0 to 64).
	Hosts int
	// AgentPort is the loopback port of the first simulated host's agent;
	// the next hosts use the following ports. 0: any free ports (hosts
	// then change at every start).
	AgentPort int
}

// Embedded is a whole cloud in one process: a node on the in-process bus
// and SQLite, simulated hosts on loopback HTTP, and the default resources.
type Embedded struct {
	*Server
	agents []*kvm.Agent
	// Agents are the simulated hosts' agent addresses (host:port).
	Agents []string
}

// StartEmbedded starts the simulated hosts, then the node, then creates the
// default zone, cluster, offering, image and L3 network with an IP range
// once (it finds them on later starts) and adds the hosts it does not know.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (_ *Embedded, err error) {
	cfg := opts.Config
	if cfg.BusURL != "memory://" {
		return nil, errors.New("the embedded mode uses the in-process bus (bus_url memory://); for RabbitMQ run `mplane server`")
	}
	if opts.Hosts < 0 || opts.Hosts > 64 {
		return nil, fmt.Errorf("hosts must be between 0 and 64, got %d", opts.Hosts)
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "agents"), 0o755); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	e := &Embedded{}
	defer func() {
		if err != nil {
			_ = e.Stop(context.Background())
		}
	}()
	log := opts.Logger
	// The agents first: the node reconnects known hosts as soon as it runs.
	for i := 0; i < opts.Hosts; i++ {
		port := 0
		if opts.AgentPort > 0 {
			port = opts.AgentPort + i
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		aopts := kvm.Options{Listen: addr, StateFile: filepath.Join(cfg.DataDir, "agents", fmt.Sprintf("host%d.json", i+1))}
		if log != nil {
			aopts.Logger = log.With("agent", addr)
		}
		a, err := kvm.New(aopts)
		if err != nil {
			return nil, err
		}
		e.agents = append(e.agents, a)
		if err := a.Start(ctx); err != nil {
			return nil, fmt.Errorf("simulated host %d: %w (choose other ports with --agent-port)", i+1, err)
		}
		e.Agents = append(e.Agents, a.Addr())
	}
	if e.Server, err = Start(ctx, opts.Options); err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := e.bootstrap(bctx); err != nil {
		return nil, fmt.Errorf("set up the default cloud: %w", err)
	}
	return e, nil
}

// Stop stops the node, then the simulated hosts. Idempotent.
func (e *Embedded) Stop(ctx context.Context) error {
	var err error
	if e.Server != nil {
		err = e.Server.Stop(ctx)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, a := range e.agents {
		err = errors.Join(err, a.Stop(sctx))
	}
	e.agents = nil
	return err
}

// Defaults are the names of the resources bootstrap creates.
const (
	DefaultZone     = "default-zone"
	DefaultCluster  = "default-cluster"
	DefaultOffering = "small"
	DefaultImage    = "cirros"
	DefaultL3       = "default-l3"
)

func (e *Embedded) bootstrap(ctx context.Context) error {
	s := e.Server
	zoneUUID, err := ensure(ctx, s, zone.Kind, DefaultZone, zone.CreateParams{Params: resource.Params{Name: DefaultZone}})
	if err != nil {
		return err
	}
	clusterUUID, err := ensure(ctx, s, cluster.Kind, DefaultCluster,
		cluster.CreateParams{Params: resource.Params{Name: DefaultCluster}, ZoneUUID: zoneUUID, HypervisorType: "KVM"})
	if err != nil {
		return err
	}
	if _, err := ensure(ctx, s, offering.Kind, DefaultOffering,
		offering.CreateParams{Params: resource.Params{Name: DefaultOffering}, CPUNum: 1, MemorySize: 1 << 30}); err != nil {
		return err
	}
	if _, err := ensure(ctx, s, image.Kind, DefaultImage,
		image.CreateParams{Params: resource.Params{Name: DefaultImage}, URL: "http://download.cirros-cloud.net/0.6.2/cirros-0.6.2-x86_64-disk.img",
			Format: "qcow2", MediaType: "RootVolumeTemplate", Platform: "Linux", Size: 21430272}); err != nil {
		return err
	}
	l3UUID, err := ensure(ctx, s, network.L3Kind, DefaultL3, network.L3Params{Name: DefaultL3, ZoneUUID: zoneUUID})
	if err != nil {
		return err
	}
	var ranges int64
	if err := s.db.WithContext(ctx).Model(&network.IpRangeVO{}).Where("l3_network_uuid = ?", l3UUID).Count(&ranges).Error; err != nil {
		return err
	}
	if ranges == 0 {
		if _, err := create(ctx, s, network.IPRangeKind, network.IPRangeParams{L3NetworkUUID: l3UUID, Name: "default-range",
			StartIP: "10.0.0.10", EndIP: "10.0.3.250", Netmask: "255.255.252.0", Gateway: "10.0.0.1"}); err != nil {
			return err
		}
	}
	for i, addr := range e.Agents {
		ip, portStr, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(portStr)
		var n int64
		if err := s.db.WithContext(ctx).Model(&hostsvc.HostVO{}).Where("management_ip = ? AND agent_port = ?", ip, port).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			continue // known: the ping tracker reconnects it
		}
		req := hostsvc.AddKVMHostReq{UUID: uid.New(), Name: fmt.Sprintf("host%d", i+1), ManagementIP: ip, AgentPort: port,
			ZoneUUID: zoneUUID, ClusterUUID: clusterUUID}
		if _, err := managementnode.CallOwner(ctx, s.node, hostsvc.MsgAddKVMHost, req); err != nil {
			return fmt.Errorf("add simulated host %s: %w", addr, err)
		}
	}
	return nil
}

// ensure returns the UUID of the resource of kind k named name, creating it
// if there is none.
func ensure[VO any, P any](ctx context.Context, s *Server, k *resource.KindOf[VO, P], name string, params P) (string, error) {
	var row struct{ UUID string }
	err := s.db.WithContext(ctx).Model(new(VO)).Select("uuid").Where("name = ?", name).Limit(1).Find(&row).Error
	if err != nil {
		return "", err
	}
	if row.UUID != "" {
		return row.UUID, nil
	}
	return create(ctx, s, k, params)
}

func create[VO any, P any](ctx context.Context, s *Server, k *resource.KindOf[VO, P], params P) (string, error) {
	id := uid.New()
	if _, err := managementnode.CallOwner(ctx, s.node, k.MsgCreate, resource.CreateReq[P]{UUID: id, Params: params}); err != nil {
		return "", fmt.Errorf("%s: %w", k.MsgCreate.Name(), err)
	}
	return id, nil
}
