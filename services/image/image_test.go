package image_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bsagent "mplane/agents/storage"
	"mplane/api/client"
	"mplane/conf"
	"mplane/errcode"
	"mplane/flow"
	"mplane/internal/testenv"
	"mplane/server/servertest"
	"mplane/services/image"
	"mplane/services/resource"
	"mplane/uid"
)

func start(t *testing.T) (*servertest.Stack, context.Context) {
	t.Helper()
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return st, ctx
}

// randomBytes is n bytes of noise: a raw image whose MD5 means something.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func md5Hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// serveBytes serves data at /<name> (range requests included).
func serveBytes(t *testing.T, name string, data []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/"+name {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/" + name
}

// files lists the regular files under root (relative paths).
func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func countImages(t *testing.T, st *servertest.Stack, name string) (images, refs int64) {
	t.Helper()
	if err := st.DB().Model(&image.ImageVO{}).Where("name = ?", name).Count(&images).Error; err != nil {
		t.Fatal(err)
	}
	if err := st.DB().Model(&image.ImageBackupStorageRefVO{}).
		Where("image_uuid IN (?)", st.DB().Model(&image.ImageVO{}).Select("uuid").Where("name = ?", name)).Count(&refs).Error; err != nil {
		t.Fatal(err)
	}
	return images, refs
}

