package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"mplane/agents/kvm"
	"mplane/cloudbus"
	"mplane/conf"
	"mplane/services/cluster"
	hostsvc "mplane/services/host"
	"mplane/services/image"
	"mplane/services/network"
	"mplane/services/offering"
	"mplane/services/resource"
	"mplane/services/zone"
	"mplane/uid"
)

func newRunCmd() *cobra.Command {
	var hosts, agentPort int
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a whole single-node cloud in this process (the embedded default)",
		Long: "Starts one management node on the in-process bus and a SQLite file under data_dir,\n" +
			"simulated KVM hosts on loopback ports (added as hosts), and a default zone, cluster,\n" +
			"instance offering, image and L3 network with an IP range, then prints the API URL and\n" +
			"how to log in. State survives restarts (same data_dir). Stop with Ctrl-C.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			if cfg.BusURL != "memory://" {
				return errors.New("mplane run is the embedded mode and uses the in-process bus; for RabbitMQ run `mplane server`")
			}
			if hosts < 0 || hosts > 64 {
				return fmt.Errorf("--hosts must be between 0 and 64, got %d", hosts)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runEmbedded(ctx, cfg, hosts, agentPort, cmd.OutOrStdout())
		},
	}
	conf.BindFlags(cmd.Flags())
	cmd.Flags().IntVar(&hosts, "hosts", 3, "number of simulated KVM hosts to run in this process")
	cmd.Flags().IntVar(&agentPort, "agent-port", 7071, "loopback port of the first simulated host's agent (the next hosts use the following ports; 0: any free ports)")
	return cmd
}

func runEmbedded(ctx context.Context, cfg conf.Config, nhosts, agentPort int, out io.Writer) error {
	log := cfg.Logger(os.Stderr)
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "agents"), 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	// The agents first: the node reconnects known hosts as soon as it runs.
	var agents []*kvm.Agent
	served := make(chan error, nhosts)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, a := range agents {
			_ = a.Shutdown(sctx)
		}
		for range agents {
			<-served
		}
	}()
	var addrs []string
	for i := 0; i < nhosts; i++ {
		port := 0 // --agent-port 0: any free port (hosts then change at every start)
		if agentPort > 0 {
			port = agentPort + i
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		a, err := kvm.New(kvm.Options{Listen: addr, StateFile: filepath.Join(cfg.DataDir, "agents", fmt.Sprintf("host%d.json", i+1)),
			Logger: log.With("agent", addr)})
		if err != nil {
			return err
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			_ = a.Shutdown(context.Background())
			return fmt.Errorf("simulated host %d: listen on %s: %w (choose other ports with --agent-port)", i+1, addr, err)
		}
		agents = append(agents, a)
		go func() { served <- a.Serve(l) }()
		addrs = append(addrs, l.Addr().String())
	}

	s, err := startServer(ctx, cfg, log, serverOptions{broker: cloudbus.NewBroker()})
	if err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = s.bootstrap(bctx, addrs)
	cancel()
	if err != nil {
		s.close()
		return fmt.Errorf("set up the default cloud: %w", err)
	}
	fmt.Fprintf(out, "\nmplane is running: %d simulated hosts, a default zone, cluster, offering, image and L3 network.\n", nhosts)
	fmt.Fprintf(out, "  API:    %s/v1   (ZStack REST conventions; also under /zstack/v1)\n", s.base)
	fmt.Fprintf(out, "  login:  mplane ctl login --url %s --account admin\n", s.base)
	fmt.Fprintf(out, "          (password: printed above at the first start, or admin_password)\n")
	fmt.Fprintf(out, "  then:   mplane ctl create vm --name vm1 --offering <uuid> --image <uuid> --l3 <uuid>\n")
	fmt.Fprintf(out, "          (mplane ctl list offerings / images / l3s show the defaults)\n")
	fmt.Fprintf(out, "  data:   %s   stop with Ctrl-C\n\n", cfg.DataDir)
	return s.serveUntilDone(ctx)
}

