package storage

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"gorm.io/gorm"

	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/services/cluster"
	"mplane/services/host"
	"mplane/services/resource"
	"mplane/services/zone"
)

// addPrimary writes a new primary storage: Enabled and Connected, with no
// capacity until it is attached to a cluster whose hosts measure it.
func (s *Service) addPrimary(ctx context.Context, req AddPrimaryStorageReq) (PrimaryStorageVO, error) {
	return inChain(ctx, s, psChain(req.UUID), "add", func(ctx context.Context) (PrimaryStorageVO, error) {
		if p, err := LoadPrimary(ctx, s.db, req.UUID); err == nil {
			return *p, nil // a redelivered add
		}
		if err := resource.MustExist(ctx, s.db, &zone.ZoneVO{}, "zoneUuid", req.ZoneUUID); err != nil {
			return PrimaryStorageVO{}, err
		}
		now := time.Now().UTC()
		p := PrimaryStorageVO{UUID: req.UUID, Name: req.Name, Description: req.Description, ZoneUUID: req.ZoneUUID, URL: req.URL,
			Type: req.Type, MountPath: req.URL, State: StateEnabled, Status: StatusConnected, CreateDate: now, LastOpDate: now}
		if err := s.db.WithContext(ctx).Create(&p).Error; err != nil {
			return PrimaryStorageVO{}, errcode.Wrap(errcode.Internal, err, "add primary storage %s", req.UUID)
		}
		s.log.Info("primary storage added", "ps_uuid", p.UUID, "type", p.Type, "url", p.URL)
		p.AttachedClusterUUIDs = []string{}
		return p, nil
	})
}

// attachPrimary attaches a primary storage to a cluster of its zone and
// measures it on the cluster's Connected hosts: every host's directory of
// a LocalStorage, the share of a SharedMountPoint from one host. A host
// that cannot serve it fails the attach, which is then undone.
func (s *Service) attachPrimary(ctx context.Context, req ClusterRefReq) (PrimaryStorageVO, error) {
	return inChain(ctx, s, psChain(req.PrimaryStorageUUID), "attach", func(ctx context.Context) (PrimaryStorageVO, error) {
		p, err := LoadPrimary(ctx, s.db, req.PrimaryStorageUUID)
		if err != nil {
			return PrimaryStorageVO{}, err
		}
		for _, r := range p.ClusterRefs {
			if r.ClusterUUID == req.ClusterUUID {
				return *p, nil // attached already
			}
		}
		var c cluster.ClusterVO
		if err := s.db.WithContext(ctx).Take(&c, "uuid = ?", req.ClusterUUID).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return PrimaryStorageVO{}, errcode.New(errcode.InvalidArgument, "clusterUuid %s does not exist", req.ClusterUUID)
			}
			return PrimaryStorageVO{}, errcode.Wrap(errcode.Internal, err, "load cluster %s", req.ClusterUUID)
		}
		if c.ZoneUUID != p.ZoneUUID {
			return PrimaryStorageVO{}, errcode.New(errcode.InvalidArgument, "cluster %s is in zone %s, primary storage %s in zone %s: attach it to a cluster of its zone",
				c.UUID, c.ZoneUUID, p.UUID, p.ZoneUUID)
		}
		ref := PrimaryStorageClusterRefVO{PrimaryStorageUUID: p.UUID, ClusterUUID: c.UUID, CreateDate: time.Now().UTC()}
		if err := s.db.WithContext(ctx).Create(&ref).Error; err != nil {
			return PrimaryStorageVO{}, errcode.Wrap(errcode.Internal, err, "attach primary storage %s to cluster %s", p.UUID, c.UUID)
		}
		if err := s.measureCluster(ctx, p, c.UUID); err != nil {
			uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if uerr := s.unattach(uctx, p, c.UUID); uerr != nil {
				s.log.Error("undo a failed attach", "ps_uuid", p.UUID, "cluster_uuid", c.UUID, "err", uerr)
			}
			return PrimaryStorageVO{}, err
		}
		s.log.Info("primary storage attached", "ps_uuid", p.UUID, "cluster_uuid", c.UUID)
		p, err = LoadPrimary(ctx, s.db, p.UUID)
		if err != nil {
			return PrimaryStorageVO{}, err
		}
		return *p, nil
	})
}

