package server_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"mplane/api/client"
	"mplane/conf"
	"mplane/internal/testenv"
	"mplane/server"
	"mplane/server/servertest"
	hostsvc "mplane/services/host"
	"mplane/services/image"
	"mplane/services/storage"
	"mplane/services/vm"
)

// freePorts finds n consecutive free loopback ports (for simulated hosts
// that keep their addresses across restarts).
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 100 {
		base := 20000 + rand.IntN(30000)
		var ls []net.Listener
		for i := range n {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == n {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports found", n)
	return 0
}

func startOn(t *testing.T, dir string, hosts, agentPort int, buf *syncBuffer) *server.Embedded {
	t.Helper()
	cfg, err := conf.Load("", []string{"MPLANE_DATA_DIR=" + dir, "MPLANE_API_LISTEN=127.0.0.1:0",
		"MPLANE_ADMIN_PASSWORD=" + servertest.Password, "MPLANE_DRAIN_TIMEOUT=1s", "MPLANE_HOST_PING_INTERVAL=200ms"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := server.StartEmbedded(ctx, server.EmbeddedOptions{Options: server.Options{Config: cfg,
		Logger: cfg.NewLogger(buf, level), LogLevel: level, BcryptCost: bcrypt.MinCost}, Hosts: hosts, AgentPort: agentPort})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

// checkStorageDefaults: the embedded cloud has exactly one default backup
// storage, Connected, at its agent's address and attached to the default
// zone; one default image, Ready, whose file is in the backup storage;
// one local primary storage attached to the default cluster with a
// measured directory on every host.
func checkStorageDefaults(t *testing.T, e *server.Embedded, dir string, hosts int) (bsUUID, imageUUID string) {
	t.Helper()
	db := e.DB()
	var bss []storage.BackupStorageVO
	if err := db.Preload("ZoneRefs").Where("name = ?", server.DefaultBackupStorage).Find(&bss).Error; err != nil || len(bss) != 1 {
		t.Fatalf("%d default backup storages (%v), want 1", len(bss), err)
	}
	bs := bss[0]
	if bs.Status != storage.StatusConnected || bs.TotalCapacity <= 0 || len(bs.ZoneRefs) != 1 {
		t.Errorf("default backup storage %+v: want Connected, measured, attached to the default zone", bs)
	}
	if addr := net.JoinHostPort(bs.Hostname, strconv.Itoa(bs.AgentPort)); addr != e.BackupAgent {
		t.Errorf("default backup storage at %s, its agent at %s", addr, e.BackupAgent)
	}

	var imgs []image.ImageVO
	if err := db.Preload("BackupStorageRefs").Where("name = ?", server.DefaultImage).Find(&imgs).Error; err != nil || len(imgs) != 1 {
		t.Fatalf("%d default images (%v), want 1", len(imgs), err)
	}
	img := imgs[0]
	if img.Status != image.StatusReady || img.Size <= 0 || img.ActualSize <= 0 || img.Md5Sum == "" || len(img.BackupStorageRefs) != 1 {
		t.Fatalf("default image %+v: want Ready, with its sizes, MD5 and one ref", img)
	}
	ref := img.BackupStorageRefs[0]
	if ref.BackupStorageUUID != bs.UUID || ref.Status != image.StatusReady || ref.DownloadProgress != 100 {
		t.Errorf("default image's ref %+v: want Ready at 100%% on %s", ref, bs.UUID)
	}
	if fi, err := os.Stat(filepath.Join(dir, "backup-storage", filepath.FromSlash(ref.InstallPath))); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the default image's file in the backup storage: %v", err)
	}

	var pss []storage.PrimaryStorageVO
	if err := db.Preload("ClusterRefs").Where("name = ?", server.DefaultPrimaryStorage).Find(&pss).Error; err != nil || len(pss) != 1 {
		t.Fatalf("%d default primary storages (%v), want 1", len(pss), err)
	}
	ps := pss[0]
	if ps.Type != storage.TypeLocalStorage || ps.URL != server.DefaultLocalStorageURL || len(ps.ClusterRefs) != 1 || ps.TotalCapacity <= 0 {
		t.Errorf("default primary storage %+v: want a LocalStorage at %s attached to the default cluster, with capacity", ps, server.DefaultLocalStorageURL)
	}
	var hostRows []hostsvc.HostVO
	if err := db.Find(&hostRows).Error; err != nil || len(hostRows) != hosts {
		t.Fatalf("%d hosts (%v), want %d", len(hostRows), err, hosts)
	}
	var refs []storage.LocalStorageHostRefVO
	if err := db.Where("primary_storage_uuid = ?", ps.UUID).Find(&refs).Error; err != nil || len(refs) != hosts {
		t.Fatalf("%d local storage host refs (%v), want one per host (%d)", len(refs), err, hosts)
	}
	for _, r := range refs {
		if r.TotalCapacity <= 0 {
			t.Errorf("host ref %+v: not measured", r)
		}
	}
	return bs.UUID, img.UUID
}

// TestEmbeddedStorageDefaults: the first start downloads the default image
// into the in-process backup storage and attaches
// the local primary storage; a second start on the same data directory
// finds them all, reconnects the backup storage at its agent's new port,
// and the cloud still works: a new image downloads, a VM starts from the
// default image.
func TestEmbeddedStorageDefaults(t *testing.T) {
	dir := t.TempDir()
	const hosts = 2
	port := freePorts(t, hosts)
	buf := &syncBuffer{}
	e := startOn(t, dir, hosts, port, buf)
	bsUUID, imgUUID := checkStorageDefaults(t, e, dir, hosts)
	// (Progress events race the download's end on a file this small; the
	// image service's TestProgress shows them reaching the API.)
	for _, want := range []string{"downloading the default image", "default image ready"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the first start's log lacks %q", want)
		}
	}
	firstAgent := e.BackupAgent
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	buf2 := &syncBuffer{}
	e = startOn(t, dir, hosts, port, buf2)
	if e.BackupAgent == firstAgent {
		t.Logf("the backup storage agent got the same address again (%s)", firstAgent)
	}
	bs2, img2 := checkStorageDefaults(t, e, dir, hosts)
	if bs2 != bsUUID || img2 != imgUUID {
		t.Errorf("second start: backup storage %s, image %s; want the first start's %s, %s", bs2, img2, bsUUID, imgUUID)
	}
	if strings.Contains(buf2.String(), "downloading the default image") {
		t.Error("the second start downloaded the default image again")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.New(e.URL(), client.WithPollInterval(time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Login(ctx, "admin", servertest.Password); err != nil {
		t.Fatal(err)
	}
	// The reconnected backup storage downloads: an image from this node's
	// own default image file, served again.
	src := filepath.Join(dir, "image-source")
	entries, err := os.ReadDir(src)
	if err != nil || len(entries) == 0 {
		t.Fatalf("the default image's source: %v", err)
	}
	url := serveFile(t, filepath.Join(src, entries[0].Name()))
	more, err := client.CreateAndWait[image.ImageVO](ctx, c, "images", map[string]any{"name": "after-restart", "url": url,
		"format": strings.TrimPrefix(filepath.Ext(entries[0].Name()), "."), "backupStorageUuids": []string{bsUUID}})
	if err != nil || more.Status != image.StatusReady {
		t.Fatalf("an image after the restart: %+v, %v", more, err)
	}
	// A VM of the default image, once the hosts are connected again.
	testenv.Eventually(t, time.Minute, func() bool {
		var n int64
		e.DB().Model(&hostsvc.HostVO{}).Where("status = ?", hostsvc.StatusConnected).Count(&n)
		return n == hosts
	}, "the hosts reconnect after the restart")
	var off, l3 struct{ UUID string }
	e.DB().Table("instance_offerings").Select("uuid").Where("name = ?", server.DefaultOffering).Take(&off)
	e.DB().Table("l3_networks").Select("uuid").Where("name = ?", server.DefaultL3).Take(&l3)
	v, err := client.CreateAndWait[vm.VmInstanceVO](ctx, c, "vm-instances", map[string]any{"name": "vm1", "instanceOfferingUuid": off.UUID,
		"imageUuid": imgUUID, "l3NetworkUuids": []string{l3.UUID}})
	if err != nil || v.State != vm.StateRunning {
		t.Fatalf("a VM of the default image after the restart: %+v, %v", v, err)
	}
}

// serveFile serves one file on loopback for the test and answers its URL.
func serveFile(t *testing.T, file string) string {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(file))))
	t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(file)
}
