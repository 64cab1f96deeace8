package storage

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mplane/agents/protocol"
)

const mib = 1 << 20

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).Validate(); err == nil || !strings.Contains(err.Error(), "root is required") {
		t.Errorf("empty options: %v", err)
	}
	if err := (Options{Root: "x", ProgressInterval: -1}).Validate(); err == nil {
		t.Error("negative interval accepted")
	}
	if _, err := New(Options{Root: t.TempDir(), QemuImg: "/no/such/qemu-img"}); err == nil {
		t.Error("missing qemu-img binary accepted")
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Root: f}); err == nil {
		t.Error("a file as root accepted")
	}
}

func TestStartServesUntilStop(t *testing.T) {
	a, err := New(Options{Root: t.TempDir(), Listen: "127.0.0.1:0", QemuImg: QemuImgNone})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err == nil {
		t.Error("a second Start succeeded")
	}
	url := "http://" + a.Addr() + protocol.PathStorageEcho
	rsp, err := http.Post(url, "application/json", nil)
	if err != nil {
		t.Fatalf("echo on the started agent: %v", err)
	}
	rsp.Body.Close()
	if err := a.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := a.Stop(t.Context()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if rsp, err := http.Post(url, "application/json", nil); err == nil {
		rsp.Body.Close()
		t.Fatal("the stopped agent still answers")
	}
}

func TestConnectPingCapacityAndSecret(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		m := newMgmt(t)
		a := startAgent(t, Options{QemuImg: md.qemuImg, Version: "v7"})
		e := &env{t: t, m: m, a: a}

		if err := m.client.CallSync(t.Context(), a.url, protocol.PathStorageEcho, nil, nil); err != nil {
			t.Fatalf("echo: %v", err)
		}
		ping := must(e, protocol.StoragePing, protocol.StoragePingCmd{UUID: "ps-1"})
		if ping.UUID != "" || ping.Version != "v7" {
			t.Errorf("ping before connect %+v", ping)
		}
		var rsp protocol.StorageConnectRsp
		err := m.client.CallSync(t.Context(), a.url, protocol.PathStorageConnect,
			protocol.StorageConnectCmd{UUID: "ps-1", SendCommandURL: m.eventURL, Secret: "s3"}, &rsp)
		if err != nil {
			t.Fatal(err)
		}
		wantFormats := "raw"
		if md.qcow2 {
			wantFormats = "qcow2,raw"
		}
		if got := strings.Join(rsp.Formats, ","); got != wantFormats || rsp.TotalCapacity <= 0 ||
			rsp.AvailableCapacity <= 0 || rsp.AvailableCapacity > rsp.TotalCapacity || (md.qcow2 != (rsp.QemuImgVersion != "")) {
			t.Errorf("connect %+v", rsp)
		}

		// Without the secret: refused; with it: served.
		fails(e, protocol.StorageCapacityQuery, struct{}{}, "401")
		a.secret = "s3"
		c := must(e, protocol.StorageCapacityQuery, struct{}{})
		total, avail, err := statfs(a.Root())
		if err != nil {
			t.Fatal(err)
		}
		if c.TotalCapacity != total || c.AvailableCapacity <= 0 || c.AvailableCapacity > total || avail <= 0 {
			t.Errorf("capacity %+v; statfs total %d", c, total)
		}
		ping = must(e, protocol.StoragePing, protocol.StoragePingCmd{UUID: "ps-1"})
		if ping.UUID != "ps-1" || ping.SendCommandURL != m.eventURL {
			t.Errorf("ping %+v", ping)
		}
		// A connect without the current secret cannot take the storage over.
		err = m.client.CallSync(t.Context(), a.url, protocol.PathStorageConnect,
			protocol.StorageConnectCmd{UUID: "ps-evil", SendCommandURL: m.eventURL, Secret: "other"}, nil)
		if err == nil {
			t.Fatal("connect without the secret accepted")
		}
		// Echo needs no secret; a taskuuid on a sync path is a 500.
		if err := m.client.CallSync(t.Context(), a.url, protocol.PathStorageEcho, nil, nil); err != nil {
			t.Errorf("echo with a secret held: %v", err)
		}
	})
}

