package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
	"mplane/services/resource"
	"mplane/services/storage"
	"mplane/thread"
	"mplane/uid"
)

// BusService is the bus service: each node consumes "volume.<node>".
const BusService = "volume"

// Options configure the volume service. Zero values take the documented
// defaults.
type Options struct {
	DB        *gorm.DB             // required
	Bus       *cloudbus.Bus        // required
	Node      *managementnode.Node // required
	Scheduler *thread.Scheduler    // required
	Storage   *storage.Service     // required
	Logger    *slog.Logger
	// Attempts is how many primary storages a create tries before it
	// fails (reschedule). Default 3.
	Attempts int
	// Strategy is the default allocation strategy. Default
	// StrategyCapacity.
	Strategy string
	// DetachFromVM, if set, detaches an attached volume from its VM (the
	// VM service's detach, through the VM's owner): a delete with
	// deleteMode Enforcing uses it before deleting.
	DetachFromVM func(ctx context.Context, volumeUUID, vmUUID string) error
	// CacheCleanInterval is how often the image caches of deleted images
	// that no volume needs are removed (CleanImageCaches). Default 10m.
	CacheCleanInterval time.Duration
}

// Service owns volumes and their snapshots: every operation on a volume
// runs on its owner, in the volume's chain ("volume-<uuid>", one at a
// time), as a recorded flow where it changes storage.
type Service struct {
	opts     Options
	log      *slog.Logger
	db       *gorm.DB
	node     *managementnode.Node
	sched    *thread.Scheduler
	store    *storage.Service
	recorder *flow.GormRecorder
	create   *flow.Chain[createData]
	snapF    *flow.Chain[snapshotData]
	flows    *flow.Registry

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New builds the service.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Scheduler == nil || opts.Storage == nil {
		return nil, errors.New("volume: Options.DB, Bus, Node, Scheduler and Storage are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.Strategy == "" {
		opts.Strategy = StrategyCapacity
	}
	if opts.CacheCleanInterval <= 0 {
		opts.CacheCleanInterval = 10 * time.Minute
	}
	s := &Service{opts: opts, log: opts.Logger.With("component", "volume"), db: opts.DB, node: opts.Node, sched: opts.Scheduler,
		store: opts.Storage, recorder: flow.NewGormRecorder(opts.DB)}
	var err error
	if s.create, err = s.createChain(); err != nil {
		return nil, err
	}
	if s.snapF, err = s.snapshotChain(); err != nil {
		return nil, err
	}
	if s.flows, err = flow.NewRegistry(s.create, s.snapF); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Migrate creates the volume tables.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&VolumeVO{}, &VolumeSnapshotVO{}); err != nil {
		return fmt.Errorf("migrate volume tables: %w", err)
	}
	return flow.Migrate(ctx, db)
}

// Start serves "volume.<node>" and, after every ring change, rolls back
// the volume flows that departed owners left.
func (s *Service) Start(ctx context.Context) error {
	err := s.node.ServeOwned(BusService, func(mux *cloudbus.Mux) {
		managementnode.Handle(mux, MsgCreate, s.handleCreate)
		managementnode.Handle(mux, MsgDelete, s.handleDelete)
		managementnode.Handle(mux, MsgExpunge, s.handleExpunge)
		managementnode.Handle(mux, MsgRecover, s.handleRecover)
		managementnode.Handle(mux, MsgResize, s.handleResize)
		managementnode.Handle(mux, MsgUpdate, s.handleUpdate)
		managementnode.Handle(mux, MsgCreateSnapshot, s.handleCreateSnapshot)
		managementnode.Handle(mux, MsgDeleteSnapshot, s.handleDeleteSnapshot)
		managementnode.Handle(mux, MsgRevert, s.handleRevert)
		managementnode.Handle(mux, MsgAttach, s.handleAttach)
		managementnode.Handle(mux, MsgDetach, s.handleDetach)
	})
	if err != nil {
		return err
	}
	s.takeover().Watch(s.ctx, &s.wg)
	return s.sched.Every(s.ctx, s.opts.CacheCleanInterval, 0.2, "image-cache-clean", func(ctx context.Context) error {
		_, err := s.CleanImageCaches(ctx)
		return err
	})
}

// Stop (idempotent) ends the takeover loop.
func (s *Service) Stop(context.Context) error {
	s.cancel()
	s.wg.Wait()
	return nil
}

func chainOf(uuid string) string { return "volume-" + uuid }

func inChain[T any](ctx context.Context, s *Service, uuid, op string, fn func(ctx context.Context) (T, error)) (T, error) {
	return thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(uuid), Name: op, Level: 1}, fn)
}

// Load loads a volume.
func Load(ctx context.Context, db *gorm.DB, uuid string) (*VolumeVO, error) {
	var v VolumeVO
	err := db.WithContext(ctx).Take(&v, "uuid = ?", uuid).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errcode.New(errcode.ResourceNotFound, "volume %s not found", uuid)
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "load volume %s", uuid)
	}
	return &v, nil
}

// takeover rolls back the volume flows whose owner is gone and whose
// volume this node now owns: a create that died half-way leaves no row,
// no reservation and no file (resource.Takeover).
func (s *Service) takeover() resource.Takeover {
	return resource.Takeover{DB: s.db, Node: s.node, Recorder: s.recorder, Flows: s.flows, Log: s.log, What: "volume",
		InChain: func(ctx context.Context, uuid, op string, fn func(context.Context) error) error {
			_, err := inChain(ctx, s, uuid, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
			return err
		},
	}
}

func (s *Service) setStatus(ctx context.Context, uuid, status string, extra map[string]any) error {
	upd := map[string]any{"status": status, "last_op_date": time.Now().UTC()}
	for k, v := range extra {
		upd[k] = v
	}
	if err := s.db.WithContext(ctx).Model(&VolumeVO{}).Where("uuid = ?", uuid).Updates(upd).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "update volume %s", uuid)
	}
	return nil
}

func newUUID() string { return uid.New() }

// snapshotRef finds the volume of snapshot uuid: its calls run in the
// volume's chain.
func snapshotRef(ctx context.Context, db *gorm.DB, uuid string) (SnapshotRef, error) {
	var sp VolumeSnapshotVO
	err := db.WithContext(ctx).Select("uuid", "volume_uuid").Take(&sp, "uuid = ?", uuid).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return SnapshotRef{}, errcode.New(errcode.ResourceNotFound, "volume snapshot %s not found", uuid)
	}
	if err != nil {
		return SnapshotRef{}, errcode.Wrap(errcode.Internal, err, "load volume snapshot %s", uuid)
	}
	return SnapshotRef{VolumeUUID: sp.VolumeUUID, SnapshotUUID: sp.UUID}, nil
}
