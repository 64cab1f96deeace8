package network

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"mplane/errcode"
	"mplane/services/resource"
	"mplane/uid"
)

// IPRangeParams are the parameters of an IP range, named as in ZStack's
// AddIpRange and AddIpRangeByNetworkCidr APIs; the JSON form is the REST
// API's "params". Give either StartIP, EndIP, Netmask and Gateway, or
// NetworkCIDR alone.
type IPRangeParams struct {
	// UUID of the new range: 32 lowercase hex digits; empty, a new one.
	// Not part of the JSON form: the REST layer chooses the UUID.
	UUID          string `json:"-"`
	L3NetworkUUID string `json:"l3NetworkUuid"`
	// Name defaults to "<startIp>-<endIp>".
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`

	StartIP string `json:"startIp,omitempty"`
	EndIP   string `json:"endIp,omitempty"`
	Netmask string `json:"netmask,omitempty"`
	Gateway string `json:"gateway,omitempty"`

	// NetworkCIDR, e.g. 192.168.1.0/24, makes the first host address the
	// gateway and every other host address allocatable, as ZStack's
	// AddIpRangeByNetworkCidr does.
	NetworkCIDR string `json:"networkCidr,omitempty"`
}

// ipRangeSpec is a validated range, as numbers.
type ipRangeSpec struct {
	start, end, gateway, network uint32
	prefixLen                    int
}

// Validate checks everything that does not need the database, by ZStack's
// rules: valid IPv4 addresses and netmask; start <= end; start, end and
// gateway in one network; neither the network nor the broadcast address in
// the range or as gateway; the gateway outside the range. The error is an
// errcode.InvalidArgument.
func (p IPRangeParams) Validate() error {
	_, err := p.spec()
	return err
}

func (p IPRangeParams) spec() (ipRangeSpec, error) {
	invalid := func(format string, args ...any) (ipRangeSpec, error) {
		return ipRangeSpec{}, errcode.New(errcode.InvalidArgument, format, args...)
	}
	switch {
	case p.UUID != "" && !uuidPattern.MatchString(p.UUID):
		return invalid("uuid %q is not 32 lowercase hex digits", p.UUID)
	case strings.TrimSpace(p.L3NetworkUUID) == "":
		return invalid("l3NetworkUuid is required")
	case utf8.RuneCountInString(p.Name) > maxNameLen:
		return invalid("name is longer than %d characters", maxNameLen)
	case utf8.RuneCountInString(p.Description) > maxDescriptionLen:
		return invalid("description is longer than %d characters", maxDescriptionLen)
	}

	explicit := p.StartIP != "" || p.EndIP != "" || p.Netmask != "" || p.Gateway != ""
	if p.NetworkCIDR != "" {
		if explicit {
			return invalid("give either networkCidr or startIp, endIp, netmask and gateway, not both")
		}
		network, prefixLen, err := parseCIDR(p.NetworkCIDR)
		if err != nil {
			return ipRangeSpec{}, err
		}
		broadcast := network | ^maskOf(prefixLen)
		return ipRangeSpec{start: network + 2, end: broadcast - 1, gateway: network + 1, network: network, prefixLen: prefixLen}, nil
	}

	for _, f := range []struct{ name, value string }{
		{"startIp", p.StartIP}, {"endIp", p.EndIP}, {"netmask", p.Netmask}, {"gateway", p.Gateway},
	} {
		if f.value == "" {
			return invalid("%s is required (or give networkCidr instead)", f.name)
		}
	}
	start, err := parseIPv4("startIp", p.StartIP)
	if err != nil {
		return ipRangeSpec{}, err
	}
	end, err := parseIPv4("endIp", p.EndIP)
	if err != nil {
		return ipRangeSpec{}, err
	}
	gateway, err := parseIPv4("gateway", p.Gateway)
	if err != nil {
		return ipRangeSpec{}, err
	}
	prefixLen, err := parseNetmask(p.Netmask)
	if err != nil {
		return ipRangeSpec{}, err
	}
	mask := maskOf(prefixLen)
	network := gateway & mask
	broadcast := network | ^mask
	cidr := cidrString(network, prefixLen)
	switch {
	case start > end:
		return invalid("startIp %s is after endIp %s", p.StartIP, p.EndIP)
	case start&mask != network || end&mask != network:
		return invalid("startIp %s and endIp %s must be in the gateway's network %s", p.StartIP, p.EndIP, cidr)
	case gateway == network:
		return invalid("gateway %s is the network address of %s", p.Gateway, cidr)
	case gateway == broadcast:
		return invalid("gateway %s is the broadcast address of %s", p.Gateway, cidr)
	case start == network:
		return invalid("the range must not include the network address %s of %s", formatIPv4(network), cidr)
	case end == broadcast:
		return invalid("the range must not include the broadcast address %s of %s", formatIPv4(broadcast), cidr)
	case start <= gateway && gateway <= end:
		return invalid("gateway %s must not be inside the range %s-%s", p.Gateway, p.StartIP, p.EndIP)
	}
	return ipRangeSpec{start: start, end: end, gateway: gateway, network: network, prefixLen: prefixLen}, nil
}

// Check validates p and verifies it against the database without
// changing it: the L3 network exists (ResourceNotFound) and the range fits
// with the network's other ranges (InvalidArgument). AddIpRange checks the
// same again under a lock; Check is for answering an API call at once.
func (p IPRangeParams) Check(ctx context.Context, gdb *gorm.DB) error {
	r, err := p.row()
	if err != nil {
		return err
	}
	gdb = gdb.WithContext(ctx)
	if _, err := getL3(gdb, p.L3NetworkUUID); err != nil {
		return err
	}
	existing, err := ListIpRanges(ctx, gdb, p.L3NetworkUUID)
	if err != nil {
		return err
	}
	return fits(r, existing)
}

// row validates p and builds the range's row (UUID empty unless given).
func (p IPRangeParams) row() (IpRangeVO, error) {
	s, err := p.spec()
	if err != nil {
		return IpRangeVO{}, err
	}
	r := IpRangeVO{
		Base: resource.NewBase(p.UUID, p.Name, p.Description), L3NetworkUUID: p.L3NetworkUUID,
		StartIP: formatIPv4(s.start), EndIP: formatIPv4(s.end),
		Netmask: formatIPv4(maskOf(s.prefixLen)), Gateway: formatIPv4(s.gateway),
		NetworkCIDR: cidrString(s.network, s.prefixLen), PrefixLen: s.prefixLen, IPVersion: IPv4,
		StartIPLong: int64(s.start), EndIPLong: int64(s.end),
	}
	if strings.TrimSpace(r.Name) == "" {
		r.Name = r.StartIP + "-" + r.EndIP
	}
	return r, nil
}

// fits checks a new range against the other ranges of its network: no
// overlap, and the same gateway and netmask.
func fits(r IpRangeVO, existing []IpRangeVO) error {
	for _, e := range existing {
		if r.StartIPLong <= e.EndIPLong && e.StartIPLong <= r.EndIPLong {
			return errcode.New(errcode.InvalidArgument, "ip range %s-%s overlaps ip range %s (%s-%s) of l3 network %s",
				r.StartIP, r.EndIP, e.UUID, e.StartIP, e.EndIP, r.L3NetworkUUID)
		}
		if e.Gateway != r.Gateway || e.Netmask != r.Netmask {
			return errcode.New(errcode.InvalidArgument,
				"every ip range of l3 network %s must have gateway %s and netmask %s, as ip range %s has; got %s and %s",
				r.L3NetworkUUID, e.Gateway, e.Netmask, e.UUID, r.Gateway, r.Netmask)
		}
	}
	return nil
}

// AddIpRange validates p and adds the range to its L3 network. Besides
// Validate's rules, the range must not overlap another range of the same
// L3 network, and every range of one L3 network has the same gateway and
// netmask. Ranges are added one at a time per L3 network (its row is
// locked), so two concurrent additions cannot overlap either. A UUID that
// exists already is InvalidArgument.
func AddIpRange(ctx context.Context, gdb *gorm.DB, p IPRangeParams) (IpRangeVO, error) {
	r, err := p.row()
	if err != nil {
		return IpRangeVO{}, err
	}
	if r.UUID == "" {
		r.UUID = uid.New()
	}
	err = gdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := lockL3(tx, p.L3NetworkUUID); err != nil {
			return err
		}
		var existing []IpRangeVO
		if err := tx.Where("l3_network_uuid = ?", p.L3NetworkUUID).Order("start_ip_long").Find(&existing).Error; err != nil {
			return fmt.Errorf("read ip ranges: %w", err)
		}
		if err := fits(r, existing); err != nil {
			return err
		}
		return tx.Create(&r).Error
	})
	if err == nil {
		return r, nil
	}
	var ce *errcode.Error
	switch {
	case errors.As(err, &ce):
		return IpRangeVO{}, err
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return IpRangeVO{}, errcode.New(errcode.InvalidArgument, "an ip range with uuid %s already exists", r.UUID)
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return IpRangeVO{}, errcode.New(errcode.ResourceNotFound, "l3 network %s not found", p.L3NetworkUUID)
	}
	return IpRangeVO{}, fmt.Errorf("add ip range to l3 network %s: %w", p.L3NetworkUUID, err)
}

// ListIpRanges returns the ranges of an L3 network, lowest first.
func ListIpRanges(ctx context.Context, gdb *gorm.DB, l3UUID string) ([]IpRangeVO, error) {
	var rs []IpRangeVO
	if err := gdb.WithContext(ctx).Where("l3_network_uuid = ?", l3UUID).Order("start_ip_long").Find(&rs).Error; err != nil {
		return nil, fmt.Errorf("list ip ranges of l3 network %s: %w", l3UUID, err)
	}
	return rs, nil
}

// DeleteIpRange deletes a range. It fails with InvalidState while any IP of
// the range is in use; deleting a range that does not exist succeeds.
func DeleteIpRange(ctx context.Context, gdb *gorm.DB, uuid string) error {
	err := gdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r IpRangeVO
		err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Where("uuid = ?", uuid).Take(&r).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read ip range: %w", err)
		}
		var used int64
		if err := tx.Model(&UsedIpVO{}).Where("ip_range_uuid = ?", uuid).Count(&used).Error; err != nil {
			return fmt.Errorf("count used ips: %w", err)
		}
		if used > 0 {
			return errcode.New(errcode.InvalidState, "ip range %s has %d IP address(es) in use; release them first", uuid, used)
		}
		return tx.Where("uuid = ?", uuid).Delete(&IpRangeVO{}).Error
	})
	var ce *errcode.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return err
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return errcode.New(errcode.InvalidState, "ip range %s has IP addresses in use; release them first", uuid)
	case isDeadlock(err):
		return errcode.Wrap(errcode.Conflict, err, "delete ip range %s raced with an allocation", uuid)
	}
	return fmt.Errorf("delete ip range %s: %w", uuid, err)
}
