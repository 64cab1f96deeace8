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
	"path/filepath"
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
	benchBackup   = "bench-bs"
	benchPrimary  = "bench-local"
	benchL2       = "bench-l2"
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
// and there is no offering named "bench": zone, cluster, image, an L2
// network on eth0 attached to the cluster with an L3 network on it with a
// /16 range, a LocalStorage at localURL attached to the
// cluster, every agent as a host of the cluster, and the offering. The
// backup storage agent of the bench image runs in this process until the
// returned stop (never nil) is called: VM creates copy the image from it
// into a host's image cache the first time the host needs it.
func prepareCloud(ctx context.Context, c *client.Client, setup bool, agents []string, localURL string) (cloud, func(), error) {
	nop := func() {}
	off, err := findByName(ctx, c, "instance-offerings", benchOffering)
	if err != nil {
		return cloud{}, nop, err
	}
	if off != "" {
		cl := cloud{offering: off}
		if cl.image, err = findByName(ctx, c, "images", benchImage); err != nil {
			return cloud{}, nop, err
		}
		if cl.l3, err = findByName(ctx, c, "l3-networks", benchL3); err != nil {
			return cloud{}, nop, err
		}
		if cl.image == "" || cl.l3 == "" {
			return cloud{}, nop, fmt.Errorf("the instance offering %q exists but image %q or L3 network %q does not: "+
				"delete the offering and run with --setup, or create them", benchOffering, benchImage, benchL3)
		}
		stop, err := reviveBackup(ctx, c, cl.image)
		if err != nil {
			return cloud{}, nop, err
		}
		return cl, stop, nil
	}
	if !setup {
		return cloud{}, nop, fmt.Errorf("no instance offering named %q: run with --setup to create the bench cloud "+
			"(zone, cluster, offering, image, L2 and L3 networks with a range, local primary storage, the --agents as hosts)", benchOffering)
	}
	cl, stop, err := setupCloud(ctx, c, agents, localURL)
	if err != nil {
		stop()
		return cloud{}, nop, err
	}
	return cl, stop, nil
}

