package globalconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/cloudbus"
	"mplane/conf"
	"mplane/managementnode"
	"mplane/thread"
)

// BusService is the bus service: each node consumes "globalconfig.<node>".
const BusService = "globalconfig"

// txnKind is the kind of the configurations' transaction scopes,
// "globalconfig/<category>/<name>".
const txnKind = "globalconfig"

// Options configure the service. Zero values take the documented
// defaults.
type Options struct {
	DB        *gorm.DB             // required
	Bus       *cloudbus.Bus        // required
	Node      *managementnode.Node // required
	Scheduler *thread.Scheduler    // required
	Logger    *slog.Logger
	// Definitions are the configurations served; each Key must be a conf
	// key.
	Definitions []Definition
	// Check validates value for the setting key on this node without
	// applying it, and answers the value in the form the node's
	// configuration shows it ("2000ms" is "2s"): that form is stored, so
	// the inventory and `config show` agree. Required.
	Check func(key, value string) (string, error)
	// Apply applies value to the setting key on this node. Required.
	Apply func(key, value string) error
	// ResyncInterval is how often a node applies the changes it missed.
	// Default 5s.
	ResyncInterval time.Duration
}

// config is a Definition with its default value.
type config struct {
	Definition
	def string
}

// Service owns the global configurations.
type Service struct {
	opts    Options
	log     *slog.Logger
	db      *gorm.DB
	node    *managementnode.Node
	sched   *thread.Scheduler
	configs map[string]config // by ID

	// applyMu serializes the applies on this node, so that versions are
	// applied in order and applied tells what is applied. It is held
	// across Apply, a local and short change of the node's settings (lock
	// order: applyMu, then whatever Apply takes).
	applyMu sync.Mutex
	applied map[string]int64 // by ID: the version applied on this node
	// started is set by Start before its first resync: a commit that
	// comes earlier (the node takes part in transactions from its own
	// start) is left to that resync, so that a part started after the
	// node cannot undo it.
	started atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc
}

// New builds the service and registers its part in the cluster
// transactions with the node: call it before the node starts (a node takes
// part in every transaction once it runs). Start serves it.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Scheduler == nil || opts.Check == nil || opts.Apply == nil {
		return nil, errors.New("globalconfig: Options.DB, Bus, Node, Scheduler, Check and Apply are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = 5 * time.Second
	}
	s := &Service{opts: opts, log: opts.Logger.With("component", "globalconfig"), db: opts.DB, node: opts.Node, sched: opts.Scheduler,
		configs: map[string]config{}, applied: map[string]int64{}}
	defaults := conf.Default()
	for _, d := range opts.Definitions {
		switch {
		case d.Category == "" || d.Name == "":
			return nil, fmt.Errorf("globalconfig: definition %+v: a category and a name are required", d)
		case !slices.Contains(conf.Keys(), d.Key):
			return nil, fmt.Errorf("globalconfig: %s: %q is not a setting (conf key)", d.ID(), d.Key)
		case s.configs[d.ID()].Key != "":
			return nil, fmt.Errorf("globalconfig: %s defined twice", d.ID())
		}
		s.configs[d.ID()] = config{Definition: d, def: defaults.Display(d.Key)}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	opts.Node.RegisterTxn(txnKind, participant{s})
	return s, nil
}

// Migrate creates the global_configs table.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&GlobalConfigVO{}); err != nil {
		return fmt.Errorf("migrate global configuration table: %w", err)
	}
	return nil
}

// Start writes the rows of the configurations not in the database yet
// (their default, version 0), applies the changed ones on this node,
// serves "globalconfig.<node>" and resyncs periodically.
func (s *Service) Start(ctx context.Context) error {
	now := time.Now().UTC()
	for _, c := range s.sorted() {
		row := GlobalConfigVO{UUID: ConfigUUID(c.Category, c.Name), Category: c.Category, Name: c.Name, Description: c.Description,
			DefaultValue: c.def, Value: c.def, Type: c.Type, CreateDate: now, LastOpDate: now}
		if err := s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
			return fmt.Errorf("write global configuration %s: %w", c.ID(), err)
		}
	}
	s.started.Store(true)
	if err := s.Resync(ctx); err != nil {
		return err
	}
	if err := s.node.ServeOwned(BusService, func(mux *cloudbus.Mux) {
		managementnode.Handle(mux, MsgUpdateGlobalConfig, s.update)
	}); err != nil {
		return err
	}
	return s.sched.Every(s.ctx, s.opts.ResyncInterval, 0.1, "globalconfig-resync", s.Resync)
}

// Stop (idempotent) ends the periodic resync.
func (s *Service) Stop(context.Context) error {
	s.cancel()
	return nil
}

// Resync applies on this node every changed configuration whose version
// is newer than the one it applied: how a node that missed a commit (or
// started after it) converges. It runs every ResyncInterval; a
// configuration that fails to apply is logged and tried again at the next
// resync. It answers only a failure to read the configurations.
func (s *Service) Resync(ctx context.Context) error {
	var rows []GlobalConfigVO
	if err := s.db.WithContext(ctx).Where("version > 0").Order("category, name").Find(&rows).Error; err != nil {
		return fmt.Errorf("read global configurations: %w", err)
	}
	for _, r := range rows {
		if err := s.apply(r.Category+"/"+r.Name, r.Value, r.Version); err != nil {
			s.log.Warn("global configuration not applied; retried at the next resync", "config", r.Category+"/"+r.Name,
				"version", r.Version, "err", err)
		}
	}
	return nil
}

// apply applies version of the configuration id on this node, unless it
// applied that version or a newer one already.
func (s *Service) apply(id, value string, version int64) error {
	c, ok := s.configs[id]
	if !ok {
		return nil // a configuration of a newer build
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.applied[id] >= version {
		return nil
	}
	if err := s.opts.Apply(c.Key, value); err != nil {
		return fmt.Errorf("apply global configuration %s = %q (version %d): %w", id, value, version, err)
	}
	s.applied[id] = version
	s.log.Info("global configuration applied", "config", id, "value", value, "version", version)
	return nil
}

// sorted lists the configurations by ID.
func (s *Service) sorted() []config {
	out := make([]config, 0, len(s.configs))
	for _, c := range s.configs {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// ids lists the configurations' IDs, for error messages.
func (s *Service) ids() []string {
	var out []string
	for _, c := range s.sorted() {
		out = append(out, c.ID())
	}
	return out
}
