package storage_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/kvm"
	agent "mplane/agents/storage"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/storage"
	"mplane/uid"
)

const (
	localURL  = "/t/local"
	sharedURL = "/t/shared"
)

func start(t *testing.T) (*servertest.Stack, context.Context) {
	t.Helper()
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return st, ctx
}

// addHost adds a host serving its own local directory and the shared one.
func addHost(t *testing.T, st *servertest.Stack, shared string) *servertest.Host {
	t.Helper()
	return st.AddHost(t, servertest.AgentOptions{Agent: kvm.Options{Storage: map[string]string{localURL: t.TempDir(), sharedURL: shared}}})
}

func addPS(t *testing.T, ctx context.Context, st *servertest.Stack, path, url string) storage.PrimaryStorageVO {
	t.Helper()
	ps, err := client.CreateAndWait[storage.PrimaryStorageVO](ctx, st.Client, path, map[string]any{
		"name": "ps-" + uid.New()[:6], "url": url, "zoneUuid": st.Defaults["zone"]})
	if err != nil {
		t.Fatalf("add primary storage at %s: %v", path, err)
	}
	return ps
}

func attach(ctx context.Context, st *servertest.Stack, ps, cluster string) (storage.PrimaryStorageVO, error) {
	return client.CreateAndWait[storage.PrimaryStorageVO](ctx, st.Client, "clusters/"+cluster+"/primary-storage/"+ps, nil)
}

func getPS(t *testing.T, ctx context.Context, st *servertest.Stack, uuid string) storage.PrimaryStorageVO {
	t.Helper()
	p, err := storage.LoadPrimary(ctx, st.DB(), uuid)
	if err != nil {
		t.Fatal(err)
	}
	return *p
}

func noDrift(t *testing.T, ctx context.Context, st *servertest.Stack) {
	t.Helper()
	d, err := storage.CapacityDrift(ctx, st.DB())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range d {
		t.Errorf("capacity drift: %s", x)
	}
}

