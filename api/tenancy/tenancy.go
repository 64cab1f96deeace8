package tenancy

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/errcode"
)

// RefVO records who owns a resource: a row of account_resource_refs.
type RefVO struct {
	ResourceUUID string `gorm:"column:resource_uuid;primaryKey;size:32" json:"resourceUuid"`
	AccountUUID  string `gorm:"column:account_uuid;size:32;not null;index" json:"accountUuid"`
	// ResourceType is the table of the resource's rows ("vm_instances").
	ResourceType string    `gorm:"column:resource_type;size:64;not null;index" json:"resourceType"`
	CreateDate   time.Time `gorm:"column:create_date;not null;index" json:"createDate"`
}

// TableName is account_resource_refs.
func (RefVO) TableName() string { return "account_resource_refs" }

// ShareVO shares a resource with an account, or with every account when
// ReceiverAccountUUID is empty (public): a row of shared_resources.
type ShareVO struct {
	ResourceUUID        string    `gorm:"column:resource_uuid;primaryKey;size:32" json:"resourceUuid"`
	ReceiverAccountUUID string    `gorm:"column:receiver_account_uuid;primaryKey;size:32" json:"receiverAccountUuid,omitempty"`
	OwnerAccountUUID    string    `gorm:"column:owner_account_uuid;size:32;not null;index" json:"ownerAccountUuid"`
	ResourceType        string    `gorm:"column:resource_type;size:64;not null" json:"resourceType"`
	CreateDate          time.Time `gorm:"column:create_date;not null" json:"createDate"`
}

// TableName is shared_resources.
func (ShareVO) TableName() string { return "shared_resources" }

// Migrate creates the tables.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&RefVO{}, &ShareVO{}); err != nil {
		return fmt.Errorf("migrate tenancy tables: %w", err)
	}
	// The callbacks, before the database serves anything (they see no
	// table until Install).
	return guardOf(db).registerOn(db)
}

// Visibility is what a normal account sees of a table.
type Visibility int

// The visibilities.
const (
	// Everyone: not filtered (infrastructure, whose routes are for admins,
	// and rows that are details of a visible row: IP addresses, image
	// files).
	Everyone Visibility = iota
	// OwnerOnly: the account's own rows.
	OwnerOnly
	// OwnerOrShared: its own rows and those shared to it or to everyone.
	OwnerOrShared
)

// Table is one table the filter knows.
type Table struct {
	Name       string
	Visibility Visibility
	// ParentColumn, for a table of Child rows, is the column naming the
	// parent (the sweeper repairs a child left without a record by it).
	ParentColumn string
}

// Child is a row that a call creates beside the resource it names and that
// belongs to that resource's owner: TenancyRef returns the row's UUID and
// its parent's (empty for none: the row has a record of its own, made at
// the API edge).
type Child interface {
	TenancyRef() (uuid, parent string)
}

// Guard is the filter installed on a database.
type Guard struct {
	tables atomic.Pointer[map[string]Table]
	once   sync.Once
	regErr error
}

// guards are the guards by database (its *gorm.Config, shared by every
// session made from it): the callbacks are registered once per database,
// before it is used (Migrate); Install only sets the tables, so it never
// changes callbacks while other goroutines query (GORM's callback
// registration is not safe for that).
var guards sync.Map

func guardOf(db *gorm.DB) *Guard {
	g, _ := guards.LoadOrStore(db.Config, &Guard{})
	return g.(*Guard)
}

func (g *Guard) tab() map[string]Table {
	if m := g.tables.Load(); m != nil {
		return *m
	}
	return nil
}

const (
	scopeCallback   = "tenancy:scope"
	inheritCallback = "tenancy:inherit"
)

// registerOn puts the filter and the Child callback on db, once.
func (g *Guard) registerOn(db *gorm.DB) error {
	g.once.Do(func() {
		cb := db.Callback()
		g.regErr = errors.Join(
			cb.Query().Before("gorm:query").Register(scopeCallback, g.filter),
			cb.Row().Before("gorm:row").Register(scopeCallback, g.filter),
			cb.Create().After("gorm:create").Register(inheritCallback, g.inherit))
	})
	return g.regErr
}

