package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/internal/testenv"
	hostsvc "mplane/services/host"
	"mplane/services/network"
	"mplane/services/vm"
)

// cloud holds the UUIDs of a cloud's default resources.
type cloud struct {
	zone, cluster, offering, image, l3 string
	// localPS is the LocalStorage at localStorageURL attached to the
	// cluster ("" with withoutLocalStorage).
	localPS string
}

// cloudOption changes what setupCloud makes.
type cloudOption int

// withoutLocalStorage: no LocalStorage, for tests that attach a storage of
// their own and count on it being the only one.
const withoutLocalStorage cloudOption = 1

func login(t *testing.T, base, password string) *client.Client {
	t.Helper()
	c, err := client.New(base, client.WithPollInterval(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Login(ctx, "admin", password); err != nil {
		t.Fatalf("login: %v", err)
	}
	return c
}

func firstUUID(t *testing.T, c *client.Client, path string) string {
	t.Helper()
	type inv struct {
		UUID string `json:"uuid"`
	}
	rows, _, err := client.QueryAs[inv](context.Background(), c, path, client.Query{})
	if err != nil || len(rows) == 0 {
		t.Fatalf("query %s: %v (%d rows)", path, err, len(rows))
	}
	return rows[0].UUID
}

func hostsOf(t *testing.T, c *client.Client) []hostsvc.HostVO {
	t.Helper()
	hs, _, err := client.QueryAs[hostsvc.HostVO](context.Background(), c, "hosts", client.Query{})
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// capacity is what must come back after VMs are destroyed.
type capacity struct {
	cpu, mem map[string]int64
	usedIPs  int64
}

func capacityOf(t *testing.T, c *client.Client, l3 string) capacity {
	t.Helper()
	cp := capacity{cpu: map[string]int64{}, mem: map[string]int64{}}
	for _, h := range hostsOf(t, c) {
		cp.cpu[h.UUID], cp.mem[h.UUID] = h.AvailableCPUCapacity, h.AvailableMemoryCapacity
	}
	type vmIP struct {
		VMNics []vm.VmNicVO `json:"vmNics"`
	}
	vms, _, err := client.QueryAs[vmIP](context.Background(), c, "vm-instances", client.Query{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		for _, n := range v.VMNics {
			if n.L3NetworkUUID == l3 {
				cp.usedIPs++
			}
		}
	}
	return cp
}

func createVM(ctx context.Context, c *client.Client, cl cloud, name string, extra map[string]any) (vm.VmInstanceVO, error) {
	params := map[string]any{"name": name, "instanceOfferingUuid": cl.offering, "imageUuid": cl.image, "l3NetworkUuids": []string{cl.l3}}
	for k, v := range extra {
		params[k] = v
	}
	return client.CreateAndWait[vm.VmInstanceVO](ctx, c, "vm-instances", params)
}

func vmAction(ctx context.Context, c *client.Client, uuid, action string, body any) (vm.VmInstanceVO, error) {
	if body == nil {
		body = map[string]any{}
	}
	return client.ActionAndWait[vm.VmInstanceVO](ctx, c, "vm-instances", uuid, action, body)
}

func destroyVM(ctx context.Context, c *client.Client, uuid string) error {
	j, err := c.Delete(ctx, "vm-instances", uuid, "")
	if err != nil {
		return err
	}
	_, err = j.Wait(ctx, nil)
	return err
}

// setupCloud creates zone, cluster, offering, image, an L2 network on eth0
// attached to the cluster with an L3 network on it with a range and
// (unless withoutLocalStorage) a LocalStorage at localStorageURL
// attached to the cluster, through the REST API; add the hosts after it,
// so that their directories are measured as they are added.
func setupCloud(t *testing.T, c *client.Client, cpu int, mem int64, opts ...cloudOption) cloud {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type inv struct {
		UUID string `json:"uuid"`
	}
	mk := func(path string, params any) string {
		t.Helper()
		r, err := client.CreateAndWait[inv](ctx, c, path, params)
		if err != nil {
			t.Fatalf("create %s: %v", path, err)
		}
		return r.UUID
	}
	var cl cloud
	cl.zone = mk("zones", map[string]any{"name": "z1"})
	cl.cluster = mk("clusters", map[string]any{"name": "c1", "zoneUuid": cl.zone, "hypervisorType": "KVM"})
	cl.offering = mk("instance-offerings", map[string]any{"name": "o1", "cpuNum": cpu, "memorySize": mem})
	cl.image = addImage(t, c, cl.zone, mk)
	l2 := mk("l2-networks/no-vlan", map[string]any{"name": "l2", "zoneUuid": cl.zone, "physicalInterface": "eth0"})
	mk("l2-networks/"+l2+"/clusters/"+cl.cluster, map[string]any{})
	cl.l3 = mk("l3-networks", map[string]any{"name": "l3", "l2NetworkUuid": l2})
	if _, err := client.CreateAndWait[network.IpRangeVO](ctx, c, "l3-networks/"+cl.l3+"/ip-ranges",
		map[string]any{"name": "r1", "startIp": "10.1.0.10", "endIp": "10.1.3.250", "netmask": "255.255.252.0", "gateway": "10.1.0.1"}); err != nil {
		t.Fatalf("add ip range: %v", err)
	}
	if !slices.Contains(opts, withoutLocalStorage) {
		cl.localPS = mk("primary-storage/local-storage", map[string]any{"name": "local", "url": localStorageURL, "zoneUuid": cl.zone})
		mk("clusters/"+cl.cluster+"/primary-storage/"+cl.localPS, map[string]any{})
	}
	return cl
}

func addHost(t *testing.T, c *client.Client, cl cloud, name string, port int) hostsvc.HostVO {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := client.CreateAndWait[hostsvc.HostVO](ctx, c, "hosts/kvm",
		map[string]any{"name": name, "managementIp": "127.0.0.1", "agentPort": port, "clusterUuid": cl.cluster})
	if err != nil {
		t.Fatalf("add host %s: %v", name, err)
	}
	return h
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// addImage starts a storage agent process as the cloud's backup storage
// (mplane agent storage), attaches it to zone and downloads an image into
// it from an HTTP server of the test.
func addImage(t *testing.T, c *client.Client, zone string, mk func(path string, params any) string) string {
	t.Helper()
	port := freePort(t)
	p := startProc(t, "backup-storage", nil, "agent", "storage", "--root", t.TempDir(), "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	p.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	testenv.Eventually(t, 30*time.Second, func() bool {
		if p.exited() {
			t.Fatal("the storage agent exited during start-up")
		}
		code, err := postJSON(context.Background(), p.url+protocol.PathStorageEcho, nil)
		return err == nil && code == 200
	}, "storage agent up")
	bs := mk("backup-storage/image-store", map[string]any{"name": "bs1", "url": "/images", "hostname": "127.0.0.1", "agentPort": port})
	mk("zones/"+zone+"/backup-storage/"+bs, map[string]any{})
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("mplane e2e image "), 8192))
	}))
	t.Cleanup(src.Close)
	return mk("images", map[string]any{"name": "i1", "url": src.URL + "/i1.img", "format": "raw", "backupStorageUuids": []string{bs}})
}
