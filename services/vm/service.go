package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/conf"
	"mplane/db"
	"mplane/errcode"
	"mplane/flow"
	"mplane/managementnode"
	"mplane/services/volume"
	"mplane/thread"
)

// Options configure the VM service.
type Options struct {
	DB        *gorm.DB
	Bus       *cloudbus.Bus
	Node      *managementnode.Node
	Scheduler *thread.Scheduler
	Logger    *slog.Logger
	IPAM      IPAM            // required
	Volumes   *volume.Service // required: makes and removes the VMs' volumes
	// AgentTimeout bounds one agent command of a VM operation. Default 5m.
	AgentTimeout time.Duration
	// CommandTimeouts overrides AgentTimeout for some commands, by name
	// ("start", "stop", "reboot", "destroy": conf.VMCommands).
	CommandTimeouts map[string]time.Duration
	// AllocationStrategy orders the hosts a VM may go to: one of
	// conf.AllocationStrategies. Default conf.AllocationLeastUsed;
	// SetAllocationStrategy changes it at run time.
	AllocationStrategy string
	// FlowRetention is how long the records of flows that finished
	// cleanly (every service's, in flow_records) are kept. Default 1h;
	// SetFlowRetention changes it at run time.
	FlowRetention time.Duration
	// OrphanPolicy is what reconciliation does with a VM a host runs that
	// the database has Stopped: OrphanStop (default) or OrphanAdopt;
	// SetOrphanPolicy changes it at run time.
	OrphanPolicy string
	// ReconcileInterval is how often each node compares the VM lists of
	// the hosts it owns with the database, and looks for VMs left in a
	// transitional state. Default 1m.
	ReconcileInterval time.Duration
}

// Service owns the VMs: every operation on one VM runs on its owner, in the
// VM's chain ("vm-<uuid>", one at a time), as a flow whose steps roll back
// on failure.
type Service struct {
	opts      Options
	log       *slog.Logger
	db        *gorm.DB
	bus       *cloudbus.Bus
	node      *managementnode.Node
	sched     *thread.Scheduler
	vols      *volume.Service
	recorder  *flow.GormRecorder
	create    *flow.Chain[createData]
	startF    *flow.Chain[startData]
	stopF     *flow.Chain[opData]
	rebootF   *flow.Chain[opData]
	destroyF  *flow.Chain[opData]
	expungeF  *flow.Chain[opData]
	attachNic *flow.Chain[nicData]
	flows     *flow.Registry

	// strategy is AllocationStrategy and retention FlowRetention (in
	// nanoseconds), changed at run time by their setters.
	strategy  atomic.Pointer[string]
	retention atomic.Int64
	// pruneMu guards pruneStop, which ends the prune loop started last
	// (nil before Start), and prunePeriod, its period. Held across
	// Scheduler.Every (which takes only Scheduler.mu).
	pruneMu     sync.Mutex
	pruneStop   context.CancelFunc
	prunePeriod time.Duration

	orphanPolicy atomic.Pointer[string]
	recon        reconcileCounters
	repairing    atomic.Bool // a repair after a ring change is pending

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New builds the service.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Scheduler == nil || opts.IPAM == nil || opts.Volumes == nil {
		return nil, errors.New("vm: Options.DB, Bus, Node, Scheduler, IPAM and Volumes are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AgentTimeout <= 0 {
		opts.AgentTimeout = 5 * time.Minute
	}
	if opts.AllocationStrategy == "" {
		opts.AllocationStrategy = conf.AllocationLeastUsed
	}
	if err := checkStrategy(opts.AllocationStrategy); err != nil {
		return nil, fmt.Errorf("vm: Options.AllocationStrategy: %w", err)
	}
	if opts.FlowRetention <= 0 {
		opts.FlowRetention = time.Hour
	}
	if opts.OrphanPolicy == "" {
		opts.OrphanPolicy = OrphanStop
	}
	if opts.OrphanPolicy != OrphanStop && opts.OrphanPolicy != OrphanAdopt {
		return nil, fmt.Errorf("vm: Options.OrphanPolicy must be %s or %s, got %q", OrphanStop, OrphanAdopt, opts.OrphanPolicy)
	}
	if opts.ReconcileInterval <= 0 {
		opts.ReconcileInterval = time.Minute
	}
	s := &Service{opts: opts, db: opts.DB, bus: opts.Bus, node: opts.Node, sched: opts.Scheduler, vols: opts.Volumes,
		log: opts.Logger.With("component", "vm"), recorder: flow.NewGormRecorder(opts.DB)}
	s.strategy.Store(&opts.AllocationStrategy)
	s.retention.Store(int64(opts.FlowRetention))
	s.orphanPolicy.Store(&opts.OrphanPolicy)
	var err error
	if s.create, err = s.createChain(); err != nil {
		return nil, err
	}
	if s.startF, err = s.startChain(); err != nil {
		return nil, err
	}
	if s.attachNic, err = s.attachNicChain(); err != nil {
		return nil, err
	}
	if s.stopF, err = s.stopChain(); err != nil {
		return nil, err
	}
	if s.rebootF, err = s.rebootChain(); err != nil {
		return nil, err
	}
	if s.destroyF, err = s.destroyChain(); err != nil {
		return nil, err
	}
	if s.expungeF, err = s.expungeChain(); err != nil {
		return nil, err
	}
	if s.flows, err = flow.NewRegistry(s.create, s.startF, s.attachNic, s.stopF, s.rebootF, s.destroyF, s.expungeF); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Migrate creates the VM tables.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&VmInstanceVO{}, &VmNicVO{}); err != nil {
		return fmt.Errorf("migrate vm tables: %w", err)
	}
	return flow.Migrate(ctx, db)
}