// Install sets the tables the filter knows on db's guard (registering its
// callbacks if Migrate did not); installing again replaces the tables.
func Install(db *gorm.DB, tables []Table) (*Guard, error) {
	m := map[string]Table{}
	for _, t := range tables {
		if t.Name == "" {
			return nil, errors.New("tenancy: a table without a name")
		}
		if old, ok := m[t.Name]; ok && old.Visibility != t.Visibility {
			return nil, fmt.Errorf("tenancy: table %s declared with two visibilities", t.Name)
		}
		m[t.Name] = t
	}
	g := guardOf(db)
	if err := g.registerOn(db); err != nil {
		return nil, err
	}
	g.tables.Store(&m)
	return g, nil
}

// Shareable reports whether rows of table may be shared.
func (g *Guard) Shareable(table string) bool {
	return g.tab()[table].Visibility == OwnerOrShared
}

type scopeKey struct{}

// Scope returns ctx in which the queries of the tables the guard filters
// see only what account may see. An empty account is Unscoped.
func Scope(ctx context.Context, account string) context.Context {
	return context.WithValue(ctx, scopeKey{}, account)
}

// Unscoped returns ctx without a scope: the owner's work, done for the
// system, sees every row.
func Unscoped(ctx context.Context) context.Context {
	if ScopeOf(ctx) == "" {
		return ctx
	}
	return context.WithValue(ctx, scopeKey{}, "")
}

// ScopeOf is the account ctx is scoped to, or "".
func ScopeOf(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	s, _ := ctx.Value(scopeKey{}).(string)
	return s
}

// visible is the condition a row of a table of visibility v must meet to be
// seen by account.
func visible(v Visibility, account string) clause.Expression {
	col := clause.Column{Table: clause.CurrentTable, Name: "uuid"}
	own := clause.Expr{SQL: "? IN (SELECT resource_uuid FROM account_resource_refs WHERE account_uuid = ?)", Vars: []any{col, account}}
	if v != OwnerOrShared {
		return own
	}
	return clause.Expr{
		SQL: "(? IN (SELECT resource_uuid FROM account_resource_refs WHERE account_uuid = ?) OR " +
			"? IN (SELECT resource_uuid FROM shared_resources WHERE receiver_account_uuid IN (?, '')))",
		Vars: []any{col, account, col, account},
	}
}

// filter is the query callback: a scoped query of a filtered table gets
// the visibility condition ANDed to its own.
func (g *Guard) filter(db *gorm.DB) {
	account := ScopeOf(db.Statement.Context)
	if account == "" || db.Error != nil {
		return
	}
	t, ok := g.tab()[db.Statement.Table]
	if !ok || t.Visibility == Everyone {
		return
	}
	cond := visible(t.Visibility, account)
	c, ok := db.Statement.Clauses["WHERE"]
	if where, isWhere := c.Expression.(clause.Where); ok && isWhere && len(where.Exprs) > 0 {
		c.Expression = clause.Where{Exprs: []clause.Expression{clause.AndConditions(where), cond}}
		db.Statement.Clauses["WHERE"] = c
		return
	}
	db.Statement.AddClause(clause.Where{Exprs: []clause.Expression{cond}})
}

// inherit is the create callback: the Child rows just created get their
// parent's owner.
func (g *Guard) inherit(db *gorm.DB) {
	if db.Error != nil || db.RowsAffected == 0 {
		return
	}
	byParent := map[string][]string{}
	collect := func(v reflect.Value) {
		if v.Kind() != reflect.Pointer && v.CanAddr() {
			v = v.Addr()
		}
		if c, ok := v.Interface().(Child); ok {
			if uuid, parent := c.TenancyRef(); uuid != "" && parent != "" {
				byParent[parent] = append(byParent[parent], uuid)
			}
		}
	}
	rv := db.Statement.ReflectValue
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		for i := 0; i < rv.Len(); i++ {
			collect(reflect.Indirect(rv.Index(i)))
		}
	case reflect.Struct:
		collect(rv)
	default:
		return
	}
	if len(byParent) == 0 {
		return
	}
	tx := db.Session(&gorm.Session{NewDB: true})
	if _, err := inheritAll(tx, db.Statement.Table, byParent); err != nil {
		_ = db.AddError(err)
	}
}

