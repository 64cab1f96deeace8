package network

import (
	"fmt"
	"math/bits"
	"net/netip"

	"mplane/errcode"
)

// parseIPv4 parses a dotted-quad IPv4 address; field names the parameter in
// the error.
func parseIPv4(field, s string) (uint32, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return 0, errcode.New(errcode.InvalidArgument, "%s %q is not an IPv4 address", field, s)
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), nil
}

func formatIPv4(v uint32) string {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

// Prefix lengths an IP range's network may have: at least one bit of
// network, and room for a network address, a gateway, one host and a
// broadcast address.
const (
	minPrefixLen = 1
	maxPrefixLen = 30
)

// parseNetmask parses a netmask such as 255.255.255.0 into its prefix
// length.
func parseNetmask(s string) (int, error) {
	m, err := parseIPv4("netmask", s)
	if err != nil {
		return 0, err
	}
	ones := bits.LeadingZeros32(^m)
	if m<<ones != 0 {
		return 0, errcode.New(errcode.InvalidArgument, "netmask %q is not a valid netmask (its one bits must be contiguous)", s)
	}
	if ones < minPrefixLen || ones > maxPrefixLen {
		return 0, errcode.New(errcode.InvalidArgument, "netmask %q (/%d) is not allowed: the prefix length must be between /%d and /%d",
			s, ones, minPrefixLen, maxPrefixLen)
	}
	return ones, nil
}

func maskOf(prefixLen int) uint32 { return ^uint32(0) << (32 - prefixLen) }

// parseCIDR parses an IPv4 network such as 10.0.0.0/24; the address must be
// the network address.
func parseCIDR(s string) (network uint32, prefixLen int, err error) {
	p, perr := netip.ParsePrefix(s)
	if perr != nil || !p.Addr().Is4() {
		return 0, 0, errcode.New(errcode.InvalidArgument, "networkCidr %q is not an IPv4 network such as 192.168.1.0/24", s)
	}
	if p.Masked() != p {
		return 0, 0, errcode.New(errcode.InvalidArgument, "networkCidr %q is not a network address; did you mean %s?", s, p.Masked())
	}
	if p.Bits() < minPrefixLen || p.Bits() > maxPrefixLen {
		return 0, 0, errcode.New(errcode.InvalidArgument, "networkCidr %q is not allowed: the prefix length must be between /%d and /%d",
			s, minPrefixLen, maxPrefixLen)
	}
	n, _ := parseIPv4("networkCidr", p.Addr().String())
	return n, p.Bits(), nil
}

func cidrString(network uint32, prefixLen int) string {
	return fmt.Sprintf("%s/%d", formatIPv4(network), prefixLen)
}