// setupCloud creates the bench cloud; stop ends its backup storage agent
// (also on an error).
func setupCloud(ctx context.Context, c *client.Client, agents []string, localURL string) (cl cloud, stop func(), err error) {
	stop = func() {}
	mk := func(path string, params map[string]any) (string, error) {
		inv, err := client.CreateAndWait[uuidOnly](ctx, c, path, params)
		if err != nil {
			return "", fmt.Errorf("setup: create %s: %w", path, err)
		}
		return inv.UUID, nil
	}
	zone, err := mk("zones", map[string]any{"name": benchZone})
	if err != nil {
		return cloud{}, stop, err
	}
	cluster, err := mk("clusters", map[string]any{"name": benchCluster, "zoneUuid": zone, "hypervisorType": "KVM"})
	if err != nil {
		return cloud{}, stop, err
	}
	if cl.image, stop, err = setupImage(ctx, mk, zone); err != nil {
		return cloud{}, stop, err
	}
	// The L3 network on an L2 network of the hosts' eth0, reached from
	// the cluster.
	l2, err := mk("l2-networks/no-vlan", map[string]any{"name": benchL2, "zoneUuid": zone, "physicalInterface": "eth0"})
	if err != nil {
		return cloud{}, stop, err
	}
	if _, err := mk("l2-networks/"+l2+"/clusters/"+cluster, map[string]any{}); err != nil {
		return cloud{}, stop, err
	}
	if cl.l3, err = mk("l3-networks", map[string]any{"name": benchL3, "l2NetworkUuid": l2}); err != nil {
		return cloud{}, stop, err
	}
	if _, err = mk("l3-networks/"+cl.l3+"/ip-ranges", benchIPRange); err != nil {
		return cloud{}, stop, err
	}
	// The primary storage before the hosts: a host's add measures its
	// directory of every LocalStorage attached to its cluster.
	ps, err := mk("primary-storage/local-storage", map[string]any{"name": benchPrimary, "url": localURL, "zoneUuid": zone})
	if err != nil {
		return cloud{}, stop, err
	}
	if _, err := mk("clusters/"+cluster+"/primary-storage/"+ps, map[string]any{}); err != nil {
		return cloud{}, stop, err
	}
	// Each host's add measures its directory, which the storage's total
	// capacity sums: a host that does not serve it adds nothing.
	total := int64(0)
	for i, a := range agents {
		ip, port, err := hostPort(a)
		if err != nil {
			return cloud{}, stop, err
		}
		if _, err := mk("hosts/kvm", map[string]any{"name": fmt.Sprintf("bench-host-%d", i+1), "managementIp": ip,
			"agentPort": port, "clusterUuid": cluster}); err != nil {
			return cloud{}, stop, fmt.Errorf("add agent %s as a host: %w", a, err)
		}
		inv, err := client.GetAs[primaryInv](ctx, c, "primary-storage", ps)
		if err != nil {
			return cloud{}, stop, fmt.Errorf("setup: read primary storage %s: %w", benchPrimary, err)
		}
		if inv.TotalCapacity <= total {
			return cloud{}, stop, fmt.Errorf("setup: host %s (agent %s) does not serve the local primary storage at %s, "+
				"where VMs get their root volumes: start its agent with --storage %s=DIR (a directory of its own), "+
				"or give --local-storage-url the url it serves", fmt.Sprintf("bench-host-%d", i+1), a, localURL, localURL)
		}
		total = inv.TotalCapacity
	}
	// The offering last: its existence says the setup is complete.
	if cl.offering, err = mk("instance-offerings", map[string]any{"name": benchOffering, "cpuNum": benchCPU, "memorySize": benchMemory}); err != nil {
		return cloud{}, stop, err
	}
	return cl, stop, nil
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

// benchImageBody is the bench image: 304 KiB of text, the same on every
// run, so that a restarted backup storage agent can serve it again.
func benchImageBody() []byte { return bytes.Repeat([]byte("mplane bench image "), 1<<14) }

// backupAgent is the storage agent, in this process, that serves the
// bench image's backup storage on a temporary directory.
type backupAgent struct {
	agent *storage.Agent
	dir   string
}

// startBackup starts a storage agent on a new temporary directory,
// listening on listen.
func startBackup(ctx context.Context, listen string) (*backupAgent, error) {
	dir, err := os.MkdirTemp("", "mplane-bench-bs-")
	if err != nil {
		return nil, err
	}
	a, err := storage.New(storage.Options{Root: dir, Listen: listen})
	if err == nil {
		err = a.Start(ctx)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start the bench backup storage agent on %s: %w", listen, err)
	}
	return &backupAgent{agent: a, dir: dir}, nil
}

// stop stops the agent and removes its directory.
func (b *backupAgent) stop() {
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.agent.Stop(sctx)
	_ = os.RemoveAll(b.dir)
}

// setupImage gives the bench cloud its image: the setup runs a storage
// agent on a temporary directory as the zone's backup storage and serves
// a small image from this process over loopback, which the backup
// storage downloads. The image source stops when the download is done;
// the agent runs until stop (the end of the run): VM creates copy the
// image from it into each host's image cache on first use. After the run
// the backup storage is Disconnected; a later run restarts an agent for
// it (reviveBackup).
func setupImage(ctx context.Context, mk func(string, map[string]any) (string, error), zone string) (string, func(), error) {
	nop := func() {}
	b, err := startBackup(ctx, "127.0.0.1:0")
	if err != nil {
		return "", nop, fmt.Errorf("setup: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.stop()
		return "", nop, err
	}
	body := benchImageBody()
	src := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }),
		ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = src.Serve(ln) }()
	defer src.Close()
	host, portStr, _ := net.SplitHostPort(b.agent.Addr())
	port, _ := strconv.Atoi(portStr)
	bs, err := mk("backup-storage/image-store", map[string]any{"name": benchBackup, "url": b.agent.Root(), "hostname": host, "agentPort": port})
	if err != nil {
		return "", b.stop, err
	}
	if _, err := mk("zones/"+zone+"/backup-storage/"+bs, map[string]any{}); err != nil {
		return "", b.stop, err
	}
	img, err := mk("images", map[string]any{"name": benchImage, "url": "http://" + ln.Addr().String() + "/bench.img", "format": "raw",
		"backupStorageUuids": []string{bs}})
	if err != nil {
		return "", b.stop, errors.Join(err, fmt.Errorf("setup: the bench image did not download"))
	}
	return img, b.stop, nil
}

