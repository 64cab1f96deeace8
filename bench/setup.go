package bench

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"

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
	if cl.image, err = mk("images", map[string]any{"name": benchImage, "url": "http://images.invalid/bench.qcow2", "format": "qcow2"}); err != nil {
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
