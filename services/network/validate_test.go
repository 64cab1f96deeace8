package network

import (
	"encoding/json"
	"strings"
	"testing"

	"mplane/errcode"
)

func TestAddIpRangeValidation(t *testing.T) {
	base := IPRangeParams{L3NetworkUUID: "l3", Name: "r",
		StartIP: "192.168.1.10", EndIP: "192.168.1.200", Netmask: "255.255.255.0", Gateway: "192.168.1.1"}
	with := func(f func(*IPRangeParams)) IPRangeParams {
		p := base
		f(&p)
		return p
	}
	tests := []struct {
		name    string
		p       IPRangeParams
		wantErr string // empty: valid
		want    ipRangeSpec
	}{
		{name: "valid", p: base},
		{name: "gateway above the range", p: with(func(p *IPRangeParams) { p.Gateway = "192.168.1.254" })},
		{name: "single address range", p: with(func(p *IPRangeParams) { p.EndIP = "192.168.1.10" })},
		{name: "bad start", p: with(func(p *IPRangeParams) { p.StartIP = "192.168.1.300" }), wantErr: `startIp "192.168.1.300" is not an IPv4 address`},
		{name: "ipv6 end", p: with(func(p *IPRangeParams) { p.EndIP = "fe80::1" }), wantErr: `endIp "fe80::1" is not an IPv4 address`},
		{name: "ipv4-mapped ipv6", p: with(func(p *IPRangeParams) { p.StartIP = "::ffff:192.168.1.10" }), wantErr: "is not an IPv4 address"},
		{name: "hostname gateway", p: with(func(p *IPRangeParams) { p.Gateway = "gw.local" }), wantErr: `gateway "gw.local" is not an IPv4 address`},
		{name: "leading zeros", p: with(func(p *IPRangeParams) { p.StartIP = "192.168.1.010" }), wantErr: "is not an IPv4 address"},
		{name: "non-contiguous netmask", p: with(func(p *IPRangeParams) { p.Netmask = "255.0.255.0" }), wantErr: "its one bits must be contiguous"},
		{name: "netmask /32", p: with(func(p *IPRangeParams) { p.Netmask = "255.255.255.255" }), wantErr: "prefix length must be between /1 and /30"},
		{name: "netmask /31", p: with(func(p *IPRangeParams) { p.Netmask = "255.255.255.254" }), wantErr: "prefix length must be between"},
		{name: "netmask zero", p: with(func(p *IPRangeParams) { p.Netmask = "0.0.0.0" }), wantErr: "prefix length must be between"},
		{name: "netmask not an address", p: with(func(p *IPRangeParams) { p.Netmask = "24" }), wantErr: `netmask "24" is not an IPv4 address`},
		{name: "start after end", p: with(func(p *IPRangeParams) { p.StartIP, p.EndIP = "192.168.1.200", "192.168.1.10" }), wantErr: "startIp 192.168.1.200 is after endIp 192.168.1.10"},
		{name: "gateway inside the range", p: with(func(p *IPRangeParams) { p.Gateway = "192.168.1.100" }), wantErr: "gateway 192.168.1.100 must not be inside the range 192.168.1.10-192.168.1.200"},
		{name: "gateway is the start", p: with(func(p *IPRangeParams) { p.Gateway = "192.168.1.10" }), wantErr: "must not be inside the range"},
		{name: "gateway in another network", p: with(func(p *IPRangeParams) { p.Gateway = "192.168.2.1" }), wantErr: "must be in the gateway's network 192.168.2.0/24"},
		{name: "end in another network", p: with(func(p *IPRangeParams) { p.EndIP = "192.168.2.20" }), wantErr: "must be in the gateway's network 192.168.1.0/24"},
		{name: "range includes the network address", p: with(func(p *IPRangeParams) { p.StartIP = "192.168.1.0" }), wantErr: "must not include the network address 192.168.1.0"},
		{name: "range includes the broadcast address", p: with(func(p *IPRangeParams) { p.EndIP = "192.168.1.255" }), wantErr: "must not include the broadcast address 192.168.1.255"},
		{name: "gateway is the network address", p: with(func(p *IPRangeParams) { p.Gateway = "192.168.1.0" }), wantErr: "gateway 192.168.1.0 is the network address"},
		{name: "gateway is the broadcast address", p: with(func(p *IPRangeParams) { p.Gateway = "192.168.1.255" }), wantErr: "gateway 192.168.1.255 is the broadcast address"},
		{name: "missing gateway", p: with(func(p *IPRangeParams) { p.Gateway = "" }), wantErr: "gateway is required"},
		{name: "long name", p: with(func(p *IPRangeParams) { p.Name = strings.Repeat("n", 256) }), wantErr: "name is longer than 255"},
		{name: "missing l3", p: with(func(p *IPRangeParams) { p.L3NetworkUUID = "" }), wantErr: "l3NetworkUuid is required"},
		{name: "bad uuid", p: with(func(p *IPRangeParams) { p.UUID = "ABC" }), wantErr: `uuid "ABC" is not 32 lowercase hex digits`},
		{
			name: "cidr /24",
			p:    IPRangeParams{L3NetworkUUID: "l3", Name: "r", NetworkCIDR: "10.1.2.0/24"},
			want: ipRangeSpec{start: 0x0a010202, end: 0x0a0102fe, gateway: 0x0a010201, network: 0x0a010200, prefixLen: 24},
		},
		{
			name: "cidr /30 leaves one address",
			p:    IPRangeParams{L3NetworkUUID: "l3", Name: "r", NetworkCIDR: "10.1.2.4/30"},
			want: ipRangeSpec{start: 0x0a010206, end: 0x0a010206, gateway: 0x0a010205, network: 0x0a010204, prefixLen: 30},
		},
		{name: "cidr not a network address", p: IPRangeParams{L3NetworkUUID: "l3", Name: "r", NetworkCIDR: "10.1.2.3/24"}, wantErr: "did you mean 10.1.2.0/24"},
		{name: "cidr /31", p: IPRangeParams{L3NetworkUUID: "l3", Name: "r", NetworkCIDR: "10.1.2.0/31"}, wantErr: "prefix length must be between"},
		{name: "cidr ipv6", p: IPRangeParams{L3NetworkUUID: "l3", Name: "r", NetworkCIDR: "fd00::/64"}, wantErr: "is not an IPv4 network"},
		{name: "cidr and explicit", p: with(func(p *IPRangeParams) { p.NetworkCIDR = "192.168.1.0/24" }), wantErr: "not both"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if tc.want != (ipRangeSpec{}) {
					if got, _ := tc.p.spec(); got != tc.want {
						t.Errorf("spec = %+v, want %+v", got, tc.want)
					}
				}
				return
			}
			wantCode(t, err, errcode.InvalidArgument)
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestIPRangeRow(t *testing.T) {
	tests := []struct {
		name     string
		p        IPRangeParams
		wantName string
		wantCIDR string
		wantMask string
	}{
		{"explicit name", IPRangeParams{L3NetworkUUID: "l3", Name: "pool", NetworkCIDR: "10.0.0.0/16"}, "pool", "10.0.0.0/16", "255.255.0.0"},
		{"default name", IPRangeParams{L3NetworkUUID: "l3", StartIP: "10.0.0.10", EndIP: "10.0.0.20",
			Netmask: "255.255.255.0", Gateway: "10.0.0.1"}, "10.0.0.10-10.0.0.20", "10.0.0.0/24", "255.255.255.0"},
		{"blank name", IPRangeParams{L3NetworkUUID: "l3", Name: " ", NetworkCIDR: "172.16.4.0/22"}, "172.16.4.2-172.16.7.254", "172.16.4.0/22", "255.255.252.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.p.row()
			if err != nil {
				t.Fatal(err)
			}
			if r.Name != tc.wantName || r.NetworkCIDR != tc.wantCIDR || r.Netmask != tc.wantMask || r.IPVersion != IPv4 {
				t.Errorf("row %+v, want name %q cidr %s netmask %s", r, tc.wantName, tc.wantCIDR, tc.wantMask)
			}
		})
	}
}

func TestParamsJSONNames(t *testing.T) {
	var p IPRangeParams
	err := json.Unmarshal([]byte(`{"l3NetworkUuid":"l3","name":"r","startIp":"10.0.0.10","endIp":"10.0.0.20",
		"netmask":"255.255.255.0","gateway":"10.0.0.1","networkCidr":"","description":"d"}`), &p)
	want := IPRangeParams{L3NetworkUUID: "l3", Name: "r", Description: "d", StartIP: "10.0.0.10", EndIP: "10.0.0.20",
		Netmask: "255.255.255.0", Gateway: "10.0.0.1"}
	if err != nil || p != want {
		t.Errorf("ip range params decoded as %+v (%v), want %+v", p, err, want)
	}
	var l3 L3Params
	// The Java SDK's CreateL3NetworkAction sends these.
	err = json.Unmarshal([]byte(`{"name":"pub","description":"d","l2NetworkUuid":"l2","type":"L3BasicNetwork","category":"Public",
		"system":false,"ipVersion":4,"enableIPAM":true,"dnsDomain":"example.org","zoneUuid":"z1"}`), &l3)
	want3 := L3Params{Name: "pub", Description: "d", L2NetworkUUID: "l2", ZoneUUID: "z1", Type: L3BasicNetwork, Category: L3CategoryPublic,
		IPVersion: IPv4, DNSDomain: "example.org"}
	if err != nil || l3.EnableIPAM == nil || !*l3.EnableIPAM {
		t.Errorf("l3 params decoded as %+v (%v): want enableIPAM true", l3, err)
	}
	if l3.EnableIPAM = nil; l3 != want3 {
		t.Errorf("l3 params decoded as %+v, want %+v", l3, want3)
	}
	// The UUID is the REST layer's choice, never a client's.
	data, _ := json.Marshal(L3Params{UUID: "u", Name: "n"})
	if strings.Contains(string(data), `"u"`) {
		t.Errorf("L3Params JSON carries the UUID: %s", data)
	}
}

func TestCreateL3NetworkValidation(t *testing.T) {
	yes, no := true, false
	on := func(p L3Params) L3Params { p.L2NetworkUUID = "l2"; return p }
	tests := []struct {
		name    string
		p       L3Params
		wantErr string
	}{
		{"valid", on(L3Params{Name: "pub"}), ""},
		{"valid with type and uuid", on(L3Params{UUID: strings.Repeat("ab", 16), Name: "pub", Type: L3BasicNetwork}), ""},
		{"valid with zone (checked against the l2's)", on(L3Params{Name: "pub", ZoneUUID: "z1"}), ""},
		{"valid with the sdk's fields", on(L3Params{Name: "pub", Category: "public", IPVersion: 4, EnableIPAM: &yes, DNSDomain: "corp.example.org"}), ""},
		{"valid system", on(L3Params{Name: "sys", System: true, Category: "System"}), ""},
		{"no name", on(L3Params{}), "name is required"},
		{"long name", on(L3Params{Name: strings.Repeat("n", 256)}), "name is longer than 255"},
		{"long description", on(L3Params{Name: "n", Description: strings.Repeat("d", 2049)}), "description is longer"},
		{"no l2", L3Params{Name: "n"}, "l2NetworkUuid is required"},
		{"zone instead of l2", L3Params{Name: "n", ZoneUUID: "z1"}, "l2NetworkUuid is required"},
		{"unknown type", on(L3Params{Name: "n", Type: "L3VpcNetwork"}), `type "L3VpcNetwork" is not supported`},
		{"dashed uuid", on(L3Params{UUID: "6ba7b810-9dad-11d1-80b4-00c04fd430c8", Name: "n"}), "32 lowercase hex"},
		{"unknown category", on(L3Params{Name: "n", Category: "Guest"}), `category "Guest" is not one of Public, Private, System`},
		{"system with a private category", on(L3Params{Name: "n", System: true}), "category Private does not go with system true"},
		{"system category without system", on(L3Params{Name: "n", Category: "System"}), "category System needs system true"},
		{"ipv6", on(L3Params{Name: "n", IPVersion: 6}), "ipVersion 6 is not supported"},
		{"ip version 5", on(L3Params{Name: "n", IPVersion: 5}), "ipVersion 5 is not an IP version"},
		{"ipam disabled", on(L3Params{Name: "n", EnableIPAM: &no}), "IPAM cannot be disabled"},
		{"bad dns domain", on(L3Params{Name: "n", DNSDomain: "a..b"}), `dnsDomain "a..b" is not a valid domain name`},
		{"dns domain with a space", on(L3Params{Name: "n", DNSDomain: "my domain"}), `dnsDomain "my domain" is not a valid domain name`},
		{"problems together", L3Params{Category: "x", IPVersion: 6}, "name is required; l2NetworkUuid is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantCode(t, err, errcode.InvalidArgument)
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestL3ParamsDefaults: Validate writes ZStack's defaults and spelling.
func TestL3ParamsDefaults(t *testing.T) {
	p := L3Params{Name: "n", L2NetworkUUID: "l2", Category: "PUBLIC"}
	if err := p.Validate(); err != nil || p.Category != L3CategoryPublic || p.IPVersion != IPv4 {
		t.Fatalf("Validate: %v, category %q, ipVersion %d; want Public and 4", err, p.Category, p.IPVersion)
	}
	p = L3Params{Name: "n", L2NetworkUUID: "l2"}
	if err := p.Validate(); err != nil || p.Category != L3CategoryPrivate || p.System {
		t.Fatalf("Validate: %v, category %q; want Private", err, p.Category)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate again: %v", err)
	}
}
