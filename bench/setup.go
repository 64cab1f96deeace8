package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"mplane/agents/storage"
	"mplane/api/client"
)

// Names of the bench cloud's resources: Setup creates them, later runs
// find them by name.
const (
	benchZone     = "bench-zone"
	benchCluster  = "bench-cluster"
	benchOffering = "bench"
	benchImage    = "bench-image"
	benchL3       = "bench-l3"
	benchRange    = "bench-range"
	// The VMs are small (1 vCPU, 256 MiB) so that thousands fit on three
	// simulated hosts given enough capacity (--cpu 4096 --memory 16TiB).
	benchCPU    = 1
	benchMemory = 256 << 20
)

// The bench network is a /16: 65,533 addresses, room for maxVMs.
var benchIPRange = map[string]any{"name": benchRange, "startIp": "10.200.0.2", "endIp": "10.200.255.254",
	"netmask": "255.255.0.0", "gateway": "10.200.0.1"}

// cloud is what the VMs are created from.
type cloud struct {
	offering, image, l3 string
}

type uuidOnly struct {
	UUID string `json:"uuid"`
}

// findByName returns the UUID of the resource named name ("" if none).
func findByName(ctx context.Context, c *client.Client, path, name string) (string, error) {
	rows, _, err := client.QueryAs[uuidOnly](ctx, c, path, client.Query{Q: []string{client.Where("name", client.OpEq, name)}, Limit: 1})
	if err != nil {
		return "", fmt.Errorf("find %s named %s: %w", path, name, err)
	}
	if len(rows) == 0 {
		return "", nil
	}
	return rows[0].UUID, nil
}

// prepareCloud finds the bench cloud, or creates it when setup is true
// and there is no offering named "bench": zone, cluster, offering, image,
// L3 network with a /16 range, and every agent as a host of the cluster.
func prepareCloud(ctx context.Context, c *client.Client, setup bool, agents []string) (cloud, error) {
	off, err := findByName(ctx, c, "instance-offerings", benchOffering)
	if err != nil {
		return cloud{}, err
	}
	if off != "" {
		cl := cloud{offering: off}
		if cl.image, err = findByName(ctx, c, "images", benchImage); err != nil {
			return cloud{}, err
		}
		if cl.l3, err = findByName(ctx, c, "l3-networks", benchL3); err != nil {
			return cloud{}, err
		}
		if cl.image == "" || cl.l3 == "" {
			return cloud{}, fmt.Errorf("the instance offering %q exists but image %q or L3 network %q does not: "+
				"delete the offering and run with --setup, or create them", benchOffering, benchImage, benchL3)
		}
		return cl, nil
	}
	if !setup {
		return cloud{}, fmt.Errorf("no instance offering named %q: run with --setup to create the bench cloud "+
			"(zone, cluster, offering, image, L3 network with a range, the --agents as hosts)", benchOffering)
	}
	mk := func(path string, params map[string]any) (string, error) {
		inv, err := client.CreateAndWait[uuidOnly](ctx, c, path, params)
		if err != nil {
			return "", fmt.Errorf("setup: create %s: %w", path, err)
		}
		return inv.UUID, nil
	}
	zone, err := mk("zones", map[string]any{"name": benchZone})
	if err != nil {
		return cloud{}, err
	}
	cluster, err := mk("clusters", map[string]any{"name": benchCluster, "zoneUuid": zone, "hypervisorType": "KVM"})
	if err != nil {
		return cloud{}, err
	}
	var cl cloud
	if cl.image, err = setupImage(ctx, mk, zone); err != nil {
		return cloud{}, err
	}
	if cl.l3, err = mk("l3-networks", map[string]any{"name": benchL3, "zoneUuid": zone}); err != nil {
		return cloud{}, err
	}
	if _, err = mk("l3-networks/"+cl.l3+"/ip-ranges", benchIPRange); err != nil {
		return cloud{}, err
	}
	for i, a := range agents {
		ip, port, err := hostPort(a)
		if err != nil {
			return cloud{}, err
		}
		if _, err := mk("hosts/kvm", map[string]any{"name": fmt.Sprintf("bench-host-%d", i+1), "managementIp": ip,
			"agentPort": port, "clusterUuid": cluster}); err != nil {
			return cloud{}, fmt.Errorf("add agent %s as a host: %w", a, err)
		}
	}
	// The offering last: its existence says the setup is complete.
	if cl.offering, err = mk("instance-offerings", map[string]any{"name": benchOffering, "cpuNum": benchCPU, "memorySize": benchMemory}); err != nil {
		return cloud{}, err
	}
	return cl, nil
}

// hostPort splits an agent URL into the host's management IP and port.
func hostPort(agentURL string) (string, int, error) {
	u, err := url.Parse(agentURL)
	if err != nil {
		return "", 0, fmt.Errorf("agent %q: %w", agentURL, err)
	}
	host, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", 0, fmt.Errorf("agent %q: want http://ip:port: %w", agentURL, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("agent %q: port %q: %w", agentURL, p, err)
	}
	return host, port, nil
}

// setupImage gives the bench cloud its image: the setup runs a storage
// agent on a temporary directory as the zone's backup storage and serves
// a small image from this process over loopback, which the backup
// storage downloads; both stop when the download is done (VM creates do
// not read images yet), and the backup storage is Disconnected after.
func setupImage(ctx context.Context, mk func(string, map[string]any) (string, error), zone string) (string, error) {
	dir, err := os.MkdirTemp("", "mplane-bench-bs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	a, err := storage.New(storage.Options{Root: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		return "", err
	}
	if err := a.Start(ctx); err != nil {
		return "", fmt.Errorf("setup: start the bench backup storage agent: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Stop(sctx)
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	body := bytes.Repeat([]byte("mplane bench image "), 1<<14)
	src := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }),
		ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = src.Serve(ln) }()
	defer src.Close()
	host, portStr, _ := net.SplitHostPort(a.Addr())
	port, _ := strconv.Atoi(portStr)
	bs, err := mk("backup-storage/image-store", map[string]any{"name": "bench-bs", "url": dir, "hostname": host, "agentPort": port})
	if err != nil {
		return "", err
	}
	if _, err := mk("zones/"+zone+"/backup-storage/"+bs, map[string]any{}); err != nil {
		return "", err
	}
	img, err := mk("images", map[string]any{"name": benchImage, "url": "http://" + ln.Addr().String() + "/bench.img", "format": "raw",
		"backupStorageUuids": []string{bs}})
	if err != nil {
		return "", errors.Join(err, fmt.Errorf("setup: the bench image did not download"))
	}
	return img, nil
}
