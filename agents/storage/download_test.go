package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mplane/agents/protocol"
	"mplane/errcode"
)

// imageServer is an HTTP server of image files, well or badly behaved.
type imageServer struct {
	url  string
	data []byte
	hits atomic.Int32
}

func newImageServer(t *testing.T, data []byte) *imageServer {
	t.Helper()
	s := &imageServer{data: data}
	serve := func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "img", time.Time{}, bytes.NewReader(data))
	}
	half := func(w http.ResponseWriter) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection is cut
	}
	var onceHits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/img", serve)
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i < len(data); i += 64 << 10 {
			_, _ = w.Write(data[i:min(i+64<<10, len(data))])
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/half", func(w http.ResponseWriter, _ *http.Request) { half(w) })
	mux.HandleFunc("/half-once", func(w http.ResponseWriter, r *http.Request) {
		if onceHits.Add(1) == 1 {
			half(w)
		}
		serve(w, r)
	})
	mux.HandleFunc("/no-range-half", func(w http.ResponseWriter, _ *http.Request) { half(w) })
	mux.HandleFunc("/huge", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(1<<60, 10))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data[:10])
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	s.url = hs.URL
	return s
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// imageData is n bytes: random data with a long run of zeros in the
// middle (which the agent leaves a hole).
func imageData(t testing.TB, n int) []byte {
	b := randomBytes(t, n)
	clear(b[n/4 : n/2])
	return b
}

func TestDownloadWithProgress(t *testing.T) {
	e := newEnvWith(t, plainMode, Options{})
	data := imageData(t, 8*mib)
	srv := newImageServer(t, data)
	for _, p := range []string{"/img", "/chunked"} {
		dst := "images/img" + strings.TrimPrefix(p, "/")
		rsp := must(e, protocol.DownloadImage, protocol.DownloadImageCmd{
			ImageUUID: "img-1", URL: srv.url + p, InstallPath: dst, Md5Sum: strings.ToUpper(md5hex(data)), ExpectedSize: int64(len(data))})
		got, err := os.ReadFile(e.path(dst))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: downloaded content differs (%v)", p, err)
		}
		if rsp.Md5Sum != md5hex(data) || rsp.Size != int64(len(data)) || rsp.Format != protocol.FormatRaw || rsp.InstallPath != dst || rsp.Cached {
			t.Errorf("%s: rsp %+v", p, rsp)
		}
		if rsp.ActualSize > int64(len(data))*7/8 {
			t.Errorf("%s: the zeros were written: %d bytes allocated for %d", p, rsp.ActualSize, len(data))
		}
	}
	// Progress: several events, increasing, the last one 100 (sent once
	// the file is in place), all naming the image and the storage.
	eventually(t, "both downloads' last progress event", func() bool {
		n := 0
		for _, ev := range e.m.progressEvents(t) {
			if ev.Progress == "100" {
				n++
			}
		}
		return n == 2
	})
	evs := e.m.progressEvents(t)
	if len(evs) < 4 {
		t.Fatalf("%d progress events, want several per download: %+v", len(evs), evs)
	}
	last := -1
	for _, ev := range evs {
		if ev.ProcessType != protocol.ProcessDownloadImage || ev.ResourceUUID != "img-1" || ev.ServerUUID != "ps-1" {
			t.Errorf("event %+v", ev)
		}
		pct, err := strconv.Atoi(ev.Progress)
		if err != nil || pct < 0 || pct > 100 {
			t.Fatalf("progress %q", ev.Progress)
		}
		if last == 100 {
			last = -1 // the second download
		}
		if pct <= last {
			t.Errorf("progress went from %d to %d", last, pct)
		}
		last = pct
	}
	e.onlyFiles("images/imgchunked", "images/imgimg")
}

// fullDisk makes every file the agent writes itself fail with ENOSPC once
// budget bytes are written.
func fullDisk(budget int64) func(*Agent) {
	return func(a *Agent) {
		var left atomic.Int64
		left.Store(budget)
		a.testHookWrap = func(f *os.File) outFile { return &fullFile{File: f, left: &left} }
	}
}

type fullFile struct {
	*os.File
	left *atomic.Int64
}