// TestLocalStorage attaches a LocalStorage to a cluster of two hosts: each
// host's directory is measured by its own agent, the storage's capacity
// is their sum, and a host added later is measured when it connects.
func TestLocalStorage(t *testing.T) {
	st, ctx := start(t)
	shared := t.TempDir()
	h1, h2 := addHost(t, st, shared), addHost(t, st, shared)
	ps := addPS(t, ctx, st, "primary-storage/local-storage", localURL)
	if ps.Type != storage.TypeLocalStorage || ps.Status != storage.StatusConnected || ps.TotalCapacity != 0 {
		t.Fatalf("new local storage %+v", ps)
	}
	got, err := attach(ctx, st, ps.UUID, st.Defaults["cluster"])
	if err != nil {
		t.Fatal(err)
	}
	var refs []storage.LocalStorageHostRefVO
	if err := st.DB().Where("primary_storage_uuid = ?", ps.UUID).Order("host_uuid").Find(&refs).Error; err != nil {
		t.Fatal(err)
	}
	if len(refs) != 2 {
		t.Fatalf("%d host refs after the attach, want 2 (hosts %s, %s)", len(refs), h1.UUID, h2.UUID)
	}
	var sum int64
	for _, r := range refs {
		if r.TotalCapacity <= 0 || r.AvailableCapacity != r.TotalCapacity {
			t.Errorf("host ref %+v: want a measured, unreserved capacity", r)
		}
		sum += r.TotalCapacity
	}
	if got.TotalCapacity != sum || got.AvailableCapacity != sum {
		t.Errorf("attached local storage: total %d available %d; want %d, %d", got.TotalCapacity, got.AvailableCapacity, sum, sum)
	}
	raw, err := st.Client.Get(ctx, "primary-storage", ps.UUID)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := client.Decode[struct {
		AttachedClusterUUIDs []string `json:"attachedClusterUuids"`
	}](raw)
	if err != nil || len(inv.AttachedClusterUUIDs) != 1 || inv.AttachedClusterUUIDs[0] != st.Defaults["cluster"] {
		t.Errorf("inventory attachedClusterUuids %v (%v), want [%s]", inv.AttachedClusterUUIDs, err, st.Defaults["cluster"])
	}

	// A third host is measured when it connects.
	addHost(t, st, shared)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int64
		st.DB().Model(&storage.LocalStorageHostRefVO{}).Where("primary_storage_uuid = ?", ps.UUID).Count(&n)
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d host refs 30s after a third host was added, want 3", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p := getPS(t, ctx, st, ps.UUID); p.TotalCapacity <= sum {
		t.Errorf("total %d after a third host, want more than %d", p.TotalCapacity, sum)
	}
	noDrift(t, ctx, st)

	// Reservations: exact under concurrency, released idempotently.
	reserveRace(t, ctx, st, ps.UUID, h1.UUID)

	// Detach refuses while a host's directory holds a volume, then works.
	if err := storage.Reserve(ctx, st.DB(), "vol-held", ps.UUID, h2.UUID, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client.Delete(ctx, "clusters/"+st.Defaults["cluster"]+"/primary-storage", ps.UUID, ""); err != nil {
		t.Fatal(err)
	}
	_, err = client.CreateAndWait[storage.PrimaryStorageVO](ctx, st.Client, "clusters/"+st.Defaults["cluster"]+"/primary-storage/"+ps.UUID, nil)
	if err != nil {
		t.Fatalf("attach again (idempotent): %v", err)
	}
	if err := waitDelete(ctx, st, "clusters/"+st.Defaults["cluster"]+"/primary-storage", ps.UUID); !errcode.Has(err, errcode.InvalidState) {
		t.Fatalf("detach while a volume is held: %v, want %s", err, errcode.InvalidState)
	}
	if err := waitDelete(ctx, st, "primary-storage", ps.UUID); !errcode.Has(err, errcode.InvalidState) {
		t.Fatalf("delete while a volume is held: %v, want %s", err, errcode.InvalidState)
	}
	if err := storage.Release(ctx, st.DB(), "vol-held"); err != nil {
		t.Fatal(err)
	}
	if err := waitDelete(ctx, st, "clusters/"+st.Defaults["cluster"]+"/primary-storage", ps.UUID); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if p := getPS(t, ctx, st, ps.UUID); len(p.ClusterRefs) != 0 || p.TotalCapacity != 0 {
		t.Errorf("after the detach: clusters %v total %d, want none and 0", p.ClusterRefs, p.TotalCapacity)
	}
	if err := waitDelete(ctx, st, "primary-storage", ps.UUID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := storage.LoadPrimary(ctx, st.DB(), ps.UUID); !errcode.Has(err, errcode.ResourceNotFound) {
		t.Errorf("deleted primary storage still loads: %v", err)
	}
}

func waitDelete(ctx context.Context, st *servertest.Stack, path, uuid string) error {
	j, err := st.Client.Delete(ctx, path, uuid, "")
	if err != nil {
		return err
	}
	_, err = j.Wait(ctx, nil)
	return err
}

// reserveRace runs 40 concurrent reservations of which 25 fit: exactly 25
// succeed, the others get ErrNoCapacity, and releasing all of them twice
// gives everything back.
func reserveRace(t *testing.T, ctx context.Context, st *servertest.Stack, ps, host string) {
	t.Helper()
	var ref storage.LocalStorageHostRefVO
	if err := st.DB().Take(&ref, "primary_storage_uuid = ? AND host_uuid = ?", ps, host).Error; err != nil {
		t.Fatal(err)
	}
	size := ref.AvailableCapacity / 25
	var ok, full atomic.Int64
	var wg sync.WaitGroup
	owners := make([]string, 40)
	for i := range owners {
		owners[i] = "owner-" + strconv.Itoa(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := storage.Reserve(ctx, st.DB(), owners[i], ps, host, size); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, storage.ErrNoCapacity):
				full.Add(1)
			default:
				t.Errorf("reserve: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 25 || full.Load() != 15 {
		t.Errorf("%d reservations succeeded and %d found no capacity; want 25 and 15", ok.Load(), full.Load())
	}
	noDrift(t, ctx, st)
	if err := storage.Reserve(ctx, st.DB(), owners[0], ps, host, size); err != nil && !errors.Is(err, storage.ErrNoCapacity) {
		t.Errorf("reserve again: %v", err)
	}
	for range 2 {
		for _, o := range owners {
			if err := storage.Release(ctx, st.DB(), o); err != nil {
				t.Fatal(err)
			}
		}
	}
	var after storage.LocalStorageHostRefVO
	st.DB().Take(&after, "primary_storage_uuid = ? AND host_uuid = ?", ps, host)
	if after.AvailableCapacity != ref.AvailableCapacity {
		t.Errorf("available %d after releasing everything, want %d", after.AvailableCapacity, ref.AvailableCapacity)
	}
	noDrift(t, ctx, st)
}

// TestSharedMountPoint: one directory every host sees, measured once.
func TestSharedMountPoint(t *testing.T) {
	st, ctx := start(t)
	shared := t.TempDir()
	addHost(t, st, shared)
	addHost(t, st, shared)
	ps := addPS(t, ctx, st, "primary-storage/smp", sharedURL)
	got, err := attach(ctx, st, ps.UUID, st.Defaults["cluster"])
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != storage.TypeSharedMountPoint || got.TotalCapacity <= 0 || got.AvailableCapacity != got.TotalCapacity {
		t.Fatalf("attached shared storage %+v", got)
	}
	var n int64
	st.DB().Model(&storage.LocalStorageHostRefVO{}).Where("primary_storage_uuid = ?", ps.UUID).Count(&n)
	if n != 0 {
		t.Errorf("%d host refs for shared storage, want 0", n)
	}
	if err := storage.Reserve(ctx, st.DB(), "v1", ps.UUID, "", got.TotalCapacity+1); !errors.Is(err, storage.ErrNoCapacity) {
		t.Errorf("reserve more than the total: %v, want ErrNoCapacity", err)
	}
	if _, err := st.Client.Action(ctx, "primary-storage", ps.UUID, "changePrimaryStorageState", map[string]any{"stateEvent": "disable"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for getPS(t, ctx, st, ps.UUID).State != storage.StateDisabled {
		if time.Now().After(deadline) {
			t.Fatal("not Disabled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := storage.Reserve(ctx, st.DB(), "v1", ps.UUID, "", 1); !errors.Is(err, storage.ErrNoCapacity) {
		t.Errorf("reserve on Disabled storage: %v, want ErrNoCapacity", err)
	}
	if _, err := client.ActionAndWait[storage.PrimaryStorageVO](ctx, st.Client, "primary-storage", ps.UUID, "syncPrimaryStorageCapacity", nil); err != nil {
		t.Errorf("sync capacity: %v", err)
	}
	noDrift(t, ctx, st)
}

// TestPrimaryStorageRefusals: what cannot be done is refused with a code
// and leaves nothing behind.
func TestPrimaryStorageRefusals(t *testing.T) {
	st, ctx := start(t)
	shared := t.TempDir()
	addHost(t, st, shared)
	for _, tc := range []struct {
		name   string
		path   string
		params map[string]any
	}{
		{"relative url", "primary-storage/local-storage", map[string]any{"name": "x", "url": "local", "zoneUuid": st.Defaults["zone"]}},
		{"root url", "primary-storage/smp", map[string]any{"name": "x", "url": "/", "zoneUuid": st.Defaults["zone"]}},
		{"no zone", "primary-storage/smp", map[string]any{"name": "x", "url": "/a"}},
		{"unknown zone", "primary-storage/smp", map[string]any{"name": "x", "url": "/a", "zoneUuid": uid.New()}},
		{"wrong type", "primary-storage/smp", map[string]any{"name": "x", "url": "/a", "zoneUuid": st.Defaults["zone"], "type": "LocalStorage"}},
		{"no name", "primary-storage/smp", map[string]any{"url": "/a", "zoneUuid": st.Defaults["zone"]}},
		{"attach unknown storage", "clusters/" + st.Defaults["cluster"] + "/primary-storage/" + uid.New(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.Client.Create(ctx, tc.path, tc.params)
			if client.StatusCode(err) != 400 || !errcode.Has(err, errcode.InvalidArgument) {
				t.Errorf("%v, want 400 %s", err, errcode.InvalidArgument)
			}
		})
	}

	// Another zone's cluster.
	z, err := client.CreateAndWait[struct{ UUID string }](ctx, st.Client, "zones", map[string]any{"name": "zone-2"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.CreateAndWait[struct{ UUID string }](ctx, st.Client, "clusters", map[string]any{"name": "c2", "zoneUuid": z.UUID, "hypervisorType": "KVM"})
	if err != nil {
		t.Fatal(err)
	}
	ps := addPS(t, ctx, st, "primary-storage/smp", sharedURL)
	if _, err := attach(ctx, st, ps.UUID, c.UUID); !errcode.Has(err, errcode.InvalidArgument) {
		t.Errorf("attach to another zone's cluster: %v, want %s", err, errcode.InvalidArgument)
	}
	// A url the hosts do not serve: the attach fails and is undone.
	bad := addPS(t, ctx, st, "primary-storage/smp", "/not/served")
	if _, err := attach(ctx, st, bad.UUID, st.Defaults["cluster"]); !errcode.Has(err, errcode.AgentError) {
		t.Errorf("attach storage no host serves: %v, want %s", err, errcode.AgentError)
	}
	if p := getPS(t, ctx, st, bad.UUID); len(p.ClusterRefs) != 0 {
		t.Errorf("failed attach left clusters %v", p.ClusterRefs)
	}
	if err := waitDelete(ctx, st, "clusters/"+st.Defaults["cluster"]+"/primary-storage", ps.UUID); !errcode.Has(err, errcode.InvalidArgument) {
		t.Errorf("detach what is not attached: %v, want %s", err, errcode.InvalidArgument)
	}
}

func startStorageAgent(t *testing.T) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Options{Root: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	return a
}

// TestBackupStorage adds a real storage agent as image store backup
// storage, attaches it to a zone and deletes it; an address where no agent
// answers fails the add and leaves no row.
func TestBackupStorage(t *testing.T) {
	st, ctx := start(t)
	var before int64
	st.DB().Model(&storage.BackupStorageVO{}).Count(&before) // the stack's own
	a := startStorageAgent(t)
	ip, port, _ := net.SplitHostPort(a.Addr())
	p, _ := strconv.Atoi(port)
	bs, err := client.CreateAndWait[storage.BackupStorageVO](ctx, st.Client, "backup-storage/image-store", map[string]any{
		"name": "bs", "url": "/var/lib/images", "hostname": ip, "agentPort": p, "username": "root", "password": "x", "sshPort": 22})
	if err != nil {
		t.Fatal(err)
	}
	if bs.Status != storage.StatusConnected || bs.TotalCapacity <= 0 || bs.Type != storage.TypeImageStore {
		t.Fatalf("added backup storage %+v", bs)
	}
	got, err := client.CreateAndWait[struct {
		AttachedZoneUUIDs []string `json:"attachedZoneUuids"`
	}](ctx, st.Client, "zones/"+st.Defaults["zone"]+"/backup-storage/"+bs.UUID, nil)
	if err != nil || len(got.AttachedZoneUUIDs) != 1 || got.AttachedZoneUUIDs[0] != st.Defaults["zone"] {
		t.Fatalf("attach to zone: %+v, %v", got, err)
	}
	if _, err := client.CreateAndWait[storage.BackupStorageVO](ctx, st.Client, "backup-storage/image-store", map[string]any{
		"name": "twice", "url": "/x", "hostname": ip, "agentPort": p}); !errcode.Has(err, errcode.InvalidArgument) {
		t.Errorf("add the same agent twice: %v, want %s", err, errcode.InvalidArgument)
	}

	// Nothing listens there.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if _, err := client.CreateAndWait[storage.BackupStorageVO](ctx, st.Client, "backup-storage/image-store", map[string]any{
		"name": "dead", "url": "/x", "hostname": "127.0.0.1", "agentPort": deadPort}); !errcode.Has(err, errcode.AgentError) {
		t.Errorf("add a dead agent: %v, want %s", err, errcode.AgentError)
	}
	var n int64
	st.DB().Model(&storage.BackupStorageVO{}).Count(&n)
	if n != before+1 {
		t.Errorf("%d backup storage rows, want %d (the failed add must leave none)", n, before+1)
	}
	for _, params := range []map[string]any{
		{"name": "x", "url": "rel", "hostname": "127.0.0.1"},
		{"name": "x", "url": "/x"},
		{"name": "x", "url": "/x", "hostname": "127.0.0.1", "agentPort": 70000},
	} {
		if _, err := st.Client.Create(ctx, "backup-storage/image-store", params); client.StatusCode(err) != 400 {
			t.Errorf("add %v: %v, want 400", params, err)
		}
	}
	if err := waitDelete(ctx, st, "zones/"+st.Defaults["zone"]+"/backup-storage", bs.UUID); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if err := waitDelete(ctx, st, "backup-storage", bs.UUID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := storage.LoadBackup(ctx, st.DB(), bs.UUID); !errcode.Has(err, errcode.ResourceNotFound) {
		t.Errorf("deleted backup storage still loads: %v", err)
	}
}