// TestDownload downloads a raw image into a real storage agent: the file
// is in the agent's root with the bytes served, the image Ready with the
// size and MD5 of the file, its ref Ready at 100%; deleting it deletes
// the file.
func TestDownload(t *testing.T) {
	st, ctx := start(t)
	bs := st.AddBackupStorage(t, servertest.BackupStorageOptions{})
	data := randomBytes(t, 3<<20+12345)
	url := serveBytes(t, "disk.raw", data)

	img, err := client.CreateAndWait[image.ImageVO](ctx, st.Client, "images", map[string]any{"name": "disk", "url": url, "format": "raw",
		"mediaType": "DataVolumeTemplate", "guestOsType": "Debian 12", "md5sum": strings.ToUpper(md5Hex(data)), "backupStorageUuids": []string{bs.UUID}})
	if err != nil {
		t.Fatal(err)
	}
	if img.Status != image.StatusReady || img.State != image.StateEnabled || img.Format != "raw" || img.MediaType != "DataVolumeTemplate" ||
		img.GuestOsType != "Debian 12" || img.URL != url {
		t.Fatalf("created %+v", img)
	}
	if img.Size != int64(len(data)) || img.ActualSize <= 0 || img.Md5Sum != md5Hex(data) {
		t.Errorf("size %d actualSize %d md5 %s; want %d, > 0, %s", img.Size, img.ActualSize, img.Md5Sum, len(data), md5Hex(data))
	}
	if len(img.BackupStorageRefs) != 1 {
		t.Fatalf("refs %+v, want one on %s", img.BackupStorageRefs, bs.UUID)
	}
	ref := img.BackupStorageRefs[0]
	want := image.InstallPath(img.UUID, "raw")
	if ref.BackupStorageUUID != bs.UUID || ref.Status != image.StatusReady || ref.DownloadProgress != 100 || ref.InstallPath != want {
		t.Errorf("ref %+v, want Ready at 100%% at %s on %s", ref, want, bs.UUID)
	}
	got, err := os.ReadFile(filepath.Join(bs.Root(), filepath.FromSlash(want)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file in the agent's root: %d bytes, %v; want the %d bytes served", len(got), err, len(data))
	}
	// GET shows the same, refs included.
	again, err := client.GetAs[image.ImageVO](ctx, st.Client, "images", img.UUID)
	if err != nil || again.Status != image.StatusReady || len(again.BackupStorageRefs) != 1 || again.BackupStorageRefs[0].DownloadProgress != 100 {
		t.Fatalf("GET %+v, %v", again, err)
	}
	if ready, err := image.LoadReady(ctx, st.DB(), img.UUID); err != nil || ready.UUID != img.UUID {
		t.Errorf("LoadReady: %v", err)
	}
	if refs, err := image.BackupRefs(ctx, st.DB(), img.UUID); err != nil || len(refs) != 1 || refs[0].InstallPath != want {
		t.Errorf("BackupRefs: %+v, %v", refs, err)
	}
	rows, _, err := client.QueryAs[image.ImageVO](ctx, st.Client, "images", client.Query{Q: []string{"mediaType=DataVolumeTemplate", "name=disk"}})
	if err != nil || len(rows) != 1 || rows[0].UUID != img.UUID {
		t.Errorf("query mediaType=DataVolumeTemplate: %d rows, %v", len(rows), err)
	}

	// Update, disable, enable.
	upd, err := client.WaitAs[image.ImageVO](ctx, action(t, ctx, st, "images", img.UUID, "updateImage", map[string]any{"name": "disk2", "description": "d"}), nil)
	if err != nil || upd.Name != "disk2" || upd.Description != "d" {
		t.Errorf("updateImage: %+v, %v", upd, err)
	}
	dis, err := client.WaitAs[image.ImageVO](ctx, action(t, ctx, st, "images", img.UUID, "changeImageState", map[string]any{"stateEvent": "disable"}), nil)
	if err != nil || dis.State != image.StateDisabled {
		t.Errorf("changeImageState disable: %+v, %v", dis, err)
	}
	if _, err := st.Client.Action(ctx, "images", img.UUID, "changeImageState", map[string]any{"stateEvent": "off"}); client.StatusCode(err) != http.StatusBadRequest {
		t.Errorf("changeImageState off: %v, want 400", err)
	}
	if _, err := image.LoadReady(ctx, st.DB(), img.UUID); !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), "is Disabled") {
		t.Errorf("LoadReady of a Disabled image: %v, want it refused", err)
	}

	j, err := st.Client.Delete(ctx, "images", img.UUID, client.DeletePermissive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Wait(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client.Get(ctx, "images", img.UUID); client.StatusCode(err) != http.StatusNotFound {
		t.Errorf("get a deleted image: %v, want 404", err)
	}
	if f := files(t, bs.Root()); len(f) != 0 {
		t.Errorf("files left in the agent's root after the delete: %v", f)
	}
	if n, refs := countImages(t, st, "disk2"); n != 0 || refs != 0 {
		t.Errorf("%d rows, %d refs after the delete", n, refs)
	}
	// Deleting again succeeds.
	if j, err := st.Client.Delete(ctx, "images", img.UUID, client.DeletePermissive); err != nil {
		t.Fatal(err)
	} else if _, err := j.Wait(ctx, nil); err != nil {
		t.Errorf("delete a deleted image: %v", err)
	}
}

// action starts an action and answers its job.
func action(t *testing.T, ctx context.Context, st *servertest.Stack, path, uuid, name string, body any) *client.Job {
	t.Helper()
	j, err := st.Client.Action(ctx, path, uuid, name, body)
	if err != nil {
		t.Fatalf("%s %s: %v", name, uuid, err)
	}
	return j
}

// TestProgress serves an image that stops half-way until the test lets
// it go on: meanwhile GET shows the image Downloading with a ref between
// 0 and 100%, and a VM cannot be made from it.
func TestProgress(t *testing.T) {
	st, ctx := start(t)
	bs := st.AddBackupStorage(t, servertest.BackupStorageOptions{})
	data := randomBytes(t, 4<<20)
	release := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "4194304")
		half := len(data) / 2
		// The first half in two parts a moment apart, so progress events
		// of several percents are sent.
		for _, part := range [][]byte{data[:half/2], data[half/2 : half]} {
			if _, err := w.Write(part); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(data[half:])
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(let) // runs before srv.Close

	name := "slow-" + uid.New()[:6]
	j, err := st.Client.Create(ctx, "images", map[string]any{"name": name, "url": srv.URL + "/slow.raw", "format": "raw",
		"backupStorageUuids": []string{bs.UUID}})
	if err != nil {
		t.Fatal(err)
	}
	var uuid string
	deadline := time.Now().Add(time.Minute)
	for {
		rows, _, err := client.QueryAs[image.ImageVO](ctx, st.Client, "images", client.Query{Q: []string{"name=" + name}})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 1 {
			uuid = rows[0].UUID
			img, err := client.GetAs[image.ImageVO](ctx, st.Client, "images", uuid)
			if err != nil {
				t.Fatal(err)
			}
			if img.Status != image.StatusDownloading {
				t.Fatalf("image %s while its download is held: %+v", uuid, img)
			}
			if len(img.BackupStorageRefs) == 1 && img.BackupStorageRefs[0].DownloadProgress > 0 && img.BackupStorageRefs[0].DownloadProgress < 100 {
				if img.BackupStorageRefs[0].Status != image.StatusDownloading {
					t.Errorf("ref %+v, want Downloading", img.BackupStorageRefs[0])
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no download progress between 0 and 100%% shown in a minute (image %q)", uuid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A VM of an image that is not Ready is refused at once.
	_, err = st.Client.Create(ctx, "vm-instances", map[string]any{"name": "vm", "instanceOfferingUuid": st.Defaults["offering"], "imageUuid": uuid,
		"l3NetworkUuids": []string{st.Defaults["l3"]}})
	if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), "Downloading") {
		t.Errorf("create a VM of a downloading image: %v, want 400 naming its status", err)
	}
	if _, err := image.LoadReady(ctx, st.DB(), uuid); !errcode.Has(err, errcode.InvalidArgument) {
		t.Errorf("LoadReady of a downloading image: %v, want %s", err, errcode.InvalidArgument)
	}
	if refs, err := image.BackupRefs(ctx, st.DB(), uuid); err != nil || len(refs) != 0 {
		t.Errorf("BackupRefs of a downloading image: %+v, %v; want none", refs, err)
	}
	let()
	img, err := client.WaitAs[image.ImageVO](ctx, j, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Status != image.StatusReady || img.Size != int64(len(data)) || img.Md5Sum != md5Hex(data) || img.BackupStorageRefs[0].DownloadProgress != 100 {
		t.Fatalf("after the download: %+v", img)
	}
}

// TestDownloadFailures: a URL answering 404, a wrong md5sum and a server
// that hangs up half-way each fail the job with an error saying why and
// naming the backup storage; no image row, ref or file is left.
func TestDownloadFailures(t *testing.T) {
	st, ctx := start(t)
	bs := st.AddBackupStorage(t, servertest.BackupStorageOptions{Agent: bsagent.Options{DownloadRetryInterval: 10 * time.Millisecond}})
	data := randomBytes(t, 1<<20)
	good := serveBytes(t, "ok.raw", data)
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1048576")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	t.Cleanup(cut.Close)

	for _, tc := range []struct {
		name, url, md5 string
		want           string
	}{
		{"not found", good + ".missing", "", "404"},
		{"checksum", good, md5Hex([]byte("other")), "md5 mismatch"},
		{"hang up", cut.URL + "/cut.raw", "", "interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "bad-" + uid.New()[:6]
			params := map[string]any{"name": name, "url": tc.url, "format": "raw", "backupStorageUuids": []string{bs.UUID}}
			if tc.md5 != "" {
				params["md5sum"] = tc.md5
			}
			_, err := client.CreateAndWait[image.ImageVO](ctx, st.Client, "images", params)
			if err == nil {
				t.Fatal("the create succeeded")
			}
			t.Logf("the job's error: %v", err)
			if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), bs.UUID) {
				t.Errorf("error %v; want %s naming %q and backup storage %s", err, errcode.AgentError, tc.want, bs.UUID)
			}
			if n, refs := countImages(t, st, name); n != 0 || refs != 0 {
				t.Errorf("%d image rows and %d refs left", n, refs)
			}
			if f := files(t, bs.Root()); len(f) != 0 {
				t.Errorf("files left in the agent's root: %v", f)
			}
		})
	}
}

// failing is a transport that fails every request: a storage agent using
// it cannot download anything.
type failing struct{}

func (failing) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("injected: no route to the image server")
}

