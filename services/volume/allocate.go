package volume

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/host"
	"mplane/services/storage"
)

// Allocation strategies of primary storage (a disk offering's
// allocatorStrategy, or the service's default).
const (
	// StrategyCapacity: most available capacity first, then fewest
	// volumes, random among equals.
	StrategyCapacity = "MostAvailableCapacity"
	// StrategyLeastVolumes: fewest volumes first, then most capacity.
	StrategyLeastVolumes = "LeastVolumes"
	// StrategyChance: a random order (Cinder's chance scheduler).
	StrategyChance = "Chance"
)

// Strategies lists the strategies, for validation.
var Strategies = []string{StrategyCapacity, StrategyLeastVolumes, StrategyChance}

// request is what a volume needs from primary storage.
type request struct {
	Size     int64  `json:"size"`
	ZoneUUID string `json:"zoneUuid,omitempty"`
	// PrimaryStorageUUID and HostUUID pin the storage (and, for
	// LocalStorage, the host's directory); ClusterUUID limits to storage
	// attached to that cluster.
	PrimaryStorageUUID string   `json:"primaryStorageUuid,omitempty"`
	HostUUID           string   `json:"hostUuid,omitempty"`
	ClusterUUID        string   `json:"clusterUuid,omitempty"`
	Strategy           string   `json:"strategy,omitempty"`
	Avoid              []string `json:"avoid,omitempty"` // "ps" or "ps/host" keys not to use
}

// candidate is one place a volume can go: a storage, and for LocalStorage
// one host's directory.
type candidate struct {
	PS        string `json:"ps"`
	Host      string `json:"host,omitempty"`
	URL       string `json:"url"`
	Type      string `json:"type"`
	Available int64  `json:"available"`
	Volumes   int64  `json:"volumes"`
}

func (c candidate) key() string {
	if c.Host == "" {
		return c.PS
	}
	return c.PS + "/" + c.Host
}

func (c candidate) String() string {
	if c.Host == "" {
		return "primary storage " + c.PS
	}
	return "primary storage " + c.PS + " on host " + c.Host
}

// filterReport says which filter removed the last candidates, for the
// error when none is left (like ZStack's allocator error chain).
type filterReport struct {
	steps []string
}

func (f *filterReport) add(name string, before, after int) {
	f.steps = append(f.steps, fmt.Sprintf("%s: %d -> %d", name, before, after))
}

