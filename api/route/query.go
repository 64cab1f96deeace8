package route

import (
	"context"
	"sync"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"mplane/api/query"
	"mplane/errcode"
)

// Query serves a resource's GET routes: a schema derived from the model T
// (query.SchemaOf) and how to read T's rows.
type Query struct {
	schema *query.Schema
	model  any
	scope  func(*gorm.DB) *gorm.DB
	find   func(ctx context.Context, db *gorm.DB, q *query.Query, uuid string) (any, int64, int, error)
}

// QueryOption adjusts a Query.
type QueryOption func(*queryOpts)

type queryOpts struct {
	preload []preload
	where   []where
}

type preload struct{ association, order string }

type where struct {
	cond string
	args []any
}

// Preload loads an association of every row (a VM's "VMNics").
func Preload(association string) QueryOption {
	return func(o *queryOpts) { o.preload = append(o.preload, preload{association: association}) }
}

// PreloadOrdered loads an association of every row in the order of the
// SQL ORDER BY clause order (a VM's "AllVolumes", root first).
func PreloadOrdered(association, order string) QueryOption {
	return func(o *queryOpts) { o.preload = append(o.preload, preload{association: association, order: order}) }
}

// Where keeps the rows for which cond holds, a condition with its
// arguments as gorm.DB.Where takes them ("type = ?", "L2VlanNetwork"): a
// query of some of a model's rows on a path of its own, as ZStack's
// /l2-networks/vlan is of its L2 networks. A {uuid} of another row is not
// found there (404).
func Where(cond string, args ...any) QueryOption {
	return func(o *queryOpts) { o.where = append(o.where, where{cond: cond, args: args}) }
}

func (o queryOpts) scope(db *gorm.DB) *gorm.DB {
	for _, w := range o.where {
		db = db.Where(w.cond, w.args...)
	}
	return db
}

// QueryOf declares the query of the GORM model T, whose JSON form is the
// inventory.
func QueryOf[T any](opts ...QueryOption) Query {
	var o queryOpts
	for _, fn := range opts {
		fn(&o)
	}
	return Query{
		schema: query.SchemaOf[T](),
		model:  new(T),
		scope:  o.scope,
		find: func(ctx context.Context, db *gorm.DB, q *query.Query, uuid string) (any, int64, int, error) {
			db = o.scope(db.Model(new(T)))
			for _, a := range o.preload {
				if a.order == "" {
					db = db.Preload(a.association)
					continue
				}
				order := a.order
				db = db.Preload(a.association, func(tx *gorm.DB) *gorm.DB { return tx.Order(order) })
			}
			if uuid != "" {
				db = db.Where("uuid = ?", uuid)
			}
			rows, total, err := query.Find[T](ctx, db, q)
			return rows, total, len(rows), err
		},
	}
}

// Schema is the query's whitelist of fields.
func (q Query) Schema() *query.Schema { return q.schema }

// Declared reports whether q was made by QueryOf.
func (q Query) Declared() bool { return q.find != nil }

// Find runs parsed query pq (restricted to uuid unless empty) and returns
// the inventories, the total if asked and the number of rows returned.
func (q Query) Find(ctx context.Context, db *gorm.DB, pq *query.Query, uuid string) (rows any, total int64, n int, err error) {
	return q.find(ctx, db, pq, uuid)
}

// Exists answers ResourceNotFound, naming what, if no row of q's model has
// uuid.
func (q Query) Exists(ctx context.Context, db *gorm.DB, what, uuid string) error {
	var n int64
	tx := db.WithContext(ctx).Model(q.model)
	if q.scope != nil {
		tx = q.scope(tx)
	}
	if err := tx.Where("uuid = ?", uuid).Count(&n).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "look up %s %s", what, uuid)
	}
	if n == 0 {
		return errcode.New(errcode.ResourceNotFound, "%s %s not found", what, uuid)
	}
	return nil
}

// Model is a new, zero row of q's model (a pointer).
func (q Query) Model() any { return q.model }

// Table is the name of the table of q's model.
func (q Query) Table(db *gorm.DB) (string, error) {
	s, err := schema.Parse(q.model, &schemas, db.NamingStrategy)
	if err != nil {
		return "", err
	}
	return s.Table, nil
}

// schemas caches the models' parsed schemas for Table.
var schemas sync.Map
