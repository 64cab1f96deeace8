// Package quota limits what each account may own, in ZStack's names
// (vm.num, vm.cpuNum, vm.memorySize, volume.data.num, volume.capacity,
// snapshot.volume.num), the Cinder way but atomic across nodes:
//
//   - A create reserves at the API edge, before its job runs: in one
//     transaction that first takes the account's lock row (an UPDATE, so
//     two nodes serialize on it), it sums the account's claims, refuses
//     what would pass a limit (QuotaExceeded, 403) and records the claims
//     of the new resource (quota_claims: resource, name, amount).
//   - A claim stays while its resource exists: that is the commit. When
//     the resource's job settles and its row does not exist (the create
//     failed and rolled back, or the job deleted it), its claims are
//     released at once (Settle); the sweeper releases the claims of
//     resources that are gone whose job is over or older than a job may
//     take (the owner died and the job was failed by the stale-job
//     sweeper, or the release was lost with a node).
//
// So usage is what exists plus what is being created, never more, and two
// nodes racing cannot pass a limit.
//
// Limits: the defaults (Defaults, changed at run time by the quota_defaults
// setting, a global configuration) and per-account values set by admins
// (updateQuota); admin accounts have no limits.
package quota

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/conf"
	"mplane/errcode"
)

// The quotas.
const (
	VMNum          = "vm.num"
	VMCPUNum       = "vm.cpuNum"
	VMMemorySize   = "vm.memorySize"
	VolumeDataNum  = "volume.data.num"
	VolumeCapacity = "volume.capacity"
	SnapshotNum    = "snapshot.volume.num"
)

// Names lists the quotas, in a fixed order.
var Names = conf.QuotaNames

// Defaults are the limits of an account without values of its own, the
// built-in quota_defaults, as ZStack's: 20 VMs, 80 vCPUs, 80 GiB of
// memory, 40 data volumes, 10 TiB of data volumes, 200 snapshots.
func Defaults() map[string]int64 {
	m, err := conf.ParseQuotas(conf.Default().QuotaDefaults)
	if err != nil {
		panic("quota: the built-in quota_defaults do not parse: " + err.Error())
	}
	return m
}

// ParseLimits reads "name=value,..." (conf.ParseQuotas); names left out
// keep their built-in default.
func ParseLimits(s string) (map[string]int64, error) {
	m, err := conf.ParseQuotas(s)
	if err != nil {
		return nil, err
	}
	out := Defaults()
	for k, v := range m {
		out[k] = v
	}
	return out, nil
}

// Demander is a create's request that needs quota: what it would add
// (name -> amount) and the UUID and table of the resource it makes.
type Demander interface {
	QuotaDemand() (resourceUUID, table string, demand map[string]int64)
}

// ClaimVO is what one resource holds of one quota: a row of quota_claims.
type ClaimVO struct {
	ResourceUUID string `gorm:"column:resource_uuid;primaryKey;size:32"`
	Name         string `gorm:"column:name;primaryKey;size:64"`
	AccountUUID  string `gorm:"column:account_uuid;size:32;not null;index"`
	// ResourceType is the table of the resource's rows; JobUUID the job
	// that creates it.
	ResourceType string    `gorm:"column:resource_type;size:64;not null"`
	JobUUID      string    `gorm:"column:job_uuid;size:64;not null;index"`
	Amount       int64     `gorm:"column:amount;not null"`
	CreateDate   time.Time `gorm:"column:create_date;not null;index"`
}

// TableName is quota_claims.
func (ClaimVO) TableName() string { return "quota_claims" }

// QuotaVO is an account's own limit of one quota: a row of quotas, and in
// JSON ZStack's quota inventory.
type QuotaVO struct {
	IdentityUUID string `gorm:"column:identity_uuid;primaryKey;size:32" json:"identityUuid"`
	Name         string `gorm:"column:name;primaryKey;size:64" json:"name"`
	IdentityType string `gorm:"column:identity_type;size:32;not null" json:"identityType"`
	Value        int64  `gorm:"column:value;not null" json:"value"`
}

// TableName is quotas.
func (QuotaVO) TableName() string { return "quotas" }

// lockVO is an account's lock row: reservations of one account serialize
// on its update.
type lockVO struct {
	AccountUUID string `gorm:"column:account_uuid;primaryKey;size:32"`
	Version     int64  `gorm:"column:version;not null"`
}

func (lockVO) TableName() string { return "quota_locks" }

// Migrate creates the tables.
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&ClaimVO{}, &QuotaVO{}, &lockVO{}); err != nil {
		return fmt.Errorf("migrate quota tables: %w", err)
	}
	return nil
}