// Start serves "vm.<node>" (the tables exist: Migrate).
func (s *Service) Start(ctx context.Context) error {
	err := s.node.ServeOwned(BusService, func(mux *cloudbus.Mux) {
		managementnode.Handle(mux, MsgCreate, s.handleCreate)
		managementnode.Handle(mux, MsgStart, s.handleStart)
		managementnode.Handle(mux, MsgStop, s.handleStop)
		managementnode.Handle(mux, MsgReboot, s.handleReboot)
		managementnode.Handle(mux, MsgDestroy, s.handleDestroy)
		managementnode.Handle(mux, MsgExpunge, s.handleExpunge)
		managementnode.Handle(mux, MsgAttachVolume, s.handleAttachVolume)
		managementnode.Handle(mux, MsgDetachVolume, s.handleDetachVolume)
		managementnode.Handle(mux, MsgAttachL3, s.handleAttachL3)
		managementnode.Handle(mux, MsgDetachNic, s.handleDetachNic)
		managementnode.Handle(mux, MsgSetStaticIP, s.handleSetStaticIP)
		managementnode.Handle(mux, MsgUpdate, s.handleUpdate)
		managementnode.Handle(mux, msgReconcile, s.handleReconcile)
	})
	if err != nil {
		return err
	}
	// Takeover: after every ring change, roll back what dead owners left,
	// then settle what they left in a transitional state.
	s.takeover().Watch(s.ctx, &s.wg)
	s.node.OnRingChange(func(context.Context, *managementnode.Ring) { s.kickRepair() })
	if err := s.sched.Every(s.ctx, s.opts.ReconcileInterval, 0.2, "vm-reconcile", func(ctx context.Context) error {
		if err := s.repairTransients(ctx); err != nil {
			s.log.Warn("look for VMs left in a transitional state", "err", err)
		}
		return s.reconcileOwnedHosts(ctx)
	}); err != nil {
		return err
	}
	return s.schedulePrune(true)
}

// Stop (idempotent) ends the takeover loop.
func (s *Service) Stop(context.Context) error {
	s.cancel()
	s.wg.Wait()
	return nil
}

func chainOf(uuid string) string { return "vm-" + uuid }

// inChain runs fn in the VM's chain, one operation at a time.
func inChain[T any](ctx context.Context, s *Service, uuid, op string, fn func(ctx context.Context) (T, error)) (T, error) {
	return thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(uuid), Name: op, Level: 1}, fn)
}

