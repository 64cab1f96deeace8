package flow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
)

// RecordVO is a row of flow_records: the progress of one chain run.
type RecordVO struct {
	ID       string `gorm:"column:id;primaryKey;size:64"`
	Chain    string `gorm:"column:chain;size:128;not null"`
	Owner    string `gorm:"column:owner;size:64;not null;index:idx_flow_records_owner_state,priority:1"`
	State    string `gorm:"column:state;size:16;not null;index:idx_flow_records_owner_state,priority:2"`
	Resource string `gorm:"column:resource;size:64;not null;index"`
	// Job is the API job the run serves (WithJob), empty for runs no job
	// started; set when the record is made.
	Job     string `gorm:"column:job;size:64;not null;default:'';index"`
	Applied int    `gorm:"column:applied;not null"`
	Total   int    `gorm:"column:total;not null"`
	Step    string `gorm:"column:step;size:128;not null"`
	// Data is JSON text: readable by an operator with plain SQL.
	Data  string `gorm:"column:data;not null"`
	Error string `gorm:"column:error;not null"`
	// Seq is bumped by every write, so an UPDATE always changes the row
	// (MySQL reports unchanged rows as not affected).
	Seq       int64     `gorm:"column:seq;not null"`
	CreatedAt time.Time `gorm:"column:created_at;not null"`
	UpdatedAt time.Time `gorm:"column:updated_at;not null;index"`
}

// TableName is flow_records.
func (RecordVO) TableName() string { return "flow_records" }

func (v RecordVO) record() Record {
	rec := Record{
		ID: v.ID, Chain: v.Chain, Owner: v.Owner, Resource: v.Resource, State: State(v.State),
		Applied: v.Applied, Total: v.Total, Step: v.Step, Error: v.Error, UpdatedAt: v.UpdatedAt,
	}
	if v.Data != "" {
		rec.Data = []byte(v.Data)
	}
	return rec
}

type jobKey struct{}

// WithJob returns a context under which the runs a GormRecorder records
// are marked as serving the API job jobUUID, so the node that takes the job
// over can tell what became of its work (ForJob).
func WithJob(ctx context.Context, jobUUID string) context.Context {
	return context.WithValue(ctx, jobKey{}, jobUUID)
}

// JobFrom is the job of WithJob, or "".
func JobFrom(ctx context.Context) string {
	j, _ := ctx.Value(jobKey{}).(string)
	return j
}

// ForJob lists the records of the runs that served jobUUID, oldest first.
func (g *GormRecorder) ForJob(ctx context.Context, jobUUID string) ([]RecordVO, error) {
	var vos []RecordVO
	if err := g.db.WithContext(ctx).Where("job = ?", jobUUID).Order("created_at, id").Find(&vos).Error; err != nil {
		return nil, fmt.Errorf("list the flow records of job %s: %w", jobUUID, err)
	}
	return vos, nil
}

// Migrate creates the flow_records table.
func Migrate(ctx context.Context, gdb *gorm.DB) error {
	if err := gdb.WithContext(ctx).AutoMigrate(&RecordVO{}); err != nil {
		return fmt.Errorf("migrate flow_records: %w", err)
	}
	return nil
}

// GormRecorder is a Recorder on the flow_records table (see Migrate). It is
// safe for concurrent use, and several nodes may share the table.
type GormRecorder struct {
	db *gorm.DB
}

// NewGormRecorder returns a recorder writing through gdb.
func NewGormRecorder(gdb *gorm.DB) *GormRecorder { return &GormRecorder{db: gdb} }