// Service reserves, settles and reports quota.
type Service struct {
	db       *gorm.DB
	mu       sync.RWMutex
	defaults map[string]int64
}

// New returns the service, with the built-in Defaults.
func New(db *gorm.DB) *Service {
	return &Service{db: db, defaults: Defaults()}
}

// SetDefaults changes the default limits ("name=value,...", see
// ParseLimits); safe from any goroutine.
func (s *Service) SetDefaults(v string) error {
	m, err := ParseLimits(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.defaults = m
	s.mu.Unlock()
	return nil
}

// Limits are account's limits: its own values over the defaults.
func (s *Service) Limits(ctx context.Context, db *gorm.DB, account string) (map[string]int64, error) {
	s.mu.RLock()
	out := make(map[string]int64, len(s.defaults))
	for k, v := range s.defaults {
		out[k] = v
	}
	s.mu.RUnlock()
	var own []QuotaVO
	if err := db.WithContext(ctx).Where("identity_uuid = ?", account).Find(&own).Error; err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "read the quotas of %s", account)
	}
	for _, q := range own {
		out[q.Name] = q.Value
	}
	return out, nil
}

// used sums account's claims by name.
func used(ctx context.Context, db *gorm.DB, account string) (map[string]int64, error) {
	var rows []struct {
		Name  string
		Total int64
	}
	err := db.WithContext(ctx).Model(&ClaimVO{}).Select("name AS name, SUM(amount) AS total").
		Where("account_uuid = ?", account).Group("name").Scan(&rows).Error
	if err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "sum the quota of %s", account)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Name] = r.Total
	}
	return out, nil
}

// Reserve records that resource (of table, made by job) holds demand of
// account's quota, unless that would pass a limit: then QuotaExceeded,
// naming the quota, its limit and its use, and nothing is recorded. A
// reservation made again for the same resource (a retry) counts once.
func (s *Service) Reserve(ctx context.Context, account, resource, table, job string, demand map[string]int64) error {
	if len(demand) == 0 {
		return nil
	}
	limits, err := s.Limits(ctx, s.db, account)
	if err != nil {
		return err
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&lockVO{AccountUUID: account}).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "make the quota lock of %s", account)
		}
		// The lock: a second reservation of the account waits here until
		// this one commits, then sums what it recorded.
		if err := tx.Model(&lockVO{}).Where("account_uuid = ?", account).UpdateColumn("version", gorm.Expr("version + 1")).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "lock the quota of %s", account)
		}
		var mine int64
		if err := tx.Model(&ClaimVO{}).Where("resource_uuid = ?", resource).Count(&mine).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "read the claims of %s", resource)
		}
		if mine > 0 {
			return nil // reserved already
		}
		use, err := used(ctx, tx, account)
		if err != nil {
			return err
		}
		names := make([]string, 0, len(demand))
		for n := range demand {
			names = append(names, n)
		}
		sort.Strings(names)
		now := time.Now().UTC().Truncate(time.Millisecond)
		var claims []ClaimVO
		for _, n := range names {
			amount := demand[n]
			if amount <= 0 {
				continue
			}
			limit, ok := limits[n]
			if ok && use[n]+amount > limit {
				return errcode.New(errcode.QuotaExceeded, "quota %s exceeded: the account uses %d of %d and this needs %d more; free some, or ask an admin to raise it (updateQuota)",
					n, use[n], limit, amount)
			}
			claims = append(claims, ClaimVO{ResourceUUID: resource, Name: n, AccountUUID: account, ResourceType: table, JobUUID: job, Amount: amount, CreateDate: now})
		}
		if len(claims) == 0 {
			return nil
		}
		if err := tx.Create(&claims).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "record the quota of %s", resource)
		}
		return nil
	})
}

// Settle releases, once job has finished, the claims of the resources it
// made or acted on (resource) whose rows no longer exist: a create that
// failed, or a delete. It returns how many claims it released.
func (s *Service) Settle(ctx context.Context, job, resource string) (int64, error) {
	var claims []ClaimVO
	if err := s.db.WithContext(ctx).Where("job_uuid = ? OR resource_uuid = ?", job, resource).Find(&claims).Error; err != nil {
		return 0, errcode.Wrap(errcode.Internal, err, "read the claims of job %s", job)
	}
	return s.releaseGone(ctx, claims)
}

