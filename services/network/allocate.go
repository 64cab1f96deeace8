package network

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/go-sql-driver/mysql"
	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/uid"
)

// Strategy is how AllocateIP picks among the free addresses.
type Strategy string

const (
	// LowestFirst takes the lowest free address of the lowest range (the
	// default), so addresses are handed out in order and reused at once.
	LowestFirst Strategy = "LowestFirst"
	// Random takes the first free address at or after a random point of the
	// ranges, wrapping around: spread out, and fewer collisions when many
	// nodes allocate on one network at once.
	Random Strategy = "Random"
)

// DefaultMaxAttempts bounds AllocateIP's retries after collisions.
const DefaultMaxAttempts = 64

// AllocateOptions tune AllocateIP. The zero value allocates the lowest free
// address of any range.
type AllocateOptions struct {
	// IpRangeUUID restricts the allocation to one range of the network.
	IpRangeUUID string
	// Strategy: LowestFirst when empty.
	Strategy Strategy
	// MaxAttempts bounds the inserts tried: each collision with another
	// allocation costs one. Zero means DefaultMaxAttempts.
	MaxAttempts int
}

// AllocateIP allocates a free address of the L3 network to ownerUUID (a VM
// NIC UUID, or any resource) and returns its used_ips row.
//
// The database arbitrates: the address is chosen by a query, then
// inserted, and the unique index on (l3 network, address) rejects it if
// another node took it meanwhile; AllocateIP then chooses again, from a
// random point so that colliding nodes spread out, at most
// opts.MaxAttempts times. Every collision means another allocation
// succeeded, so retries end when the network is full.
//
// Finding a free address never loads the used set: the used addresses
// after the starting point are counted on the index in doubling strides
// and only the stride holding the first gap is read (see firstFree).
//
// Errors: InvalidArgument (no owner, bad options), ResourceNotFound (no
// such L3 network or range), InvalidState (network Disabled),
// CapacityExhausted (no free address; the message names the network),
// Conflict (retryable: still colliding after MaxAttempts).
func AllocateIP(ctx context.Context, gdb *gorm.DB, l3UUID, ownerUUID string, opts AllocateOptions) (UsedIpVO, error) {
	if err := checkOwner(ownerUUID); err != nil {
		return UsedIpVO{}, err
	}
	switch opts.Strategy {
	case "", LowestFirst, Random:
	default:
		return UsedIpVO{}, errcode.New(errcode.InvalidArgument, "unknown allocation strategy %q; use %s or %s", opts.Strategy, LowestFirst, Random)
	}
	attempts := opts.MaxAttempts
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	gdb = gdb.WithContext(ctx)
	l3, ranges, err := allocatableRanges(gdb, l3UUID, opts.IpRangeUUID)
	if err != nil {
		return UsedIpVO{}, err
	}
	if len(ranges) == 0 {
		return UsedIpVO{}, errcode.New(errcode.CapacityExhausted, "l3 network %s (%s) has no ip range", l3.UUID, l3.Name)
	}
	for attempt := range attempts {
		r, ip, ok, err := findFree(gdb, l3UUID, ranges, opts.Strategy == Random || attempt > 0)
		if err != nil {
			return UsedIpVO{}, err
		}
		if !ok {
			return UsedIpVO{}, errcode.New(errcode.CapacityExhausted, "l3 network %s (%s) has no free IP address", l3.UUID, l3.Name)
		}
		used, err := insertUsedIP(gdb, r, ip, ownerUUID)
		if err == nil {
			return used, nil
		}
		if !isCollision(err) {
			return UsedIpVO{}, err
		}
	}
	return UsedIpVO{}, errcode.New(errcode.Conflict, "l3 network %s: every one of %d attempts to allocate an IP collided with another allocation", l3UUID, attempts)
}

// AllocateSpecificIP allocates the given address of the L3 network to
// ownerUUID. The address must be inside one of the network's ranges
// (InvalidArgument otherwise, e.g. for the gateway); an address in use is
// InvalidState.
func AllocateSpecificIP(ctx context.Context, gdb *gorm.DB, l3UUID, ownerUUID, ip string) (UsedIpVO, error) {
	if err := checkOwner(ownerUUID); err != nil {
		return UsedIpVO{}, err
	}
	v, err := parseIPv4("ip", ip)
	if err != nil {
		return UsedIpVO{}, err
	}
	gdb = gdb.WithContext(ctx)
	_, ranges, err := allocatableRanges(gdb, l3UUID, "")
	if err != nil {
		return UsedIpVO{}, err
	}
	for i := range ranges {
		r := &ranges[i]
		if int64(v) < r.StartIPLong || int64(v) > r.EndIPLong {
			continue
		}
		used, err := insertUsedIP(gdb, r, int64(v), ownerUUID)
		if isCollision(err) {
			return UsedIpVO{}, errcode.New(errcode.InvalidState, "ip %s of l3 network %s is already in use", ip, l3UUID)
		}
		return used, err
	}
	return UsedIpVO{}, errcode.New(errcode.InvalidArgument, "ip %s is not in any ip range of l3 network %s", ip, l3UUID)
}