// Save updates the record if it exists with the same owner, and otherwise
// inserts it; a record of another owner makes the insert collide, which is
// reported as ErrNotOwner. The owner check and the write are one statement,
// so a node that lost a run to Claim can never overwrite the new owner.
func (g *GormRecorder) Save(ctx context.Context, rec Record) error {
	now := g.db.NowFunc()
	res := g.db.WithContext(ctx).Model(&RecordVO{}).
		Where("id = ? AND owner = ?", rec.ID, rec.Owner).
		Updates(map[string]any{
			"chain": rec.Chain, "resource": rec.Resource, "state": string(rec.State),
			"applied": rec.Applied, "total": rec.Total, "step": rec.Step,
			"data": string(rec.Data), "error": rec.Error,
			"seq": gorm.Expr("seq + 1"), "updated_at": now,
		})
	if res.Error != nil {
		return fmt.Errorf("save flow record %s: %w", rec.ID, res.Error)
	}
	if res.RowsAffected > 0 {
		return nil
	}
	vo := RecordVO{
		ID: rec.ID, Chain: rec.Chain, Owner: rec.Owner, Resource: rec.Resource, State: string(rec.State),
		Applied: rec.Applied, Total: rec.Total, Step: rec.Step, Data: string(rec.Data), Error: rec.Error,
		Job: JobFrom(ctx), Seq: 1, CreatedAt: now, UpdatedAt: now,
	}
	err := g.db.WithContext(ctx).Create(&vo).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("save flow record %s as owner %q: %w", rec.ID, rec.Owner, ErrNotOwner)
	}
	if err != nil {
		return fmt.Errorf("save flow record %s: %w", rec.ID, err)
	}
	return nil
}

// Get reads one record; a missing one is an errcode.ResourceNotFound error.
func (g *GormRecorder) Get(ctx context.Context, id string) (Record, error) {
	var vo RecordVO
	err := g.db.WithContext(ctx).Where("id = ?", id).Take(&vo).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Record{}, errcode.New(errcode.ResourceNotFound, "flow record %s not found", id)
	}
	if err != nil {
		return Record{}, fmt.Errorf("read flow record %s: %w", id, err)
	}
	return vo.record(), nil
}

// Unfinished lists the records in state Running or RollingBack, of the
// given owners only if any are given, oldest update first.
func (g *GormRecorder) Unfinished(ctx context.Context, owners ...string) ([]Record, error) {
	q := g.db.WithContext(ctx).Where("state IN ?", []string{string(Running), string(RollingBack)})
	if len(owners) > 0 {
		q = q.Where("owner IN ?", owners)
	}
	var vos []RecordVO
	if err := q.Order("updated_at, id").Find(&vos).Error; err != nil {
		return nil, fmt.Errorf("list unfinished flow records: %w", err)
	}
	recs := make([]Record, len(vos))
	for i, v := range vos {
		recs[i] = v.record()
	}
	return recs, nil
}

// Claim makes to the owner of the unfinished record id if from owns it now,
// in one conditional update, and returns the claimed record. ok is false
// when the record is finished, gone, or owned by someone other than from:
// at most one of several nodes claiming the same record wins.
func (g *GormRecorder) Claim(ctx context.Context, id, from, to string) (rec Record, ok bool, err error) {
	res := g.db.WithContext(ctx).Model(&RecordVO{}).
		Where("id = ? AND owner = ? AND state IN ?", id, from, []string{string(Running), string(RollingBack)}).
		Updates(map[string]any{"owner": to, "seq": gorm.Expr("seq + 1"), "updated_at": g.db.NowFunc()})
	if res.Error != nil {
		return Record{}, false, fmt.Errorf("claim flow record %s from %q: %w", id, from, res.Error)
	}
	if res.RowsAffected == 0 {
		return Record{}, false, nil
	}
	rec, err = g.Get(ctx, id)
	if err != nil {
		return Record{}, false, fmt.Errorf("claim flow record %s: %w", id, err)
	}
	return rec, true, nil
}

// Prune deletes the records of runs that finished cleanly (Done or
// RolledBack) before the given time and returns how many it deleted. Failed
// records are kept for the operator.
func (g *GormRecorder) Prune(ctx context.Context, before time.Time) (int64, error) {
	res := g.db.WithContext(ctx).
		Where("state IN ? AND updated_at < ?", []string{string(Done), string(RolledBack)}, before.UTC()).
		Delete(&RecordVO{})
	if res.Error != nil {
		return 0, fmt.Errorf("prune flow records: %w", res.Error)
	}
	return res.RowsAffected, nil
}