func TestCreateEmpty(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		e := newEnv(t, md)
		rsp := must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{VolumeUUID: "v1", InstallPath: "vols/v1", Size: 64 * mib})
		wantFormat := protocol.FormatRaw
		if md.qcow2 {
			wantFormat = protocol.FormatQcow2
		}
		if rsp.Format != wantFormat || rsp.Size != 64*mib || rsp.InstallPath != "vols/v1" || rsp.TotalCapacity <= 0 {
			t.Errorf("rsp %+v", rsp)
		}
		if rsp.ActualSize > mib {
			t.Errorf("a blank volume occupies %d bytes; want it sparse", rsp.ActualSize)
		}
		if md.qcow2 {
			if info := qemuInfoOf(t, e.path("vols/v1")); info.Format != "qcow2" || info.VirtualSize != 64*mib {
				t.Errorf("qemu-img info %+v", info)
			}
		} else {
			fi, err := os.Stat(e.path("vols/v1"))
			if err != nil || fi.Size() != 64*mib {
				t.Fatalf("raw volume: %v, %v", fi, err)
			}
			if !bytes.Equal(content(t, e.path("vols/v1"))[:mib], make([]byte, mib)) {
				t.Error("blank raw volume is not zeros")
			}
		}
		// A raw volume on request, whatever the mode.
		raw := must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/raw", Size: mib, Format: protocol.FormatRaw})
		if raw.Format != protocol.FormatRaw {
			t.Errorf("raw on request: %+v", raw)
		}

		fails(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v1", Size: mib}, "already exists")
		fails(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v2", Size: 0}, "must be positive")
		fails(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v2", Size: mib, Format: "vmdk"}, "unknown format")
		fails(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "", Size: mib}, "empty path")
		if !md.qcow2 {
			fails(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v2", Size: mib, Format: protocol.FormatQcow2}, "needs qemu-img")
		}
		e.onlyFiles("vols/raw", "vols/v1")
	})
}

func TestCreateFromImage(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		e := newEnv(t, md)
		data := randomBytes(t, 3*mib)
		sparseImage(t, e.path("images/img.raw"), 32*mib, map[int64][]byte{0: data[:mib], 16 * mib: data[mib:]})
		want := content(t, e.path("images/img.raw"))

		rsp := must(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{
			VolumeUUID: "v1", ImagePath: "images/img.raw", InstallPath: "vols/v1"})
		if rsp.Size != 32*mib {
			t.Errorf("rsp %+v", rsp)
		}
		if got := content(t, e.path("vols/v1")); !bytes.Equal(got, want) {
			t.Fatal("volume content differs from the image's")
		}
		if md.qcow2 {
			// A linked clone: the image is its backing file, named
			// relative to the volume.
			info := qemuInfoOf(t, e.path("vols/v1"))
			if info.Format != "qcow2" || info.BackingFilename != "../images/img.raw" ||
				filepath.Clean(info.FullBackingFilename) != e.path("images/img.raw") || info.BackingFormat != "raw" {
				t.Errorf("qemu-img info %+v", info)
			}
			if rsp.Format != protocol.FormatQcow2 || rsp.BackingFile != "images/img.raw" || rsp.ActualSize > mib {
				t.Errorf("rsp %+v", rsp)
			}
		} else {
			// A sparse copy: the holes stay holes.
			if rsp.Format != protocol.FormatRaw || rsp.BackingFile != "" || rsp.ActualSize > 4*mib {
				t.Errorf("rsp %+v", rsp)
			}
		}

		// Grown at creation.
		big := must(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{
			ImagePath: "images/img.raw", InstallPath: "vols/big", Size: 64 * mib})
		if big.Size != 64*mib {
			t.Errorf("grown volume %+v", big)
		}
		if got := content(t, e.path("vols/big")); !bytes.Equal(got[:32*mib], want) || !bytes.Equal(got[32*mib:], make([]byte, 32*mib)) {
			t.Error("grown volume content")
		}

		fails(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/none", InstallPath: "vols/v2"}, "image images/none not found")
		fails(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/img.raw", InstallPath: "vols/v2", Size: mib}, "smaller than the image")
		fails(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/img.raw", InstallPath: "vols/v1"}, "already exists")
		fails(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images", InstallPath: "vols/v2"}, "not a regular file")
		e.onlyFiles("images/img.raw", "vols/big", "vols/v1")
	})
}

func TestCreateFromQcow2ImageChecksItsBackingChain(t *testing.T) {
	needQemu(t)
	e := newEnv(t, qcow2Mode)
	outside := filepath.Join(t.TempDir(), "secret.raw")
	if err := os.WriteFile(outside, pattern(mib, 9), 0o644); err != nil {
		t.Fatal(err)
	}
	// An image whose backing file is outside the root: refused before
	// qemu-img reads it.
	if err := os.MkdirAll(e.path("images"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", outside, "-F", "raw", e.path("images/evil.qcow2"))
	fails(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/evil.qcow2", InstallPath: "vols/v1"}, "escapes the storage root")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "nbd:127.0.0.1:1", "-F", "raw", e.path("images/nbd.qcow2"), "1M")
	fails(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/nbd.qcow2", InstallPath: "vols/v1"}, "not a plain file path")
	// A qcow2 image inside is fine, and keeps its format in the chain.
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", e.path("images/base.qcow2"), "8M")
	rsp := must(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/base.qcow2", InstallPath: "vols/v1"})
	if info := qemuInfoOf(t, e.path("vols/v1")); info.BackingFormat != "qcow2" || rsp.Size != 8*mib {
		t.Errorf("info %+v rsp %+v", info, rsp)
	}
	// The node's format is authoritative: a raw image that looks like
	// qcow2 is used as raw.
	rsp = must(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/evil.qcow2", ImageFormat: protocol.FormatRaw, InstallPath: "vols/v2"})
	if info := qemuInfoOf(t, e.path("vols/v2")); info.BackingFormat != "raw" || rsp.BackingFile != "images/evil.qcow2" {
		t.Errorf("info %+v rsp %+v", info, rsp)
	}
}

func TestClone(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		e := newEnv(t, md)
		data := randomBytes(t, 2*mib)
		sparseImage(t, e.path("images/img.raw"), 16*mib, map[int64][]byte{4 * mib: data})
		must(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/img.raw", InstallPath: "vols/v1"})
		guestWrite(t, e.path("vols/v1"), 0, pattern(mib, 3))
		want := content(t, e.path("vols/v1"))

		rsp := must(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "vols/v1", InstallPath: "vols/c1"})
		if got := content(t, e.path("vols/c1")); !bytes.Equal(got, want) {
			t.Fatal("clone content differs")
		}
		if rsp.Size != 16*mib || rsp.ActualSize > 5*mib || rsp.BackingFile != "" {
			t.Errorf("clone %+v: want a standalone sparse copy", rsp)
		}
		if md.qcow2 {
			if info := qemuInfoOf(t, e.path("vols/c1")); info.BackingFilename != "" || info.Format != "qcow2" {
				t.Errorf("clone is not standalone: %+v", info)
			}
		}
		// The clone is independent of its source.
		guestWrite(t, e.path("vols/v1"), 0, pattern(mib, 7))
		if got := content(t, e.path("vols/c1")); !bytes.Equal(got, want) {
			t.Fatal("clone changed with its source")
		}
		fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "vols/none", InstallPath: "vols/c2"}, "volume vols/none not found")
		fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "vols/v1", InstallPath: "vols/c1"}, "already exists")
		fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "vols/v1", InstallPath: "vols/v1"}, "same file")
		fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "vols/v1", Format: protocol.FormatQcow2 + "x", InstallPath: "vols/c2"}, "unknown format")
		e.onlyFiles("images/img.raw", "vols/c1", "vols/v1")
	})
}