// measureCluster measures p on the Connected hosts of cluster.
func (s *Service) measureCluster(ctx context.Context, p *PrimaryStorageVO, clusterUUID string) error {
	var hosts []host.HostVO
	if err := s.db.WithContext(ctx).Where("cluster_uuid = ? AND status = ?", clusterUUID, host.StatusConnected).Find(&hosts).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "list the hosts of cluster %s", clusterUUID)
	}
	if p.Type == TypeLocalStorage {
		for _, h := range hosts {
			if err := s.measureOn(ctx, p, h.UUID); err != nil {
				return err
			}
		}
		return nil
	}
	var errs []error
	for _, i := range rand.Perm(len(hosts)) {
		err := s.measureOn(ctx, p, hosts[i].UUID)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errcode.Wrap(errcode.AgentError, errors.Join(errs...), "no host of cluster %s can serve primary storage %s at %s", clusterUUID, p.UUID, p.URL)
	}
	return nil
}

// measureOn asks host's agent for the capacity of p's directory and
// records it (for LocalStorage as that host's directory).
func (s *Service) measureOn(ctx context.Context, p *PrimaryStorageVO, hostUUID string) error {
	rsp, err := Run(ctx, s, p, hostUUID, protocol.StorageCapacityQuery, struct{}{})
	if err != nil {
		return errcode.Wrap(errcode.AgentError, err, "measure primary storage %s (%s) on host %s", p.UUID, p.URL, hostUUID)
	}
	hostKey := ""
	if p.Type == TypeLocalStorage {
		hostKey = hostUUID
	}
	if err := setMeasured(ctx, s.db, p.UUID, hostKey, rsp.TotalCapacity, rsp.AvailableCapacity); err != nil {
		return errcode.Wrap(errcode.Internal, err, "record the capacity of primary storage %s", p.UUID)
	}
	return nil
}

// Run sends one storage command for primary storage p to a host's agent
// (for LocalStorage, the host whose directory it is about), bounded by
// AgentTimeout.
func Run[Cmd, Rsp any](ctx context.Context, s *Service, p *PrimaryStorageVO, hostUUID string, c protocol.Command[Cmd, Rsp], cmd Cmd) (Rsp, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.AgentTimeout)
	defer cancel()
	return host.RunStorage(ctx, s.node, hostUUID, p.URL, c, cmd)
}

// HostFor picks the host that serves a command on shared primary storage
// p: a Connected and Enabled host of an attached cluster, at random. For
// LocalStorage the host is the volume's; asking is an error.
func (s *Service) HostFor(ctx context.Context, p *PrimaryStorageVO) (string, error) {
	if p.Type == TypeLocalStorage {
		return "", errcode.New(errcode.Internal, "local primary storage %s: commands go to the volume's host", p.UUID)
	}
	var ids []string
	err := s.db.WithContext(ctx).Model(&host.HostVO{}).
		Where("status = ? AND state = ? AND cluster_uuid IN (?)", host.StatusConnected, host.StateEnabled,
			s.db.Model(&PrimaryStorageClusterRefVO{}).Select("cluster_uuid").Where("primary_storage_uuid = ?", p.UUID)).
		Pluck("uuid", &ids).Error
	if err != nil {
		return "", errcode.Wrap(errcode.Internal, err, "list the hosts of primary storage %s", p.UUID)
	}
	if len(ids) == 0 {
		return "", errcode.New(errcode.InvalidState, "primary storage %s has no Connected and Enabled host in its attached clusters", p.UUID)
	}
	return ids[rand.IntN(len(ids))], nil
}

// unattach removes p's attachment to cluster and, for LocalStorage, the
// directories of the cluster's hosts (which hold nothing: checked before).
func (s *Service) unattach(ctx context.Context, p *PrimaryStorageVO, clusterUUID string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Delete(&PrimaryStorageClusterRefVO{}, "primary_storage_uuid = ? AND cluster_uuid = ?", p.UUID, clusterUUID).Error; err != nil {
			return err
		}
		if p.Type != TypeLocalStorage {
			if err := tx.Where("primary_storage_uuid = ?", p.UUID).Take(&PrimaryStorageClusterRefVO{}).Error; errors.Is(err, gorm.ErrRecordNotFound) {
				// No cluster left: no host sees it.
				if err := lockForRecompute(tx, &PrimaryStorageVO{}, "uuid = ?", p.UUID); err != nil {
					return err
				}
				return tx.Model(&PrimaryStorageVO{}).Where("uuid = ?", p.UUID).Updates(map[string]any{"total_capacity": 0,
					"available_capacity":      gorm.Expr("0 - (?)", tx.Model(&StorageReservationVO{}).Select("COALESCE(SUM(size),0)").Where("primary_storage_uuid = ?", p.UUID)),
					"total_physical_capacity": 0, "available_physical_capacity": 0}).Error
			}
			return nil
		}
		hosts := tx.Model(&host.HostVO{}).Select("uuid").Where("cluster_uuid = ?", clusterUUID)
		if err := tx.Where("primary_storage_uuid = ? AND host_uuid IN (?)", p.UUID, hosts).Delete(&LocalStorageHostRefVO{}).Error; err != nil {
			return err
		}
		return sumHosts(tx, p.UUID, time.Now().UTC())
	})
}

