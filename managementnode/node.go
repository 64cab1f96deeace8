package managementnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/db"
	"mplane/errcode"
	"mplane/thread"
)

// Options configure a Node. Zero values take the documented defaults.
type Options struct {
	DB  *gorm.DB      // required
	Bus *cloudbus.Bus // required, started; its NodeUUID is the node's UUID
	// Scheduler is drained on graceful stop and shown by the admin
	// endpoint. Optional.
	Scheduler *thread.Scheduler
	Logger    *slog.Logger
	// Host and APIPort are what peers and agents use to reach this node.
	Host    string
	APIPort int
	// HeartbeatInterval defaults to 2s; a peer is evicted when its
	// heartbeat is older than HeartbeatThreshold (default 3) intervals.
	HeartbeatInterval  time.Duration
	HeartbeatThreshold int
	// ResyncInterval bounds how long a missed event can leave the ring
	// stale. Default 10s.
	ResyncInterval time.Duration
	// DrainTimeout bounds the wait for running work on graceful stop.
	// Default 30s.
	DrainTimeout time.Duration
	// MaxHops bounds how often one message is forwarded. Default 3.
	MaxHops int
	// Now reads the database clock; default db.Now. Tests inject a fake.
	Now func(ctx context.Context) (time.Time, error)
}

// Node is one management node: its membership row and heartbeat, its view
// of the ring, and the guard that runs resource work only on the owner.
type Node struct {
	opts Options
	log  *slog.Logger
	db   *gorm.DB
	bus  *cloudbus.Bus
	uuid string

	// Locks and what they guard: docs/locking.md.
	ring      atomic.Pointer[Ring]
	rebuildMu sync.Mutex // serializes ring rebuilds: builder, present, installs
	builder   ringBuilder
	present   map[string]bool // nodes with a row at the last rebuild
	state     atomic.Value    // string
	resyncCh  chan struct{}
	hooks     ringHooks
	seq       *Sequencer // this node's part in the operation log (sequencer.go)
	txn       *txns      // this node's part in cluster transactions (txn.go)

	// inflight counts held resource work per partition; waking is
	// signalled on idle whenever a count drops to zero.
	inflight    [Partitions]atomic.Int64
	idleMu      sync.Mutex
	idle        chan struct{}
	idleWaiters atomic.Int32
	handover    handover
	probes      atomic.Int64
	beat        beats
	jobHook     atomic.Pointer[cloudbus.Interceptor]
	lastForce   atomic.Int64 // unix nanos of the last forced resync

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	fenced  chan struct{}
	stopped atomic.Bool
}

