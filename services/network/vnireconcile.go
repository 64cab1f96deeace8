package network

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/managementnode"
)

// A VXLAN network's create allocates its VNI in the cluster's ID pool and
// then inserts its row; its delete deletes the row and then releases the
// VNI. A node that dies between the two steps leaves a VNI held for a
// network that does not exist: no create can take it again. The VNI
// reconciler finds such holdings in the pool's table and releases them.
//
// A create in progress holds its VNI before its row exists, so only
// allocations older than a grace period are released: the grace is longer
// than a create takes (a job's timeout bounds it). A create redelivered
// after its VNI was released so is refused (its allocation is answered from
// the log, and the VNI is no longer its own: see allocateVNI), and its
// caller creates the network again. The release names the holder, so an ID
// released and taken by another network meanwhile is never touched.

// VNIReleaser releases an ID its holder holds: the cluster's VNI pool
// (managementnode.IDPool) satisfies it. An ID not held by holder is
// ResourceNotFound.
type VNIReleaser interface {
	Release(ctx context.Context, id int, holder string) error
}

// Owner tells whether this node owns a key of the ring
// (managementnode.Node satisfies it): the reconciler runs on the node that
// owns VNIPool, so one node does the work (on any other node it would only
// repeat it: the releases are idempotent).
type Owner interface {
	IsMine(key string) bool
}

// VNIReconcileOptions configure a VNIReconciler. DB and Pool are required.
type VNIReconcileOptions struct {
	DB   *gorm.DB
	Pool VNIReleaser
	// Owner, if set, restricts the runs to the node owning VNIPool; nil
	// runs on this node always.
	Owner  Owner
	Logger *slog.Logger
	// Interval between runs; default 10 minutes. The first run is at Start.
	Interval time.Duration
	// Grace is the age an allocation must have to be released; default 10
	// minutes.
	Grace time.Duration
	// Now is the clock the ages are measured with; default time.Now. The
	// allocations' times are the sequencer's clock, which the grace
	// covers the skew of.
	Now func() time.Time
}

// VNIReconciler releases the VNIs of VNIPool held by VXLAN networks whose
// row does not exist (or that have another VNI): see Reconcile.
type VNIReconciler struct {
	opts VNIReconcileOptions
	log  *slog.Logger

	mu     sync.Mutex // guards cancel and wg.Add; a leaf
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewVNIReconciler makes a reconciler; Start runs it.
func NewVNIReconciler(opts VNIReconcileOptions) (*VNIReconciler, error) {
	if opts.DB == nil || opts.Pool == nil {
		return nil, fmt.Errorf("network: a VNI reconciler needs a database and the VNI pool")
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Minute
	}
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &VNIReconciler{opts: opts, log: log.With("component", "vni-reconcile")}, nil
}

// Start runs the reconcile in the background: once now, then every
// Interval, until Stop. Starting twice is an error.
func (r *VNIReconciler) Start(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return fmt.Errorf("network: the VNI reconciler is started already")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(r.opts.Interval)
		defer t.Stop()
		for {
			r.runOnce(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// Stop ends the background runs and waits for the one in progress (its
// context is cancelled). It is idempotent.
func (r *VNIReconciler) Stop(ctx context.Context) error {
	r.mu.Lock()
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop the VNI reconciler: %w", ctx.Err())
	}
}

func (r *VNIReconciler) runOnce(ctx context.Context) {
	if r.opts.Owner != nil && !r.opts.Owner.IsMine(VNIPool) {
		return
	}
	if _, err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("reconcile the vxlan VNIs", "err", err)
	}
}

// LeakedVNI is a VNI of VNIPool held by Holder, a VXLAN network that does
// not exist or has another VNI, allocated at AllocatedAt (zero when the
// allocation's record is gone from the log).
type LeakedVNI struct {
	VNI         int
	Holder      string
	AllocatedAt time.Time
}

// Reconcile releases every VNI of VNIPool held by a VXLAN network whose row
// does not exist, or that has another VNI, allocated more than Grace ago,
// logging each release; it answers the VNIs it released. A VNI released
// meanwhile (by the delete that was late, or another node's reconcile) is
// skipped. It stops at the first error other than that.
func (r *VNIReconciler) Reconcile(ctx context.Context) ([]LeakedVNI, error) {
	leaked, err := r.leaked(ctx)
	if err != nil {
		return nil, err
	}
	cutoff := r.opts.Now().Add(-r.opts.Grace)
	var released []LeakedVNI
	for _, l := range leaked {
		if !l.AllocatedAt.IsZero() && l.AllocatedAt.After(cutoff) {
			continue // a create may be writing its row now
		}
		err := r.opts.Pool.Release(ctx, l.VNI, l.Holder)
		if errcode.Has(err, errcode.ResourceNotFound) {
			continue
		}
		if err != nil {
			return released, fmt.Errorf("release leaked vni %d of %s: %w", l.VNI, l.Holder, err)
		}
		r.log.Info("released a leaked vni: its vxlan network does not exist", "vni", l.VNI, "l2_network_uuid", l.Holder,
			"allocated_at", l.AllocatedAt)
		released = append(released, l)
	}
	return released, nil
}

// leaked reads the VNIs of VNIPool whose holder has no VXLAN network row
// with that VNI, with the time of their allocation, lowest first.
func (r *VNIReconciler) leaked(ctx context.Context) ([]LeakedVNI, error) {
	entries, ops := managementnode.IDPoolEntryVO{}.TableName(), managementnode.OperationVO{}.TableName()
	var rows []struct {
		ID        int        `gorm:"column:id"`
		Holder    string     `gorm:"column:holder"`
		CreatedAt *time.Time `gorm:"column:created_at"`
	}
	err := r.opts.DB.WithContext(ctx).Table(entries+" e").
		Select("e.id AS id, e.holder AS holder, o.created_at AS created_at").
		Joins("LEFT JOIN "+ops+" o ON o.seq = e.seq").
		Where("e.pool = ?", VNIPool).
		Where("NOT EXISTS (SELECT 1 FROM l2_networks n WHERE n.uuid = e.holder AND n.vni = e.id)").
		Order("e.id").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read the VNIs held without a vxlan network: %w", err)
	}
	out := make([]LeakedVNI, len(rows))
	for i, row := range rows {
		out[i] = LeakedVNI{VNI: row.ID, Holder: row.Holder}
		if row.CreatedAt != nil {
			out[i].AllocatedAt = row.CreatedAt.UTC()
		}
	}
	return out, nil
}