// ReleaseIP frees a used address by the UUID of its used_ips row. Releasing
// an address that is not (or no longer) allocated succeeds.
func ReleaseIP(ctx context.Context, gdb *gorm.DB, usedIPUUID string) error {
	if err := gdb.WithContext(ctx).Where("uuid = ?", usedIPUUID).Delete(&UsedIpVO{}).Error; err != nil {
		return fmt.Errorf("release used ip %s: %w", usedIPUUID, err)
	}
	return nil
}

// ReleaseByOwner frees every address held by ownerUUID, on any network, and
// returns how many it freed; zero when there were none, so it can be
// repeated (a flow rollback that runs twice).
func ReleaseByOwner(ctx context.Context, gdb *gorm.DB, ownerUUID string) (int64, error) {
	if err := checkOwner(ownerUUID); err != nil {
		return 0, err
	}
	res := gdb.WithContext(ctx).Where("vm_nic_uuid = ?", ownerUUID).Delete(&UsedIpVO{})
	if res.Error != nil {
		return 0, fmt.Errorf("release ips of %s: %w", ownerUUID, res.Error)
	}
	return res.RowsAffected, nil
}

// IPCapacity counts the addresses of an L3 network's ranges. JSON names are
// those of ZStack's GetIpAddressCapacity reply.
type IPCapacity struct {
	Total     int64 `json:"totalCapacity"`
	Used      int64 `json:"usedIpAddressNumber"`
	Available int64 `json:"availableCapacity"`
}

// Capacity counts the addresses of an L3 network: in its ranges, in use,
// and free. A missing network is ResourceNotFound.
func Capacity(ctx context.Context, gdb *gorm.DB, l3UUID string) (IPCapacity, error) {
	gdb = gdb.WithContext(ctx)
	if _, err := getL3(gdb, l3UUID); err != nil {
		return IPCapacity{}, err
	}
	ranges, err := ListIpRanges(ctx, gdb, l3UUID)
	if err != nil {
		return IPCapacity{}, err
	}
	var c IPCapacity
	for _, r := range ranges {
		c.Total += r.Size()
	}
	if err := gdb.Model(&UsedIpVO{}).Where("l3_network_uuid = ?", l3UUID).Count(&c.Used).Error; err != nil {
		return IPCapacity{}, fmt.Errorf("count used ips of l3 network %s: %w", l3UUID, err)
	}
	c.Available = c.Total - c.Used
	return c, nil
}

func checkOwner(ownerUUID string) error {
	switch {
	case strings.TrimSpace(ownerUUID) == "":
		return errcode.New(errcode.InvalidArgument, "an owner uuid (vmNicUuid) is required")
	case len(ownerUUID) > maxForeignUUIDLen:
		return errcode.New(errcode.InvalidArgument, "owner uuid is longer than %d characters", maxForeignUUIDLen)
	}
	return nil
}

// allocatableRanges reads the network, checks it is Enabled, and returns
// its ranges (only rangeUUID's if given), lowest first.
func allocatableRanges(gdb *gorm.DB, l3UUID, rangeUUID string) (L3NetworkVO, []IpRangeVO, error) {
	l3, err := getL3(gdb, l3UUID)
	if err != nil {
		return L3NetworkVO{}, nil, err
	}
	if l3.State != L3StateEnabled {
		return L3NetworkVO{}, nil, errcode.New(errcode.InvalidState, "l3 network %s is %s; IPs are allocated on Enabled networks only", l3UUID, l3.State)
	}
	q := gdb.Where("l3_network_uuid = ?", l3UUID)
	if rangeUUID != "" {
		q = q.Where("uuid = ?", rangeUUID)
	}
	var ranges []IpRangeVO
	if err := q.Order("start_ip_long").Find(&ranges).Error; err != nil {
		return L3NetworkVO{}, nil, fmt.Errorf("read ip ranges of l3 network %s: %w", l3UUID, err)
	}
	if rangeUUID != "" && len(ranges) == 0 {
		return L3NetworkVO{}, nil, errcode.New(errcode.ResourceNotFound, "ip range %s of l3 network %s not found", rangeUUID, l3UUID)
	}
	return l3, ranges, nil
}

// segment is a stretch [lo, hi] of one range to search.
type segment struct {
	r      *IpRangeVO
	lo, hi int64
}

