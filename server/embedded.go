package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"mplane/agents/kvm"
	bsagent "mplane/agents/storage"
	"mplane/api/auth"
	"mplane/api/tenancy"
	"mplane/internal/tlsconf"
	"mplane/managementnode"
	"mplane/services/cluster"
	hostsvc "mplane/services/host"
	"mplane/services/image"
	"mplane/services/network"
	"mplane/services/offering"
	"mplane/services/resource"
	"mplane/services/storage"
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
// and SQLite, simulated hosts on loopback HTTP, a storage agent as backup
// storage, and the default resources.
type Embedded struct {
	*Server
	agents []*kvm.Agent
	backup *bsagent.Agent
	// imageSrv serves the default image's file while it is downloaded;
	// imageDone is closed when it stopped serving.
	imageSrv  *http.Server
	imageDone chan struct{}
	// Agents are the simulated hosts' agent addresses (host:port).
	Agents []string
	// BackupAgent is the address (host:port) of the storage agent that is
	// the default backup storage; it serves <data_dir>/backup-storage.
	BackupAgent string
}

// StartEmbedded starts the simulated hosts (each serving its local primary
// storage directory, <data_dir>/hosts/host<N>/local, at
// DefaultLocalStorageURL) and a storage agent on <data_dir>/backup-storage,
// then the node, then creates once (it finds them on later starts) the
// default zone, cluster, offering, backup storage (attached to the zone),
// image (a small generated disk, downloaded into the backup storage
// through the normal image create), L3 network with an IP range and local
// primary storage (attached to the cluster), and adds the hosts it does
// not know.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (_ *Embedded, err error) {
	cfg := opts.Config
	if cfg.BusURL != "memory://" {
		return nil, errors.New("the embedded mode uses the in-process bus (bus_url memory://); for RabbitMQ run `mplane server`")
	}
	if opts.Hosts < 0 || opts.Hosts > 64 {
		return nil, fmt.Errorf("hosts must be between 0 and 64, got %d", opts.Hosts)
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "agents"), 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	// The data directory holds the database (sessions, host secrets) and
	// the agents' state: the owner's alone, also one made before.
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("make data directory %s private (mode 0700): %w", cfg.DataDir, err)
	}
	e := &Embedded{}
	defer func() {
		if err != nil {
			_ = e.Stop(context.Background())
		}
	}()
	log := opts.Logger
	// The agents post their results to the node's URL: over HTTPS, they
	// trust its certificate.
	callbacks, err := tlsconf.Client(cfg.TLSCertFile)
	if err != nil {
		return nil, err
	}
	// With agent_scheme https the in-process agents serve HTTPS with the
	// node's certificate.
	var agentTLS *tls.Config
	if cfg.AgentScheme == "https" {
		if cfg.TLSCertFile == "" {
			return nil, errors.New("agent_scheme https in the embedded cloud needs tls_cert_file and tls_key_file: its agents serve that certificate")
		}
		if agentTLS, err = tlsconf.Server(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return nil, err
		}
	}
	// The agents first: the node reconnects known hosts as soon as it runs.
	for i := 0; i < opts.Hosts; i++ {
		port := 0
		if opts.AgentPort > 0 {
			port = opts.AgentPort + i
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		aopts := kvm.Options{Listen: addr, StateFile: filepath.Join(cfg.DataDir, "agents", fmt.Sprintf("host%d.json", i+1)),
			Storage: map[string]string{DefaultLocalStorageURL: filepath.Join(cfg.DataDir, "hosts", fmt.Sprintf("host%d", i+1), "local")}}
		if log != nil {
			aopts.Logger = log.With("agent", addr)
		}
		aopts.Server.HTTPClient, aopts.Server.TLS = callbacks, agentTLS
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
	bopts := bsagent.Options{Root: filepath.Join(cfg.DataDir, "backup-storage"), Listen: "127.0.0.1:0"}
	bopts.Server.HTTPClient, bopts.Server.TLS = callbacks, agentTLS
	if log != nil {
		bopts.Logger = log.With("agent", "backup-storage")
	}
	if e.backup, err = bsagent.New(bopts); err != nil {
		return nil, fmt.Errorf("backup storage agent: %w", err)
	}
	if err := e.backup.Start(ctx); err != nil {
		return nil, fmt.Errorf("backup storage agent: %w", err)
	}
	e.BackupAgent = e.backup.Addr()
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

// Stop stops the node, then the simulated hosts, the backup storage agent
// and the default image's file server. Idempotent.
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
	if e.backup != nil {
		err = errors.Join(err, e.backup.Stop(sctx))
	}
	if e.imageSrv != nil {
		if serr := e.imageSrv.Shutdown(sctx); serr != nil {
			_ = e.imageSrv.Close()
		}
		<-e.imageDone
		e.imageSrv = nil
	}
	return err
}

// Defaults are the names of the resources bootstrap creates.
const (
	DefaultZone     = "default-zone"
	DefaultCluster  = "default-cluster"
	DefaultOffering = "small"
	DefaultImage    = "cirros"
	DefaultL3       = "default-l3"
	// DefaultL2 is an L2NoVlanNetwork on DefaultPhysicalInterface,
	// attached to the default cluster; the default L3 network is on it.
	DefaultL2                = "default-l2"
	DefaultPhysicalInterface = "eth0"
	// DefaultBackupStorage is the in-process storage agent's backup
	// storage, attached to the default zone.
	DefaultBackupStorage = "default-bs"
	// DefaultPrimaryStorage is a LocalStorage at DefaultLocalStorageURL,
	// attached to the default cluster: every simulated host serves its
	// own directory for it.
	DefaultPrimaryStorage  = "local-ps"
	DefaultLocalStorageURL = "/mplane/local"
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
	offeringUUID, err := ensure(ctx, s, offering.Kind, DefaultOffering,
		offering.CreateParams{Params: resource.Params{Name: DefaultOffering}, CPUNum: 1, MemorySize: 1 << 30})
	if err != nil {
		return err
	}
	bsUUID, err := e.ensureBackupStorage(ctx, zoneUUID)
	if err != nil {
		return err
	}
	if err := e.ensureImage(ctx, bsUUID); err != nil {
		return err
	}
	l2UUID, err := e.ensureL2(ctx, clusterUUID, zoneUUID)
	if err != nil {
		return err
	}
	l3UUID, err := ensure(ctx, s, network.L3Kind, DefaultL3, network.L3Params{Name: DefaultL3, L2NetworkUUID: l2UUID})
	if err != nil {
		return err
	}
	// A default L3 network made before L2 networks were goes under the
	// default L2 network (both are in the default zone).
	if err := s.db.WithContext(ctx).Model(&network.L3NetworkVO{}).Where("uuid = ? AND l2_network_uuid IS NULL", l3UUID).
		Update("l2_network_uuid", l2UUID).Error; err != nil {
		return fmt.Errorf("put the default L3 network on the default L2 network: %w", err)
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
	if err := e.shareDefaults(ctx, map[string]string{"instance_offerings": offeringUUID, "l3_networks": l3UUID}); err != nil {
		return err
	}
	return e.ensurePrimaryStorage(ctx, zoneUUID, clusterUUID)
}

// shareDefaults makes the default offering, image and L3 network admin's
// and public (shareResource toPublic): in the embedded cloud every account
// can make a VM of them at once.
func (e *Embedded) shareDefaults(ctx context.Context, byTable map[string]string) error {
	db := e.Server.db.WithContext(ctx)
	var img image.ImageVO
	if err := db.Where("name = ?", DefaultImage).Take(&img).Error; err != nil {
		return fmt.Errorf("find the default image: %w", err)
	}
	byTable["images"] = img.UUID
	for table, uuid := range byTable {
		if err := tenancy.Claim(ctx, db, table, uuid, auth.AdminUUID); err != nil {
			return fmt.Errorf("own the default %s: %w", table, err)
		}
		if err := tenancy.Share(ctx, db, uuid, auth.AdminUUID, table, []string{""}); err != nil {
			return fmt.Errorf("share the default %s: %w", table, err)
		}
	}
	return nil
}

// ensureL2 returns the default L2 network (an L2NoVlanNetwork on
// DefaultPhysicalInterface), creating it if there is none, attached to the
// default cluster (attaching again is a no-op).
func (e *Embedded) ensureL2(ctx context.Context, clusterUUID, zoneUUID string) (string, error) {
	s := e.Server
	l2UUID, err := ensure(ctx, s, s.l2.Networks, DefaultL2, network.L2NoVlanParams{L2Params: network.L2Params{
		Params: resource.Params{Name: DefaultL2}, ZoneUUID: zoneUUID, PhysicalInterface: DefaultPhysicalInterface,
		VSwitchType: network.VSwitchLinuxBridge}})
	if err != nil {
		return "", err
	}
	req := resource.ActionReq[network.ClusterRefParams]{UUID: l2UUID, Params: network.ClusterRefParams{L2NetworkUUID: l2UUID, ClusterUUID: clusterUUID}}
	if _, err := managementnode.CallOwner(ctx, s.node, s.l2.Attach.Msg, req); err != nil {
		return "", fmt.Errorf("attach the default L2 network to the default cluster: %w", err)
	}
	return l2UUID, nil
}

// ensureBackupStorage adds the in-process storage agent as the default
// backup storage and attaches it to the zone; on a later start it points
// the existing one at the agent's new address and reconnects it.
func (e *Embedded) ensureBackupStorage(ctx context.Context, zoneUUID string) (string, error) {
	s := e.Server
	ip, portStr, _ := net.SplitHostPort(e.backup.Addr())
	port, _ := strconv.Atoi(portStr)
	var rows []storage.BackupStorageVO
	if err := s.db.WithContext(ctx).Where("name = ?", DefaultBackupStorage).Limit(1).Find(&rows).Error; err != nil {
		return "", err
	}
	var uuid string
	if len(rows) == 0 {
		req := storage.AddBackupStorageReq{UUID: uid.New(), Name: DefaultBackupStorage, Description: "the embedded cloud's storage agent",
			URL: e.backup.Root(), Hostname: ip, AgentPort: port}
		b, err := managementnode.CallOwner(ctx, s.node, storage.MsgAddBackupStorage, req)
		if err != nil {
			return "", fmt.Errorf("add the backup storage at %s: %w", e.backup.Addr(), err)
		}
		uuid = b.UUID
	} else {
		uuid = rows[0].UUID
		if rows[0].Hostname != ip || rows[0].AgentPort != port {
			err := s.db.WithContext(ctx).Model(&storage.BackupStorageVO{}).Where("uuid = ?", uuid).
				Updates(map[string]any{"hostname": ip, "agent_port": port, "url": e.backup.Root(), "last_op_date": time.Now().UTC()}).Error
			if err != nil {
				return "", fmt.Errorf("move the backup storage %s to %s: %w", uuid, e.backup.Addr(), err)
			}
		}
		// The agent is new in this process: connect it.
		if _, err := managementnode.CallOwner(ctx, s.node, storage.MsgReconnectBackupStorage, storage.Ref{UUID: uuid}); err != nil {
			return "", fmt.Errorf("reconnect the backup storage at %s: %w", e.backup.Addr(), err)
		}
	}
	if _, err := managementnode.CallOwner(ctx, s.node, storage.MsgAttachBackupStorage, storage.ZoneRefReq{BackupStorageUUID: uuid, ZoneUUID: zoneUUID}); err != nil {
		return "", fmt.Errorf("attach the backup storage to the default zone: %w", err)
	}
	return uuid, nil
}

// ensureImage adds the default image, unless it exists: a small disk made
// here (a blank 64M qcow2 from qemu-img, or without it a sparse 4 MiB raw
// file), served over loopback HTTP by this process and downloaded into the
// backup storage by the normal image create.
func (e *Embedded) ensureImage(ctx context.Context, bsUUID string) error {
	s := e.Server
	var n int64
	if err := s.db.WithContext(ctx).Model(&image.ImageVO{}).Where("name = ?", DefaultImage).Count(&n).Error; err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	file, format, err := e.makeDefaultImage(ctx, filepath.Join(s.cfg.DataDir, "image-source"))
	if err != nil {
		return fmt.Errorf("make the default image: %w", err)
	}
	url, err := e.serveImage(file)
	if err != nil {
		return fmt.Errorf("serve the default image: %w", err)
	}
	p := image.CreateParams{Params: resource.Params{Name: DefaultImage, Description: "a blank disk made by the embedded cloud"},
		URL: url, Format: format, MediaType: image.MediaRootVolumeTemplate, Platform: "Linux", BackupStorageUUIDs: []string{bsUUID}}
	if err := p.Validate(); err != nil {
		return err
	}
	s.log.Info("downloading the default image into the backup storage", "url", url, "format", format)
	img, err := managementnode.CallOwner(ctx, s.node, image.MsgCreate, image.CreateReq{UUID: uid.New(), Params: p})
	if err != nil {
		return fmt.Errorf("add the default image: %w", err)
	}
	s.log.Info("default image ready", "image_uuid", img.UUID, "size", img.Size, "md5", img.Md5Sum)
	return nil
}

// makeDefaultImage writes the default image's file into dir: a blank 64M
// qcow2 if qemu-img is on PATH, else a sparse 4 MiB raw file.
func (e *Embedded) makeDefaultImage(ctx context.Context, dir string) (file, format string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	if bin, err := exec.LookPath("qemu-img"); err == nil {
		file = filepath.Join(dir, DefaultImage+".qcow2")
		_ = os.Remove(file)
		out, err := exec.CommandContext(ctx, bin, "create", "-f", "qcow2", file, "64M").CombinedOutput()
		if err == nil {
			return file, image.FormatQcow2, nil
		}
		_ = os.Remove(file)
		e.Server.log.Warn("qemu-img could not make the default image: making a raw one", "qemu_img", bin, "err", err, "output", string(out))
	}
	file = filepath.Join(dir, DefaultImage+".raw")
	f, err := os.Create(file)
	if err != nil {
		return "", "", err
	}
	err = f.Truncate(4 << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", err
	}
	return file, image.FormatRaw, nil
}

// serveImage serves file on loopback until Stop and returns its URL.
func (e *Embedded) serveImage(file string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	name := "/" + filepath.Base(file)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+name, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) })
	e.imageSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	e.imageDone = make(chan struct{})
	go func() {
		defer close(e.imageDone)
		_ = e.imageSrv.Serve(ln)
	}()
	return "http://" + ln.Addr().String() + name, nil
}

