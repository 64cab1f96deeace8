package netguard_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"mplane/internal/netguard"
)

func TestPolicy(t *testing.T) {
	allow, err := netguard.ParsePrefixes("127.0.0.2, 10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	deny, _ := netguard.ParsePrefixes("10.9.0.0/16")
	p := netguard.Policy{Allow: allow, Deny: deny, Default: netguard.Internal}
	for addr, ok := range map[string]bool{
		"127.0.0.1": false, "127.0.0.2": true, "::1": false, "169.254.169.254": false, "fe80::1": false, "0.0.0.0": false,
		"224.0.0.1": false, "10.1.2.3": true, "10.9.1.1": false, "192.0.2.10": true, "::ffff:127.0.0.1": false, "2001:db8::1": true,
	} {
		err := p.Check(netip.MustParseAddr(addr))
		if (err == nil) != ok {
			t.Errorf("Check(%s) = %v, want allowed %v", addr, err, ok)
		}
	}
	if err := p.CheckHost("[::1]"); err == nil {
		t.Error("CheckHost([::1]) allowed")
	}
	if err := p.CheckHost("hooks.example"); err != nil {
		t.Errorf("a name is checked when dialled, not before: %v", err)
	}
	for _, bad := range []string{"10.0.0.0/33", "not-an-address", "10.0.0.0/8/1"} {
		if _, err := netguard.ParsePrefixes(bad); err == nil {
			t.Errorf("ParsePrefixes(%q) accepted", bad)
		}
	}
}

// A name that resolves to a refused address is refused when dialled: the
// check is on the address the connection goes to, after DNS.
func TestDialerChecksTheAddressDialled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refusing := netguard.Policy{Default: netguard.Internal}
	if _, err := refusing.Dialer(5*time.Second).DialContext(ctx, "tcp", "localhost:"+port); err == nil || !strings.Contains(err.Error(), "internal") {
		t.Fatalf("dial localhost: %v, want refused as internal", err)
	}
	allowing := netguard.Policy{Allow: netguard.Internal, Default: netguard.Internal}
	c, err := allowing.Dialer(5*time.Second).DialContext(ctx, "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("dial an allowed address: %v", err)
	}
	c.Close()
}

func TestOnly(t *testing.T) {
	nets, _ := netguard.ParsePrefixes("10.0.0.0/8")
	p := netguard.Only(nets, "is not in agent_networks")
	if err := p.Check(netip.MustParseAddr("10.2.3.4")); err != nil {
		t.Errorf("inside: %v", err)
	}
	if err := p.Check(netip.MustParseAddr("192.0.2.1")); err == nil || err.Error() != "address 192.0.2.1 is not in agent_networks" {
		t.Errorf("outside: %v", err)
	}
	if err := p.Check(netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("an IPv6 address outside allowed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.Dialer(time.Second).DialContext(ctx, "tcp", "localhost:1"); err == nil || !strings.Contains(err.Error(), "is not in agent_networks") {
		t.Errorf("dial a name outside: %v", err)
	}
	if err := netguard.Only(nil, "x").Check(netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Errorf("no networks allows all: %v", err)
	}
}
