package storage

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"mplane/agents/protocol"
)

// fileBytes is the file at p byte for byte (not what a guest reads):
// what "unchanged" means for a source.
func fileBytes(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCloneFromSnapshot clones from a snapshot's install path, internal
// (qcow2) or a file (raw), of a blank volume and of a linked clone: the
// clone has the content of the snapshot, not the volume's since, and the
// volume and its snapshot are untouched.
func TestCloneFromSnapshot(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		e := newEnv(t, md)
		sparseImage(t, e.path("images/img.raw"), 8*mib, map[int64][]byte{2 * mib: pattern(mib, 11)})
		must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/blank", Size: 8 * mib})
		must(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/img.raw", InstallPath: "vols/linked"})

		for _, vol := range []string{"vols/blank", "vols/linked"} {
			format := protocol.FormatRaw
			if md.qcow2 {
				format = protocol.FormatQcow2
			}
			guestWrite(t, e.path(vol), 0, pattern(mib, 1))
			first := content(t, e.path(vol))

			snap := must(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{
				SnapshotUUID: "s1", VolumeInstallPath: vol, Format: format, InstallPath: vol + ".s1"})
			if snap.Internal != md.qcow2 || snap.Format != format {
				t.Fatalf("snapshot %+v", snap)
			}

			guestWrite(t, e.path(vol), 0, pattern(mib, 2))
			guestWrite(t, e.path(vol), 2*mib, pattern(mib, 3))
			second := content(t, e.path(vol))
			if bytes.Equal(first, second) {
				t.Fatal("the overwrite changed nothing")
			}
			volFile := fileBytes(t, e.path(vol))
			var snapFile []byte
			if !snap.Internal {
				snapFile = fileBytes(t, e.path(snap.InstallPath))
			}

			clone := "clones/" + vol[len("vols/"):]
			rsp := must(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: snap.InstallPath, Format: snap.Format, InstallPath: clone})
			if got := content(t, e.path(clone)); !bytes.Equal(got, first) {
				t.Fatalf("%s: the clone of %s does not have the snapshot's content", vol, snap.InstallPath)
			}
			if rsp.InstallPath != clone || rsp.Format != format || rsp.Size != 8*mib || rsp.BackingFile != "" || rsp.ActualSize > 4*mib {
				t.Errorf("clone %+v: want a standalone sparse %s volume of 8 MiB", rsp, format)
			}
			if md.qcow2 {
				if info := qemuInfoOf(t, e.path(clone)); info.Format != protocol.FormatQcow2 || info.BackingFilename != "" || len(info.Snapshots) != 0 || info.VirtualSize != 8*mib {
					t.Errorf("clone is not a standalone qcow2 without snapshots: %+v", info)
				}
			}

			// The volume and its snapshot are as they were.
			if got := content(t, e.path(vol)); !bytes.Equal(got, second) {
				t.Fatalf("%s: cloning its snapshot changed the volume's content", vol)
			}
			if !bytes.Equal(fileBytes(t, e.path(vol)), volFile) {
				t.Fatalf("%s: cloning its snapshot wrote the volume's file", vol)
			}
			if md.qcow2 {
				if info := qemuInfoOf(t, e.path(vol)); len(info.Snapshots) != 1 || info.Snapshots[0].Name != "s1" {
					t.Errorf("volume's snapshots after the clone: %+v", info.Snapshots)
				}
			} else if !bytes.Equal(fileBytes(t, e.path(snap.InstallPath)), snapFile) {
				t.Fatalf("%s: cloning the snapshot file changed it", snap.InstallPath)
			}
			// The clone is independent of the volume.
			guestWrite(t, e.path(vol), 0, pattern(mib, 4))
			if got := content(t, e.path(clone)); !bytes.Equal(got, first) {
				t.Fatal("the clone changed with the volume")
			}
			// The snapshot still reverts to the first pattern.
			must(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: vol, Format: format, SnapshotInstallPath: snap.InstallPath})
			if got := content(t, e.path(vol)); !bytes.Equal(got, first) {
				t.Fatalf("%s: revert after the clone", vol)
			}

			// Failures leave nothing at the clone's path, nor a temporary.
			fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: snap.InstallPath, Format: snap.Format, InstallPath: clone}, "already exists")
			if md.qcow2 {
				fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: vol + "@nope", Format: format, InstallPath: "clones/x"},
					"snapshot "+vol+"@nope not found: volume "+vol+` has no snapshot "nope"`)
				fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: vol + "@nope", InstallPath: "clones/x"}, "not found")
				fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: vol + "@s1", Format: protocol.FormatRaw, InstallPath: "clones/x"}, "an internal snapshot is in a qcow2 volume")
			} else {
				fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: vol + ".nope", Format: format, InstallPath: "clones/x"}, "volume "+vol+".nope not found")
				// A raw volume has no internal snapshots.
				fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: vol + "@s1", InstallPath: "clones/x"}, "snapshot "+vol+"@s1: volume "+vol+" is not a qcow2 file")
			}
			fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: vol + "@bad,name", InstallPath: "clones/x"}, "bad snapshot name")
			fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: vol + "@s1", InstallPath: vol}, "same file")
			fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "vols/none@s1", InstallPath: "clones/x"}, "snapshot vols/none@s1: volume vols/none not found")
			fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: "../out@s1", InstallPath: "clones/x"}, "escapes the storage root")
		}
		// Sorted as e.files lists them.
		if md.qcow2 {
			e.onlyFiles("clones/blank", "clones/linked", "images/img.raw", "vols/blank", "vols/linked")
		} else {
			e.onlyFiles("clones/blank", "clones/linked", "images/img.raw", "vols/blank", "vols/blank.s1", "vols/linked", "vols/linked.s1")
		}
	})
}

