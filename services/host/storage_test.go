package host_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/host"
)

// TestRunStorage runs storage commands through host.RunStorage on a host
// whose agent serves two primary storages: each lands, through the host's
// owner and chain, in the directory of the storage it names.
func TestRunStorage(t *testing.T) {
	st, ctx := startStack(t, nil)
	const local, smp = "/var/lib/mplane/local", "/var/lib/mplane/smp"
	dirLocal, dirSMP := t.TempDir(), t.TempDir()
	h := st.AddHost(t, servertest.AgentOptions{Agent: kvm.Options{Storage: map[string]string{local: dirLocal, smp: dirSMP}}})
	node := st.Node()
	format := protocol.FormatRaw
	if _, err := exec.LookPath("qemu-img"); err == nil {
		format = protocol.FormatQcow2
	}

	rsp, err := host.RunStorage(ctx, node, h.UUID, local, protocol.CreateEmptyVolume,
		protocol.CreateEmptyVolumeCmd{VolumeUUID: "v1", InstallPath: "vols/v1", Size: 1 << 20})
	if err != nil || !rsp.Success || rsp.Format != format || rsp.Size != 1<<20 || rsp.InstallPath != "vols/v1" {
		t.Fatalf("create-empty on %s: %+v, %v; want a %s volume of 1 MiB", local, rsp, err, format)
	}
	if _, err := os.Stat(filepath.Join(dirLocal, "vols/v1")); err != nil {
		t.Fatalf("the volume is not in %s: %v", dirLocal, err)
	}
	if _, err := os.Stat(filepath.Join(dirSMP, "vols/v1")); err == nil {
		t.Fatalf("the volume is in %s too", dirSMP)
	}
	info, err := host.RunStorage(ctx, node, h.UUID, smp, protocol.VolumeInfo, protocol.VolumeInfoCmd{InstallPath: "vols/v1"})
	if err == nil || !errcode.Has(err, errcode.AgentError) {
		t.Fatalf("info of a volume of %s on %s: %+v, %v; want an agent error", local, smp, info, err)
	}
	if got := h.Agent.Stats().Commands[protocol.PathVolumeCreateEmpty]; got != 1 {
		t.Errorf("the agent got %d create-empty commands, want 1", got)
	}

	// What names no storage the host serves fails, saying what it serves.
	_, err = host.RunStorage(ctx, node, h.UUID, "/var/lib/mplane/other", protocol.CreateEmptyVolume,
		protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v2", Size: 1 << 20})
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), `"`+local+`", "`+smp+`"`) {
		t.Fatalf("unknown storage: %v; want an agent error naming %s and %s", err, local, smp)
	}
	_, err = host.Run(ctx, node, h.UUID, protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v2", Size: 1 << 20})
	if !errcode.Has(err, errcode.AgentError) || !strings.Contains(err.Error(), protocol.StorageHeader) {
		t.Fatalf("storage command through Run: %v; want an agent error naming %s", err, protocol.StorageHeader)
	}
	_, err = host.RunStorage(ctx, node, h.UUID, "", protocol.CreateEmptyVolume, protocol.CreateEmptyVolumeCmd{InstallPath: "vols/v2", Size: 1 << 20})
	if !errcode.Has(err, errcode.InvalidArgument) {
		t.Fatalf("no storage URL: %v; want InvalidArgument", err)
	}
	if got := h.Agent.Stats().Commands[protocol.PathVolumeCreateEmpty]; got != 3 {
		t.Errorf("the agent got %d create-empty commands, want 3 (the empty URL is refused before sending)", got)
	}
}
