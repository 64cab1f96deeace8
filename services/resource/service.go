package resource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"gorm.io/gorm"

	"mplane/api/route"
	"mplane/cloudbus"
	"mplane/managementnode"
	"mplane/thread"
)

// Options configure the service.
type Options struct {
	DB        *gorm.DB
	Bus       *cloudbus.Bus
	Node      *managementnode.Node
	Scheduler *thread.Scheduler
	Logger    *slog.Logger
	// Kinds are served in this order (and migrated in it: a kind whose
	// table has a foreign key to another's comes after it).
	Kinds []Kind
}

// Service serves the simple kinds it was given.
type Service struct {
	opts Options
}

// New builds the service.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Scheduler == nil {
		return nil, errors.New("resource: Options.DB, Bus, Node and Scheduler are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	seen := map[string]bool{}
	for _, k := range opts.Kinds {
		if seen[k.kindName()] {
			return nil, fmt.Errorf("resource: kind %q given twice", k.kindName())
		}
		seen[k.kindName()] = true
	}
	return &Service{opts: opts}, nil
}

// Migrate creates the tables of kinds, in order.
func Migrate(ctx context.Context, db *gorm.DB, kinds []Kind) error {
	for _, k := range kinds {
		if err := db.WithContext(ctx).AutoMigrate(k.models()...); err != nil {
			return fmt.Errorf("migrate %s tables: %w", k.kindName(), err)
		}
	}
	return nil
}

// API is the REST surface of every kind, for the portal: each kind's
// resource, then its views.
func (s *Service) API() []route.Resource {
	var out []route.Resource
	for _, k := range s.opts.Kinds {
		out = append(out, k.resources()...)
	}
	return out
}

// Start serves "resource.<node>" (the tables exist: see Migrate).
func (s *Service) Start(context.Context) error {
	return s.opts.Node.ServeOwned(BusService, func(mux *cloudbus.Mux) {
		for _, k := range s.opts.Kinds {
			k.register(mux, s)
		}
	})
}

// Stop does nothing: the bus stops consuming, the scheduler drains the
// chains. It is there so every component has one lifecycle.
func (s *Service) Stop(context.Context) error { return nil }
