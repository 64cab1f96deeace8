package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/api/client"
	"mplane/server/servertest"
)

type vmInv struct {
	UUID     string `json:"uuid"`
	HostUUID string `json:"hostUuid"`
}

// TestSetupGivesRootVolumesAndALaterRunRevivesTheBackupStorage sets the
// bench cloud up on a cloud without hosts of its own: the VMs get their
// root volumes on the hosts' local primary storage, with the image
// copied from the backup storage agent of the run. A later run, after
// that agent stopped, restarts one for the backup storage, so that a host
// added since (no image in its cache) can make root volumes too.
func TestSetupGivesRootVolumesAndALaterRunRevivesTheBackupStorage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	s := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startAgent := func() (*servertest.Agent, string) {
		dir := t.TempDir()
		a := s.StartAgent(t, servertest.AgentOptions{Agent: kvm.Options{CPUNum: 8, MemoryBytes: 8 << 30,
			Storage: map[string]string{DefaultLocalStorageURL: dir}}})
		return a, dir
	}
	createVM := func(cl cloud, name, hostUUID string) (vmInv, error) {
		p := map[string]any{"name": name, "instanceOfferingUuid": cl.offering, "imageUuid": cl.image, "l3NetworkUuids": []string{cl.l3}}
		if hostUUID != "" {
			p["hostUuid"] = hostUUID
		}
		return client.CreateAndWait[vmInv](ctx, s.Client, "vm-instances", p)
	}
	cached := func(dir, image string) bool {
		_, err := os.Stat(filepath.Join(dir, "imagecache", image, image))
		return err == nil
	}

	a1, dir1 := startAgent()
	cl, stop, err := prepareCloud(ctx, s.Client, true, []string{"http://" + a1.Addr()}, DefaultLocalStorageURL)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	vm, err := createVM(cl, "bench-t-1", "")
	if err != nil {
		t.Fatalf("create a VM on the bench cloud: %v", err)
	}
	if !cached(dir1, cl.image) {
		t.Errorf("the bench image is not in the image cache of host 1's local storage (%s)", dir1)
	}
	if n := countFiles(t, filepath.Join(dir1, "rootVolumes")); n != 1 {
		t.Errorf("%d files under rootVolumes of host 1's local storage, want the VM's root volume", n)
	}
	stop()

	// A host added after the setup run: nothing in its cache.
	a2, dir2 := startAgent()
	cluster, err := findByName(ctx, s.Client, "clusters", benchCluster)
	if err != nil || cluster == "" {
		t.Fatalf("find the bench cluster: %q, %v", cluster, err)
	}
	h2, err := client.CreateAndWait[uuidOnly](ctx, s.Client, "hosts/kvm", map[string]any{"name": "bench-host-late",
		"managementIp": a2.IP, "agentPort": a2.Port, "clusterUuid": cluster})
	if err != nil {
		t.Fatalf("add a second host: %v", err)
	}

	cl2, stop2, err := prepareCloud(ctx, s.Client, false, nil, DefaultLocalStorageURL)
	if err != nil {
		t.Fatalf("a run without --setup: %v", err)
	}
	defer stop2()
	if cl2 != cl {
		t.Errorf("the later run found %+v, want the cloud of the setup %+v", cl2, cl)
	}
	vm2, err := createVM(cl2, "bench-t-2", h2.UUID)
	if err != nil {
		t.Fatalf("create a VM on the new host in a later run: %v", err)
	}
	if vm2.HostUUID != h2.UUID || !cached(dir2, cl.image) {
		t.Errorf("VM %s on host %s (want %s); image cached on the new host: %v", vm2.UUID, vm2.HostUUID, h2.UUID, cached(dir2, cl.image))
	}
	if vm.UUID == vm2.UUID {
		t.Error("the same VM twice")
	}

	// A second later run while the first one's agent serves: left alone.
	_, stop3, err := prepareCloud(ctx, s.Client, false, nil, DefaultLocalStorageURL)
	if err != nil {
		t.Fatalf("a run while the backup storage serves: %v", err)
	}
	stop3()
	if _, err := createVM(cl2, "bench-t-3", h2.UUID); err != nil {
		t.Errorf("create after a run that found the backup storage serving: %v", err)
	}
}

func TestSetupRefusesWithoutTheLocalStorage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	s := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The agent serves another url than the bench's LocalStorage.
	a := s.StartAgent(t, servertest.AgentOptions{Agent: kvm.Options{CPUNum: 8, MemoryBytes: 8 << 30,
		Storage: map[string]string{"/elsewhere": t.TempDir()}}})
	_, stop, err := prepareCloud(ctx, s.Client, true, []string{"http://" + a.Addr()}, DefaultLocalStorageURL)
	stop()
	if err == nil {
		t.Fatal("the setup succeeded with a host that does not serve the bench's local storage")
	}
	if !strings.Contains(err.Error(), "does not serve the local primary storage at /mplane/local") ||
		!strings.Contains(err.Error(), "--storage "+DefaultLocalStorageURL+"=DIR") {
		t.Errorf("error %q does not say how to serve the local storage", err)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Errorf("walk %s: %v", dir, err)
	}
	return n
}