type imageRefs struct {
	BackupStorageRefs []struct {
		BackupStorageUUID string `json:"backupStorageUuid"`
		InstallPath       string `json:"installPath"`
	} `json:"backupStorageRefs"`
}

type primaryInv struct {
	TotalCapacity int64 `json:"totalCapacity"`
}

type backupInv struct {
	UUID      string `json:"uuid"`
	Name      string `json:"name"`
	Hostname  string `json:"hostname"`
	AgentPort int    `json:"agentPort"`
	Status    string `json:"status"`
}

// reviveBackup makes the bench image's backup storage serve again for a
// run that found the bench cloud: a VM create needs its image on a
// Connected backup storage even when the host has the image in its cache,
// and the agent of the setup ran in the process of that run. If the
// bench backup storage's address answers, it is left as it is; otherwise
// an agent is started at that address (a loopback one, as the setup
// makes) on a new temporary directory with the image written at its
// install path, and the backup storage is reconnected. stop ends that
// agent.
func reviveBackup(ctx context.Context, c *client.Client, imageUUID string) (func(), error) {
	nop := func() {}
	img, err := client.GetAs[imageRefs](ctx, c, "images", imageUUID)
	if err != nil {
		return nop, fmt.Errorf("read image %s: %w", benchImage, err)
	}
	for _, ref := range img.BackupStorageRefs {
		bs, err := client.GetAs[backupInv](ctx, c, "backup-storage", ref.BackupStorageUUID)
		if err != nil {
			return nop, fmt.Errorf("read the backup storage of image %s: %w", benchImage, err)
		}
		if bs.Name != benchBackup {
			continue
		}
		addr := net.JoinHostPort(bs.Hostname, strconv.Itoa(bs.AgentPort))
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			if bs.Status == "Connected" {
				return nop, nil
			}
			_, err := client.ActionAndWait[backupInv](ctx, c, "backup-storage", bs.UUID, "reconnectBackupStorage", map[string]any{})
			return nop, err
		}
		if ip := net.ParseIP(bs.Hostname); ip == nil || !ip.IsLoopback() || !filepath.IsLocal(ref.InstallPath) {
			return nop, fmt.Errorf("the backup storage %s of image %s at %s does not answer, and it is not one this bench can restart: "+
				"start its agent, or run on a new cloud with --setup", bs.UUID, benchImage, addr)
		}
		b, err := startBackup(ctx, addr)
		if err != nil {
			return nop, fmt.Errorf("the bench image's backup storage %s at %s is gone: %w", bs.UUID, addr, err)
		}
		file := filepath.Join(b.dir, filepath.FromSlash(ref.InstallPath))
		err = os.MkdirAll(filepath.Dir(file), 0o755)
		if err == nil {
			err = os.WriteFile(file, benchImageBody(), 0o644)
		}
		if err != nil {
			b.stop()
			return nop, fmt.Errorf("restore the bench image on its backup storage: %w", err)
		}
		if _, err := client.ActionAndWait[backupInv](ctx, c, "backup-storage", bs.UUID, "reconnectBackupStorage", map[string]any{}); err != nil {
			b.stop()
			return nop, fmt.Errorf("reconnect the bench image's backup storage %s at %s: %w", bs.UUID, addr, err)
		}
		return b.stop, nil
	}
	return nop, nil
}