// TestOneOfTwoFails downloads into two backup storages, one of which
// cannot reach the image server: the image is Ready with one ref, the
// other storage holds no file. With both failing the error names both.
func TestOneOfTwoFails(t *testing.T) {
	st, ctx := start(t)
	good := st.AddBackupStorage(t, servertest.BackupStorageOptions{})
	bad := st.AddBackupStorage(t, servertest.BackupStorageOptions{Agent: bsagent.Options{HTTPClient: &http.Client{Transport: failing{}},
		DownloadRetries: -1}})
	bad2 := st.AddBackupStorage(t, servertest.BackupStorageOptions{Agent: bsagent.Options{HTTPClient: &http.Client{Transport: failing{}},
		DownloadRetries: -1}})
	data := randomBytes(t, 256<<10)
	url := serveBytes(t, "two.raw", data)

	img, err := client.CreateAndWait[image.ImageVO](ctx, st.Client, "images", map[string]any{"name": "two", "url": url, "format": "raw",
		"backupStorageUuids": []string{bad.UUID, good.UUID}})
	if err != nil {
		t.Fatal(err)
	}
	if img.Status != image.StatusReady || len(img.BackupStorageRefs) != 1 || img.BackupStorageRefs[0].BackupStorageUUID != good.UUID {
		t.Fatalf("image %+v, want Ready with one ref on %s", img, good.UUID)
	}
	if f := files(t, good.Root()); len(f) != 1 {
		t.Errorf("files on the storage that downloaded: %v, want one", f)
	}
	if f := files(t, bad.Root()); len(f) != 0 {
		t.Errorf("files on the storage that failed: %v", f)
	}

	_, err = client.CreateAndWait[image.ImageVO](ctx, st.Client, "images", map[string]any{"name": "none", "url": url, "format": "raw",
		"backupStorageUuids": []string{bad.UUID, bad2.UUID}})
	if err == nil || !strings.Contains(err.Error(), bad.UUID) || !strings.Contains(err.Error(), bad2.UUID) || !strings.Contains(err.Error(), "no route") {
		t.Errorf("both failing: %v, want an error naming both backup storages and the cause", err)
	}
	if n, refs := countImages(t, st, "none"); n != 0 || refs != 0 {
		t.Errorf("%d image rows and %d refs left", n, refs)
	}
}