// TestCloneFromSnapshotOfGrownVolume: a volume grown since its internal
// snapshot clones to the size it had then, with the content it had then.
func TestCloneFromSnapshotOfGrownVolume(t *testing.T) {
	needQemu(t)
	e := newEnv(t, qcow2Mode)
	must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v", Size: 8 * mib})
	guestWrite(t, e.path("v"), 3*mib, pattern(mib, 5))
	first := content(t, e.path("v"))
	snap := must(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s1", VolumeInstallPath: "v"})
	must(e, protocol.ResizeVolume, protocol.ResizeVolumeCmd{InstallPath: "v", Format: protocol.FormatQcow2, Size: 16 * mib})
	guestWrite(t, e.path("v"), 3*mib, pattern(mib, 6))
	guestWrite(t, e.path("v"), 12*mib, pattern(mib, 7))
	second := content(t, e.path("v"))

	rsp := must(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: snap.InstallPath, Format: protocol.FormatQcow2, InstallPath: "c"})
	if rsp.Size != 8*mib {
		t.Errorf("clone %+v: want the snapshot's size, 8 MiB", rsp)
	}
	if got := content(t, e.path("c")); !bytes.Equal(got, first) {
		t.Fatalf("clone content (%d bytes) differs from the snapshot's (%d bytes)", len(got), len(first))
	}
	if got := content(t, e.path("v")); !bytes.Equal(got, second) {
		t.Fatal("the volume changed")
	}
	e.onlyFiles("c", "v")
}

// TestCloneFromFileSnapshotWithQemuImg: a raw volume's file snapshot, on an
// agent with qemu-img, clones to a raw copy of it.
func TestCloneFromFileSnapshotWithQemuImg(t *testing.T) {
	needQemu(t)
	e := newEnv(t, qcow2Mode)
	must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v.raw", Size: 4 * mib, Format: protocol.FormatRaw})
	guestWrite(t, e.path("v.raw"), mib, pattern(mib, 4))
	first := content(t, e.path("v.raw"))
	snap := must(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s1", VolumeInstallPath: "v.raw", Format: protocol.FormatRaw, InstallPath: "v.raw.s1"})
	guestWrite(t, e.path("v.raw"), mib, pattern(mib, 5))
	rsp := must(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: snap.InstallPath, Format: snap.Format, InstallPath: "c.raw"})
	if rsp.Format != protocol.FormatRaw || rsp.Size != 4*mib {
		t.Errorf("clone %+v", rsp)
	}
	if got := content(t, e.path("c.raw")); !bytes.Equal(got, first) {
		t.Fatal("clone content differs from the snapshot's")
	}
	if got := content(t, e.path("v.raw")); !bytes.Equal(got[mib:2*mib], pattern(mib, 5)) {
		t.Fatal("the volume changed")
	}
	e.onlyFiles("c.raw", "v.raw", "v.raw.s1")
}

