package network_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/host"
	"mplane/services/network"
	"mplane/services/resource"
	"mplane/uid"
)

func TestBridgeName(t *testing.T) {
	md5Hex := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	vlan, vni, maxVni := 100, 5000, network.MaxVNI
	for _, tc := range []struct {
		name string
		l2   network.L2NetworkVO
		want string
	}{
		{"no vlan", network.L2NetworkVO{Type: network.L2NoVlanNetwork, PhysicalInterface: "eth0"}, "br_eth0"},
		{"no vlan, 12 characters fit", network.L2NetworkVO{Type: network.L2NoVlanNetwork, PhysicalInterface: "enp175s0f0np"}, "br_enp175s0f0np"},
		{"no vlan, long interface", network.L2NetworkVO{Type: network.L2NoVlanNetwork, PhysicalInterface: "enp175s0f0np0"},
			"br_" + md5Hex("enp175s0f0np0")[:12]},
		{"vlan", network.L2NetworkVO{Type: network.L2VlanNetwork, PhysicalInterface: "eth0", Vlan: &vlan, VirtualNetworkID: 100}, "br_eth0_100"},
		{"vlan from the virtual network id", network.L2NetworkVO{Type: network.L2VlanNetwork, PhysicalInterface: "bond0", VirtualNetworkID: 7}, "br_bond0_7"},
		{"vlan, long interface", network.L2NetworkVO{Type: network.L2VlanNetwork, PhysicalInterface: "enp175s0f0", VirtualNetworkID: 4094},
			"br_" + md5Hex("enp175s0f0")[:7] + "_4094"},
		{"vxlan", network.L2NetworkVO{Type: network.VxlanNetwork, PhysicalInterface: "eth0", Vni: &vni, VirtualNetworkID: vni}, "br_vx_5000"},
		{"largest vni", network.L2NetworkVO{Type: network.VxlanNetwork, Vni: &maxVni}, "br_vx_16777214"},
		{"pool", network.L2NetworkVO{Type: network.VxlanNetworkPool, PhysicalInterface: "eth0"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := network.BridgeName(&tc.l2)
			if got != tc.want {
				t.Fatalf("BridgeName = %q, want %q", got, tc.want)
			}
			if len(got) > 15 {
				t.Fatalf("%q is longer than a Linux interface name", got)
			}
		})
	}
}

// agentLog records the bodies of the commands an agent receives.
type agentLog struct {
	mu     sync.Mutex
	bodies map[string][]json.RawMessage
}

func (l *agentLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/network/") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			l.mu.Lock()
			if l.bodies == nil {
				l.bodies = map[string][]json.RawMessage{}
			}
			l.bodies[r.URL.Path] = append(l.bodies[r.URL.Path], body)
			l.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// last is the last body sent to path, decoded.
func (l *agentLog) last(t *testing.T, path string) map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	bs := l.bodies[path]
	if len(bs) == 0 {
		t.Fatalf("no %s command sent", path)
	}
	var m map[string]any
	if err := json.Unmarshal(bs[len(bs)-1], &m); err != nil {
		t.Fatal(err)
	}
	delete(m, protocol.TimeoutField) // the client's
	return m
}

// sent counts the commands with path that reached the agent.
func sent(a *kvm.Agent, path string) int {
	n := 0
	for _, ar := range a.Arrivals() {
		if ar.Path == path {
			n++
		}
	}
	return n
}

func bridgeNames(a *kvm.Agent) []string {
	var out []string
	for _, b := range a.Bridges() {
		out = append(out, b.Name+"="+b.Device)
	}
	sort.Strings(out)
	return out
}