// New builds a node; Start joins the cluster.
func New(opts Options) (*Node, error) {
	if opts.DB == nil || opts.Bus == nil {
		return nil, errors.New("managementnode: Options.DB and Options.Bus are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 2 * time.Second
	}
	if opts.HeartbeatThreshold <= 0 {
		opts.HeartbeatThreshold = 3
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = 10 * time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	if opts.MaxHops <= 0 {
		opts.MaxHops = 3
	}
	if opts.Now == nil {
		gdb := opts.DB
		opts.Now = func(ctx context.Context) (time.Time, error) { return db.Now(ctx, gdb) }
	}
	n := &Node{
		opts: opts, db: opts.DB, bus: opts.Bus, uuid: opts.Bus.NodeUUID(),
		resyncCh: make(chan struct{}, 1), idle: make(chan struct{}), fenced: make(chan struct{}),
	}
	n.log = opts.Logger.With("component", "managementnode", "node_uuid", n.uuid)
	n.state.Store(StateJoining)
	empty, _ := BuildRing(0, nil)
	n.ring.Store(empty)
	n.handover.init()
	n.hooks.init()
	n.seq = newSequencer(n)
	n.txn = newTxns(n)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

// UUID is this node's UUID (this incarnation's).
func (n *Node) UUID() string { return n.uuid }

// State is joining, running or leaving.
func (n *Node) State() string { return n.state.Load().(string) }

// Ring is the current ring (immutable; do not modify).
func (n *Node) Ring() *Ring { return n.ring.Load() }

// Owner is the node owning a resource under the current ring. Lock-free.
func (n *Node) Owner(uuid string) string { return n.ring.Load().Owner(uuid) }

// IsMine reports whether this node owns uuid under the current ring.
func (n *Node) IsMine(uuid string) bool { return n.Owner(uuid) == n.uuid }

// TargetFor addresses service on the node owning uuid ("<service>.<owner>").
// It fails with a retryable NodeUnavailable while the ring is empty.
func (n *Node) TargetFor(service, uuid string) (string, error) {
	o := n.Owner(uuid)
	if o == "" {
		return "", errcode.New(errcode.NodeUnavailable, "no management node is running yet")
	}
	return n.bus.Target(service, o), nil
}

// OnRingChange registers fn to run after ring changes, for services to
// rescan what they now own. Hooks are level-triggered rescans:
//
//   - They run on one goroutine of the node (started by Start, waited for
//     by Stop), never on the goroutine that changed the ring (the resync
//     loop, a bus handler that forced a resync, Start, Stop) and never
//     under a lock of the node. A hook may therefore call any method of
//     the node, including ones that rebuild the ring, except Stop.
//   - One at a time: a hook never runs concurrently with itself or with
//     another hook. A round calls every hook registered so far, in
//     registration order, with the same ring.
//   - Rings reach the hooks in epoch order: a round never gets a ring
//     older than the previous round's. Changes made while a round runs
//     coalesce into one more round with the newest ring: intermediate
//     rings may be skipped, the newest never is.
//   - fn is called after every ring change that follows its registration,
//     with that ring or a newer one. Hooks registered before Start are
//     called once with the node's first ring (after Start installed it,
//     perhaps after Start returned); a hook registered later may get one
//     call for a ring installed just before.
//   - When a round runs with ring r, r or a newer ring is installed: the
//     node already forwards work for partitions it lost and holds each
//     partition it gained until the previous owner released it, so work a
//     hook sends through the Guard runs only when it is safe.
//   - ctx is cancelled when the node stops. Stop waits for the round in
//     progress and drops rounds not started; a hook must return promptly
//     once ctx is done, and a slow hook delays the later rounds. A panic is
//     logged and the round goes on with the next hook.
func (n *Node) OnRingChange(fn func(ctx context.Context, r *Ring)) {
	n.hooks.add(fn)
}

// Fenced is closed when this node found its membership row deleted by a
// peer: it must stop serving and exit.
func (n *Node) Fenced() <-chan struct{} { return n.fenced }

// Migrate creates the node's tables.
func Migrate(ctx context.Context, gdb *gorm.DB) error {
	if err := gdb.WithContext(ctx).AutoMigrate(&NodeVO{}, &RingVO{}, &OperationVO{}, &IDPoolEntryVO{}); err != nil {
		return fmt.Errorf("migrate management node tables: %w", err)
	}
	// The ring row must exist before anyone bumps it; concurrent starters
	// may race here, so ignore a duplicate.
	err := gdb.WithContext(ctx).Where(RingVO{ID: 1}).FirstOrCreate(&RingVO{ID: 1}).Error
	if err != nil && !errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("create ring row: %w", err)
	}
	return nil
}

// Start joins the cluster: it writes the node's row (joining), serves the
// node's own bus queue, subscribes to membership events, then turns running,
// builds the ring and starts the heartbeat, resync and hook goroutines.
func (n *Node) Start(ctx context.Context) error {
	if err := Migrate(ctx, n.db); err != nil {
		return err
	}
	if err := n.seq.start(ctx); err != nil { // applies the operation log before serving
		return err
	}
	now, err := n.opts.Now(ctx)
	if err != nil {
		return fmt.Errorf("read database clock: %w", err)
	}
	row := NodeVO{UUID: n.uuid, Host: n.opts.Host, APIPort: n.opts.APIPort, State: StateJoining, HeartbeatAt: now, JoinedAt: now}
	if err := n.changeMembership(ctx, func(tx *gorm.DB) error { return tx.Create(&row).Error }); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	n.beat.ok(now)
	mux := cloudbus.NewMux()
	cloudbus.Handle(mux, msgAwaitRelease, n.awaitRelease)
	cloudbus.Handle(mux, MsgProbe, n.probe)
	cloudbus.Handle(mux, msgSubmit, n.seq.handleSubmit)
	cloudbus.Handle(mux, msgTxn, n.txn.handle)
	mux.Intercept(n.Guard(Service))
	if err := n.bus.Serve(Service, mux); err != nil {
		return fmt.Errorf("serve %s queue: %w", Service, err)
	}
	for _, ev := range []cloudbus.Event[MemberEvent]{EvNodeJoined, EvNodeLeaving, EvNodeLeft} {
		if err := cloudbus.Subscribe(n.bus, ev, n.onMemberEvent); err != nil {
			return err
		}
	}
	// Running in memory first: a resync forced by a bus message between the
	// row's update and this store would otherwise build the new epoch
	// without this node, and Start's own resync below would then find the
	// epoch current and leave this node owning nothing. Before the row says
	// running, a resync leaves this node out for the row's sake.
	n.state.Store(StateRunning)
	var epoch int64
	if err := n.changeMembership(ctx, func(tx *gorm.DB) error {
		return tx.Model(&NodeVO{}).Where("uuid = ?", n.uuid).Update("state", StateRunning).Error
	}, &epoch); err != nil {
		n.state.Store(StateJoining)
		return fmt.Errorf("turn running: %w", err)
	}
	if err := n.resync(ctx); err != nil {
		return fmt.Errorf("build ring: %w", err)
	}
	n.publish(ctx, EvNodeJoined, epoch)
	n.log.Info("joined the cluster", "epoch", n.Ring().Epoch, "members", len(n.Ring().Members))
	n.wg.Add(4)
	go n.seq.loop()
	go n.heartbeatLoop()
	go n.resyncLoop()
	go n.hookLoop() // runs the round of the first ring, offered above
	return nil
}

// changeMembership runs change and bumps the ring epoch in one
// transaction; the new epoch is stored in out[0] if given.
func (n *Node) changeMembership(ctx context.Context, change func(tx *gorm.DB) error, out ...*int64) error {
	return n.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := change(tx); err != nil {
			return err
		}
		return bumpEpoch(tx, out...)
	})
}