func (f *fullFile) WriteAt(p []byte, off int64) (int, error) {
	if f.left.Add(-int64(len(p))) < 0 {
		return 0, &fs.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.WriteAt(p, off)
}

func TestDownloadFailuresLeaveNoFile(t *testing.T) {
	data := imageData(t, 2*mib)
	srv := newImageServer(t, data)
	qcowBacked := func() []byte {
		if !haveQemu() {
			return nil
		}
		dir := t.TempDir()
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", dir+"/x.qcow2", "1M")
		b, err := os.ReadFile(dir + "/x.qcow2")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	tests := []struct {
		name  string
		cmd   protocol.DownloadImageCmd
		setup func(*Agent)
		srv   *imageServer
		want  string
	}{
		{name: "not a url", cmd: protocol.DownloadImageCmd{URL: "://nope"}, want: "bad url"},
		{name: "no url", cmd: protocol.DownloadImageCmd{}, want: "url is required"},
		{name: "unsupported scheme", cmd: protocol.DownloadImageCmd{URL: "ftp://example.com/img"}, want: `scheme "ftp" is not supported`},
		{name: "no host", cmd: protocol.DownloadImageCmd{URL: "http:///img"}, want: "has no host"},
		{name: "connection refused", cmd: protocol.DownloadImageCmd{URL: "http://127.0.0.1:1/img"}, want: "connection refused"},
		{name: "http 404", cmd: protocol.DownloadImageCmd{URL: srv.url + "/missing"}, want: "HTTP 404 Not Found"},
		{name: "md5 mismatch", cmd: protocol.DownloadImageCmd{URL: srv.url + "/img", Md5Sum: md5hex([]byte("other"))}, want: "md5 mismatch"},
		{name: "bad md5", cmd: protocol.DownloadImageCmd{URL: srv.url + "/img", Md5Sum: "xyz"}, want: "32 hexadecimal digits"},
		{name: "announced size mismatch", cmd: protocol.DownloadImageCmd{URL: srv.url + "/img", ExpectedSize: 123}, want: "announces 2097152 bytes, expected 123"},
		{name: "received size mismatch", cmd: protocol.DownloadImageCmd{URL: srv.url + "/chunked", ExpectedSize: 123}, want: "got 2097152 bytes, expected 123"},
		{name: "server stops half-way", cmd: protocol.DownloadImageCmd{URL: srv.url + "/no-range-half"}, want: "interrupted after 1048576 of 2097152 bytes"},
		{name: "not enough space", cmd: protocol.DownloadImageCmd{URL: srv.url + "/huge"}, want: "not enough space for the image"},
		{name: "full disk", cmd: protocol.DownloadImageCmd{URL: srv.url + "/img"}, setup: fullDisk(mib / 2), want: "no space left on device"},
		{name: "target exists", cmd: protocol.DownloadImageCmd{URL: srv.url + "/img", InstallPath: "keep"}, want: "keep already exists"},
	}
	if qcowBacked != nil {
		tests = append(tests, struct {
			name  string
			cmd   protocol.DownloadImageCmd
			setup func(*Agent)
			srv   *imageServer
			want  string
		}{name: "qcow2 with a backing file", srv: newImageServer(t, qcowBacked), cmd: protocol.DownloadImageCmd{URL: "/img"}, want: "images must be standalone"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var setup []func(*Agent)
			if tt.setup != nil {
				setup = append(setup, tt.setup)
			}
			e := newEnvWith(t, plainMode, Options{DownloadRetries: 2}, setup...)
			e.write("keep", []byte("keep me"))
			cmd := tt.cmd
			if tt.srv != nil {
				cmd.URL = tt.srv.url + cmd.URL
			}
			if cmd.InstallPath == "" {
				cmd.InstallPath = "images/img"
			}
			fails(e, protocol.DownloadImage, cmd, tt.want)
			e.onlyFiles("keep")
			if b, _ := os.ReadFile(e.path("keep")); string(b) != "keep me" {
				t.Error("an existing file was overwritten")
			}
			// No 100% for a failed download.
			for _, ev := range e.m.progressEvents(t) {
				if ev.Progress == "100" {
					t.Errorf("progress 100 for a failed download")
				}
			}
		})
	}
}

func TestDownloadResumesAfterAnInterruption(t *testing.T) {
	e := newEnvWith(t, plainMode, Options{})
	data := imageData(t, 4*mib)
	srv := newImageServer(t, data)
	rsp := must(e, protocol.DownloadImage, protocol.DownloadImageCmd{URL: srv.url + "/half-once", InstallPath: "img", Md5Sum: md5hex(data)})
	if got, _ := os.ReadFile(e.path("img")); !bytes.Equal(got, data) || rsp.Md5Sum != md5hex(data) {
		t.Fatal("resumed download differs")
	}
	if n := srv.hits.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (one cut, one resumed)", n)
	}
	e.onlyFiles("img")
}

// TestDownloadInterruptedByItsDeadlineLeavesNoFile: the node's timeoutMs
// ends the handler's context mid-transfer.
func TestDownloadInterruptedByItsDeadlineLeavesNoFile(t *testing.T) {
	e := newEnvWith(t, plainMode, Options{})
	srv := newImageServer(t, imageData(t, 2*mib))
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err := e.m.client.Call(ctx, e.a.url, protocol.PathImageDownload, protocol.DownloadImageCmd{URL: srv.url + "/stall", InstallPath: "img"}, nil)
	if !errcode.Has(err, errcode.Timeout) {
		t.Fatalf("err %v, want a timeout", err)
	}
	eventually(t, "the agent to give up the download", func() bool { return e.a.srv.Stats().Running == 0 })
	e.onlyFiles()
}

func TestDownloadFromAStalledServerFails(t *testing.T) {
	e := newEnvWith(t, plainMode, Options{StallTimeout: 50 * time.Millisecond, DownloadRetries: 1})
	srv := newImageServer(t, imageData(t, 2*mib))
	fails(e, protocol.DownloadImage, protocol.DownloadImageCmd{URL: srv.url + "/stall", InstallPath: "img"},
		"interrupted after 1048576 of 2097152 bytes: nothing received for 50ms")
	if n := srv.hits.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (the first and one resume)", n)
	}
	e.onlyFiles()
}