// ensurePrimaryStorage adds the local primary storage and attaches it to
// the cluster (which measures every host's directory); attaching again is
// a no-op.
func (e *Embedded) ensurePrimaryStorage(ctx context.Context, zoneUUID, clusterUUID string) error {
	s := e.Server
	var rows []storage.PrimaryStorageVO
	if err := s.db.WithContext(ctx).Where("name = ?", DefaultPrimaryStorage).Limit(1).Find(&rows).Error; err != nil {
		return err
	}
	var uuid string
	if len(rows) == 0 {
		req := storage.AddPrimaryStorageReq{UUID: uid.New(), Type: storage.TypeLocalStorage, Name: DefaultPrimaryStorage,
			Description: "every simulated host's own directory", URL: DefaultLocalStorageURL, ZoneUUID: zoneUUID}
		p, err := managementnode.CallOwner(ctx, s.node, storage.MsgAddPrimaryStorage, req)
		if err != nil {
			return fmt.Errorf("add the local primary storage: %w", err)
		}
		uuid = p.UUID
	} else {
		uuid = rows[0].UUID
	}
	if _, err := managementnode.CallOwner(ctx, s.node, storage.MsgAttachPrimaryStorage, storage.ClusterRefReq{PrimaryStorageUUID: uuid, ClusterUUID: clusterUUID}); err != nil {
		return fmt.Errorf("attach the local primary storage to the default cluster: %w", err)
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