// TestBadInput: what the caller gets wrong is a 400 with the catalogue's
// code, at once, and saying what to fix.
func TestBadInput(t *testing.T) {
	st, ctx := start(t)
	bs := st.AddBackupStorage(t, servertest.BackupStorageOptions{})
	off := st.AddBackupStorage(t, servertest.BackupStorageOptions{})
	if _, err := client.WaitAs[struct{}](ctx, action(t, ctx, st, "backup-storage", off.UUID, "changeBackupStorageState", map[string]any{"stateEvent": "disable"}), nil); err != nil {
		t.Fatal(err)
	}
	bss := []string{bs.UUID}
	for _, tc := range []struct {
		name   string
		params map[string]any
		detail string
	}{
		{"no backup storage", map[string]any{"name": "x", "url": "http://h/x"}, "backupStorageUuids must name at least one"},
		{"empty backup storage", map[string]any{"name": "x", "url": "http://h/x", "backupStorageUuids": []string{}}, "backupStorageUuids must name at least one"},
		{"unknown backup storage", map[string]any{"name": "x", "url": "http://h/x", "backupStorageUuids": []string{uid.New()}}, "does not exist"},
		{"disabled backup storage", map[string]any{"name": "x", "url": "http://h/x", "backupStorageUuids": []string{off.UUID}}, "is Disabled"},
		{"twice", map[string]any{"name": "x", "url": "http://h/x", "backupStorageUuids": []string{bs.UUID, bs.UUID}}, "twice"},
		{"no url", map[string]any{"name": "x", "backupStorageUuids": bss}, "url is required"},
		{"relative url", map[string]any{"name": "x", "url": "images/x.qcow2", "backupStorageUuids": bss}, "must be an absolute URL"},
		{"ftp url", map[string]any{"name": "x", "url": "ftp://h/x.qcow2", "backupStorageUuids": bss}, "http or https"},
		{"bad format", map[string]any{"name": "x", "url": "http://h/x", "format": "vmdk", "backupStorageUuids": bss}, `format must be qcow2, raw or iso, got "vmdk"`},
		{"bad media type", map[string]any{"name": "x", "url": "http://h/x", "mediaType": "Disk", "backupStorageUuids": bss}, "mediaType must be"},
		{"bad platform", map[string]any{"name": "x", "url": "http://h/x", "platform": "BeOS", "backupStorageUuids": bss}, "platform must be"},
		{"bad md5", map[string]any{"name": "x", "url": "http://h/x", "md5sum": "abc", "backupStorageUuids": bss}, "md5sum must be 32 hexadecimal digits"},
		{"no name", map[string]any{"url": "http://h/x", "backupStorageUuids": bss}, "name is required"},
		{"unknown field", map[string]any{"name": "x", "url": "http://h/x", "size": 1, "backupStorageUuids": bss}, "size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.Client.Create(ctx, "images", tc.params)
			if client.StatusCode(err) != http.StatusBadRequest || !errcode.Has(err, errcode.InvalidArgument) || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("%v, want 400 %s with %q", err, errcode.InvalidArgument, tc.detail)
			}
		})
	}
	var n int64
	st.DB().Model(&image.ImageVO{}).Where("name = ?", "x").Count(&n)
	if n != 0 {
		t.Errorf("%d images made of bad input", n)
	}
}

