package managementnode

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"gorm.io/gorm"

	"mplane/errcode"
)

// IDPoolEntryVO is a row of cluster_id_pool_entries: one ID in use in one
// pool, written by the sequencer in the transaction that records the
// allocation.
type IDPoolEntryVO struct {
	Pool   string `gorm:"column:pool;primaryKey;size:64"`
	ID     int    `gorm:"column:id;primaryKey;autoIncrement:false"`
	Holder string `gorm:"column:holder;size:255;not null"`
	// Seq is the operation that allocated the ID.
	Seq int64 `gorm:"column:seq;not null"`
}

// TableName is cluster_id_pool_entries.
func (IDPoolEntryVO) TableName() string { return "cluster_id_pool_entries" }

// IDPool allocates cluster-unique integer IDs in [lo, hi] — VLAN IDs
// (1-4094), VXLAN VNIs — through the cluster sequencer. Allocations and
// releases are ordered operations: the sequencer decides from the database
// and records the change with the operation, and every node keeps the
// in-use set in memory, updated by apply in sequence order. So every node's
// set is the database's as of the node's AppliedSeq, and after a
// successful Allocate or Release the caller's node already reflects it.
//
// Create the pool with the same name and range on every node, before
// Node.Start.
type IDPool struct {
	name   string
	lo, hi int
	seq    *Sequencer
	alloc  *OrderedOp[idAllocReq, idAllocRep]
	free   *OrderedOp[idReleaseReq, idReleaseRep]

	mu   sync.RWMutex // guards used; a leaf
	used map[int]string
}

type idAllocReq struct {
	// ID asks for one ID; 0 takes the lowest free one, within [Lo, Hi]
	// if they are set (a part of the pool's range), else in the pool.
	ID     int    `json:"id,omitempty"`
	Lo     int    `json:"lo,omitempty"`
	Hi     int    `json:"hi,omitempty"`
	Holder string `json:"holder"`
}

type idAllocRep struct {
	ID int `json:"id"`
}

type idReleaseReq struct {
	ID int `json:"id"`
	// Holder, if set, must be the ID's holder.
	Holder string `json:"holder,omitempty"`
}

type idReleaseRep struct{}

// NewIDPool defines the pool name of IDs lo..hi (lo ≥ 1) on node n and
// registers its operations ("idpool.<name>.allocate", "….release").
func NewIDPool(n *Node, name string, lo, hi int) (*IDPool, error) {
	if name == "" || len(name) > 64 {
		return nil, errors.New("managementnode: an ID pool needs a name of 1 to 64 characters")
	}
	if lo < 1 || hi < lo {
		return nil, fmt.Errorf("managementnode: ID pool %s: bad range %d-%d (need 1 ≤ lo ≤ hi)", name, lo, hi)
	}
	p := &IDPool{name: name, lo: lo, hi: hi, seq: n.Sequencer(), used: map[int]string{}}
	p.alloc = NewOrderedOp("idpool."+name+".allocate", p.execAlloc, p.applyAlloc)
	p.free = NewOrderedOp("idpool."+name+".release", p.execRelease, p.applyRelease)
	if err := p.seq.Register(p.alloc, p.free); err != nil {
		return nil, err
	}
	return p, nil
}

// Name is the pool's name.
func (p *IDPool) Name() string { return p.name }

// Allocate takes the lowest free ID for holder. It fails with
// CapacityExhausted when the pool is full.
func (p *IDPool) Allocate(ctx context.Context, holder string) (int, error) {
	return p.AllocateWithID(ctx, "", 0, holder)
}

// AllocateWithID allocates id (0: the lowest free one) for holder, with
// submission ID sub (empty: a new one), so a caller that retries after an
// unknown outcome passes the same sub and gets the same ID. Taking an ID
// in use fails with InvalidState, one out of range with InvalidArgument.
func (p *IDPool) AllocateWithID(ctx context.Context, sub string, id int, holder string) (int, error) {
	return p.AllocateIn(ctx, sub, p.lo, p.hi, id, holder)
}

// AllocateIn is AllocateWithID within [lo, hi], a part of the pool's
// range (a VXLAN pool's VNI range in the cluster's VNI pool): id must be
// in it, and 0 takes its lowest free ID; a full part is
// CapacityExhausted.
func (p *IDPool) AllocateIn(ctx context.Context, sub string, lo, hi, id int, holder string) (int, error) {
	if err := p.within(lo, hi); err != nil {
		return 0, err
	}
	if id != 0 && (id < lo || id > hi) {
		return 0, errcode.New(errcode.InvalidArgument, "%s ID %d out of range %d-%d", p.name, id, lo, hi)
	}
	rep, _, err := p.alloc.SubmitID(ctx, p.seq, sub, idAllocReq{ID: id, Lo: lo, Hi: hi, Holder: holder})
	return rep.ID, err
}

// Release frees id. If holder is set it must be the ID's holder. Releasing
// an ID not in use fails with ResourceNotFound.
func (p *IDPool) Release(ctx context.Context, id int, holder string) error {
	_, _, err := p.free.Submit(ctx, p.seq, idReleaseReq{ID: id, Holder: holder})
	return err
}

