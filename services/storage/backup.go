package storage

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/services/resource"
	"mplane/services/zone"
	"mplane/uid"
)

// DefaultBackupAgentPort is the storage agent's default port.
const DefaultBackupAgentPort = 7080

// AgentURL is the base URL of a backup storage's agent.
func (b *BackupStorageVO) agentURL(scheme string) string {
	return scheme + "://" + net.JoinHostPort(b.Hostname, strconv.Itoa(b.AgentPort))
}

func (s *Service) backupEventURL(uuid string) string {
	sep := "?"
	if strings.Contains(s.opts.EventURL, "?") {
		sep = "&"
	}
	return s.opts.EventURL + sep + "backupStorageUuid=" + uuid
}

// addBackup writes a backup storage and connects its agent; if the agent
// cannot be connected, the storage is removed again.
func (s *Service) addBackup(ctx context.Context, req AddBackupStorageReq) (BackupStorageVO, error) {
	return inChain(ctx, s, bsChain(req.UUID), "add", func(ctx context.Context) (BackupStorageVO, error) {
		if b, err := LoadBackup(ctx, s.db, req.UUID); err == nil {
			return *b, nil // a redelivered add
		}
		now := time.Now().UTC()
		b := BackupStorageVO{UUID: req.UUID, Name: req.Name, Description: req.Description, URL: req.URL, Type: TypeImageStore,
			Hostname: req.Hostname, AgentPort: req.AgentPort, Username: req.Username, SSHPort: req.SSHPort,
			State: StateEnabled, Status: StatusConnecting, Secret: uid.New(), CreateDate: now, LastOpDate: now}
		if err := s.db.WithContext(ctx).Create(&b).Error; err != nil {
			if errors.Is(err, gorm.ErrDuplicatedKey) {
				return BackupStorageVO{}, errcode.New(errcode.InvalidArgument, "a backup storage at %s:%d exists already", b.Hostname, b.AgentPort)
			}
			return BackupStorageVO{}, errcode.Wrap(errcode.Internal, err, "add backup storage %s", b.UUID)
		}
		if err := s.connectBackup(ctx, &b); err != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if derr := s.db.WithContext(dctx).Delete(&BackupStorageVO{}, "uuid = ?", b.UUID).Error; derr != nil {
				s.log.Error("remove a backup storage whose agent did not connect", "bs_uuid", b.UUID, "err", derr)
			}
			return BackupStorageVO{}, errcode.Wrap(errcode.AgentError, err, "add backup storage: connect its agent at %s", s.backupURL(&b))
		}
		s.log.Info("backup storage added", "bs_uuid", b.UUID, "agent", s.backupURL(&b))
		loaded, err := LoadBackup(ctx, s.db, b.UUID)
		if err != nil {
			return BackupStorageVO{}, err
		}
		return *loaded, nil
	})
}

// connectBackup connects a backup storage's agent (its UUID, this node's
// event URL, its secret) and records its capacity: it is then Connected.
func (s *Service) connectBackup(ctx context.Context, b *BackupStorageVO) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	url := s.backupURL(b)
	if err := s.agents.CallSync(ctx, url, protocol.PathStorageEcho, nil, nil); err != nil {
		return err
	}
	var rsp protocol.StorageConnectRsp
	cmd := protocol.StorageConnectCmd{UUID: b.UUID, SendCommandURL: s.backupEventURL(b.UUID), Version: "mplane-1", Secret: b.Secret}
	if err := s.agents.CallSync(ctx, url, protocol.PathStorageConnect, cmd, &rsp, agentclient.WithSecret(b.Secret)); err != nil {
		return err
	}
	return s.db.WithContext(ctx).Model(&BackupStorageVO{}).Where("uuid = ?", b.UUID).Updates(map[string]any{
		"status": StatusConnected, "total_capacity": rsp.TotalCapacity, "available_capacity": rsp.AvailableCapacity,
		"last_op_date": time.Now().UTC()}).Error
}

// RunBackup sends one command to a backup storage's agent, from any node
// (the agent's secret is in the database), bounded by AgentTimeout. The
// capacity every answer carries is recorded.
func RunBackup[Cmd, Rsp any](ctx context.Context, s *Service, b *BackupStorageVO, c protocol.Command[Cmd, Rsp], cmd Cmd) (Rsp, error) {
	var rsp Rsp
	if b.Status != StatusConnected {
		return rsp, errcode.New(errcode.InvalidState, "backup storage %s is %s, not Connected: %s not sent", b.UUID, b.Status, c.Path)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.AgentTimeout)
	defer cancel()
	var raw json.RawMessage
	if err := s.agents.Call(ctx, s.backupURL(b), c.Path, cmd, &raw, agentclient.WithSecret(b.Secret)); err != nil {
		return rsp, errcode.Wrap(errcode.AgentError, err, "%s on backup storage %s", c.Path, b.UUID)
	}
	if err := json.Unmarshal(raw, &rsp); err != nil {
		return rsp, errcode.Wrap(errcode.MalformedMessage, err, "decode %s result of backup storage %s", c.Path, b.UUID)
	}
	var cap protocol.StorageCapacity
	if json.Unmarshal(raw, &cap) == nil && cap.TotalCapacity > 0 {
		if err := s.db.WithContext(ctx).Model(&BackupStorageVO{}).Where("uuid = ?", b.UUID).
			Updates(map[string]any{"total_capacity": cap.TotalCapacity, "available_capacity": cap.AvailableCapacity}).Error; err != nil {
			s.log.Warn("record backup storage capacity", "bs_uuid", b.UUID, "err", err)
		}
	}
	return rsp, nil
}