// detachPrimary detaches a primary storage from a cluster, refused while
// volumes on it are used there: for LocalStorage any volume on a host of
// the cluster, for shared storage a volume of a VM of the cluster.
func (s *Service) detachPrimary(ctx context.Context, req ClusterRefReq) (PrimaryStorageVO, error) {
	return inChain(ctx, s, psChain(req.PrimaryStorageUUID), "detach", func(ctx context.Context) (PrimaryStorageVO, error) {
		p, err := LoadPrimary(ctx, s.db, req.PrimaryStorageUUID)
		if err != nil {
			return PrimaryStorageVO{}, err
		}
		attached := false
		for _, r := range p.ClusterRefs {
			attached = attached || r.ClusterUUID == req.ClusterUUID
		}
		if !attached {
			return PrimaryStorageVO{}, errcode.New(errcode.InvalidArgument, "primary storage %s is not attached to cluster %s", p.UUID, req.ClusterUUID)
		}
		var n int64
		q := s.db.WithContext(ctx).Model(&StorageReservationVO{}).Where("primary_storage_uuid = ?", p.UUID)
		if p.Type == TypeLocalStorage {
			q = q.Where("host_uuid IN (?)", s.db.Model(&host.HostVO{}).Select("uuid").Where("cluster_uuid = ?", req.ClusterUUID))
		} else if s.db.Migrator().HasTable("volumes") {
			q = q.Where("owner_uuid IN (?)", s.db.Table("volumes").Select("volumes.uuid").
				Joins("JOIN vm_instances ON vm_instances.uuid = volumes.vm_instance_uuid").Where("vm_instances.cluster_uuid = ?", req.ClusterUUID))
		} else {
			q = q.Where("1 = 0")
		}
		if err := q.Count(&n).Error; err != nil {
			return PrimaryStorageVO{}, errcode.Wrap(errcode.Internal, err, "count the volumes of primary storage %s", p.UUID)
		}
		if n > 0 {
			return PrimaryStorageVO{}, errcode.New(errcode.InvalidState, "primary storage %s holds %d volumes or snapshots used in cluster %s; delete them first",
				p.UUID, n, req.ClusterUUID)
		}
		if err := s.unattach(ctx, p, req.ClusterUUID); err != nil {
			return PrimaryStorageVO{}, errcode.Wrap(errcode.Internal, err, "detach primary storage %s from cluster %s", p.UUID, req.ClusterUUID)
		}
		s.log.Info("primary storage detached", "ps_uuid", p.UUID, "cluster_uuid", req.ClusterUUID)
		p, err = LoadPrimary(ctx, s.db, p.UUID)
		if err != nil {
			return PrimaryStorageVO{}, err
		}
		return *p, nil
	})
}

// deletePrimary deletes a primary storage that holds nothing, detaching it
// from its clusters. Deleting a missing one succeeds.
func (s *Service) deletePrimary(ctx context.Context, ref Ref) (cloudbus.Empty, error) {
	return inChain(ctx, s, psChain(ref.UUID), "delete", func(ctx context.Context) (cloudbus.Empty, error) {
		if err := resource.RefuseIfUsed(ctx, s.db, "primary storage", ref.UUID, resource.Dependent{Table: StorageReservationVO{}.TableName(),
			Column: "primary_storage_uuid", What: "volumes, snapshots or cached images"}); err != nil {
			return cloudbus.Empty{}, err
		}
		err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			for _, m := range []any{&PrimaryStorageClusterRefVO{}, &LocalStorageHostRefVO{}} {
				if err := tx.Where("primary_storage_uuid = ?", ref.UUID).Delete(m).Error; err != nil {
					return err
				}
			}
			return tx.Delete(&PrimaryStorageVO{}, "uuid = ?", ref.UUID).Error
		})
		if err != nil {
			return cloudbus.Empty{}, errcode.Wrap(errcode.Internal, err, "delete primary storage %s", ref.UUID)
		}
		return cloudbus.Empty{}, nil
	})
}

