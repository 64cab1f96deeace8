// Package netguard decides which addresses the node may connect to on a
// caller's behalf (a webhook URL, a host's management address): a policy
// of allowed and denied networks, checked on the address actually dialled
// (after DNS), so a name that resolves to a forbidden address is refused
// too.
package netguard

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Policy is which addresses may be dialled. An address in Deny is refused;
// else one in Allow is allowed; else one in the networks refused by
// default (Default) is refused; else it is allowed.
type Policy struct {
	Allow   []netip.Prefix
	Deny    []netip.Prefix
	Default []netip.Prefix
	// Refusal says why an address of Default is refused ("is internal
	// ... and not allowed" if empty).
	Refusal string
}

// Only is the policy that allows the networks nets and refuses every
// other address, saying why; with no nets it allows everything.
func Only(nets []netip.Prefix, why string) Policy {
	if len(nets) == 0 {
		return Policy{}
	}
	return Policy{Allow: nets, Default: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, Refusal: why}
}

// Internal are the networks a webhook may not reach unless allowed: the
// node itself and its neighbours' link-local addresses (loopback,
// link-local, unspecified, multicast), where a caller could reach the
// node's own endpoints or a cloud metadata service.
var Internal = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("ff00::/8"),
}

// ParsePrefixes reads a comma-separated list of networks ("10.0.0.0/8,
// 127.0.0.1"); a bare address is a network of one.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or a network (CIDR)", part)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not a network (CIDR such as 10.0.0.0/8)", part)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Check refuses an address the policy does not allow.
func (p Policy) Check(a netip.Addr) error {
	a = a.Unmap()
	switch {
	case contains(p.Deny, a):
		return fmt.Errorf("address %s is in a denied network", a)
	case contains(p.Allow, a):
		return nil
	case contains(p.Default, a):
		if p.Refusal != "" {
			return fmt.Errorf("address %s %s", a, p.Refusal)
		}
		return fmt.Errorf("address %s is internal (loopback, link-local, unspecified or multicast) and not allowed", a)
	}
	return nil
}

// CheckHost checks host when it is an address literal; a name is checked
// when it is dialled (Dialer).
func (p Policy) CheckHost(host string) error {
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return nil
	}
	return p.Check(a)
}

// Dialer is a net.Dialer that refuses, at connect time, an address the
// policy does not allow.
func (p Policy) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout: timeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("dial %s: %w", address, err)
			}
			return p.Check(ap.Addr())
		},
	}
}

// DialContext is Dialer's DialContext, for an http.Transport.
func (p Policy) DialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.Dialer(timeout).DialContext
}
