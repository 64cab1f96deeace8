package kvm

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/agents/storage"
	"mplane/errcode"
)

const (
	urlA = "/var/lib/mplane/local-a"
	urlB = "/var/lib/mplane/smp-b"
	mib  = 1 << 20
)

// storageMode is one way the mounted storage agents store: with qemu-img
// (qcow2) or without (raw).
type storageMode struct {
	name    string
	qemuImg string
	format  string
}

// forStorageModes runs f without qemu-img, then with it where installed.
func forStorageModes(t *testing.T, f func(t *testing.T, md storageMode)) {
	for _, md := range []storageMode{
		{name: "raw", qemuImg: storage.QemuImgNone, format: protocol.FormatRaw},
		{name: "qcow2", format: protocol.FormatQcow2},
	} {
		t.Run(md.name, func(t *testing.T) {
			if md.format == protocol.FormatQcow2 {
				if _, err := exec.LookPath("qemu-img"); err != nil {
					t.Skip("qemu-img is not installed (apt-get install qemu-utils)")
				}
			}
			f(t, md)
		})
	}
}

// storageHost is a KVM agent serving two storages, connected with a secret.
type storageHost struct {
	t          *testing.T
	m          *mgmt
	a          *testAgent
	dirA, dirB string
	secret     string
}

func newStorageHost(t *testing.T, md storageMode) *storageHost {
	t.Helper()
	h := &storageHost{t: t, m: newMgmt(t), dirA: t.TempDir(), dirB: t.TempDir(), secret: "host-secret"}
	h.a = startAgent(t, Options{Storage: map[string]string{urlA: h.dirA, urlB: h.dirB}, StorageQemuImg: md.qemuImg})
	h.m.connect(t, h.a, "host-1", h.secret)
	return h
}

// call sends a storage command to the host for the storage at url ("":
// no header), with the host's secret unless noSecret.
func storageCall[C, R any](h *storageHost, url string, c protocol.Command[C, R], cmd C, noSecret bool) (R, error) {
	h.t.Helper()
	var rsp R
	var opts []agentclient.CallOption
	if !noSecret {
		opts = append(opts, agentclient.WithSecret(h.secret))
	}
	if url != "" {
		opts = append(opts, agentclient.WithHeader(protocol.StorageHeader, url))
	}
	err := h.m.client.Call(h.t.Context(), h.a.url, c.Path, cmd, &rsp, opts...)
	return rsp, err
}

func mustStorage[C, R any](h *storageHost, url string, c protocol.Command[C, R], cmd C) R {
	h.t.Helper()
	rsp, err := storageCall(h, url, c, cmd, false)
	if err != nil {
		h.t.Fatalf("%s on %s: %v", c.Path, url, err)
	}
	return rsp
}

