package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"

	"mplane/agents/agentclient"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/services/host"
	"mplane/thread"
)

// BusService is the bus service: each node consumes "storage.<node>".
const BusService = "storage"

// Options configure the storage service. Zero values take the documented
// defaults.
type Options struct {
	// AgentScheme is how the storage agents are reached: "http" (the
	// default) or "https".
	AgentScheme string
	DB          *gorm.DB             // required
	Bus         *cloudbus.Bus        // required
	Node        *managementnode.Node // required
	Scheduler   *thread.Scheduler    // required
	Hosts       *host.Service        // required: storage commands of primary storage go through the hosts' agents
	Agents      *agentclient.Client  // required: backup storage agents are called with it
	Logger      *slog.Logger
	// EventURL is this node's event endpoint for backup storage agents
	// (EventHandler), given to them at connect as their sendCommandUrl.
	EventURL string // required
	// AgentTimeout bounds one storage command (default 10 minutes: image
	// transfers are long).
	AgentTimeout time.Duration
	// PingInterval is how often this node checks the backup storage it
	// owns (default 10s).
	PingInterval time.Duration
}

// Service owns primary and backup storage: it adds them, attaches them,
// measures their capacity, and runs commands on their agents.
type Service struct {
	opts   Options
	log    *slog.Logger
	db     *gorm.DB
	node   *managementnode.Node
	sched  *thread.Scheduler
	agents *agentclient.Client

	progressMu sync.RWMutex
	progress   []func(ctx context.Context, storageUUID string, ev ProgressReport)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New builds the service; Start serves it.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Scheduler == nil || opts.Hosts == nil || opts.Agents == nil || opts.EventURL == "" {
		return nil, errors.New("storage: Options.DB, Bus, Node, Scheduler, Hosts, Agents and EventURL are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AgentTimeout <= 0 {
		opts.AgentTimeout = 10 * time.Minute
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 10 * time.Second
	}
	s := &Service{opts: opts, log: opts.Logger.With("component", "storage"), db: opts.DB, node: opts.Node, sched: opts.Scheduler,
		agents: opts.Agents}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Migrate creates the storage tables.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(Models()...); err != nil {
		return fmt.Errorf("migrate storage tables: %w", err)
	}
	return nil
}

// Start serves "storage.<node>", measures the local storage of every host
// this node connects, and checks the backup storage it owns.
func (s *Service) Start(ctx context.Context) error {
	err := s.node.ServeOwned(BusService, func(mux *cloudbus.Mux) {
		managementnode.Handle(mux, MsgAddPrimaryStorage, s.addPrimary)
		managementnode.Handle(mux, MsgAttachPrimaryStorage, s.attachPrimary)
		managementnode.Handle(mux, MsgDetachPrimaryStorage, s.detachPrimary)
		managementnode.Handle(mux, MsgDeletePrimaryStorage, s.deletePrimary)
		managementnode.Handle(mux, MsgReconnectPrimaryStorage, s.reconnectPrimary)
		managementnode.Handle(mux, MsgChangePrimaryStorage, s.changePrimary)
		managementnode.Handle(mux, MsgAddBackupStorage, s.addBackup)
		managementnode.Handle(mux, MsgAttachBackupStorage, s.attachBackup)
		managementnode.Handle(mux, MsgDetachBackupStorage, s.detachBackup)
		managementnode.Handle(mux, MsgDeleteBackupStorage, s.deleteBackup)
		managementnode.Handle(mux, MsgReconnectBackupStorage, s.reconnectBackup)
		managementnode.Handle(mux, MsgChangeBackupStorage, s.changeBackup)
	})
	if err != nil {
		return err
	}
	s.opts.Hosts.OnConnected(s.hostConnected)
	s.opts.Hosts.OnDelete(forgetHost)
	s.opts.Hosts.OnAgentEvent(s.hostEvent)
	return s.sched.Every(s.ctx, s.opts.PingInterval, 0.1, "backup-storage-ping", s.pingRound)
}

// Stop (idempotent) ends the background work and waits for it.
func (s *Service) Stop(context.Context) error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// ProgressReport is a progress event of a storage agent: Percent of the
// transfer of the image ResourceUUID (ProcessType as in protocol).
type ProgressReport struct {
	ProcessType  string
	ResourceUUID string
	Percent      int
}

// OnProgress registers fn for every authenticated progress event of a
// storage agent, with the storage it came from (a backup storage, or the
// host whose agent fetched into its primary storage). The image service
// uses it to show download progress. fn runs on whichever node received
// the event.
func (s *Service) OnProgress(fn func(ctx context.Context, storageUUID string, ev ProgressReport)) {
	s.progressMu.Lock()
	s.progress = append(s.progress, fn)
	s.progressMu.Unlock()
}

func (s *Service) reportProgress(ctx context.Context, storageUUID string, ev ProgressReport) {
	s.progressMu.RLock()
	fns := append([]func(context.Context, string, ProgressReport){}, s.progress...)
	s.progressMu.RUnlock()
	for _, fn := range fns {
		fn(ctx, storageUUID, ev)
	}
}

func inChain[T any](ctx context.Context, s *Service, chain, op string, fn func(ctx context.Context) (T, error)) (T, error) {
	return thread.Sync(ctx, s.sched, thread.Task{Signature: chain, Name: op, Level: 1}, fn)
}

func psChain(uuid string) string { return "ps-" + uuid }
func bsChain(uuid string) string { return "bs-" + uuid }

// LoadPrimary loads a primary storage with its attached clusters.
func LoadPrimary(ctx context.Context, db *gorm.DB, uuid string) (*PrimaryStorageVO, error) {
	var p PrimaryStorageVO
	err := db.WithContext(ctx).Preload("ClusterRefs").Take(&p, "uuid = ?", uuid).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errcode.New(errcode.ResourceNotFound, "primary storage %s not found", uuid)
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "load primary storage %s", uuid)
	}
	return &p, nil
}

// LoadBackup loads a backup storage with its attached zones.
func LoadBackup(ctx context.Context, db *gorm.DB, uuid string) (*BackupStorageVO, error) {
	var b BackupStorageVO
	err := db.WithContext(ctx).Preload("ZoneRefs").Take(&b, "uuid = ?", uuid).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errcode.New(errcode.ResourceNotFound, "backup storage %s not found", uuid)
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "load backup storage %s", uuid)
	}
	return &b, nil
}

// backupURL is the URL of b's agent.
func (s *Service) backupURL(b *BackupStorageVO) string {
	scheme := s.opts.AgentScheme
	if scheme == "" {
		scheme = "http"
	}
	return b.agentURL(scheme)
}