// candidates runs the filters and the weighers: storage Enabled and
// Connected, in the zone, attached to the cluster, the pinned storage and
// host, hosts Connected and Enabled (LocalStorage), not avoided, enough
// available capacity; then ordered by the strategy, ties broken at random
// after a sort on a strict weak ordering.
func candidates(ctx context.Context, db *gorm.DB, req request) ([]candidate, error) {
	db = db.WithContext(ctx)
	var pss []storage.PrimaryStorageVO
	q := db.Where("state = ? AND status = ?", storage.StateEnabled, storage.StatusConnected)
	if req.ZoneUUID != "" {
		q = q.Where("zone_uuid = ?", req.ZoneUUID)
	}
	if req.PrimaryStorageUUID != "" {
		q = q.Where("uuid = ?", req.PrimaryStorageUUID)
	}
	if req.ClusterUUID != "" {
		q = q.Where("uuid IN (?)", db.Model(&storage.PrimaryStorageClusterRefVO{}).Select("primary_storage_uuid").Where("cluster_uuid = ?", req.ClusterUUID))
	}
	if err := q.Find(&pss).Error; err != nil {
		return nil, errcode.Wrap(errcode.Internal, err, "list primary storage")
	}
	report := &filterReport{}
	report.add("Enabled and Connected primary storage"+scope(req), -1, len(pss))
	var all []candidate
	for _, p := range pss {
		if p.Type != storage.TypeLocalStorage {
			all = append(all, candidate{PS: p.UUID, URL: p.URL, Type: p.Type, Available: p.AvailableCapacity})
			continue
		}
		var refs []storage.LocalStorageHostRefVO
		hq := db.Where("primary_storage_uuid = ? AND host_uuid IN (?)", p.UUID,
			db.Model(&host.HostVO{}).Select("uuid").Where("status = ? AND state = ?", host.StatusConnected, host.StateEnabled))
		if req.HostUUID != "" {
			hq = hq.Where("host_uuid = ?", req.HostUUID)
		}
		if req.ClusterUUID != "" {
			hq = hq.Where("host_uuid IN (?)", db.Model(&host.HostVO{}).Select("uuid").Where("cluster_uuid = ?", req.ClusterUUID))
		}
		if err := hq.Find(&refs).Error; err != nil {
			return nil, errcode.Wrap(errcode.Internal, err, "list the hosts of local storage %s", p.UUID)
		}
		for _, r := range refs {
			all = append(all, candidate{PS: p.UUID, Host: r.HostUUID, URL: p.URL, Type: p.Type, Available: r.AvailableCapacity})
		}
	}
	report.add("with a Connected and Enabled host", len(pss), len(all))
	avoid := map[string]bool{}
	for _, a := range req.Avoid {
		avoid[a] = true
	}
	var kept []candidate
	for _, c := range all {
		if !avoid[c.key()] {
			kept = append(kept, c)
		}
	}
	if len(req.Avoid) > 0 {
		report.add("not tried before", len(all), len(kept))
	}
	var fit []candidate
	for _, c := range kept {
		if c.Available >= req.Size {
			fit = append(fit, c)
		}
	}
	report.add(fmt.Sprintf("with %d bytes available", req.Size), len(kept), len(fit))
	if len(fit) == 0 {
		return nil, errcode.New(errcode.CapacityExhausted, "no primary storage can hold a volume of %d bytes (%s)", req.Size, strings.Join(report.steps, "; "))
	}
	if err := countVolumes(db, fit); err != nil {
		return nil, err
	}
	order(fit, req.Strategy)
	return fit, nil
}

func scope(req request) string {
	var parts []string
	for _, p := range [][2]string{{"zone", req.ZoneUUID}, {"cluster", req.ClusterUUID}, {"primary storage", req.PrimaryStorageUUID}, {"host", req.HostUUID}} {
		if p[1] != "" {
			parts = append(parts, p[0]+" "+p[1])
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func countVolumes(db *gorm.DB, cs []candidate) error {
	type row struct {
		PS, Host string
		N        int64
	}
	pss := make([]string, 0, len(cs))
	for _, c := range cs {
		pss = append(pss, c.PS)
	}
	var rows []row
	if err := db.Model(&VolumeVO{}).Select("primary_storage_uuid AS ps, host_uuid AS host, COUNT(*) AS n").
		Where("status <> ? AND primary_storage_uuid IN ?", StatusDeleted, pss).Group("primary_storage_uuid, host_uuid").Scan(&rows).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "count volumes")
	}
	byPS, byHost := map[string]int64{}, map[string]int64{}
	for _, r := range rows {
		byPS[r.PS] += r.N
		byHost[r.PS+"/"+r.Host] += r.N
	}
	for i := range cs {
		if cs[i].Host != "" {
			cs[i].Volumes = byHost[cs[i].key()]
		} else {
			cs[i].Volumes = byPS[cs[i].PS]
		}
	}
	return nil
}

// order sorts cs by strategy: a lexicographic comparison of exact keys
// (a strict weak ordering), then a random shuffle within each run of
// equal keys.
func order(cs []candidate, strategy string) {
	rand.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
	if strategy == StrategyChance {
		return
	}
	less := func(a, b candidate) bool {
		if strategy == StrategyLeastVolumes {
			if a.Volumes != b.Volumes {
				return a.Volumes < b.Volumes
			}
			return a.Available > b.Available
		}
		if a.Available != b.Available {
			return a.Available > b.Available
		}
		return a.Volumes < b.Volumes
	}
	// Stable on a shuffled slice: equal keys stay in random order.
	sort.SliceStable(cs, func(i, j int) bool { return less(cs[i], cs[j]) })
}