// TestCloneFromInternalSnapshotLocksTheVolume: the clone waits for the
// lock of the volume's file, not of "<volume>@<name>".
func TestCloneFromInternalSnapshotLocksTheVolume(t *testing.T) {
	needQemu(t)
	e := newEnv(t, qcow2Mode)
	must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v", Size: 4 * mib})
	guestWrite(t, e.path("v"), 0, pattern(mib, 8))
	first := content(t, e.path("v"))
	snap := must(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s1", VolumeInstallPath: "v"})

	vol := e.path("v")
	refs := func(p string) int {
		e.a.paths.mu.Lock()
		defer e.a.paths.mu.Unlock()
		if pl := e.a.paths.locks[p]; pl != nil {
			return pl.refs
		}
		return 0
	}
	unlock := e.a.paths.lock(vol)
	done := make(chan error, 1)
	go func() {
		_, err := call(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: snap.InstallPath, InstallPath: "c"})
		done <- err
	}()
	eventually(t, "the clone to wait for the volume's lock", func() bool { return refs(vol) == 2 })
	if n := refs(vol + "@s1"); n != 0 {
		t.Errorf("%d holders of a lock on %s@s1", n, vol)
	}
	select {
	case err := <-done:
		t.Fatalf("the clone finished (%v) while the volume was locked", err)
	default:
	}
	if _, err := os.Lstat(e.path("c")); err == nil {
		t.Fatal("the clone wrote its file while the volume was locked")
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := content(t, e.path("c")); !bytes.Equal(got, first) {
		t.Fatal("clone content")
	}
}

// TestQcow2SnapshotSize reads snapshot tables qemu-img wrote: several
// snapshots of names of every length modulo 8 (the entries' padding),
// each of the size the volume had (v2 files cannot grow with snapshots:
// all of one size there), the table last in the file or not, in qcow2 v3
// and v2 files.
func TestQcow2SnapshotSize(t *testing.T) {
	needQemu(t)
	for _, compat := range []string{"1.1", "0.10"} {
		t.Run(compat, func(t *testing.T) {
			p := t.TempDir() + "/v.qcow2"
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat="+compat, p, "1M")
			names := []string{"a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg", "hhhhhhhh", "i.j_k-9"}
			for i, name := range names {
				size := int64(i+1) * mib
				if compat == "0.10" {
					size = mib
				}
				if i > 0 && size != mib {
					run(t, "qemu-img", "resize", "-q", "-f", "qcow2", p, strconv.FormatInt(size, 10))
				}
				if i%2 == 1 {
					guestWrite(t, p, size-mib, pattern(4096, byte(i)))
				}
				run(t, "qemu-img", "snapshot", "-c", name, p)
				// Every name taken so far, the last one included (its
				// entry may end the file, without its padding).
				for j, n := range names[:i+1] {
					want := int64(j+1) * mib
					if compat == "0.10" {
						want = mib
					}
					got, found, err := qcow2SnapshotSize(p, n, size)
					if err != nil || !found || got != want {
						t.Fatalf("after %d snapshots: %q: %d %v %v; want %d", i+1, n, got, found, err, want)
					}
				}
			}
			if _, found, err := qcow2SnapshotSize(p, "nope", 0); found || err != nil {
				t.Fatalf("nope: %v %v", found, err)
			}
		})
	}
	raw := t.TempDir() + "/raw"
	if err := os.WriteFile(raw, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := qcow2SnapshotSize(raw, "a", 0); err == nil {
		t.Fatal("a raw file has a snapshot table")
	}
}

// TestCloneFromInternalSnapshotFailureLeavesNothing: a qemu-img convert
// that fails after writing part of its output leaves no file at the
// clone's installPath, no temporary, and the volume as it was.
func TestCloneFromInternalSnapshotFailureLeavesNothing(t *testing.T) {
	needQemu(t)
	real, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "qemu-img")
	script := "#!/bin/sh\nif [ \"$1\" = convert ]; then\n\tfor last; do :; done\n\techo partial >\"$last\"\n\techo 'convert: disk on fire' >&2\n\texit 1\nfi\nexec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, mode{name: "failing", qemuImg: fake, qcow2: true}, Options{})
	must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v", Size: 4 * mib})
	guestWrite(t, e.path("v"), 0, pattern(mib, 9))
	snap := must(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s1", VolumeInstallPath: "v"})
	before := fileBytes(t, e.path("v"))
	fails(e, protocol.CloneVolume, protocol.CloneVolumeCmd{SrcPath: snap.InstallPath, InstallPath: "clones/c"}, "disk on fire")
	e.onlyFiles("v")
	if !bytes.Equal(fileBytes(t, e.path("v")), before) {
		t.Fatal("the failed clone changed the volume")
	}
}
