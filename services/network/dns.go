package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"gorm.io/gorm"

	"mplane/errcode"
	"mplane/services/resource"
)

// DNSParams name an L3 network and a DNS server's address, as ZStack's
// AddDnsToL3Network (POST /v1/l3-networks/{l3NetworkUuid}/dns, {"params":
// {"dns": "8.8.8.8"}}) and RemoveDnsFromL3Network (DELETE
// /v1/l3-networks/{l3NetworkUuid}/dns/{dns}) do.
type DNSParams struct {
	L3NetworkUUID string `json:"l3NetworkUuid"`
	// DNS is an IPv4 or IPv6 address; it is kept in its canonical form
	// (2001:DB8::1 as 2001:db8::1).
	DNS string `json:"dns"`
}

// Validate checks that both are given and that dns is an IP address.
func (p *DNSParams) Validate() error {
	var problems []string
	if strings.TrimSpace(p.L3NetworkUUID) == "" {
		problems = append(problems, "l3NetworkUuid is required")
	}
	if strings.TrimSpace(p.DNS) == "" {
		problems = append(problems, "dns is required (the address of a DNS server)")
	} else if _, err := dnsAddress(p.DNS); err != nil {
		problems = append(problems, err.Error())
	}
	return resource.Invalid(problems)
}

// dnsAddress is the canonical form of a DNS server's address.
func dnsAddress(s string) (string, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("dns %q is not an IP address", s)
	}
	return a.Unmap().String(), nil
}

// addDNS adds a DNS server to l3 (in the network's chain, tx its
// transaction), after the ones it has. One it has already is a no-op, as a
// redelivered call must be (ZStack refuses it).
func addDNS(ctx context.Context, tx *gorm.DB, l3 *L3NetworkVO, p DNSParams) error {
	dns, err := dnsAddress(p.DNS)
	if err != nil {
		return errcode.New(errcode.InvalidArgument, "%v", err)
	}
	for _, d := range l3.DNS {
		if d == dns {
			return nil
		}
	}
	err = tx.WithContext(ctx).Create(&L3NetworkDNSVO{L3NetworkUUID: l3.UUID, DNS: dns, CreateDate: now()}).Error
	switch {
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return nil
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return errcode.New(errcode.ResourceNotFound, "l3 network %s not found", l3.UUID)
	case err != nil:
		return errcode.Wrap(errcode.Internal, err, "add dns %s to l3 network %s", dns, l3.UUID)
	}
	return touchL3(ctx, tx, l3.UUID)
}

// removeDNS removes a DNS server from l3. One it does not have is a no-op
// (as in ZStack).
func removeDNS(ctx context.Context, tx *gorm.DB, l3 *L3NetworkVO, p DNSParams) error {
	dns, err := dnsAddress(p.DNS)
	if err != nil {
		return errcode.New(errcode.InvalidArgument, "%v", err)
	}
	res := tx.WithContext(ctx).Where("l3_network_uuid = ? AND dns = ?", l3.UUID, dns).Delete(&L3NetworkDNSVO{})
	if res.Error != nil {
		return errcode.Wrap(errcode.Internal, res.Error, "remove dns %s from l3 network %s", dns, l3.UUID)
	}
	if res.RowsAffected == 0 {
		return nil
	}
	return touchL3(ctx, tx, l3.UUID)
}

// touchL3 sets an L3 network's lastOpDate.
func touchL3(ctx context.Context, tx *gorm.DB, uuid string) error {
	if err := tx.WithContext(ctx).Model(&L3NetworkVO{}).Where("uuid = ?", uuid).Update("last_op_date", now()).Error; err != nil {
		return errcode.Wrap(errcode.Internal, err, "update l3 network %s", uuid)
	}
	return nil
}
