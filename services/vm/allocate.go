package vm

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"

	"gorm.io/gorm"

	"mplane/conf"
	"mplane/errcode"
	"mplane/services/host"
)

// allocSpec is what a VM needs from a host.
type allocSpec struct {
	CPU, Memory int64
	ZoneUUID    string
	ClusterUUID string
	HostUUID    string   // required host, if any
	Clusters    []string // the host must be in one of these, if any (its volumes' storage)
	Prefer      string   // tried first if it qualifies (a stopped VM's last host)
	Avoid       []string // hosts not to use
}

// candidates runs the filters (Connected and Enabled, zone and cluster,
// enough free CPU and memory, avoid-list, a required host) in one query and
// orders the survivors with the weigher of strategy (one of
// conf.AllocationStrategies):
//
//   - LeastUsed: the larger share of free memory plus free CPU first
//     (spread);
//   - MostUsed: the smaller share first (pack: the most used host that
//     still fits, so whole hosts stay free);
//   - Random: any order.
//
// LeastUsed and MostUsed order at random among hosts whose scores are
// within 5% of each other. The preferred host goes ahead of all, whatever
// the strategy.
func candidates(ctx context.Context, db *gorm.DB, spec allocSpec, strategy string) ([]host.HostVO, error) {
	q := db.WithContext(ctx).Model(&host.HostVO{}).
		Where("status = ? AND state = ? AND available_cpu >= ? AND available_memory >= ?",
			host.StatusConnected, host.StateEnabled, spec.CPU, spec.Memory)
	if spec.ZoneUUID != "" {
		q = q.Where("zone_uuid = ?", spec.ZoneUUID)
	}
	if spec.ClusterUUID != "" {
		q = q.Where("cluster_uuid = ?", spec.ClusterUUID)
	}
	if spec.HostUUID != "" {
		q = q.Where("uuid = ?", spec.HostUUID)
	}
	if len(spec.Clusters) > 0 {
		q = q.Where("cluster_uuid IN ?", spec.Clusters)
	}
	if len(spec.Avoid) > 0 {
		q = q.Where("uuid NOT IN ?", spec.Avoid)
	}
	var hosts []host.HostVO
	if err := q.Find(&hosts).Error; err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "list candidate hosts")
	}
	return weigh(hosts, spec.Prefer, strategy), nil
}

// weigh orders hosts for strategy, prefer (if among them) first; see
// candidates.
func weigh(hosts []host.HostVO, prefer, strategy string) []host.HostVO {
	type scored struct {
		h     host.HostVO
		score float64 // higher first
		tie   float64
	}
	list := make([]scored, 0, len(hosts))
	for _, h := range hosts {
		free := 0.0
		if h.TotalMemoryCapacity > 0 {
			free += float64(h.AvailableMemoryCapacity) / float64(h.TotalMemoryCapacity)
		}
		if h.TotalCPUCapacity > 0 {
			free += float64(h.AvailableCPUCapacity) / float64(h.TotalCPUCapacity)
		}
		var s float64
		switch strategy {
		case conf.AllocationMostUsed:
			s = -free
		case conf.AllocationRandom:
			s = 0 // every host ties: the order is the random tie-break
		default: // conf.AllocationLeastUsed
			s = free
		}
		list = append(list, scored{h, s, rand.Float64()})
	}
	sort.Slice(list, func(i, j int) bool {
		if pi, pj := list[i].h.UUID == prefer, list[j].h.UUID == prefer; pi != pj {
			return pi
		}
		// Scores within 5% count as equal: spread concurrent creates over
		// equally used hosts instead of piling them on the first.
		if d := list[i].score - list[j].score; d > 0.05 || d < -0.05 {
			return d > 0
		}
		return list[i].tie < list[j].tie
	})
	out := make([]host.HostVO, len(list))
	for i, s := range list {
		out[i] = s.h
	}
	return out
}

// reserveOn takes the capacity on the first candidate that still has it
// (another node may have taken it since the query) and where also (if
// not nil) takes what else the VM needs there, its volumes' storage; it
// returns that host.
func reserveOn(ctx context.Context, db *gorm.DB, vmUUID string, spec allocSpec, hosts []string,
	also func(ctx context.Context, host string) (bool, error)) (string, error) {
	noStorage := 0
	for _, h := range hosts {
		err := host.Reserve(ctx, db, h, vmUUID, spec.CPU, spec.Memory)
		if errors.Is(err, host.ErrNoCapacity) {
			continue
		}
		if err != nil {
			return "", errcode.Wrap(errcode.Internal, err, "reserve capacity on host %s", h)
		}
		if also == nil {
			return h, nil
		}
		ok, err := also(ctx, h)
		if ok && err == nil {
			return h, nil
		}
		if rerr := host.Release(ctx, db, vmUUID); rerr != nil {
			return "", errors.Join(errcode.Wrap(errcode.Internal, rerr, "release capacity on host %s", h), err)
		}
		if err != nil {
			return "", err
		}
		noStorage++
	}
	if noStorage > 0 {
		return "", errcode.New(errcode.CapacityExhausted,
			"no Connected and Enabled host has %d vCPUs and %d bytes of memory free and room for the VM's volumes on primary storage it reaches"+
				" (%d candidates checked, %d of them without such storage: attach primary storage with enough available capacity to their clusters)",
			spec.CPU, spec.Memory, len(hosts), noStorage)
	}
	return "", errcode.New(errcode.CapacityExhausted,
		"no Connected and Enabled host has %d vCPUs and %d bytes of memory free (%d candidates checked)", spec.CPU, spec.Memory, len(hosts))
}