func TestResize(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		e := newEnv(t, md)
		must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v", Size: 8 * mib})
		guestWrite(t, e.path("v"), 0, pattern(mib, 5))
		rsp := must(e, protocol.ResizeVolume, protocol.ResizeVolumeCmd{InstallPath: "v", Size: 24 * mib})
		if rsp.Size != 24*mib {
			t.Errorf("resized %+v", rsp)
		}
		got := content(t, e.path("v"))
		if len(got) != 24*mib || !bytes.Equal(got[:mib], pattern(mib, 5)) || !bytes.Equal(got[8*mib:], make([]byte, 16*mib)) {
			t.Error("content after growing")
		}
		if md.qcow2 {
			if info := qemuInfoOf(t, e.path("v")); info.VirtualSize != 24*mib {
				t.Errorf("qemu-img info %+v", info)
			}
		}
		// The same size is a no-op; smaller is refused, the volume untouched.
		must(e, protocol.ResizeVolume, protocol.ResizeVolumeCmd{InstallPath: "v", Size: 24 * mib})
		fails(e, protocol.ResizeVolume, protocol.ResizeVolumeCmd{InstallPath: "v", Size: 8 * mib}, "shrinking volume v from 25165824 to 8388608 bytes refused")
		if info := must(e, protocol.VolumeInfo, protocol.VolumeInfoCmd{InstallPath: "v"}); info.Size != 24*mib {
			t.Errorf("after a refused shrink: %+v", info)
		}
		fails(e, protocol.ResizeVolume, protocol.ResizeVolumeCmd{InstallPath: "nope", Size: 8 * mib}, "volume nope not found")
		fails(e, protocol.ResizeVolume, protocol.ResizeVolumeCmd{InstallPath: "v", Size: -1}, "must be positive")
	})
}

func TestDeleteIsIdempotent(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		e := newEnv(t, md)
		must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v", Size: mib})
		for i := 0; i < 2; i++ {
			rsp := must(e, protocol.DeleteVolume, protocol.DeleteCmd{InstallPath: "vols/v"})
			if rsp.TotalCapacity <= 0 {
				t.Errorf("delete %+v", rsp)
			}
		}
		e.onlyFiles()
		must(e, protocol.DeleteImage, protocol.DeleteCmd{InstallPath: "images/never-existed"})
		if err := os.MkdirAll(e.path("vols/dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		fails(e, protocol.DeleteVolume, protocol.DeleteCmd{InstallPath: "vols/dir"}, "is a directory")
		fails(e, protocol.VolumeInfo, protocol.VolumeInfoCmd{InstallPath: "vols/v"}, "volume vols/v not found")
	})
}