// findFree returns a free address of ranges (sorted, disjoint): the lowest,
// or with random set the first at or after a random point, wrapping around.
// ok is false when every address is used.
func findFree(gdb *gorm.DB, l3UUID string, ranges []IpRangeVO, random bool) (*IpRangeVO, int64, bool, error) {
	var segs []segment
	if !random {
		for i := range ranges {
			segs = append(segs, segment{&ranges[i], ranges[i].StartIPLong, ranges[i].EndIPLong})
		}
	} else {
		var total int64
		for _, r := range ranges {
			total += r.Size()
		}
		// Map a uniform offset over all the addresses to (range k, point p);
		// search p..end of k, the ranges after k, the ranges before k, and
		// start of k..p-1.
		off := rand.Int64N(total)
		k := 0
		for off >= ranges[k].Size() {
			off -= ranges[k].Size()
			k++
		}
		p := ranges[k].StartIPLong + off
		segs = append(segs, segment{&ranges[k], p, ranges[k].EndIPLong})
		for j := 1; j < len(ranges); j++ {
			r := &ranges[(k+j)%len(ranges)]
			segs = append(segs, segment{r, r.StartIPLong, r.EndIPLong})
		}
		if p > ranges[k].StartIPLong {
			segs = append(segs, segment{&ranges[k], ranges[k].StartIPLong, p - 1})
		}
	}
	for _, s := range segs {
		ip, ok, err := firstFree(gdb, l3UUID, s.lo, s.hi)
		if err != nil {
			return nil, 0, false, err
		}
		if ok {
			return s.r, ip, true, nil
		}
	}
	return nil, 0, false, nil
}

// The gap search reads the used addresses of [lo, hi] in strides: the first
// stride is fetched at once (the common case: a sparse range answers in one
// query); later strides, doubling up to maxStride, are first counted, and
// only a stride with a gap is fetched. A count runs on the unique index
// (l3_network_uuid, ip_in_long) alone, so a block of n used addresses costs
// a sequential index scan of n entries and O(log n) round trips, and no
// more than maxStride addresses are ever sent to the client.
const (
	firstStride = 64
	maxStride   = 4096
)

// firstFree returns the lowest free address in [lo, hi]; ok is false when
// all are used.
func firstFree(gdb *gorm.DB, l3UUID string, lo, hi int64) (ip int64, ok bool, err error) {
	for cursor, n := lo, int64(firstStride); cursor <= hi; cursor, n = cursor+n, min(2*n, maxStride) {
		n = min(n, hi-cursor+1)
		end := cursor + n - 1
		inStride := func() *gorm.DB {
			return gdb.Model(&UsedIpVO{}).Where("l3_network_uuid = ? AND ip_in_long BETWEEN ? AND ?", l3UUID, cursor, end)
		}
		if n > firstStride {
			var used int64
			if err := inStride().Count(&used).Error; err != nil {
				return 0, false, fmt.Errorf("count used ips in %s-%s: %w", formatIPv4(uint32(cursor)), formatIPv4(uint32(end)), err)
			}
			if used == n {
				continue
			}
		}
		var ips []int64
		if err := inStride().Order("ip_in_long").Pluck("ip_in_long", &ips).Error; err != nil {
			return 0, false, fmt.Errorf("read used ips in %s-%s: %w", formatIPv4(uint32(cursor)), formatIPv4(uint32(end)), err)
		}
		// ips is sorted and distinct: the first index where it departs from
		// cursor, cursor+1, ... is the first free address.
		for i, v := range ips {
			if v != cursor+int64(i) {
				return cursor + int64(i), true, nil
			}
		}
		if int64(len(ips)) < n {
			return cursor + int64(len(ips)), true, nil
		}
	}
	return 0, false, nil
}

// insertUsedIP inserts the row for ip of range r. A collision is returned
// as is (see isCollision); a vanished network or range is ResourceNotFound.
func insertUsedIP(gdb *gorm.DB, r *IpRangeVO, ip int64, ownerUUID string) (UsedIpVO, error) {
	u := UsedIpVO{
		UUID: uid.New(), L3NetworkUUID: r.L3NetworkUUID, IPRangeUUID: r.UUID,
		IP: formatIPv4(uint32(ip)), IPInLong: ip, Netmask: r.Netmask, Gateway: r.Gateway,
		IPVersion: IPv4, VMNicUUID: ownerUUID,
	}
	err := gdb.Create(&u).Error
	switch {
	case err == nil:
		return u, nil
	case isCollision(err):
		return UsedIpVO{}, err
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return UsedIpVO{}, errcode.New(errcode.ResourceNotFound, "ip range %s of l3 network %s was deleted", r.UUID, r.L3NetworkUUID)
	}
	return UsedIpVO{}, fmt.Errorf("insert used ip %s of l3 network %s: %w", u.IP, r.L3NetworkUUID, err)
}

// isCollision reports whether an insert lost a race with another
// allocation: the address is taken (duplicate key) or InnoDB chose this
// insert as a deadlock victim.
func isCollision(err error) bool {
	return errors.Is(err, gorm.ErrDuplicatedKey) || isDeadlock(err)
}

const mysqlDeadlock = 1213 // ER_LOCK_DEADLOCK

func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == mysqlDeadlock
}