// releaseGone deletes the claims whose resource has no row.
func (s *Service) releaseGone(ctx context.Context, claims []ClaimVO) (int64, error) {
	byTable := map[string]map[string]bool{}
	for _, c := range claims {
		if byTable[c.ResourceType] == nil {
			byTable[c.ResourceType] = map[string]bool{}
		}
		byTable[c.ResourceType][c.ResourceUUID] = true
	}
	var released int64
	db := s.db.WithContext(ctx)
	for table, set := range byTable {
		uuids := make([]string, 0, len(set))
		for u := range set {
			uuids = append(uuids, u)
		}
		var present []string
		if err := db.Table(table).Where("uuid IN ?", uuids).Pluck("uuid", &present).Error; err != nil {
			if !db.Migrator().HasTable(table) {
				present = nil
			} else {
				return released, errcode.Wrap(errcode.Internal, err, "look up %s rows", table)
			}
		}
		for _, p := range present {
			delete(set, p)
		}
		if len(set) == 0 {
			continue
		}
		gone := make([]string, 0, len(set))
		for u := range set {
			gone = append(gone, u)
		}
		res := db.Where("resource_uuid IN ?", gone).Delete(&ClaimVO{})
		if res.Error != nil {
			return released, errcode.Wrap(errcode.Internal, res.Error, "release the quota of gone %s", table)
		}
		released += res.RowsAffected
	}
	return released, nil
}

// Sweep releases the claims of resources that are gone, when their job is
// over (or has gone: purged) or the claim is older than olderThan (its
// create can no longer be running). It returns how many it released.
func (s *Service) Sweep(ctx context.Context, olderThan time.Duration) (int64, error) {
	cutoff := time.Now().UTC().Add(-olderThan)
	var claims []ClaimVO
	err := s.db.WithContext(ctx).
		Where("create_date < ? OR job_uuid NOT IN (SELECT uuid FROM api_jobs WHERE state = ?)", cutoff, "processing").
		Limit(1000).Find(&claims).Error
	if err != nil {
		return 0, errcode.Wrap(errcode.Internal, err, "read the quota claims")
	}
	return s.releaseGone(ctx, claims)
}

// SettleFailed releases the claims of jobs that failed in the last since
// whose resources do not exist: a create that failed while its owner was
// still rolling it back (its job timed out, its node died), whose row went
// after the job's own settling looked. It returns how many it released.
func (s *Service) SettleFailed(ctx context.Context, since time.Duration) (int64, error) {
	var claims []ClaimVO
	err := s.db.WithContext(ctx).
		Where("job_uuid IN (SELECT uuid FROM api_jobs WHERE state = ? AND updated_at > ?)", "failed", time.Now().UTC().Add(-since)).
		Limit(1000).Find(&claims).Error
	if err != nil {
		return 0, errcode.Wrap(errcode.Internal, err, "read the claims of failed jobs")
	}
	return s.releaseGone(ctx, claims)
}

// Usage is one quota of an account, in ZStack's form.
type Usage struct {
	Name  string `json:"name"`
	Total int64  `json:"total"`
	Used  int64  `json:"used"`
}

// Usages reports account's quotas: limit and use.
func (s *Service) Usages(ctx context.Context, account string) ([]Usage, error) {
	limits, err := s.Limits(ctx, s.db, account)
	if err != nil {
		return nil, err
	}
	use, err := used(ctx, s.db, account)
	if err != nil {
		return nil, err
	}
	out := make([]Usage, 0, len(Names))
	for _, n := range Names {
		out = append(out, Usage{Name: n, Total: limits[n], Used: use[n]})
	}
	return out, nil
}

// Set sets account's own limit of name (an admin's updateQuota).
func (s *Service) Set(ctx context.Context, account, name string, value int64) (QuotaVO, error) {
	if _, ok := Defaults()[name]; !ok {
		return QuotaVO{}, errcode.New(errcode.InvalidArgument, "unknown quota %q; quotas: %s", name, strings.Join(Names, ", "))
	}
	if value < 0 {
		return QuotaVO{}, errcode.New(errcode.InvalidArgument, "quota %s: value must be >= 0, got %d", name, value)
	}
	q := QuotaVO{IdentityUUID: account, Name: name, IdentityType: "AccountVO", Value: value}
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "identity_uuid"}, {Name: "name"}},
		DoUpdates: clause.AssignmentColumns([]string{"value"}),
	}).Create(&q).Error
	if err != nil {
		return QuotaVO{}, errcode.Wrap(errcode.Internal, err, "set quota %s of %s", name, account)
	}
	return q, nil
}

// Forget deletes what records account (it was deleted).
func (s *Service) Forget(ctx context.Context, account string) error {
	db := s.db.WithContext(ctx)
	return db.Transaction(func(tx *gorm.DB) error {
		for _, m := range []any{&ClaimVO{}, &lockVO{}} {
			if err := tx.Where("account_uuid = ?", account).Delete(m).Error; err != nil {
				return err
			}
		}
		return tx.Where("identity_uuid = ?", account).Delete(&QuotaVO{}).Error
	})
}