// within is InvalidArgument unless [lo, hi] is a part of the pool's
// range.
func (p *IDPool) within(lo, hi int) error {
	if lo < p.lo || hi > p.hi || hi < lo {
		return errcode.New(errcode.InvalidArgument, "%s range %d-%d is not within %d-%d", p.name, lo, hi, p.lo, p.hi)
	}
	return nil
}

// InUse is this node's copy of the in-use set (ID → holder), as of its
// applied log position.
func (p *IDPool) InUse() map[int]string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return maps.Clone(p.used)
}

// Holder is who holds id, from this node's copy.
func (p *IDPool) Holder(id int) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	h, ok := p.used[id]
	return h, ok
}

func (p *IDPool) execAlloc(ctx context.Context, tx *gorm.DB, req idAllocReq) (idAllocRep, error) {
	lo, hi := p.lo, p.hi
	if req.Lo != 0 || req.Hi != 0 {
		if err := p.within(req.Lo, req.Hi); err != nil {
			return idAllocRep{}, err
		}
		lo, hi = req.Lo, req.Hi
	}
	id := req.ID
	if id == 0 {
		free, err := p.lowestFree(tx, lo, hi)
		if err != nil {
			return idAllocRep{}, err
		}
		if free == 0 {
			if lo != p.lo || hi != p.hi {
				return idAllocRep{}, errcode.New(errcode.CapacityExhausted, "ID pool %s has no free ID in %d-%d", p.name, lo, hi)
			}
			return idAllocRep{}, errcode.New(errcode.CapacityExhausted, "ID pool %s (%d-%d) is full", p.name, p.lo, p.hi)
		}
		id = free
	} else {
		if id < lo || id > hi {
			return idAllocRep{}, errcode.New(errcode.InvalidArgument, "%s ID %d out of range %d-%d", p.name, id, lo, hi)
		}
		var cur []IDPoolEntryVO
		if err := tx.Where("pool = ? AND id = ?", p.name, id).Limit(1).Find(&cur).Error; err != nil {
			return idAllocRep{}, err
		}
		if len(cur) > 0 {
			return idAllocRep{}, errcode.New(errcode.InvalidState, "%s ID %d is in use by %s", p.name, id, cur[0].Holder)
		}
	}
	var last OperationVO
	if err := tx.Order("seq DESC").Limit(1).Find(&last).Error; err != nil {
		return idAllocRep{}, err
	}
	// The entry's seq is the operation's: the one after the last row, as
	// the sequencer inserts each operation's row right after its exec, in
	// this transaction.
	if err := tx.Create(&IDPoolEntryVO{Pool: p.name, ID: id, Holder: req.Holder, Seq: last.Seq + 1}).Error; err != nil {
		return idAllocRep{}, err
	}
	return idAllocRep{ID: id}, nil
}

// lowestFree is the lowest ID in [lo, hi] not in use, 0 if none: lo if
// it is free, else the lowest in-use ID of [lo, hi) whose successor is
// free.
func (p *IDPool) lowestFree(tx *gorm.DB, lo, hi int) (int, error) {
	var n int64
	if err := tx.Model(&IDPoolEntryVO{}).Where("pool = ? AND id = ?", p.name, lo).Count(&n).Error; err != nil {
		return 0, err
	}
	if n == 0 {
		return lo, nil
	}
	var free *int
	err := tx.Raw(`SELECT MIN(e.id + 1) FROM cluster_id_pool_entries e
		WHERE e.pool = ? AND e.id >= ? AND e.id < ?
		AND NOT EXISTS (SELECT 1 FROM cluster_id_pool_entries f WHERE f.pool = e.pool AND f.id = e.id + 1)`,
		p.name, lo, hi).Scan(&free).Error
	if err != nil || free == nil {
		return 0, err
	}
	return *free, nil
}

func (p *IDPool) applyAlloc(_ context.Context, e Entry[idAllocReq, idAllocRep]) {
	p.mu.Lock()
	p.used[e.Result.ID] = e.Payload.Holder
	p.mu.Unlock()
}

func (p *IDPool) execRelease(ctx context.Context, tx *gorm.DB, req idReleaseReq) (idReleaseRep, error) {
	q := tx.Where("pool = ? AND id = ?", p.name, req.ID)
	if req.Holder != "" {
		q = q.Where("holder = ?", req.Holder)
	}
	res := q.Delete(&IDPoolEntryVO{})
	if res.Error != nil {
		return idReleaseRep{}, res.Error
	}
	if res.RowsAffected == 0 {
		if req.Holder != "" {
			return idReleaseRep{}, errcode.New(errcode.ResourceNotFound, "%s ID %d is not held by %s", p.name, req.ID, req.Holder)
		}
		return idReleaseRep{}, errcode.New(errcode.ResourceNotFound, "%s ID %d is not in use", p.name, req.ID)
	}
	return idReleaseRep{}, nil
}

func (p *IDPool) applyRelease(_ context.Context, e Entry[idReleaseReq, idReleaseRep]) {
	p.mu.Lock()
	delete(p.used, e.Payload.ID)
	p.mu.Unlock()
}