func (s *Service) attachBackup(ctx context.Context, req ZoneRefReq) (BackupStorageVO, error) {
	return inChain(ctx, s, bsChain(req.BackupStorageUUID), "attach", func(ctx context.Context) (BackupStorageVO, error) {
		b, err := LoadBackup(ctx, s.db, req.BackupStorageUUID)
		if err != nil {
			return BackupStorageVO{}, err
		}
		for _, r := range b.ZoneRefs {
			if r.ZoneUUID == req.ZoneUUID {
				return *b, nil
			}
		}
		if err := resource.MustExist(ctx, s.db, &zone.ZoneVO{}, "zoneUuid", req.ZoneUUID); err != nil {
			return BackupStorageVO{}, err
		}
		ref := BackupStorageZoneRefVO{BackupStorageUUID: b.UUID, ZoneUUID: req.ZoneUUID, CreateDate: time.Now().UTC()}
		if err := s.db.WithContext(ctx).Create(&ref).Error; err != nil {
			return BackupStorageVO{}, errcode.Wrap(errcode.Internal, err, "attach backup storage %s to zone %s", b.UUID, req.ZoneUUID)
		}
		b.ZoneRefs = append(b.ZoneRefs, ref)
		b.AttachedZoneUUIDs = append(b.AttachedZoneUUIDs, ref.ZoneUUID)
		return *b, nil
	})
}

func (s *Service) detachBackup(ctx context.Context, req ZoneRefReq) (BackupStorageVO, error) {
	return inChain(ctx, s, bsChain(req.BackupStorageUUID), "detach", func(ctx context.Context) (BackupStorageVO, error) {
		b, err := LoadBackup(ctx, s.db, req.BackupStorageUUID)
		if err != nil {
			return BackupStorageVO{}, err
		}
		res := s.db.WithContext(ctx).Delete(&BackupStorageZoneRefVO{}, "backup_storage_uuid = ? AND zone_uuid = ?", b.UUID, req.ZoneUUID)
		if res.Error != nil {
			return BackupStorageVO{}, errcode.Wrap(errcode.Internal, res.Error, "detach backup storage %s from zone %s", b.UUID, req.ZoneUUID)
		}
		if res.RowsAffected == 0 {
			return BackupStorageVO{}, errcode.New(errcode.InvalidArgument, "backup storage %s is not attached to zone %s", b.UUID, req.ZoneUUID)
		}
		b, err = LoadBackup(ctx, s.db, b.UUID)
		if err != nil {
			return BackupStorageVO{}, err
		}
		return *b, nil
	})
}

// deleteBackup deletes a backup storage that holds no image. Deleting a
// missing one succeeds.
func (s *Service) deleteBackup(ctx context.Context, ref Ref) (cloudbus.Empty, error) {
	return inChain(ctx, s, bsChain(ref.UUID), "delete", func(ctx context.Context) (cloudbus.Empty, error) {
		// The image service's table; RefuseIfUsed skips it when absent.
		if err := resource.RefuseIfUsed(ctx, s.db, "backup storage", ref.UUID,
			resource.Dependent{Table: "image_backup_storage_refs", Column: "backup_storage_uuid", What: "images"}); err != nil {
			return cloudbus.Empty{}, err
		}
		err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if err := tx.Where("backup_storage_uuid = ?", ref.UUID).Delete(&BackupStorageZoneRefVO{}).Error; err != nil {
				return err
			}
			return tx.Delete(&BackupStorageVO{}, "uuid = ?", ref.UUID).Error
		})
		if err != nil {
			return cloudbus.Empty{}, errcode.Wrap(errcode.Internal, err, "delete backup storage %s", ref.UUID)
		}
		return cloudbus.Empty{}, nil
	})
}

