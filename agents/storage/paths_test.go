package storage

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
)

// outsideSetup makes, under e's root, symbolic links out of it: "out" (a
// directory outside), "out.img" (a file outside), "dangling" (nowhere),
// and "in" (a directory inside, allowed). It returns the outside
// directory.
func outsideSetup(t *testing.T, e *env) string {
	t.Helper()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "f"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.write("real/f", pattern(4096, 1))
	for name, target := range map[string]string{
		"out":      outside,
		"out.img":  filepath.Join(outside, "f"),
		"dangling": filepath.Join(outside, "none"),
		"in":       e.path("real"),
	} {
		if err := os.Symlink(target, e.path(name)); err != nil {
			t.Fatal(err)
		}
	}
	return outside
}

func TestPathEscapesRefused(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		e := newEnv(t, md)
		outside := outsideSetup(t, e)
		bad := map[string]string{
			"/etc/passwd":   "is absolute",
			"../x":          "escapes the storage root",
			"a/../../x":     "escapes the storage root",
			"a/..":          "escapes the storage root",
			"out/x":         "escapes the storage root through the symbolic link out",
			"out/f":         "escapes the storage root through the symbolic link out",
			"out.img":       "escapes the storage root through the symbolic link out.img",
			"dangling":      "symbolic link dangling leads nowhere",
			".":             "names the storage root itself",
			"":              "empty path",
			"a\x00b":        "NUL",
			"in/../../etc/": "escapes the storage root",
		}
		for p, want := range bad {
			fails(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: p, Size: mib}, want)
			fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: p, InstallPath: "c"}, want)
			fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "real/f", InstallPath: p}, want)
			fails(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: p, InstallPath: "c"}, want)
			fails(e, protocol.ResizeVolume, protocol.ResizeVolumeCmd{InstallPath: p, Size: 2 * mib}, want)
			fails(e, protocol.DeleteVolume, protocol.DeleteCmd{InstallPath: p}, want)
			fails(e, protocol.DeleteImage, protocol.DeleteCmd{InstallPath: p}, want)
			fails(e, protocol.VolumeInfo, protocol.VolumeInfoCmd{InstallPath: p}, want)
			fails(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s", VolumeInstallPath: p, InstallPath: "s"}, want)
			fails(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: p, SnapshotInstallPath: "s"}, want)
			fails(e, protocol.DownloadImage, protocol.DownloadImageCmd{URL: "http://127.0.0.1:1/x", InstallPath: p}, want)
			fails(e, protocol.DeleteSnapshot, protocol.DeleteCmd{InstallPath: p}, want)
		}
		// A file snapshot cannot be written through a link out either.
		must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v", Size: mib, Format: protocol.FormatRaw})
		fails(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s", VolumeInstallPath: "v", InstallPath: "out/snap"}, "escapes the storage root")
		fails(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: "v", SnapshotInstallPath: "out.img"}, "escapes the storage root")

		// Links inside the root are followed.
		rsp := must(e, protocol.VolumeInfo, protocol.VolumeInfoCmd{InstallPath: "in/f"})
		if rsp.Size != 4096 || rsp.InstallPath != "in/f" {
			t.Errorf("info through an inside link: %+v", rsp)
		}
		must(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "in/f", InstallPath: "in/g"})
		if _, err := os.Stat(e.path("real/g")); err != nil {
			t.Errorf("clone through an inside link: %v", err)
		}

		// Nothing changed outside.
		entries, _ := os.ReadDir(outside)
		if len(entries) != 1 {
			t.Errorf("outside directory now holds %d entries", len(entries))
		}
		if b, _ := os.ReadFile(filepath.Join(outside, "f")); string(b) != "outside" {
			t.Error("the outside file changed")
		}
	})
}