// bootstrap creates the default resources once (it finds them on later
// starts) and adds the simulated hosts that are not known yet.
func (s *server) bootstrap(ctx context.Context, agentAddrs []string) error {
	zoneUUID, err := s.ensure(ctx, &zone.ZoneVO{}, zone.Kind.Name, "default-zone", zone.CreateParams{Name: "default-zone"})
	if err != nil {
		return err
	}
	clusterUUID, err := s.ensure(ctx, &cluster.ClusterVO{}, cluster.Kind.Name, "default-cluster",
		cluster.CreateParams{Name: "default-cluster", ZoneUUID: zoneUUID, HypervisorType: "KVM"})
	if err != nil {
		return err
	}
	if _, err := s.ensure(ctx, &offering.InstanceOfferingVO{}, offering.Kind.Name, "small",
		offering.CreateParams{Name: "small", CPUNum: 1, MemorySize: 1 << 30}); err != nil {
		return err
	}
	if _, err := s.ensure(ctx, &image.ImageVO{}, image.Kind.Name, "cirros",
		image.CreateParams{Name: "cirros", URL: "http://download.cirros-cloud.net/0.6.2/cirros-0.6.2-x86_64-disk.img",
			Format: "qcow2", MediaType: "RootVolumeTemplate", Platform: "Linux", Size: 21430272}); err != nil {
		return err
	}
	l3UUID, err := s.ensure(ctx, &network.L3NetworkVO{}, network.L3Kind.Name, "default-l3",
		network.L3Params{Name: "default-l3", ZoneUUID: zoneUUID})
	if err != nil {
		return err
	}
	var ranges int64
	if err := s.db.WithContext(ctx).Model(&network.IpRangeVO{}).Where("l3_network_uuid = ?", l3UUID).Count(&ranges).Error; err != nil {
		return err
	}
	if ranges == 0 {
		if _, err := s.createKind(ctx, network.IPRangeKind.Name, network.IPRangeParams{L3NetworkUUID: l3UUID, Name: "default-range",
			StartIP: "10.0.0.10", EndIP: "10.0.3.250", Netmask: "255.255.252.0", Gateway: "10.0.0.1"}); err != nil {
			return err
		}
	}
	for i, addr := range agentAddrs {
		ip, portStr, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(portStr)
		var n int64
		if err := s.db.WithContext(ctx).Model(&hostsvc.HostVO{}).Where("management_ip = ? AND agent_port = ?", ip, port).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			continue // known: the ping tracker reconnects it
		}
		id := uid.New()
		target, err := s.node.TargetFor(hostsvc.BusService, id)
		if err != nil {
			return err
		}
		if _, err := cloudbus.Call(ctx, s.bus, target, hostsvc.MsgAddKVMHost, hostsvc.AddKVMHostReq{UUID: id,
			Name: fmt.Sprintf("host%d", i+1), ManagementIP: ip, AgentPort: port, ZoneUUID: zoneUUID, ClusterUUID: clusterUUID},
			cloudbus.WithResource(id)); err != nil {
			return fmt.Errorf("add simulated host %s: %w", addr, err)
		}
	}
	return nil
}

// ensure returns the UUID of the row of model named name, creating it
// through the resource service if there is none.
func (s *server) ensure(ctx context.Context, model any, kind, name string, params any) (string, error) {
	var row struct{ UUID string }
	err := s.db.WithContext(ctx).Model(model).Select("uuid").Where("name = ?", name).Take(&row).Error
	if err == nil {
		return row.UUID, nil
	}
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return "", err
	}
	return s.createKind(ctx, kind, params)
}

func (s *server) createKind(ctx context.Context, kind string, params any) (string, error) {
	body, err := json.Marshal(params)
	if err != nil {
		return "", err
	}
	id := uid.New()
	target, err := s.node.TargetFor(resource.BusService, id)
	if err != nil {
		return "", err
	}
	if _, err := cloudbus.Call(ctx, s.bus, target, resource.MsgCreate, resource.CreateReq{Kind: kind, UUID: id, Params: body},
		cloudbus.WithResource(id)); err != nil {
		return "", fmt.Errorf("create %s: %w", kind, err)
	}
	return id, nil
}
