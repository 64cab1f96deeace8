package globalconfig

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/managementnode"
	"mplane/thread"
)

// UpdateReq sets a configuration to Value (already checked by the node
// that accepted the call, and in the form it stores). A reset is an
// update to the default.
type UpdateReq struct {
	Category string `json:"category"`
	Name     string `json:"name"`
	Value    string `json:"value"`
}

// ResourceUUID is the configuration's id (ConfigUUID): all the updates of
// one configuration run on one owner, in one chain.
func (r UpdateReq) ResourceUUID() string { return ConfigUUID(r.Category, r.Name) }

// MsgUpdateGlobalConfig updates a configuration, on its owner; it answers
// the row as updated.
var MsgUpdateGlobalConfig = managementnode.NewOwnedMsg[UpdateReq, GlobalConfigVO](BusService, "globalconfig.UpdateGlobalConfig")

// update runs the change as a cluster transaction, in the configuration's
// chain: every running node stages the value, the row is written only if
// its version is still the one read here (an update made meanwhile by
// another owner, during a change of the ring, is a retryable Conflict),
// then every node commits it.
func (s *Service) update(ctx context.Context, req UpdateReq) (GlobalConfigVO, error) {
	id := req.Category + "/" + req.Name
	uuid := req.ResourceUUID()
	return thread.Sync(ctx, s.sched, thread.Task{Signature: "globalconfig-" + uuid, Name: "update-global-config", Level: 1},
		func(ctx context.Context) (GlobalConfigVO, error) {
			row, err := s.load(ctx, uuid, id)
			if err != nil {
				return GlobalConfigVO{}, err
			}
			payload, err := json.Marshal(change{Value: req.Value})
			if err != nil {
				return GlobalConfigVO{}, errcode.Wrap(errcode.Internal, err, "encode the change of %s", id)
			}
			res, err := s.node.RunTxn(ctx, managementnode.TxnSpec{Scope: txnKind + "/" + id, Payload: payload,
				Durable: func(ctx context.Context) (int64, error) {
					w := s.db.WithContext(ctx).Model(&GlobalConfigVO{}).Where("uuid = ? AND version = ?", uuid, row.Version).
						Updates(map[string]any{"value": req.Value, "version": row.Version + 1, "last_op_date": time.Now().UTC()})
					if w.Error != nil {
						return 0, errcode.Wrap(errcode.Internal, w.Error, "write global configuration %s", id)
					}
					if w.RowsAffected == 0 {
						return 0, errcode.New(errcode.Conflict, "global configuration %s changed since version %d was read; retry", id, row.Version)
					}
					return row.Version + 1, nil
				}})
			if err != nil {
				return GlobalConfigVO{}, err
			}
			s.log.Info("global configuration updated", "config", id, "value", req.Value, "version", res.Version, "txn", res.ID,
				"applied", len(res.Applied), "missed", res.Missed)
			return s.load(context.WithoutCancel(ctx), uuid, id)
		})
}

func (s *Service) load(ctx context.Context, uuid, id string) (GlobalConfigVO, error) {
	var row GlobalConfigVO
	err := s.db.WithContext(ctx).Take(&row, "uuid = ?", uuid).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return GlobalConfigVO{}, errcode.New(errcode.ResourceNotFound, "global configuration %s not found", id)
	}
	if err != nil {
		return GlobalConfigVO{}, errcode.Wrap(errcode.Internal, err, "load global configuration %s", id)
	}
	return row, nil
}
