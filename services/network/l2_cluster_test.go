package network_test

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"mplane/api/client"
	"mplane/api/portal"
	"mplane/cloudbus"
	"mplane/conf"
	"mplane/errcode"
	"mplane/internal/testenv"
	"mplane/server"
	"mplane/services/network"
)

const clusterPassword = "l2-cluster-secret"

// clusterBackend is where three nodes meet: an in-process broker and one
// SQLite file, or RabbitMQ and MariaDB (a test that fails, not skips,
// under CI=true when they are unreachable).
type clusterBackend struct {
	name  string
	start func(t *testing.T) (dsn, busURL, prefix string, broker *cloudbus.Broker)
}

var clusterBackends = []clusterBackend{
	{"memory+sqlite", func(t *testing.T) (string, string, string, *cloudbus.Broker) {
		return "sqlite:" + filepath.Join(t.TempDir(), "mplane.db"), "memory://", "mplane", cloudbus.NewBroker()
	}},
	{"amqp+mysql", func(t *testing.T) (string, string, string, *cloudbus.Broker) {
		url := testenv.AMQPURL(t)
		prefix := testenv.BusPrefix(t, url)
		testenv.DeleteQueuesAtCleanup(t, url, prefix+"."+portal.SharedQueue)
		return testenv.MySQLDSN(t), url, prefix, nil
	}},
}