func realizedOn(t *testing.T, st *servertest.Stack, hostUUID string) []string {
	t.Helper()
	var l2s []string
	if err := st.DB().Model(&network.L2NetworkHostRefVO{}).Where("host_uuid = ?", hostUUID).Order("l2_network_uuid").
		Pluck("l2_network_uuid", &l2s).Error; err != nil {
		t.Fatal(err)
	}
	return l2s
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBridges realizes L2 networks of each type on simulated hosts of an
// embedded cloud: one createbridge per host and L2 network with kvmagent's
// path and fields, sent again after a reconnect; a failure names the L2
// network, the bridge and the host, and records nothing.
func TestBridges(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	zone, cluster := st.Defaults["zone"], st.Defaults["cluster"]
	var log1 agentLog
	h1 := st.AddHost(t, servertest.AgentOptions{Wrap: log1.wrap})
	h2 := st.AddHost(t, servertest.AgentOptions{})
	bridges := st.Bridges()

	attach := func(l2 string) {
		t.Helper()
		if _, err := client.CreateAndWait[network.L2NetworkVO](ctx, st.Client, "l2-networks/"+l2+"/clusters/"+cluster, nil); err != nil {
			t.Fatalf("attach %s: %v", l2, err)
		}
	}
	novlan := createRaw(t, ctx, st, "l2-networks/no-vlan", map[string]any{"name": "br-flat", "zoneUuid": zone, "physicalInterface": "eth7"})["uuid"].(string)
	vlan := createRaw(t, ctx, st, "l2-networks/vlan", map[string]any{"name": "br-v10", "zoneUuid": zone, "physicalInterface": "eth8", "vlan": 10})["uuid"].(string)
	pool := createRaw(t, ctx, st, "l2-networks/vxlan-pool", map[string]any{"name": "br-pool", "zoneUuid": zone, "physicalInterface": "eth9"})["uuid"].(string)
	createRange(t, ctx, st, "l2-networks/vxlan-pool/"+pool+"/vni-range", map[string]any{"name": "r", "startVni": 5000, "endVni": 5010})
	vxlan := createRaw(t, ctx, st, "l2-networks/vxlan", map[string]any{"name": "br-vx", "poolUuid": pool, "vni": 5000})["uuid"].(string)
	for _, l2 := range []string{novlan, vlan, pool} {
		attach(l2)
	}
	l3a := createL3On(t, ctx, st, "br-a", novlan).UUID
	l3a2 := createL3On(t, ctx, st, "br-a2", novlan).UUID
	l3b := createL3On(t, ctx, st, "br-b", vlan).UUID
	l3c := createL3On(t, ctx, st, "br-c", vxlan).UUID
	// Rows the API does not make: an L3 network without an L2 network
	// (from before L2 networks) and one on the pool itself.
	bare := network.L3NetworkVO{Base: resource.NewBase(uid.New(), "br-bare", ""), ZoneUUID: zone,
		Type: network.L3BasicNetwork, State: network.L3StateEnabled}
	onPool := bare
	onPool.Base, onPool.L2NetworkUUID = resource.NewBase(uid.New(), "br-on-pool", ""), &pool
	for _, row := range []*network.L3NetworkVO{&bare, &onPool} {
		if err := st.DB().Create(row).Error; err != nil {
			t.Fatal(err)
		}
	}
	l3Bare := bare.UUID
	// A VXLAN peer: another host of the pool's cluster (down; its address
	// refuses connections).
	peer := host.HostVO{UUID: uid.New(), Name: "br-peer", ManagementIP: "127.0.0.3", AgentPort: 1, ZoneUUID: zone, ClusterUUID: cluster,
		HypervisorType: host.HypervisorKVM, State: host.StateDisabled, Status: host.StatusDisconnected, CreateDate: time.Now(), LastOpDate: time.Now()}
	if err := st.DB().Create(&peer).Error; err != nil {
		t.Fatal(err)
	}

	t.Run("once per host and l2 network", func(t *testing.T) {
		got, err := bridges.Realize(ctx, h1.UUID, []string{l3a, l3a2, l3Bare})
		want := map[string]string{l3a: "br_eth7", l3a2: "br_eth7", l3Bare: ""}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Realize: %v, %v; want %v", got, err, want)
		}
		if _, err := bridges.Realize(ctx, h1.UUID, []string{l3a2}); err != nil {
			t.Fatal(err)
		}
		// Many VM starts at once on the host, on the VLAN network.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				got, err := bridges.Realize(ctx, h1.UUID, []string{l3b, l3a})
				if err == nil && (got[l3b] != "br_eth8_10" || got[l3a] != "br_eth7") {
					t.Errorf("concurrent Realize: %v", got)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n, m := sent(h1.Agent.Agent, protocol.PathCreateNoVlanBridge), sent(h1.Agent.Agent, protocol.PathCreateVlanBridge); n != 1 || m != 1 {
			t.Fatalf("host 1 got %d no-vlan and %d vlan createbridge commands, want 1 and 1", n, m)
		}
		if got, want := bridgeNames(h1.Agent.Agent), []string{"br_eth7=eth7", "br_eth8_10=eth8.10"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("host 1 bridges %v, want %v", got, want)
		}
		wantL2s := []string{novlan, vlan}
		sort.Strings(wantL2s)
		if got := realizedOn(t, st, h1.UUID); !reflect.DeepEqual(got, wantL2s) {
			t.Fatalf("recorded on host 1: %v, want %v", got, wantL2s)
		}
		// Each host gets its own.
		if _, err := bridges.Realize(ctx, h2.UUID, []string{l3a}); err != nil {
			t.Fatal(err)
		}
		if n := sent(h2.Agent.Agent, protocol.PathCreateNoVlanBridge); n != 1 || !reflect.DeepEqual(bridgeNames(h2.Agent.Agent), []string{"br_eth7=eth7"}) {
			t.Fatalf("host 2: %d createbridge, bridges %v", n, bridgeNames(h2.Agent.Agent))
		}
		if got, err := bridges.Realize(ctx, h1.UUID, nil); err != nil || len(got) != 0 {
			t.Fatalf("Realize of no network: %v, %v", got, err)
		}
	})

	t.Run("kvmagent's paths and fields", func(t *testing.T) {
		if got, err := bridges.Realize(ctx, h1.UUID, []string{l3c}); err != nil || got[l3c] != "br_vx_5000" {
			t.Fatalf("Realize vxlan: %v, %v", got, err)
		}
		for _, tc := range []struct {
			path string
			want map[string]any
		}{
			{protocol.PathCreateNoVlanBridge, map[string]any{"physicalInterfaceName": "eth7", "bridgeName": "br_eth7", "l2NetworkUuid": novlan,
				"disableIptables": false, "mtu": 1500.0}},
			{protocol.PathCreateVlanBridge, map[string]any{"physicalInterfaceName": "eth8", "bridgeName": "br_eth8_10", "l2NetworkUuid": vlan,
				"disableIptables": false, "mtu": 1500.0, "vlan": 10.0}},
			{protocol.PathCreateVxlanBridge, map[string]any{"bridgeName": "br_vx_5000", "l2NetworkUuid": vxlan, "vtepIp": h1.Agent.IP,
				"vni": 5000.0, "dstport": 8472.0, "peers": []any{"127.0.0.3"}, "mtu": 1450.0}},
		} {
			if got := log1.last(t, tc.path); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s body %v\nwant %v", tc.path, got, tc.want)
			}
		}
		var vx kvm.Bridge
		for _, b := range h1.Agent.Bridges() {
			if b.Name == "br_vx_5000" {
				vx = b
			}
		}
		if vx.Device != "vxlan5000" || vx.Vni != 5000 || vx.VtepIP != h1.Agent.IP || !reflect.DeepEqual(vx.Peers, []string{"127.0.0.3"}) {
			t.Errorf("vxlan bridge on the host: %+v", vx)
		}
	})

	t.Run("refused networks", func(t *testing.T) {
		before := len(h1.Agent.Arrivals())
		_, err := bridges.Realize(ctx, h1.UUID, []string{l3a, onPool.UUID})
		wantCode(t, err, errcode.InvalidArgument, "L3 network "+onPool.UUID+" is on vxlan pool "+pool, "carries no NIC")
		missing := uid.New()
		_, err = bridges.Realize(ctx, h1.UUID, []string{missing})
		wantCode(t, err, errcode.InvalidArgument, "L3 network "+missing+" does not exist")
		_, err = bridges.Realize(ctx, "", []string{l3a})
		wantCode(t, err, errcode.InvalidArgument, "no host")
		if after := len(h1.Agent.Arrivals()); after != before {
			t.Fatalf("refused calls sent %d commands", after-before)
		}
	})

	t.Run("sent again after a reconnect", func(t *testing.T) {
		paths := []string{protocol.PathCreateNoVlanBridge, protocol.PathCreateVlanBridge, protocol.PathCreateVxlanBridge}
		before := map[string]int{}
		for _, p := range paths {
			before[p] = sent(h1.Agent.Agent, p)
		}
		connects := sent(h1.Agent.Agent, protocol.PathConnect)
		if _, err := client.ActionAndWait[host.HostVO](ctx, st.Client, "hosts", h1.UUID, "reconnectHost", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "the bridges to be sent again", func() bool {
			for _, p := range paths {
				if sent(h1.Agent.Agent, p) != before[p]+1 {
					return false
				}
			}
			return true
		})
		// After the connect, in the order they were realized.
		var order []string
		seen := 0
		for _, ar := range h1.Agent.Arrivals() {
			if ar.Path == protocol.PathConnect {
				seen++
				continue
			}
			if seen > connects && strings.HasPrefix(ar.Path, "/network/") {
				order = append(order, ar.Path)
			}
		}
		if len(order) != 3 || order[2] != protocol.PathCreateVxlanBridge {
			t.Fatalf("createbridge commands after the reconnect: %v", order)
		}
		if _, err := bridges.Realize(ctx, h1.UUID, []string{l3a, l3b, l3c}); err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if n := sent(h1.Agent.Agent, p); n != before[p]+1 {
				t.Errorf("%s sent %d times, want %d", p, n, before[p]+1)
			}
		}
		if n := sent(h2.Agent.Agent, protocol.PathCreateNoVlanBridge); n != 1 {
			t.Errorf("host 2 got %d createbridge, want 1: only the reconnected host gets them again", n)
		}
	})

	t.Run("failing agent", func(t *testing.T) {
		h3 := st.AddHost(t, servertest.AgentOptions{Agent: kvm.Options{FailRate: 1, FaultPaths: []string{protocol.PathCreateNoVlanBridge}}})
		_, err := bridges.Realize(ctx, h3.UUID, []string{l3b, l3a})
		wantCode(t, err, errcode.AgentError, "create bridge br_eth7 of L2NoVlanNetwork "+novlan+" (br-flat) on host "+h3.UUID, "injected failure")
		// The VLAN network's bridge, made before, is recorded; the failed
		// one is not.
		if got := realizedOn(t, st, h3.UUID); !reflect.DeepEqual(got, []string{vlan}) {
			t.Fatalf("recorded on host 3: %v, want only %s", got, vlan)
		}
		if _, err := bridges.Realize(ctx, h3.UUID, []string{l3a}); !errcode.Has(err, errcode.AgentError) {
			t.Fatalf("second Realize: %v, want the failure again (nothing recorded)", err)
		}
		if n := sent(h3.Agent.Agent, protocol.PathCreateNoVlanBridge); n != 2 {
			t.Fatalf("%d createbridge on host 3, want 2", n)
		}

		// A resend that fails forgets the L2 network, so that the next VM
		// start sends it again.
		ref := network.L2NetworkHostRefVO{L2NetworkUUID: novlan, HostUUID: h3.UUID, CreateDate: time.Now()}
		if err := st.DB().Create(&ref).Error; err != nil {
			t.Fatal(err)
		}
		bridges.Reconnected(ctx, h3.UUID)
		if got := realizedOn(t, st, h3.UUID); !reflect.DeepEqual(got, []string{vlan}) {
			t.Fatalf("recorded on host 3 after a failed resend: %v, want only %s", got, vlan)
		}
	})

	t.Run("deleted l2 networks are forgotten", func(t *testing.T) {
		l2 := createRaw(t, ctx, st, "l2-networks/no-vlan", map[string]any{"name": "br-doomed", "zoneUuid": zone, "physicalInterface": "eth6"})["uuid"].(string)
		l3 := createL3On(t, ctx, st, "br-doomed", l2).UUID
		if _, err := bridges.Realize(ctx, h2.UUID, []string{l3}); err != nil {
			t.Fatal(err)
		}
		if err := deleteEnforcing(ctx, st.Client, "l2-networks", l2); err != nil {
			t.Fatal(err)
		}
		if got := realizedOn(t, st, h2.UUID); !reflect.DeepEqual(got, []string{novlan}) {
			t.Fatalf("recorded on host 2 after the delete: %v, want only %s", got, novlan)
		}
	})
}