// inheritAll records each child of byParent (parent -> children) as its
// parent's owner's; a parent without a record gives its children none.
func inheritAll(tx *gorm.DB, table string, byParent map[string][]string) (int, error) {
	parents := make([]string, 0, len(byParent))
	for p := range byParent {
		parents = append(parents, p)
	}
	sort.Strings(parents)
	var owners []RefVO
	if err := tx.Where("resource_uuid IN ?", parents).Find(&owners).Error; err != nil {
		return 0, errcode.Wrap(errcode.Internal, err, "read the owners of %s rows", table)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var refs []RefVO
	for _, o := range owners {
		for _, child := range byParent[o.ResourceUUID] {
			refs = append(refs, RefVO{ResourceUUID: child, AccountUUID: o.AccountUUID, ResourceType: table, CreateDate: now})
		}
	}
	if len(refs) == 0 {
		return 0, nil
	}
	if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&refs).Error; err != nil {
		return 0, errcode.Wrap(errcode.Internal, err, "record the owner of %s rows", table)
	}
	return len(refs), nil
}

// taken is the refusal of a create whose UUID is another account's (or a
// row that has no owner): the same words for both, so that it tells
// nothing more.
func taken(uuid string) error {
	return errcode.New(errcode.InvalidArgument, "resourceUuid %s is already in use; choose another one (or leave it out)", uuid)
}

// Claim records account as the owner of the resource uuid a create is
// about to make in table: before the job, so that the resource never
// exists without an owner. One statement when the UUID is new (it is: the
// API chooses the UUIDs of what a call creates); a retry of the same
// account's create finds its own record and goes on; a UUID another
// account owns is refused (InvalidArgument). A caller-chosen UUID, if the
// API ever takes one, must also be checked against the rows of table that
// exist without an owner.
func Claim(ctx context.Context, db *gorm.DB, table, uuid, account string) error {
	db = db.WithContext(Unscoped(ctx))
	ref := RefVO{ResourceUUID: uuid, AccountUUID: account, ResourceType: table, CreateDate: time.Now().UTC().Truncate(time.Millisecond)}
	res := db.Clauses(clause.OnConflict{DoNothing: true}).Create(&ref)
	if res.Error != nil {
		return errcode.Wrap(errcode.Internal, res.Error, "record the owner of %s", uuid)
	}
	if res.RowsAffected == 1 {
		return nil
	}
	var owner RefVO
	if err := db.Where("resource_uuid = ?", uuid).Take(&owner).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "read the owner of %s", uuid)
	}
	if owner.AccountUUID != account {
		return taken(uuid)
	}
	return nil
}

// Relation is what an account is to a resource.
type Relation int

// The relations.
const (
	// Stranger: the resource is not the account's and not shared to it:
	// for that account it does not exist.
	Stranger Relation = iota
	// Receiver: the resource is shared to the account (or public): it may
	// see and use it, not change it.
	Receiver
	// Owner: the account's own.
	Owner
)

// RelationOf says what account is to the resource uuid.
func RelationOf(ctx context.Context, db *gorm.DB, uuid, account string) (Relation, error) {
	db = db.WithContext(Unscoped(ctx))
	var n int64
	if err := db.Model(&RefVO{}).Where("resource_uuid = ? AND account_uuid = ?", uuid, account).Count(&n).Error; err != nil {
		return Stranger, errcode.Wrap(errcode.Internal, err, "read the owner of %s", uuid)
	}
	if n > 0 {
		return Owner, nil
	}
	if err := db.Model(&ShareVO{}).Where("resource_uuid = ? AND receiver_account_uuid IN ?", uuid, []string{account, ""}).Count(&n).Error; err != nil {
		return Stranger, errcode.Wrap(errcode.Internal, err, "read the sharing of %s", uuid)
	}
	if n > 0 {
		return Receiver, nil
	}
	return Stranger, nil
}

// Owned counts the resources account owns that still exist, by table
// (an account is deleted only when it owns none).
func (g *Guard) Owned(ctx context.Context, db *gorm.DB, account string) (map[string]int64, error) {
	db = db.WithContext(Unscoped(ctx))
	out := map[string]int64{}
	for _, name := range g.tableNames() {
		var n int64
		err := db.Table(name).Where("uuid IN (SELECT resource_uuid FROM account_resource_refs WHERE account_uuid = ?)", account).Count(&n).Error
		if err != nil {
			if !db.Migrator().HasTable(name) {
				continue
			}
			return nil, errcode.Wrap(errcode.Internal, err, "count the %s of account %s", name, account)
		}
		if n > 0 {
			out[name] = n
		}
	}
	return out, nil
}

// Forget deletes what records account (its resources are gone): its own
// records and what is shared to it or by it.
func Forget(ctx context.Context, db *gorm.DB, account string) error {
	db = db.WithContext(Unscoped(ctx))
	return db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("account_uuid = ?", account).Delete(&RefVO{}).Error; err != nil {
			return err
		}
		return tx.Where("receiver_account_uuid = ? OR owner_account_uuid = ?", account, account).Delete(&ShareVO{}).Error
	})
}

