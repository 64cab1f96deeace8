package storage

import (
	"bytes"
	"path/filepath"
	"testing"

	"mplane/agents/protocol"
)

// TestSnapshotRevert writes a pattern, snapshots, overwrites, reverts and
// reads the pattern back, for blank volumes and linked clones, with and
// without qemu-img.
func TestSnapshotRevert(t *testing.T) {
	forModes(t, func(t *testing.T, md mode) {
		e := newEnv(t, md)
		sparseImage(t, e.path("images/img.raw"), 8*mib, map[int64][]byte{2 * mib: pattern(mib, 11)})
		must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/blank", Size: 8 * mib})
		must(e, protocol.CreateVolumeFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/img.raw", InstallPath: "vols/linked"})

		for _, vol := range []string{"vols/blank", "vols/linked"} {
			guestWrite(t, e.path(vol), 0, pattern(mib, 1))
			before := content(t, e.path(vol))

			snap := must(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{
				SnapshotUUID: "s1", VolumeInstallPath: vol, InstallPath: vol + ".s1"})
			if md.qcow2 {
				if !snap.Internal || snap.InstallPath != vol+"@s1" {
					t.Fatalf("snapshot %+v: want an internal one", snap)
				}
				if info := qemuInfoOf(t, e.path(vol)); len(info.Snapshots) != 1 || info.Snapshots[0].Name != "s1" {
					t.Errorf("qemu-img info %+v", info)
				}
			} else if snap.Internal || snap.InstallPath != vol+".s1" || snap.Size != 8*mib || snap.ActualSize > 2*mib {
				t.Fatalf("snapshot %+v: want a sparse file", snap)
			}

			// Overwrite, over the pattern and the image's data.
			guestWrite(t, e.path(vol), 0, pattern(mib, 2))
			guestWrite(t, e.path(vol), 2*mib, pattern(mib, 3))
			if bytes.Equal(content(t, e.path(vol)), before) {
				t.Fatal("the overwrite changed nothing")
			}
			rsp := must(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: vol, SnapshotInstallPath: snap.InstallPath})
			if got := content(t, e.path(vol)); !bytes.Equal(got, before) {
				t.Fatalf("%s: content after revert differs from the snapshot's", vol)
			}
			if rsp.Size != 8*mib {
				t.Errorf("revert %+v", rsp)
			}
			if md.qcow2 && vol == "vols/linked" {
				if info := qemuInfoOf(t, e.path(vol)); filepath.Clean(info.FullBackingFilename) != e.path("images/img.raw") {
					t.Errorf("revert lost the backing file: %+v", info)
				}
			}
			// Reverting twice is the same content.
			must(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: vol, SnapshotInstallPath: snap.InstallPath})
			if got := content(t, e.path(vol)); !bytes.Equal(got, before) {
				t.Fatal("second revert")
			}

			fails(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s1", VolumeInstallPath: vol, InstallPath: vol + ".s1"}, "already")
			// Deleting is idempotent and keeps the volume.
			must(e, protocol.DeleteSnapshot, protocol.DeleteCmd{InstallPath: snap.InstallPath})
			must(e, protocol.DeleteSnapshot, protocol.DeleteCmd{InstallPath: snap.InstallPath})
			if got := content(t, e.path(vol)); !bytes.Equal(got, before) {
				t.Fatal("deleting the snapshot changed the volume")
			}
			if md.qcow2 {
				if info := qemuInfoOf(t, e.path(vol)); len(info.Snapshots) != 0 {
					t.Errorf("snapshot still there: %+v", info)
				}
			}
			fails(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: vol, SnapshotInstallPath: snap.InstallPath}, "not found")
		}
		e.onlyFiles("images/img.raw", "vols/blank", "vols/linked")

		fails(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s2", VolumeInstallPath: "vols/none", InstallPath: "s"}, "volume vols/none not found")
		fails(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "bad/name", VolumeInstallPath: "vols/blank", InstallPath: "s"}, "snapshotUuid")
		fails(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: "vols/none", SnapshotInstallPath: "vols/blank.s9"}, "not found")
		fails(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: "vols/blank", SnapshotInstallPath: "vols/linked@s1"}, "not a snapshot of volume vols/blank")
		if !md.qcow2 {
			fails(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s2", VolumeInstallPath: "vols/blank", InstallPath: "a@b"}, "must not contain '@'")
			fails(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s2", VolumeInstallPath: "vols/blank"}, "installPath is required")
		}
	})
}

// TestRawVolumeSnapshotsToFileWithQemuImg: the volume's format, not the
// agent's, decides how it is snapshotted.
func TestRawVolumeSnapshotsToFileWithQemuImg(t *testing.T) {
	needQemu(t)
	e := newEnv(t, qcow2Mode)
	must(e, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "v.raw", Size: 4 * mib, Format: protocol.FormatRaw})
	guestWrite(t, e.path("v.raw"), mib, pattern(mib, 4))
	snap := must(e, protocol.CreateSnapshot, protocol.CreateSnapshotCmd{SnapshotUUID: "s1", VolumeInstallPath: "v.raw", InstallPath: "v.raw.s1"})
	if snap.Internal || snap.Format != protocol.FormatRaw {
		t.Fatalf("snapshot %+v", snap)
	}
	guestWrite(t, e.path("v.raw"), mib, pattern(mib, 5))
	must(e, protocol.RevertVolume, protocol.RevertVolumeCmd{VolumeInstallPath: "v.raw", Format: protocol.FormatRaw, SnapshotInstallPath: "v.raw.s1"})
	if got := content(t, e.path("v.raw")); !bytes.Equal(got[mib:2*mib], pattern(mib, 4)) {
		t.Fatal("revert")
	}
}