func (s *Service) load(ctx context.Context, uuid string) (*VmInstanceVO, error) {
	return loadVM(ctx, s.db, uuid)
}

// loadVM loads a VM with its NICs and volumes.
func loadVM(ctx context.Context, db *gorm.DB, uuid string) (*VmInstanceVO, error) {
	var v VmInstanceVO
	err := db.WithContext(ctx).Preload("VMNics").Preload("AllVolumes", func(tx *gorm.DB) *gorm.DB { return tx.Order(volumeOrder) }).
		First(&v, "uuid = ?", uuid).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, errcode.New(errcode.ResourceNotFound, "VM %s not found", uuid)
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "load VM %s", uuid)
	}
	return &v, nil
}

// setState moves a VM from the state it had at version to state, with the
// given extra column updates; a concurrent writer makes it fail with
// Conflict instead of overwriting.
//
// While the database is unavailable it tries again (untilDB): the state
// written after a host ran a command rolls forward instead of failing the
// operation. An attempt whose answer was lost may have committed: the next
// one then finds the VM already in state, one version on, and takes that
// as done.
func (s *Service) setState(ctx context.Context, v *VmInstanceVO, state string, extra map[string]any) error {
	lost := false
	return s.untilDB(ctx, func(ctx context.Context) error {
		err := setState(ctx, s.db, v, state, extra)
		if lost && errcode.Has(err, errcode.Conflict) && s.committed(ctx, v, state) {
			return nil
		}
		lost = lost || dbDown(err)
		return err
	})
}

// committed reports, after a write of state on v whose answer was lost,
// whether it committed: the VM is in state, one version on (then v is
// moved there too).
func (s *Service) committed(ctx context.Context, v *VmInstanceVO, state string) bool {
	var cur VmInstanceVO
	if s.db.WithContext(ctx).Select("state", "version").Take(&cur, "uuid = ?", v.UUID).Error != nil ||
		cur.State != state || cur.Version != v.Version+1 {
		return false
	}
	v.State, v.Version = state, cur.Version
	return true
}

// dbDown reports an error of an unavailable database (errcode
// DBUnavailable, or a driver error db.Unavailable recognises).
func dbDown(err error) bool {
	return err != nil && (errcode.Has(err, errcode.DBUnavailable) || db.Unavailable(err))
}

// untilDB runs fn, and again while it fails because the database is
// unavailable, with backoff, for up to DBRetryFor: an operation waits out a
// database outage rather than failing, or leaving half-written what a host
// has already done. ctx's cancellation does not stop the retries (the
// caller may have given up; the writes must still land); stopping the
// service does.
func (s *Service) untilDB(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx = context.WithoutCancel(ctx)
	deadline := time.Now().Add(DBRetryFor)
	pause := 100 * time.Millisecond
	for {
		err := fn(ctx)
		if !dbDown(err) || time.Now().Add(pause).After(deadline) {
			return err
		}
		select {
		case <-s.ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// DBRetryFor bounds how long an operation waits for the database (untilDB).
var DBRetryFor = 2 * time.Minute

// setState is Service.setState on db (a transaction).
func setState(ctx context.Context, db *gorm.DB, v *VmInstanceVO, state string, extra map[string]any) error {
	upd := map[string]any{"state": state, "version": v.Version + 1, "last_op_date": time.Now().UTC()}
	for k, x := range extra {
		upd[k] = x
	}
	res := db.WithContext(ctx).Model(&VmInstanceVO{}).Where("uuid = ? AND version = ?", v.UUID, v.Version).Updates(upd)
	if res.Error != nil {
		return errcode.Wrap(errcode.Internal, res.Error, "set VM %s %s", v.UUID, state)
	}
	if res.RowsAffected == 0 {
		return errcode.New(errcode.Conflict, "VM %s changed while it was being set %s", v.UUID, state)
	}
	v.State, v.Version = state, v.Version+1
	return nil
}