func TestFileEndpoint(t *testing.T) {
	e := newEnv(t, plainMode)
	outsideSetup(t, e)
	data := imageData(t, mib)
	e.write("images/i.raw", data)
	e.write("images/.i.raw"+tempMarker+"abc", data)
	get := func(path string, h map[string]string, method ...string) (int, http.Header, []byte) {
		t.Helper()
		m := http.MethodGet
		if len(method) > 0 {
			m = method[0]
		}
		req, err := http.NewRequest(m, e.a.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		rsp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer rsp.Body.Close()
		b, _ := io.ReadAll(rsp.Body)
		return rsp.StatusCode, rsp.Header, b
	}

	status, h, body := get("/files/images/i.raw", nil)
	if status != 200 || !bytes.Equal(body, data) || h.Get("Content-Length") != "1048576" || h.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET: %d %v (%d bytes)", status, h, len(body))
	}
	status, h, body = get("/files/images/i.raw", map[string]string{"Range": "bytes=100-199"})
	if status != http.StatusPartialContent || !bytes.Equal(body, data[100:200]) || h.Get("Content-Range") != "bytes 100-199/1048576" {
		t.Fatalf("range: %d %v", status, h)
	}
	status, h, body = get("/files/images/i.raw", nil, http.MethodHead)
	if status != 200 || len(body) != 0 || h.Get("Content-Length") != "1048576" {
		t.Fatalf("HEAD: %d %v", status, h)
	}
	status, _, body = get("/files/in/f", nil)
	if status != 200 || len(body) != 4096 {
		t.Errorf("through an inside link: %d", status)
	}
	for path, want := range map[string]int{
		"/files/images/none":                        404,
		"/files/images":                             404,
		"/files/images/.i.raw" + tempMarker + "abc": 404,
		"/files/../etc/passwd":                      403,
		"/files/%2e%2e/etc/passwd":                  403,
		"/files//etc/passwd":                        403,
		"/files/out/f":                              403,
		"/files/out.img":                            403,
		"/files/":                                   400,
	} {
		req, err := http.NewRequest(http.MethodGet, e.a.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = path // sent as is, not cleaned by the client
		rsp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rsp.Body)
		rsp.Body.Close()
		if rsp.StatusCode != want || !strings.Contains(string(b), `"success":false`) {
			t.Errorf("GET %s: %d %s; want %d and a failure envelope", path, rsp.StatusCode, b, want)
		}
		if bytes.Contains(b, []byte("outside")) {
			t.Errorf("GET %s leaked the outside file", path)
		}
	}
	if status, _, _ := get("/files/images/i.raw", nil, http.MethodPost); status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", status)
	}

	// Once the storage has a secret, files need it too.
	if err := e.m.client.CallSync(t.Context(), e.a.url, protocol.PathStorageConnect,
		protocol.StorageConnectCmd{UUID: "ps-1", SendCommandURL: e.m.eventURL, Secret: "k"}, nil); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := get("/files/images/i.raw", nil); status != http.StatusUnauthorized {
		t.Errorf("without the secret: %d", status)
	}
	if status, _, body := get("/files/images/i.raw", map[string]string{protocol.SecretHeader: "k"}); status != 200 || !bytes.Equal(body, data) {
		t.Errorf("with the secret: %d", status)
	}
}

func TestCrashSafety(t *testing.T) {
	t.Run("stale temporaries removed at start", func(t *testing.T) {
		root := t.TempDir()
		for _, p := range []string{"vols/.v1" + tempMarker + "0a0b", ".img" + tempMarker + "ff"} {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, p), []byte("partial"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(root, "vols", "v2"), []byte("complete"), 0o644); err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, a: startAgent(t, Options{Root: root, QemuImg: QemuImgNone})}
		e.onlyFiles("vols/v2")
	})
	t.Run("a hard shutdown mid-download leaves no partial file", func(t *testing.T) {
		e := newEnv(t, plainMode)
		srv := newImageServer(t, imageData(t, 2*mib))
		err := e.m.client.Start(t.Context(), e.a.url, protocol.PathImageDownload,
			protocol.DownloadImageCmd{URL: srv.url + "/stall", InstallPath: "images/img"}, func(agentclient.Result) {})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the download to write its temporary file", func() bool {
			fs := e.files()
			return len(fs) == 1 && isTemp(filepath.Base(fs[0]))
		})
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if err := e.a.Shutdown(ctx); err == nil {
			t.Fatal("Shutdown with a stalled download running returned nil; want its context's error")
		}
		<-e.a.srv.Done()
		e.onlyFiles()
	})
	t.Run("a failed write leaves no partial file", func(t *testing.T) {
		e := newEnvWith(t, plainMode, Options{}, fullDisk(mib))
		e.write("src.raw", randomBytes(t, 4*mib))
		e.write("vol", pattern(2*mib, 1))
		fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "src.raw", InstallPath: "vols/clone"}, "no space left on device")
		fails(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "src.raw", InstallPath: "vols/v2"}, "no space left on device")
		fails(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s1", VolumeInstallPath: "src.raw", InstallPath: "src.raw.s1"}, "no space left on device")
		// A revert that fails keeps the volume as it was.
		e.write("snap", randomBytes(t, 4*mib))
		fails(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: "vol", SnapshotInstallPath: "snap"}, "no space left on device")
		if b, _ := os.ReadFile(e.path("vol")); !bytes.Equal(b, pattern(2*mib, 1)) {
			t.Error("a failed revert changed the volume")
		}
		e.onlyFiles("snap", "src.raw", "vol")
	})
}