func TestFetchFromBackupStorage(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		data := imageData(t, 4*mib)
		bsm := newMgmt(t)
		bs := startAgent(t, Options{QemuImg: QemuImgNone})
		bse := &env{t: t, m: bsm, a: bs}
		bse.write("images/i 1.raw", data)
		if err := bsm.client.CallSync(t.Context(), bs.url, protocol.PathStorageConnect,
			protocol.StorageConnectCmd{UUID: "bs-1", SendCommandURL: bsm.eventURL, Secret: "bs-secret"}, nil); err != nil {
			t.Fatal(err)
		}
		ps := newEnv(t, md)
		cmd := protocol.FetchImageCmd{ImageUUID: "img-1", BackupStorageURL: bs.url, BackupStoragePath: "images/i 1.raw",
			InstallPath: "cache/i1.raw", Md5Sum: md5hex(data), ExpectedSize: int64(len(data))}

		fails(ps, protocol.FetchImage, cmd, "401")
		ps.onlyFiles()
		cmd.BackupStorageSecret = "bs-secret"
		rsp := must(ps, protocol.FetchImage, cmd)
		if rsp.Cached || rsp.Md5Sum != md5hex(data) || rsp.Size != int64(len(data)) {
			t.Errorf("first fetch %+v", rsp)
		}
		if got, _ := os.ReadFile(ps.path("cache/i1.raw")); !bytes.Equal(got, data) {
			t.Fatal("fetched content differs")
		}
		eventually(t, "the fetch's last progress event", func() bool {
			evs := ps.m.progressEvents(t)
			return len(evs) > 0 && evs[len(evs)-1].Progress == "100"
		})
		for _, ev := range ps.m.progressEvents(t) {
			if ev.ProcessType != protocol.ProcessFetchImage || ev.ResourceUUID != "img-1" {
				t.Errorf("event %+v", ev)
			}
		}

		// Later uses find the cache, even with the backup storage gone.
		if err := bs.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var r protocol.ImageRsp
				if err := ps.m.client.Call(t.Context(), ps.a.url, protocol.PathImageFetch, cmd, &r); err != nil || !r.Cached {
					t.Errorf("cached fetch: %+v, %v", r, err)
				}
			}()
		}
		wg.Wait()
		// Volumes come from the cache.
		must(ps, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "cache/i1.raw", InstallPath: "vols/v1"})
		if got := content(t, ps.path("vols/v1")); !bytes.Equal(got, data) {
			t.Fatal("volume from the fetched image differs")
		}
		// A cache entry of the wrong size is fetched again; with the
		// backup storage gone that fails, and the old entry stays.
		cmd.ExpectedSize++
		fails(ps, protocol.FetchImage, cmd, "connection refused")
		if got, _ := os.ReadFile(ps.path("cache/i1.raw")); !bytes.Equal(got, data) {
			t.Fatal("a failed refetch damaged the cache entry")
		}
		ps.onlyFiles("cache/i1.raw", "vols/v1")

		bad := cmd
		bad.BackupStoragePath = "../etc/passwd"
		fails(ps, protocol.FetchImage, bad, `has a ".." element`)
		bad.BackupStoragePath = "/etc/passwd"
		fails(ps, protocol.FetchImage, bad, "is absolute")
	})
}

func TestConcurrentFetchesDownloadOnce(t *testing.T) {
	data := imageData(t, 2*mib)
	bs := startAgent(t, Options{QemuImg: QemuImgNone})
	if err := os.MkdirAll(bs.Root()+"/images", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bs.Root()+"/images/i.raw", data, 0o644); err != nil {
		t.Fatal(err)
	}
	ps := newEnv(t, plainMode)
	cmd := protocol.FetchImageCmd{BackupStorageURL: bs.url, BackupStoragePath: "images/i.raw", InstallPath: "cache/i.raw"}
	var wg sync.WaitGroup
	var downloaded atomic.Int32
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r protocol.ImageRsp
			if err := ps.m.client.Call(t.Context(), ps.a.url, protocol.PathImageFetch, cmd, &r); err != nil {
				t.Errorf("fetch: %v", err)
			}
			if !r.Cached {
				downloaded.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := downloaded.Load(); n != 1 {
		t.Errorf("%d fetches downloaded, want 1 (the others find the cache)", n)
	}
	ps.onlyFiles("cache/i.raw")
}
