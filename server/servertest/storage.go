package servertest

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	bsagent "mplane/agents/storage"
	"mplane/api/client"
	"mplane/server"
	"mplane/services/storage"
)

// BackupStorageOptions configure a backup storage a test starts itself
// (AddBackupStorage).
type BackupStorageOptions struct {
	// Agent configures the storage agent: download retries, progress
	// interval, an HTTPClient that fails... Root and Listen are ignored:
	// the agent serves a temporary directory of the test on a free
	// loopback port. A zero ProgressInterval is 10ms (the agent's default
	// is 1s), so tests see progress at once.
	Agent bsagent.Options
	// Name is the backup storage's name; default "test-bs-<port>".
	Name string
	// NoAttach leaves it detached from the default zone.
	NoAttach bool
}

// BackupStorage is a storage agent a test started and added as image store
// backup storage.
type BackupStorage struct {
	// UUID is the backup storage's.
	UUID string
	// Agent is its storage agent; Root() is the directory it serves.
	Agent *bsagent.Agent
}

// Root is the directory the backup storage's agent serves.
func (b *BackupStorage) Root() string { return b.Agent.Root() }

// AddBackupStorage starts a storage agent (agents/storage) in the test's
// process on a temporary directory, adds it through the API as image store
// backup storage and attaches it to the default zone. The agent stops when
// the test ends.
func (s *Stack) AddBackupStorage(t testing.TB, opts BackupStorageOptions) *BackupStorage {
	t.Helper()
	ao := opts.Agent
	ao.Root = t.TempDir()
	ao.Listen = "127.0.0.1:0"
	if ao.ProgressInterval == 0 {
		ao.ProgressInterval = 10 * time.Millisecond
	}
	a, err := bsagent.New(ao)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop the storage agent at %s: %v", a.Addr(), err)
		}
	})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ip, portStr, _ := net.SplitHostPort(a.Addr())
	port, _ := strconv.Atoi(portStr)
	name := opts.Name
	if name == "" {
		name = "test-bs-" + portStr
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bs, err := client.CreateAndWait[storage.BackupStorageVO](ctx, s.Client, "backup-storage/image-store", map[string]any{
		"name": name, "url": a.Root(), "hostname": ip, "agentPort": port})
	if err != nil {
		t.Fatalf("add the storage agent at %s as backup storage: %v", a.Addr(), err)
	}
	if !opts.NoAttach {
		if _, err := client.CreateAndWait[storage.BackupStorageVO](ctx, s.Client, "zones/"+s.Defaults["zone"]+"/backup-storage/"+bs.UUID, nil); err != nil {
			t.Fatalf("attach backup storage %s to the default zone: %v", bs.UUID, err)
		}
	}
	return &BackupStorage{UUID: bs.UUID, Agent: a}
}

// DefaultBackupStorage is the UUID of the stack's own backup storage
// (server.DefaultBackupStorage), which holds the default image.
func (s *Stack) DefaultBackupStorage(t testing.TB) string {
	t.Helper()
	var b storage.BackupStorageVO
	if err := s.DB().Where("name = ?", server.DefaultBackupStorage).Take(&b).Error; err != nil {
		t.Fatalf("find the default backup storage: %v", err)
	}
	return b.UUID
}
