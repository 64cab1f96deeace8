package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
	"mplane/services/storage"
	"mplane/thread"
)

// Options configure the image service.
type Options struct {
	DB        *gorm.DB             // required
	Bus       *cloudbus.Bus        // required
	Node      *managementnode.Node // required
	Scheduler *thread.Scheduler    // required
	// Storage runs the downloads on the backup storage agents and
	// reports their progress.
	Storage *storage.Service // required
	Logger  *slog.Logger
}

// Service owns the images: it downloads them into backup storage, deletes
// them, and shows the downloads' progress.
type Service struct {
	opts     Options
	log      *slog.Logger
	db       *gorm.DB
	node     *managementnode.Node
	sched    *thread.Scheduler
	store    *storage.Service
	recorder *flow.GormRecorder
	create   *flow.Chain[createData]
	flows    *flow.Registry

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New builds the service; Start serves it.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Scheduler == nil || opts.Storage == nil {
		return nil, errors.New("image: Options.DB, Bus, Node, Scheduler and Storage are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Service{opts: opts, log: opts.Logger.With("component", "image"), db: opts.DB, node: opts.Node, sched: opts.Scheduler,
		store: opts.Storage, recorder: flow.NewGormRecorder(opts.DB)}
	var err error
	if s.create, err = s.createChain(); err != nil {
		return nil, err
	}
	if s.flows, err = flow.NewRegistry(s.create); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Migrate creates the image tables (and the flow records' table).
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(Models()...); err != nil {
		return fmt.Errorf("migrate image tables: %w", err)
	}
	return flow.Migrate(ctx, db)
}

// Start serves "image.<node>", follows the downloads' progress and, after
// every ring change, rolls back the image creates that departed owners
// left unfinished. The tables exist (Migrate).
func (s *Service) Start(context.Context) error {
	err := s.node.ServeOwned(BusService, func(mux *cloudbus.Mux) {
		managementnode.Handle(mux, MsgCreate, s.handleCreate)
		managementnode.Handle(mux, MsgDelete, s.handleDelete)
		managementnode.Handle(mux, MsgUpdate, s.handleChange)
		managementnode.Handle(mux, MsgChangeState, s.handleChange)
	})
	if err != nil {
		return err
	}
	s.store.OnProgress(s.onProgress)
	s.takeover().Watch(s.ctx, &s.wg)
	return nil
}

// Stop (idempotent) ends the takeover loop and waits for it.
func (s *Service) Stop(context.Context) error {
	s.cancel()
	s.wg.Wait()
	return nil
}

func chainOf(uuid string) string { return "image-" + uuid }

// inChain runs fn in the image's chain, one operation at a time.
func inChain[T any](ctx context.Context, s *Service, uuid, op string, fn func(ctx context.Context) (T, error)) (T, error) {
	return thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(uuid), Name: op, Level: 1}, fn)
}

// Load loads an image with its backup storage refs; a missing one is
// ResourceNotFound.
func Load(ctx context.Context, db *gorm.DB, uuid string) (*ImageVO, error) {
	var img ImageVO
	err := db.WithContext(ctx).Preload("BackupStorageRefs").Take(&img, "uuid = ?", uuid).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errcode.New(errcode.ResourceNotFound, "image %s not found", uuid)
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "load image %s", uuid)
	}
	return &img, nil
}

// LoadReady loads an image to make a VM or a volume from: one that does
// not exist, is not Ready (still downloading) or is Disabled
// (changeImageState) is refused with an InvalidArgument error saying so.
func LoadReady(ctx context.Context, db *gorm.DB, uuid string) (*ImageVO, error) {
	img, err := Load(ctx, db, uuid)
	if errcode.Has(err, errcode.ResourceNotFound) {
		return nil, errcode.New(errcode.InvalidArgument, "imageUuid %s does not exist", uuid)
	}
	if err != nil {
		return nil, err
	}
	if img.Status != StatusReady {
		return nil, errcode.New(errcode.InvalidArgument, "image %s (%s) is %s, not %s: wait until its download finishes (GET /v1/images/%s)",
			img.UUID, img.Name, img.Status, StatusReady, img.UUID)
	}
	if img.State == StateDisabled {
		return nil, errcode.New(errcode.InvalidArgument, "image %s (%s) is Disabled: enable it (changeImageState stateEvent enable) to use it",
			img.UUID, img.Name)
	}
	return img, nil
}

// BackupRefs lists the backup storages that hold image imageUUID (its
// Ready refs, by backup storage UUID): where a primary storage fetches it
// from. An image that is missing or still downloading has none.
func BackupRefs(ctx context.Context, db *gorm.DB, imageUUID string) ([]ImageBackupStorageRefVO, error) {
	var refs []ImageBackupStorageRefVO
	err := db.WithContext(ctx).Where("image_uuid = ? AND status = ?", imageUUID, StatusReady).Order("backup_storage_uuid").Find(&refs).Error
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "list the backup storage of image %s", imageUUID)
	}
	return refs, nil
}