func bumpEpoch(tx *gorm.DB, out ...*int64) error {
	if err := tx.Model(&RingVO{}).Where("id = 1").Update("epoch", gorm.Expr("epoch + 1")).Error; err != nil {
		return fmt.Errorf("bump ring epoch: %w", err)
	}
	if len(out) > 0 {
		var r RingVO
		if err := tx.First(&r, 1).Error; err != nil {
			return err
		}
		*out[0] = r.Epoch
	}
	return nil
}

func (n *Node) publish(ctx context.Context, ev cloudbus.Event[MemberEvent], epoch int64) {
	n.publishFor(ctx, ev, n.uuid, epoch)
}

func (n *Node) publishFor(ctx context.Context, ev cloudbus.Event[MemberEvent], node string, epoch int64) {
	if err := cloudbus.Publish(ctx, n.bus, ev, MemberEvent{NodeUUID: node, Epoch: epoch}); err != nil {
		// Peers converge through their periodic resync anyway.
		n.log.Warn("publish membership event", "event", ev.Name(), "err", err)
	}
}

func (n *Node) onMemberEvent(_ context.Context, _ string, ev MemberEvent) {
	if ev.Epoch > n.Ring().Epoch || ev.Epoch == 0 {
		n.triggerResync()
	}
}

func (n *Node) triggerResync() {
	select {
	case n.resyncCh <- struct{}{}:
	default:
	}
}

func (n *Node) resyncLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.opts.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.resyncCh:
		}
		if err := n.resync(n.ctx); err != nil && n.ctx.Err() == nil {
			n.log.Warn("ring resync failed", "err", err)
		}
	}
}

var errFenced = errors.New("this node's membership row is gone: fenced")

// resync reads members and epoch from the database and, if the epoch
// moved, installs the new ring.
func (n *Node) resync(ctx context.Context) error {
	n.rebuildMu.Lock()
	defer n.rebuildMu.Unlock()
	var ringRow RingVO
	var rows []NodeVO
	err := n.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.First(&ringRow, 1).Error; err != nil {
			return err
		}
		return tx.Order("uuid").Find(&rows).Error
	})
	if err != nil {
		return fmt.Errorf("read membership: %w", err)
	}
	old := n.Ring()
	if ringRow.Epoch == old.Epoch && old.Epoch != 0 {
		return nil
	}
	members := make([]string, 0, len(rows))
	present := make(map[string]bool, len(rows))
	for _, r := range rows {
		present[r.UUID] = true
		if r.State != StateRunning || (r.UUID == n.uuid && n.State() != StateRunning) {
			continue // joining and leaving nodes own nothing
		}
		members = append(members, r.UUID)
	}
	r, err := n.builder.build(ringRow.Epoch, members)
	if err != nil {
		return err
	}
	n.installLocked(old, r, present)
	return nil
}

// installLocked swaps in a new ring, fails calls to members that left,
// starts handovers for partitions gained, and offers the ring to the hook
// goroutine (the hooks run later, outside rebuildMu). The caller holds
// rebuildMu.
func (n *Node) installLocked(old, r *Ring, present map[string]bool) {
	n.ring.Store(r)
	// Calls to a node fail once its row is gone (evicted, or left after
	// draining); a leaving node still answers what it was sent.
	for m := range n.present {
		if !present[m] {
			suffix := "." + m
			failed := n.bus.FailPending(func(target string) bool { return strings.HasSuffix(target, suffix) },
				errcode.New(errcode.NodeUnavailable, "management node %s left the cluster", m))
			if failed > 0 {
				n.log.Info("failed calls to a departed node", "peer", m, "calls", failed)
			}
		}
	}
	n.present = present
	n.handover.onRingChange(n, old, r, present)
	n.log.Info("ring changed", "epoch", r.Epoch, "members", len(r.Members), "partitions_owned", r.PartitionsOf()[n.uuid])
	n.hooks.offer(r)
}

// forceResync re-reads the ring now, at most every 100ms; used when a
// forwarded message suggests this node's ring is stale.
func (n *Node) forceResync(ctx context.Context) {
	now := time.Now().UnixNano()
	last := n.lastForce.Load()
	if now-last < int64(100*time.Millisecond) || !n.lastForce.CompareAndSwap(last, now) {
		return
	}
	if err := n.resync(ctx); err != nil {
		n.log.Warn("forced ring resync failed", "err", err)
	}
}