// startCluster starts n management nodes on one database and bus, each
// with a client logged in, and waits until every ring has all of them.
func startCluster(t *testing.T, b clusterBackend, n int) ([]*server.Server, []*client.Client) {
	t.Helper()
	dsn, busURL, prefix, broker := b.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var servers []*server.Server
	var clients []*client.Client
	for i := range n {
		cfg, err := conf.Load("", []string{"MPLANE_DATA_DIR=" + t.TempDir(), "MPLANE_API_LISTEN=127.0.0.1:0",
			"MPLANE_ADMIN_PASSWORD=" + clusterPassword, "MPLANE_DRAIN_TIMEOUT=1s", "MPLANE_DATABASE_DSN=" + dsn,
			"MPLANE_BUS_URL=" + busURL, "MPLANE_BUS_PREFIX=" + prefix, "MPLANE_RING_RESYNC_INTERVAL=1s"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := server.Start(ctx, server.Options{Config: cfg, Broker: broker, BcryptCost: bcrypt.MinCost})
		if err != nil {
			t.Fatalf("start node %d: %v", i, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := s.Stop(ctx); err != nil {
				t.Errorf("stop node %d: %v", i, err)
			}
		})
		c, err := client.New(s.URL(), client.WithPollInterval(time.Millisecond, 20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if _, err := c.Login(ctx, "admin", clusterPassword); err != nil {
			t.Fatal(err)
		}
		servers, clients = append(servers, s), append(clients, c)
	}
	testenv.Eventually(t, time.Minute, func() bool {
		for _, s := range servers {
			if len(s.Node().Ring().Members) != n {
				return false
			}
		}
		return true
	}, "every ring has the %d nodes", n)
	return servers, clients
}

// TestVNIAllocationAcrossNodes: three nodes on one database and bus. 50
// racing VXLAN creates spread over them, in a pool of 41 VNIs (two ranges
// for the 44 that take any VNI, one of one VNI that 6 others ask for, and
// that the first 44 reach when the others are full): exactly 41 get a VNI,
// none twice, each in a range; every refusal is CapacityExhausted naming
// the pool or says the asked VNI is taken. Every node's copy of the VNI
// pool is the database's; deletes release on every node, and the next
// creates take the freed VNIs.
func TestVNIAllocationAcrossNodes(t *testing.T) {
	for _, b := range clusterBackends {
		t.Run(b.name, func(t *testing.T) {
			servers, clients := startCluster(t, b, 3)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			zone, err := client.CreateAndWait[map[string]any](ctx, clients[0], "zones", map[string]any{"name": "z"})
			if err != nil {
				t.Fatal(err)
			}
			pool, err := client.CreateAndWait[network.L2NetworkVO](ctx, clients[1], "l2-networks/vxlan-pool",
				map[string]any{"name": "pool", "zoneUuid": zone["uuid"], "physicalInterface": "eth0"})
			if err != nil {
				t.Fatal(err)
			}
			ranges := [][2]int{{1000, 1029}, {1100, 1109}, {3000, 3000}}
			for i, r := range ranges {
				if _, err := client.CreateAndWait[network.VniRangeVO](ctx, clients[i%3], "l2-networks/vxlan-pool/"+pool.UUID+"/vni-range",
					map[string]any{"name": fmt.Sprint("r", i), "startVni": r[0], "endVni": r[1]}); err != nil {
					t.Fatal(err)
				}
			}

			type result struct {
				n     network.L2NetworkVO
				err   error
				asked bool
			}
			results := make([]result, 50)
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := map[string]any{"name": fmt.Sprint("vx", i), "poolUuid": pool.UUID}
					asked := i%8 == 0 && i < 48 // 6 of them: 0, 8, ..., 40
					if asked {
						p["vni"] = 3000
					}
					n, err := client.CreateAndWait[network.L2NetworkVO](ctx, clients[i%3], "l2-networks/vxlan", p)
					results[i] = result{n, err, asked}
				}()
			}
			wg.Wait()
			seen := map[int]string{}
			made := 0
			for i, r := range results {
				if r.err != nil {
					full := !r.asked && errcode.Has(r.err, errcode.CapacityExhausted) && strings.Contains(r.err.Error(), "vxlan pool "+pool.UUID)
					taken := r.asked && errcode.Has(r.err, errcode.InvalidState) && strings.Contains(r.err.Error(), "vni 3000")
					if !full && !taken {
						t.Errorf("vx%d (asked for 3000: %v): %v; want CapacityExhausted naming the pool, or vni 3000 taken", i, r.asked, r.err)
					}
					continue
				}
				made++
				v := *r.n.Vni
				if other, dup := seen[v]; dup {
					t.Errorf("vni %d given to %s and %s", v, other, r.n.UUID)
				}
				seen[v] = r.n.UUID
				in := false
				for _, rg := range ranges {
					in = in || (rg[0] <= v && v <= rg[1])
				}
				if !in || (r.asked && v != 3000) || *r.n.PoolUUID != pool.UUID {
					t.Errorf("vx%d: %+v, want a VNI of the pool's ranges", i, r.n)
				}
			}
			t.Logf("50 racing creates on 3 nodes: %d got a VNI", made)
			if made != 41 {
				t.Fatalf("%d creates got a VNI, want 41 (every VNI of the pool)", made)
			}
			sameEverywhere(t, servers)

			// Deletes through any node release on every node; the freed
			// VNIs are taken again.
			freed := map[int]bool{}
			for i, r := range results {
				if r.err != nil || len(freed) == 5 {
					continue
				}
				j, err := clients[i%3].Delete(ctx, "l2-networks", r.n.UUID, "")
				if err == nil {
					_, err = j.Wait(ctx, nil)
				}
				if err != nil {
					t.Fatal(err)
				}
				freed[*r.n.Vni] = true
			}
			sameEverywhere(t, servers)
			for i := range 5 {
				n, err := client.CreateAndWait[network.L2NetworkVO](ctx, clients[i%3], "l2-networks/vxlan", map[string]any{"name": fmt.Sprint("again", i), "poolUuid": pool.UUID})
				if err != nil {
					t.Fatal(err)
				}
				if !freed[*n.Vni] {
					t.Errorf("a create after the deletes got vni %d, not one of the freed %v", *n.Vni, freed)
				}
				delete(freed, *n.Vni)
			}
			sameEverywhere(t, servers)
		})
	}
}

// sameEverywhere waits until every node's copy of the VNI pool is the
// database's VXLAN networks.
func sameEverywhere(t *testing.T, servers []*server.Server) {
	t.Helper()
	var want map[int]string
	testenv.Eventually(t, 30*time.Second, func() bool {
		var rows []network.L2NetworkVO
		if err := servers[0].DB().Where("type = ?", network.VxlanNetwork).Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		want = map[int]string{}
		for _, r := range rows {
			want[*r.Vni] = r.UUID
		}
		for _, s := range servers {
			if !maps.Equal(s.VNIs().InUse(), want) {
				return false
			}
		}
		return true
	}, "every node's VNI pool equals the database (%d VXLAN networks)", len(want))
}