// reconnectPrimary measures a primary storage again on every cluster it is
// attached to (reconnectPrimaryStorage, syncPrimaryStorageCapacity).
func (s *Service) reconnectPrimary(ctx context.Context, ref Ref) (PrimaryStorageVO, error) {
	return inChain(ctx, s, psChain(ref.UUID), "reconnect", func(ctx context.Context) (PrimaryStorageVO, error) {
		p, err := LoadPrimary(ctx, s.db, ref.UUID)
		if err != nil {
			return PrimaryStorageVO{}, err
		}
		var errs []error
		for _, r := range p.ClusterRefs {
			errs = append(errs, s.measureCluster(ctx, p, r.ClusterUUID))
		}
		status := StatusConnected
		if err := errors.Join(errs...); err != nil {
			status = StatusDisconnected
			defer s.log.Warn("primary storage not reachable", "ps_uuid", p.UUID, "err", err)
		}
		if err := s.db.WithContext(ctx).Model(&PrimaryStorageVO{}).Where("uuid = ?", p.UUID).Update("status", status).Error; err != nil {
			return PrimaryStorageVO{}, errcode.Wrap(errcode.Internal, err, "record primary storage %s status", p.UUID)
		}
		if status != StatusConnected {
			return PrimaryStorageVO{}, errcode.Wrap(errcode.AgentError, errors.Join(errs...), "reconnect primary storage %s", p.UUID)
		}
		p, err = LoadPrimary(ctx, s.db, p.UUID)
		if err != nil {
			return PrimaryStorageVO{}, err
		}
		return *p, nil
	})
}

// changePrimary applies updatePrimaryStorage and changePrimaryStorageState.
func (s *Service) changePrimary(ctx context.Context, req ChangeReq) (PrimaryStorageVO, error) {
	return inChain(ctx, s, psChain(req.UUID), "change", func(ctx context.Context) (PrimaryStorageVO, error) {
		if _, err := LoadPrimary(ctx, s.db, req.UUID); err != nil {
			return PrimaryStorageVO{}, err
		}
		if err := s.db.WithContext(ctx).Model(&PrimaryStorageVO{}).Where("uuid = ?", req.UUID).Updates(changes(req)).Error; err != nil {
			return PrimaryStorageVO{}, errcode.Wrap(errcode.Internal, err, "update primary storage %s", req.UUID)
		}
		p, err := LoadPrimary(ctx, s.db, req.UUID)
		if err != nil {
			return PrimaryStorageVO{}, err
		}
		return *p, nil
	})
}

func changes(req ChangeReq) map[string]any {
	upd := map[string]any{"last_op_date": time.Now().UTC()}
	switch req.StateEvent {
	case "enable":
		upd["state"] = StateEnabled
	case "disable":
		upd["state"] = StateDisabled
	}
	if req.Name != nil {
		upd["name"] = *req.Name
	}
	if req.Description != nil {
		upd["description"] = *req.Description
	}
	return upd
}

// hostConnected measures the primary storage of a host that connected:
// its directory of every LocalStorage attached to its cluster, and a
// shared storage that no host has measured yet.
func (s *Service) hostConnected(ctx context.Context, h host.HostVO) {
	var pss []PrimaryStorageVO
	err := s.db.WithContext(ctx).Where("uuid IN (?)",
		s.db.Model(&PrimaryStorageClusterRefVO{}).Select("primary_storage_uuid").Where("cluster_uuid = ?", h.ClusterUUID)).Find(&pss).Error
	if err != nil {
		s.log.Warn("list the primary storage of a connected host", "host_uuid", h.UUID, "err", err)
		return
	}
	for i := range pss {
		p := &pss[i]
		if p.Type != TypeLocalStorage && p.TotalCapacity > 0 {
			continue
		}
		if err := s.measureOn(ctx, p, h.UUID); err != nil {
			s.log.Warn("measure primary storage on a connected host", "ps_uuid", p.UUID, "host_uuid", h.UUID, "err", err)
		}
	}
}

// hostEvent takes the progress events of the hosts' agents (image fetches
// into primary storage).
func (s *Service) hostEvent(ctx context.Context, ev host.AgentEvent) {
	s.progressEvent(ctx, ev.HostUUID, ev.Path, ev.Body)
}