// getFile GETs the file endpoint with the given storage header and secret.
func (h *storageHost) getFile(rel, url, secret string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(h.t.Context(), http.MethodGet, h.a.url+protocol.PathFiles+rel, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if url != "" {
		req.Header.Set(protocol.StorageHeader, url)
	}
	if secret != "" {
		req.Header.Set(protocol.SecretHeader, secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func statusOf(err error) int {
	var se *agentclient.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// TestStorageServedPerURL drives a KVM agent serving two primary storages
// over HTTP: each command lands in the directory its header names; one
// without the header or naming another storage fails saying which the host
// serves; the host secret is required; the file endpoint is per storage.
func TestStorageServedPerURL(t *testing.T) {
	forStorageModes(t, func(t *testing.T, md storageMode) {
		h := newStorageHost(t, md)

		rsp := mustStorage(h, urlA, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{VolumeUUID: "v1", InstallPath: "vols/v1", Size: 4 * mib})
		if rsp.Format != md.format || rsp.Size != 4*mib || rsp.InstallPath != "vols/v1" || rsp.TotalCapacity <= 0 {
			t.Errorf("create-empty answered %+v, want a %s volume of 4 MiB", rsp, md.format)
		}
		if !exists(filepath.Join(h.dirA, "vols/v1")) || exists(filepath.Join(h.dirB, "vols/v1")) {
			t.Fatalf("the volume is not in %s only", h.dirA)
		}
		// The same path on B is another file.
		mustStorage(h, urlB, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{VolumeUUID: "v2", InstallPath: "vols/v1", Size: mib})
		if info := mustStorage(h, urlB, protocol.VolumeInfo, protocol.VolumeInfoCmd{InstallPath: "vols/v1", Format: md.format}); info.Size != mib {
			t.Errorf("volume on B: %+v, want 1 MiB", info)
		}
		// A URL with a trailing slash names the same storage.
		if info := mustStorage(h, urlA+"/", protocol.VolumeInfo, protocol.VolumeInfoCmd{InstallPath: "vols/v1", Format: md.format}); info.Size != 4*mib {
			t.Errorf("volume on A: %+v, want 4 MiB", info)
		}
		// The mounted storage answers ping with the host's connection.
		if ping := mustStorage(h, urlA, protocol.StoragePing, protocol.StoragePingCmd{}); ping.UUID != "host-1" || ping.SendCommandURL != h.m.eventURL {
			t.Errorf("storage ping %+v, want host-1 and %s", ping, h.m.eventURL)
		}

		for _, tc := range []struct {
			name, url string
			want      []string
		}{
			{"no header", "", []string{protocol.StorageHeader, `"` + urlA + `", "` + urlB + `"`, "--storage URL=DIR"}},
			{"unknown URL", "/var/lib/mplane/other", []string{`"/var/lib/mplane/other"`, `"` + urlA + `", "` + urlB + `"`, "--storage URL=DIR"}},
		} {
			_, err := storageCall(h, tc.url, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v3", Size: mib}, false)
			if !errcode.Has(err, errcode.AgentError) || statusOf(err) != 0 {
				t.Fatalf("%s: %v; want an error result", tc.name, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %v; want it to say %s", tc.name, err, w)
				}
			}
		}
		// Without the secret: 401, nothing runs.
		if _, err := storageCall(h, urlA, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v3", Size: mib}, true); statusOf(err) != http.StatusUnauthorized {
			t.Fatalf("without the secret: %v; want 401", err)
		}
		if _, err := storageCall(h, "", protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v3", Size: mib}, true); statusOf(err) != http.StatusUnauthorized {
			t.Fatalf("without the secret nor header: %v; want 401", err)
		}
		if exists(filepath.Join(h.dirA, "vols/v3")) || exists(filepath.Join(h.dirB, "vols/v3")) {
			t.Fatal("a refused command created its volume")
		}
		if st := h.a.Stats(); st.Commands[protocol.PathVolumeCreateEmpty] != 6 || st.Rejected != 2 {
			t.Errorf("stats: %d create-empty, %d rejected; want 6 and 2", st.Commands[protocol.PathVolumeCreateEmpty], st.Rejected)
		}

		// The file endpoint, per storage.
		data := []byte("the image on A")
		if err := os.MkdirAll(filepath.Join(h.dirA, "images"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h.dirA, "images/i1"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if status, body := h.getFile("images/i1", urlA, h.secret); status != http.StatusOK || !bytes.Equal(body, data) {
			t.Errorf("GET the file on A: %d %q", status, body)
		}
		if status, body := h.getFile("images/i1", urlB, h.secret); status != http.StatusNotFound {
			t.Errorf("GET the file on B: %d %s, want 404", status, body)
		}
		if status, body := h.getFile("images/i1", "", h.secret); status != http.StatusBadRequest || !strings.Contains(string(body), urlA) {
			t.Errorf("GET a file without the header: %d %s, want 400 naming %s", status, body, urlA)
		}
		if status, body := h.getFile("images/i1", "/nowhere", h.secret); status != http.StatusNotFound || !strings.Contains(string(body), "--storage URL=DIR") {
			t.Errorf("GET a file of an unknown storage: %d %s, want 404 saying how to add one", status, body)
		}
		if status, _ := h.getFile("images/i1", urlA, ""); status != http.StatusUnauthorized {
			t.Errorf("GET the file without the secret: %d, want 401", status)
		}
	})
}

// TestStorageFetchReportsProgressAsTheHost fetches an image from a
// standalone storage agent (backup storage) into the host's storage B: the
// progress events go to the event URL of the host's connect, with the
// host's secret, naming the host; a volume is then made from the image.
func TestStorageFetchReportsProgressAsTheHost(t *testing.T) {
	forStorageModes(t, func(t *testing.T, md storageMode) {
		h := newStorageHost(t, md)

		bsDir := t.TempDir()
		data := bytes.Repeat([]byte("backup-storage!\n"), 4*mib/16) // 4 MiB, whole sectors
		if err := os.MkdirAll(filepath.Join(bsDir, "images"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bsDir, "images/i1.raw"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		bs := startStorageAgent(t, storage.Options{Root: bsDir, QemuImg: storage.QemuImgNone, Server: fastServer()})
		bsm := newMgmt(t)
		if err := bsm.client.CallSync(t.Context(), bs, protocol.PathStorageConnect,
			protocol.StorageConnectCmd{UUID: "bs-1", SendCommandURL: bsm.eventURL, Secret: "bs-secret"}, nil); err != nil {
			t.Fatal(err)
		}

		sum := md5.Sum(data)
		cmd := protocol.FetchImageCmd{ImageUUID: "img-1", BackupStorageURL: bs, BackupStoragePath: "images/i1.raw",
			BackupStorageSecret: "bs-secret", InstallPath: "cache/i1.raw", Md5Sum: hex.EncodeToString(sum[:]), ExpectedSize: int64(len(data))}
		rsp := mustStorage(h, urlB, protocol.FetchImage, cmd)
		if rsp.Cached || rsp.Size != int64(len(data)) || rsp.Format != protocol.FormatRaw {
			t.Errorf("fetch answered %+v", rsp)
		}
		if got, _ := os.ReadFile(filepath.Join(h.dirB, "cache/i1.raw")); !bytes.Equal(got, data) {
			t.Fatal("the fetched image differs")
		}
		if exists(filepath.Join(h.dirA, "cache/i1.raw")) {
			t.Fatal("the image was fetched into A too")
		}
		eventually(t, "the fetch's last progress event", func() bool {
			for _, ev := range h.m.eventsSoFar() {
				var p protocol.ProgressEvent
				if ev.Path == protocol.EventProgressReport && json.Unmarshal(ev.Body, &p) == nil && p.Progress == "100" {
					return true
				}
			}
			return false
		})
		n := 0
		for _, ev := range h.m.eventsSoFar() {
			if ev.Path != protocol.EventProgressReport {
				continue
			}
			n++
			var p protocol.ProgressEvent
			if err := json.Unmarshal(ev.Body, &p); err != nil {
				t.Fatal(err)
			}
			if ev.Secret != h.secret || p.ProcessType != protocol.ProcessFetchImage || p.ResourceUUID != "img-1" || p.ServerUUID != "host-1" {
				t.Errorf("progress event %+v with secret %q; want FetchImage of img-1 by host-1 with the host's secret", p, ev.Secret)
			}
		}
		if n < 2 {
			t.Errorf("%d progress events, want the first and the last at least", n)
		}
		if len(bsm.eventsSoFar()) != 0 {
			t.Errorf("the backup storage's node got events: %v", bsm.eventsSoFar())
		}

		vol := mustStorage(h, urlB, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{
			VolumeUUID: "v1", ImagePath: "cache/i1.raw", ImageFormat: protocol.FormatRaw, InstallPath: "vols/v1"})
		if vol.Format != md.format || vol.Size != int64(len(data)) {
			t.Errorf("volume from the image %+v, want %s of %d bytes", vol, md.format, len(data))
		}
		if md.format == protocol.FormatQcow2 && vol.BackingFile != "cache/i1.raw" {
			t.Errorf("qcow2 volume backed by %q, want cache/i1.raw (a linked clone)", vol.BackingFile)
		}
		if !exists(filepath.Join(h.dirB, "vols/v1")) {
			t.Fatal("no volume file in B")
		}
	})
}

// startStorageAgent serves a standalone storage agent on a loopback port
// and answers its base URL.
func startStorageAgent(t *testing.T, opts storage.Options) string {
	t.Helper()
	a, err := storage.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(l) }()
	t.Cleanup(func() {
		if err := a.Shutdown(context.Background()); err != nil {
			t.Errorf("storage agent Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("storage agent Serve: %v", err)
		}
	})
	return "http://" + l.Addr().String()
}

// TestStorageWithoutStorageConfigured: a host with no storage says how to
// serve one.
func TestStorageWithoutStorageConfigured(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{})
	m.connect(t, a, "host-1", "")
	err := m.client.Call(t.Context(), a.url, protocol.PathVolumeCreateEmpty, protocol.CreateEmptyVolumeCmd{InstallPath: "v", Size: mib}, nil,
		agentclient.WithHeader(protocol.StorageHeader, urlA))
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), "serves no primary storage") || !strings.Contains(err.Error(), "--storage URL=DIR") {
		t.Fatalf("storage command on a host without storage: %v", err)
	}
}

// TestStorageSecretFromStateFile: a restarted agent keeps requiring the
// host secret on storage commands before any connect.
func TestStorageSecretFromStateFile(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	dir := t.TempDir()
	opts := Options{StateFile: state, Storage: map[string]string{urlA: dir}, StorageQemuImg: storage.QemuImgNone, Server: fastServer()}
	m := newMgmt(t)
	first, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLoopbackListener()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- first.Serve(l) }()
	m.connect(t, &testAgent{Agent: first, url: "http://" + l.Addr().String()}, "host-1", "s1")
	if err := first.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := first.Shutdown(t.Context()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}

	h := &storageHost{t: t, m: m, a: startAgent(t, opts), dirA: dir, secret: "s1"}
	if _, err := storageCall(h, urlA, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v", Size: mib}, true); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("restarted agent, no secret: %v; want 401", err)
	}
	mustStorage(h, urlA, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v", Size: mib})
	if !exists(filepath.Join(dir, "v")) {
		t.Fatal("no volume")
	}
}

func TestStorageOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		storage map[string]string
		want    string
	}{
		{"relative URL", map[string]string{"local": dir}, `storage URL "local": must be an absolute, clean path`},
		{"unclean URL", map[string]string{"/a/../b": dir}, `storage URL "/a/../b": must be an absolute, clean path`},
		{"trailing slash", map[string]string{"/a/": dir}, `storage URL "/a/": must be an absolute, clean path`},
		{"no directory", map[string]string{"/a": ""}, "storage /a: no directory"},
	} {
		err := Options{Storage: tc.storage}.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if _, err := New(Options{Storage: tc.storage}); err == nil {
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"same directory", Options{Storage: map[string]string{"/a": dir, "/b": dir}}, "share files"},
		{"negative storage latency", Options{StorageLatency: -time.Second}, "storage latency -1s: must not be negative"},
		{"nested directories", Options{Storage: map[string]string{"/a": dir, "/b": filepath.Join(dir, "sub")}}, "share files"},
		{"bad qemu-img", Options{Storage: map[string]string{"/a": dir}, StorageQemuImg: filepath.Join(dir, "no-qemu-img")}, "kvm agent storage /a"},
	} {
		a, err := New(tc.opts)
		if err == nil {
			_ = a.Shutdown(context.Background())
			t.Errorf("%s: New accepted it", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Sibling directories with a common prefix are fine.
	a, err := New(Options{Storage: map[string]string{"/a": filepath.Join(dir, "x"), "/b": filepath.Join(dir, "xy")}, StorageQemuImg: storage.QemuImgNone})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