func (s *Service) reconnectBackup(ctx context.Context, ref Ref) (BackupStorageVO, error) {
	return inChain(ctx, s, bsChain(ref.UUID), "reconnect", func(ctx context.Context) (BackupStorageVO, error) {
		b, err := LoadBackup(ctx, s.db, ref.UUID)
		if err != nil {
			return BackupStorageVO{}, err
		}
		if err := s.connectBackup(ctx, b); err != nil {
			_ = s.db.WithContext(ctx).Model(&BackupStorageVO{}).Where("uuid = ?", b.UUID).Update("status", StatusDisconnected).Error
			return BackupStorageVO{}, errcode.Wrap(errcode.AgentError, err, "reconnect backup storage %s at %s", b.UUID, s.backupURL(b))
		}
		b, err = LoadBackup(ctx, s.db, ref.UUID)
		if err != nil {
			return BackupStorageVO{}, err
		}
		return *b, nil
	})
}

func (s *Service) changeBackup(ctx context.Context, req ChangeReq) (BackupStorageVO, error) {
	return inChain(ctx, s, bsChain(req.UUID), "change", func(ctx context.Context) (BackupStorageVO, error) {
		if _, err := LoadBackup(ctx, s.db, req.UUID); err != nil {
			return BackupStorageVO{}, err
		}
		if err := s.db.WithContext(ctx).Model(&BackupStorageVO{}).Where("uuid = ?", req.UUID).Updates(changes(req)).Error; err != nil {
			return BackupStorageVO{}, errcode.Wrap(errcode.Internal, err, "update backup storage %s", req.UUID)
		}
		b, err := LoadBackup(ctx, s.db, req.UUID)
		if err != nil {
			return BackupStorageVO{}, err
		}
		return *b, nil
	})
}

// pingRound checks the backup storage this node owns: an agent that does
// not answer makes it Disconnected; one that answers for another UUID or
// event URL (restarted), or a Disconnected one that answers again, is
// connected again.
func (s *Service) pingRound(ctx context.Context) error {
	var bss []BackupStorageVO
	if err := s.db.WithContext(ctx).Find(&bss).Error; err != nil {
		return err
	}
	for i := range bss {
		b := &bss[i]
		if s.node.Owner(b.UUID) != s.node.UUID() || b.Status == StatusConnecting {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, s.opts.PingInterval)
		var rsp protocol.StoragePingRsp
		err := s.agents.Call(pctx, s.backupURL(b), protocol.PathStoragePing, protocol.StoragePingCmd{UUID: b.UUID}, &rsp,
			agentclient.WithSecret(b.Secret), agentclient.WithTimeout(s.opts.PingInterval))
		cancel()
		switch {
		case err != nil:
			if b.Status != StatusDisconnected {
				s.log.Warn("backup storage agent does not answer", "bs_uuid", b.UUID, "err", err)
				_ = s.db.WithContext(ctx).Model(&BackupStorageVO{}).Where("uuid = ?", b.UUID).Update("status", StatusDisconnected).Error
			}
		case rsp.UUID != b.UUID || rsp.SendCommandURL != s.backupEventURL(b.UUID) || b.Status == StatusDisconnected:
			if _, err := s.reconnectBackup(ctx, Ref{UUID: b.UUID}); err != nil {
				s.log.Warn("reconnect backup storage", "bs_uuid", b.UUID, "err", err)
			} else {
				s.log.Info("backup storage reconnected", "bs_uuid", b.UUID)
			}
		}
	}
	return nil
}

// EventHandler is this node's event endpoint for backup storage agents:
// an event must name its storage (the backupStorageUuid query this node
// put in the URL) and carry the storage's secret, both checked before the
// body is read (agentclient.SecretAuthorizer).
func (s *Service) EventHandler() http.Handler {
	return agentclient.NewEventHandler(agentclient.EventOptions{Logger: s.log, Handle: s.onBackupEvent,
		Authorize: agentclient.SecretAuthorizer("backupStorageUuid", "backup storage", func(ctx context.Context, uuid string) (string, error) {
			var b BackupStorageVO
			err := s.db.WithContext(ctx).Select("uuid", "secret").Take(&b, "uuid = ?", uuid).Error
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return "", errcode.New(errcode.ResourceNotFound, "backup storage %s not found", uuid)
			}
			if err != nil {
				return "", errcode.Wrap(errcode.Internal, err, "load backup storage %s", uuid)
			}
			return b.Secret, nil
		}, s.log)})
}

// onBackupEvent handles an event EventHandler let in.
func (s *Service) onBackupEvent(ctx context.Context, ev agentclient.Event) error {
	s.progressEvent(ctx, ev.Query.Get("backupStorageUuid"), ev.Path, ev.Body)
	return nil
}

func (s *Service) progressEvent(ctx context.Context, from, path string, body []byte) {
	if path != protocol.EventProgressReport {
		return
	}
	var p protocol.ProgressEvent
	if err := json.Unmarshal(body, &p); err != nil {
		return
	}
	pct, err := strconv.ParseFloat(strings.TrimSuffix(p.Progress, "%"), 64)
	if err != nil || pct < 0 || pct > 100 {
		return
	}
	s.reportProgress(ctx, from, ProgressReport{ProcessType: p.ProcessType, ResourceUUID: p.ResourceUUID, Percent: int(pct)})
}