func (g *Guard) tableNames() []string {
	tables := g.tab()
	names := make([]string, 0, len(tables))
	for n := range tables {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// sweepBatch bounds the rows one sweep of one table repairs or forgets.
const sweepBatch = 500

// Sweep repairs and forgets: the Child rows that a crash left without a
// record get their parent's owner, and the records (and sharings) of
// resources that no longer exist are deleted, if older than olderThan (a
// record younger may be of a create still running: it precedes its row).
// It returns how many records it made and deleted.
func (g *Guard) Sweep(ctx context.Context, db *gorm.DB, olderThan time.Duration) (made, forgot int, err error) {
	db = db.WithContext(Unscoped(ctx))
	cutoff := time.Now().UTC().Add(-olderThan)
	for _, name := range g.tableNames() {
		if !db.Migrator().HasTable(name) {
			continue
		}
		t := g.tab()[name]
		if t.ParentColumn != "" {
			var rows []struct{ UUID, Parent string }
			err := db.Table(name).Select("uuid AS uuid, " + t.ParentColumn + " AS parent").
				Where(t.ParentColumn + " <> '' AND uuid NOT IN (SELECT resource_uuid FROM account_resource_refs)").
				Limit(sweepBatch).Scan(&rows).Error
			if err != nil {
				return made, forgot, fmt.Errorf("find %s rows without an owner: %w", name, err)
			}
			byParent := map[string][]string{}
			for _, r := range rows {
				byParent[r.Parent] = append(byParent[r.Parent], r.UUID)
			}
			if len(byParent) > 0 {
				n, err := inheritAll(db, name, byParent)
				if err != nil {
					return made, forgot, err
				}
				made += n
			}
		}
		var gone []string
		err := db.Model(&RefVO{}).Where("resource_type = ? AND create_date < ?", name, cutoff).
			Where("resource_uuid NOT IN (SELECT uuid FROM "+name+")").
			Limit(sweepBatch).Pluck("resource_uuid", &gone).Error
		if err != nil {
			return made, forgot, fmt.Errorf("find the records of gone %s rows: %w", name, err)
		}
		if len(gone) == 0 {
			continue
		}
		err = db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Where("resource_uuid IN ?", gone).Delete(&ShareVO{}).Error; err != nil {
				return err
			}
			return tx.Where("resource_uuid IN ?", gone).Delete(&RefVO{}).Error
		})
		if err != nil {
			return made, forgot, fmt.Errorf("forget gone %s rows: %w", name, err)
		}
		forgot += len(gone)
	}
	return made, forgot, nil
}

// Share shares the resource uuid of table, owned by owner, with each of
// receivers ("" is every account); sharing again is a no-op. Run it in a
// transaction to share several at once.
func Share(ctx context.Context, db *gorm.DB, uuid, owner, table string, receivers []string) error {
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, to := range receivers {
		row := ShareVO{ResourceUUID: uuid, ReceiverAccountUUID: to, OwnerAccountUUID: owner, ResourceType: table, CreateDate: now}
		if err := db.WithContext(Unscoped(ctx)).Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "share %s", uuid)
		}
	}
	return nil
}

// Revoke ends the sharing of uuid with receivers ("" is every account), or
// every sharing of it when all is set.
func Revoke(ctx context.Context, db *gorm.DB, uuid string, receivers []string, all bool) error {
	q := db.WithContext(Unscoped(ctx)).Where("resource_uuid = ?", uuid)
	if !all {
		q = q.Where("receiver_account_uuid IN ?", receivers)
	}
	if err := q.Delete(&ShareVO{}).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "revoke the sharing of %s", uuid)
	}
	return nil
}

// Locate finds the shareable table that has a row uuid ("" if none): for a
// resource without an owner record (made before them, or by the node
// itself), which an admin may still share.
func (g *Guard) Locate(ctx context.Context, db *gorm.DB, uuid string) (string, error) {
	db = db.WithContext(Unscoped(ctx))
	for _, name := range g.tableNames() {
		if !g.Shareable(name) {
			continue
		}
		var n int64
		if err := db.Table(name).Where("uuid = ?", uuid).Count(&n).Error; err != nil {
			return "", errcode.Wrap(errcode.Internal, err, "look up %s in %s", uuid, name)
		}
		if n > 0 {
			return name, nil
		}
	}
	return "", nil
}
