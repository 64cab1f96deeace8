package storage

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"mplane/agents/protocol"
)

// The benchmarks compare the agent's create-from-image and clone, each a
// full command over HTTP (command, acknowledgement, work, callback) plus
// a delete, with the plain tools doing the same work on the same file in
// the same run (plus an rm): qemu-img create -b for a linked clone,
// qemu-img convert for a qcow2 clone, cp --sparse=always for a sparse copy
// (and cp followed by sync of the copy: the agent fsyncs what it writes).
//
//	go test -run '^$' -bench . -benchtime 20x ./agents/storage/
//
// The source is a raw image of benchImageSize bytes holding benchDataSize
// bytes of random data in 8 extents, the rest holes.
const (
	benchImageSize = 256 * mib
	benchDataSize  = 32 * mib
)

func benchImage(b *testing.B, p string) {
	b.Helper()
	chunks := map[int64][]byte{}
	for i := range int64(8) {
		c := make([]byte, benchDataSize/8)
		_, _ = rand.Read(c)
		chunks[i*(benchImageSize/8)] = c
	}
	sparseImage(b, p, benchImageSize, chunks)
}

// benchAgent serves an agent in md on a root holding the image at
// images/img.raw (and, with qemu-img, images/img.qcow2).
func benchAgent(b *testing.B, md mode) (*mgmt, *testAgent) {
	b.Helper()
	if md.qcow2 {
		if _, err := exec.LookPath("qemu-img"); err != nil {
			b.Skip("qemu-img is not installed")
		}
	}
	m := newMgmt(b)
	a := startAgent(b, Options{QemuImg: md.qemuImg})
	benchImage(b, filepath.Join(a.Root(), "images/img.raw"))
	if md.qcow2 {
		run(b, "qemu-img", "convert", "-O", "qcow2", filepath.Join(a.Root(), "images/img.raw"), filepath.Join(a.Root(), "images/img.qcow2"))
	}
	return m, a
}

func benchCall(b *testing.B, m *mgmt, a *testAgent, path string, cmd any) {
	b.Helper()
	if err := m.client.Call(b.Context(), a.url, path, cmd, nil); err != nil {
		b.Fatalf("%s: %v", path, err)
	}
}

func benchTool(b *testing.B, dst string, name string, args ...string) {
	b.Helper()
	if _, err := exec.LookPath(name); err != nil {
		b.Skipf("%s is not installed", name)
	}
	for b.Loop() {
		run(b, name, args...)
		if err := os.Remove(dst); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateFromImage(b *testing.B) {
	b.Run("agent-linked-clone", func(b *testing.B) {
		m, a := benchAgent(b, qcow2Mode)
		for i := 0; b.Loop(); i++ {
			dst := fmt.Sprintf("vols/v%d", i)
			benchCall(b, m, a, protocol.PathVolumeCreateFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/img.raw", InstallPath: dst})
			benchCall(b, m, a, protocol.PathVolumeDelete, protocol.DeleteCmd{InstallPath: dst})
		}
	})
	b.Run("qemu-img-create-b", func(b *testing.B) {
		_, a := benchAgent(b, qcow2Mode)
		dst := filepath.Join(a.Root(), "vols/v")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			b.Fatal(err)
		}
		benchTool(b, dst, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "../images/img.raw", "-F", "raw", dst)
	})
	b.Run("agent-sparse-copy", func(b *testing.B) {
		m, a := benchAgent(b, plainMode)
		for i := 0; b.Loop(); i++ {
			dst := fmt.Sprintf("vols/v%d", i)
			benchCall(b, m, a, protocol.PathVolumeCreateFromImage, protocol.CreateVolumeFromImageCmd{ImagePath: "images/img.raw", InstallPath: dst})
			benchCall(b, m, a, protocol.PathVolumeDelete, protocol.DeleteCmd{InstallPath: dst})
		}
	})
	b.Run("cp-sparse-always", func(b *testing.B) {
		_, a := benchAgent(b, plainMode)
		dst := filepath.Join(a.Root(), "v")
		benchTool(b, dst, "cp", "--sparse=always", filepath.Join(a.Root(), "images/img.raw"), dst)
	})
}

func BenchmarkClone(b *testing.B) {
	b.Run("agent-raw", func(b *testing.B) {
		m, a := benchAgent(b, plainMode)
		for i := 0; b.Loop(); i++ {
			dst := fmt.Sprintf("vols/c%d", i)
			benchCall(b, m, a, protocol.PathVolumeClone, protocol.CloneVolumeCmd{SrcPath: "images/img.raw", InstallPath: dst})
			benchCall(b, m, a, protocol.PathVolumeDelete, protocol.DeleteCmd{InstallPath: dst})
		}
	})
	b.Run("cp-sparse-always", func(b *testing.B) {
		_, a := benchAgent(b, plainMode)
		dst := filepath.Join(a.Root(), "c")
		benchTool(b, dst, "cp", "--sparse=always", filepath.Join(a.Root(), "images/img.raw"), dst)
	})
	// The agent fsyncs what it writes (a crash must not leave a volume
	// whose data is still in the page cache); cp does not.
	b.Run("cp-sparse-always+sync", func(b *testing.B) {
		_, a := benchAgent(b, plainMode)
		dst := filepath.Join(a.Root(), "c")
		benchTool(b, dst, "sh", "-c", "cp --sparse=always \"$0\" \"$1\" && sync \"$1\"", filepath.Join(a.Root(), "images/img.raw"), dst)
	})
	b.Run("agent-qcow2", func(b *testing.B) {
		m, a := benchAgent(b, qcow2Mode)
		for i := 0; b.Loop(); i++ {
			dst := fmt.Sprintf("vols/c%d", i)
			benchCall(b, m, a, protocol.PathVolumeClone, protocol.CloneVolumeCmd{SrcPath: "images/img.qcow2", Format: protocol.FormatQcow2, InstallPath: dst})
			benchCall(b, m, a, protocol.PathVolumeDelete, protocol.DeleteCmd{InstallPath: dst})
		}
	})
	b.Run("qemu-img-convert", func(b *testing.B) {
		_, a := benchAgent(b, qcow2Mode)
		dst := filepath.Join(a.Root(), "c")
		benchTool(b, dst, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", filepath.Join(a.Root(), "images/img.qcow2"), dst)
	})
}