// TestTakeover: a node that died half-way through an image's download left
// the row, a ref and a file; the node that takes the image over rolls the
// create back: the file is deleted on the backup storage, the row and the
// ref removed, the flow record rolled back.
func TestTakeover(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1, Configure: func(cfg *conf.Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond // evict the dead node soon
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bs := st.AddBackupStorage(t, servertest.BackupStorageOptions{})
	db := st.DB()
	now := time.Now().UTC()
	img := image.ImageVO{Base: resource.Base{UUID: uid.New(), Name: "half", CreateDate: now, LastOpDate: now}, URL: "http://192.0.2.1/x.raw",
		Format: "raw", MediaType: image.MediaRootVolumeTemplate, Platform: "Linux", State: image.StateEnabled, Status: image.StatusDownloading}
	path := image.InstallPath(img.UUID, "raw")
	if err := db.Create(&img).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&image.ImageBackupStorageRefVO{ImageUUID: img.UUID, BackupStorageUUID: bs.UUID, InstallPath: path,
		Status: image.StatusDownloading, DownloadProgress: 40, CreateDate: now, LastOpDate: now}).Error; err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(bs.Root(), filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, randomBytes(t, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	dead := uid.New()
	data, _ := json.Marshal(map[string]any{"image": img, "backupStorageUuids": []string{bs.UUID}})
	rec := flow.Record{ID: uid.New(), Chain: "create-image", Owner: dead, Resource: img.UUID, State: flow.Running, Applied: 2, Total: 3,
		Step: "download", Data: data}
	recorder := flow.NewGormRecorder(db)
	if err := recorder.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	st.AddDeadNode(t, dead)
	testenv.Eventually(t, time.Minute, func() bool {
		r, err := recorder.Get(ctx, rec.ID)
		return err == nil && r.State == flow.RolledBack
	}, "the abandoned image create is rolled back")
	if n, refs := countImages(t, st, "half"); n != 0 || refs != 0 {
		t.Errorf("%d image rows and %d refs left after the rollback", n, refs)
	}
	if f := files(t, bs.Root()); len(f) != 0 {
		t.Errorf("files left on the backup storage after the rollback: %v", f)
	}
}
