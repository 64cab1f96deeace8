package resource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"gorm.io/gorm"

	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/managementnode"
	"mplane/thread"
)

// BusService is the bus service name: each node consumes "resource.<node>".
const BusService = "resource"

// Kind describes one simple resource type.
type Kind struct {
	// Name is the type's name ("zone"); chains are "<name>-<uuid>".
	Name string
	// Model is a pointer to the GORM model (for migration).
	Model any
	// Create inserts the row for uuid from params the API layer has
	// validated, and returns the inventory. It runs on the owner.
	Create func(ctx context.Context, db *gorm.DB, uuid string, params json.RawMessage) (any, error)
	// Delete removes the row of uuid, refusing (InvalidState) while other
	// resources depend on it. Deleting a missing row is not an error.
	Delete func(ctx context.Context, db *gorm.DB, uuid string) error
}

// CreateReq creates a resource of Kind with a caller-chosen UUID.
type CreateReq struct {
	Kind   string          `json:"kind"`
	UUID   string          `json:"uuid"`
	Params json.RawMessage `json:"params"`
}

// CreateRep carries the created resource's inventory.
type CreateRep struct {
	Inventory json.RawMessage `json:"inventory"`
}

// DeleteReq deletes a resource.
type DeleteReq struct {
	Kind string `json:"kind"`
	UUID string `json:"uuid"`
}

// Messages of the resource service.
var (
	MsgCreate = cloudbus.NewMsg[CreateReq, CreateRep]("resource.Create")
	MsgDelete = cloudbus.NewMsg[DeleteReq, cloudbus.Empty]("resource.Delete")
)

// Options configure the service.
type Options struct {
	DB        *gorm.DB
	Bus       *cloudbus.Bus
	Node      *managementnode.Node
	Scheduler *thread.Scheduler
	Logger    *slog.Logger
	Kinds     []Kind
}

// Service serves the kinds it was given.
type Service struct {
	opts  Options
	kinds map[string]Kind
}

// New builds the service.
func New(opts Options) (*Service, error) {
	if opts.DB == nil || opts.Bus == nil || opts.Node == nil || opts.Scheduler == nil {
		return nil, errors.New("resource: Options.DB, Bus, Node and Scheduler are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Service{opts: opts, kinds: map[string]Kind{}}
	for _, k := range opts.Kinds {
		if _, dup := s.kinds[k.Name]; dup {
			return nil, fmt.Errorf("resource: kind %q registered twice", k.Name)
		}
		s.kinds[k.Name] = k
	}
	return s, nil
}

// Migrate creates the tables of kinds.
func Migrate(ctx context.Context, db *gorm.DB, kinds []Kind) error {
	for _, k := range kinds {
		if err := db.WithContext(ctx).AutoMigrate(k.Model); err != nil {
			return fmt.Errorf("migrate %s tables: %w", k.Name, err)
		}
	}
	return nil
}

// Start migrates the kinds' tables and serves "resource.<node>".
func (s *Service) Start(ctx context.Context) error {
	if err := Migrate(ctx, s.opts.DB, s.opts.Kinds); err != nil {
		return err
	}
	mux := cloudbus.NewMux()
	cloudbus.Handle(mux, MsgCreate, s.create)
	cloudbus.Handle(mux, MsgDelete, s.delete)
	mux.Intercept(s.opts.Node.Guard(BusService))
	return s.opts.Bus.Serve(BusService, mux)
}

func (s *Service) kind(name string) (Kind, error) {
	k, ok := s.kinds[name]
	if !ok {
		names := make([]string, 0, len(s.kinds))
		for n := range s.kinds {
			names = append(names, n)
		}
		sort.Strings(names)
		return Kind{}, errcode.New(errcode.InvalidArgument, "unknown resource kind %q; known: %s", name, strings.Join(names, ", "))
	}
	return k, nil
}

func (s *Service) create(ctx context.Context, req CreateReq) (CreateRep, error) {
	k, err := s.kind(req.Kind)
	if err != nil {
		return CreateRep{}, err
	}
	return thread.Sync(ctx, s.opts.Scheduler, thread.Task{Signature: k.Name + "-" + req.UUID, Name: "create"},
		func(ctx context.Context) (CreateRep, error) {
			inv, err := k.Create(ctx, s.opts.DB.WithContext(ctx), req.UUID, req.Params)
			if err != nil {
				return CreateRep{}, err
			}
			data, err := json.Marshal(inv)
			if err != nil {
				return CreateRep{}, errcode.Wrap(errcode.Internal, err, "encode %s inventory", k.Name)
			}
			return CreateRep{Inventory: data}, nil
		})
}

func (s *Service) delete(ctx context.Context, req DeleteReq) (cloudbus.Empty, error) {
	k, err := s.kind(req.Kind)
	if err != nil {
		return cloudbus.Empty{}, err
	}
	_, err = thread.Sync(ctx, s.opts.Scheduler, thread.Task{Signature: k.Name + "-" + req.UUID, Name: "delete"},
		func(ctx context.Context) (struct{}, error) {
			return struct{}{}, k.Delete(ctx, s.opts.DB.WithContext(ctx), req.UUID)
		})
	return cloudbus.Empty{}, err
}

// Insert creates row (whose primary key is uuid); if a row with that uuid
// exists already (a redelivered create) it loads and returns that one.
func Insert[T any](ctx context.Context, db *gorm.DB, uuid string, row *T) (*T, error) {
	err := db.WithContext(ctx).Create(row).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		var existing T
		if lerr := db.WithContext(ctx).First(&existing, "uuid = ?", uuid).Error; lerr == nil {
			return &existing, nil
		}
	}
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "insert %T %s", row, uuid)
	}
	return row, nil
}

// Exists reports whether a row of model with uuid exists; a missing row is
// a ResourceNotFound error naming what (e.g. "zoneUuid").
func Exists(ctx context.Context, db *gorm.DB, model any, what, uuid string) error {
	var n int64
	if err := db.WithContext(ctx).Model(model).Where("uuid = ?", uuid).Count(&n).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up %s %s", what, uuid)
	}
	if n == 0 {
		return errcode.New(errcode.InvalidArgument, "%s %s does not exist", what, uuid)
	}
	return nil
}

// RefuseIfUsed fails with InvalidState when table has rows whose column
// equals uuid: "zone z1 still has 2 clusters; delete them first".
func RefuseIfUsed(ctx context.Context, db *gorm.DB, kind, uuid, table, column, what string) error {
	var n int64
	if err := db.WithContext(ctx).Table(table).Where(column+" = ?", uuid).Count(&n).Error; err != nil {
		if db.Migrator().HasTable(table) {
			return errcode.Wrap(errcode.Internal, err, "count %s of %s %s", what, kind, uuid)
		}
		return nil
	}
	if n > 0 {
		return errcode.New(errcode.InvalidState, "%s %s still has %d %s; delete them first", kind, uuid, n, what)
	}
	return nil
}
