package vm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

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
	// Net is where the VM's L3 networks are (read by the allocate-host
	// step, so it sees the attachments of the moment).
	Net NetPlacement `json:"net"`
}

// NetPlacement is where a VM's L3 networks let it run: a host of Zone in
// one of Clusters, the clusters that have every one of L2s attached (no
// cluster constraint when L2s is empty).
type NetPlacement struct {
	Zone     string   `json:"zone,omitempty"`
	L2s      []string `json:"l2s,omitempty"`
	Clusters []string `json:"clusters,omitempty"`
}

// hostFilter is one filter of the host allocator: it keeps the hosts that
// are what says (e.g. "in zone Z of the VM's L3 networks").
type hostFilter struct {
	name  string
	says  string
	apply func(q *gorm.DB) *gorm.DB
}

// filters are the allocator's filters for spec, in the order they run
// (ZStack's allocator flows): the host's state; the host, cluster and
// zone the caller asked for; then what the VM needs: its L3 networks'
// zone, a cluster with every L2 network of them attached, a cluster
// whose primary storage holds its volumes; hosts not already tried, and
// free capacity. What the caller asked for goes first, so that the filter
// that removes a pinned host says why.
func filters(spec allocSpec) []hostFilter {
	fs := []hostFilter{{name: "state", says: "Connected and Enabled", apply: func(q *gorm.DB) *gorm.DB {
		return q.Where("status = ? AND state = ?", host.StatusConnected, host.StateEnabled)
	}}}
	if spec.HostUUID != "" {
		fs = append(fs, hostFilter{name: "host", says: "host " + spec.HostUUID, apply: func(q *gorm.DB) *gorm.DB {
			return q.Where("uuid = ?", spec.HostUUID)
		}})
	}
	if spec.ClusterUUID != "" {
		fs = append(fs, hostFilter{name: "cluster", says: "in cluster " + spec.ClusterUUID, apply: func(q *gorm.DB) *gorm.DB {
			return q.Where("cluster_uuid = ?", spec.ClusterUUID)
		}})
	}
	if spec.ZoneUUID != "" {
		fs = append(fs, hostFilter{name: "zone", says: "in zone " + spec.ZoneUUID, apply: func(q *gorm.DB) *gorm.DB {
			return q.Where("zone_uuid = ?", spec.ZoneUUID)
		}})
	}
	if z := spec.Net.Zone; z != "" {
		fs = append(fs, hostFilter{name: "l3-zone", says: "in zone " + z + " of the VM's L3 networks", apply: func(q *gorm.DB) *gorm.DB {
			return q.Where("zone_uuid = ?", z)
		}})
	}
	if len(spec.Net.L2s) > 0 {
		fs = append(fs, hostFilter{name: "l2-network",
			says: "in a cluster with every L2 network of the VM's L3 networks attached (" + strings.Join(spec.Net.L2s, ", ") + ")",
			apply: func(q *gorm.DB) *gorm.DB {
				if len(spec.Net.Clusters) == 0 {
					return q.Where("1 = 0")
				}
				return q.Where("cluster_uuid IN ?", spec.Net.Clusters)
			}})
	}
	if len(spec.Clusters) > 0 {
		fs = append(fs, hostFilter{name: "storage", says: "in a cluster attached to the primary storage of the VM's volumes", apply: func(q *gorm.DB) *gorm.DB {
			return q.Where("cluster_uuid IN ?", spec.Clusters)
		}})
	}
	if len(spec.Avoid) > 0 {
		fs = append(fs, hostFilter{name: "avoid", says: "not already tried (" + strings.Join(spec.Avoid, ", ") + ")", apply: func(q *gorm.DB) *gorm.DB {
			return q.Where("uuid NOT IN ?", spec.Avoid)
		}})
	}
	return append(fs, hostFilter{name: "capacity", says: fmt.Sprintf("with %d vCPUs and %d bytes of memory free", spec.CPU, spec.Memory),
		apply: func(q *gorm.DB) *gorm.DB {
			return q.Where("available_cpu >= ? AND available_memory >= ?", spec.CPU, spec.Memory)
		}})
}

// candidates runs the filters in one query and orders the survivors with
// the weigher of strategy (one of conf.AllocationStrategies):
//
//   - LeastUsed: the larger share of free memory plus free CPU first
//     (spread);
//   - MostUsed: the smaller share first (pack: the most used host that
//     still fits, so whole hosts stay free);
//   - Random: any order.
//
// LeastUsed and MostUsed order at random among hosts whose scores are
// within 5% of each other. The preferred host goes ahead of all, whatever
// the strategy. No host is an error (CapacityExhausted) that names the
// filter that removed the last candidates (noHost).
func candidates(ctx context.Context, db *gorm.DB, spec allocSpec, strategy string) ([]host.HostVO, error) {
	q := db.WithContext(ctx).Model(&host.HostVO{})
	for _, f := range filters(spec) {
		q = f.apply(q)
	}
	var hosts []host.HostVO
	if err := q.Find(&hosts).Error; err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "list candidate hosts")
	}
	if len(hosts) == 0 {
		return nil, noHost(ctx, db, spec)
	}
	return weigh(hosts, spec.Prefer, strategy), nil
}

// noHost is the error of an allocation that found no host: it runs the
// filters again one by one, counting the hosts left after each, and names
// the first that left none, with what the hosts had to be up to there.
func noHost(ctx context.Context, db *gorm.DB, spec allocSpec) error {
	q := db.WithContext(ctx).Model(&host.HostVO{})
	var says, left []string
	for _, f := range filters(spec) {
		q = f.apply(q)
		var n int64
		if err := q.Session(&gorm.Session{}).Count(&n).Error; err != nil {
			return errcode.Wrap(errcode.Internal, err, "count candidate hosts")
		}
		says = append(says, f.says)
		left = append(left, fmt.Sprintf("%s %d", f.name, n))
		if n == 0 {
			return errcode.New(errcode.CapacityExhausted, "no host is %s: the %s filter removed the last candidates (hosts left after each filter: %s)",
				strings.Join(says, ", "), f.name, strings.Join(left, ", "))
		}
	}
	// Hosts changed since the query: the caller may try again.
	return errcode.New(errcode.CapacityExhausted, "no host is %s (hosts changed while they were filtered; hosts left after each filter: %s)",
		strings.Join(says, ", "), strings.Join(left, ", "))
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
