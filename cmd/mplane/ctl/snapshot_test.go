package ctl

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"mplane/agents/kvm"
	"mplane/agents/storage"
	"mplane/api/client"
	"mplane/server"
	"mplane/server/servertest"
)

// TestCtlSnapshotsAndCopies: a disk offering; a snapshot of a data volume
// whose file then changes, and the revert that brings the snapshot's
// bytes back; copies of a snapshot and of a volume, each with its
// source's bytes; the delete of a snapshot; what the server refuses.
func TestCtlSnapshotsAndCopies(t *testing.T) {
	e := newEnv(t).loggedIn()
	// The host serves its local storage from dir, without qemu-img: a
	// volume is a raw file there, whose bytes are the volume's, and a
	// snapshot a file of its own.
	dir := t.TempDir()
	ids := e.seedWith(servertest.AgentOptions{Agent: kvm.Options{
		Storage: map[string]string{server.DefaultLocalStorageURL: dir}, StorageQemuImg: storage.QemuImgNone}})
	tag := client.NewJobUUID()[:12]

	// A disk offering of 16M, and a volume of its size on the host.
	rows := tableRows(e.ok("create", "disk-offering", "--name", tag, "--size", "16M"))
	if len(rows) != 2 || !slices.Equal(rows[0], []string{"UUID", "NAME", "SIZE", "STATE"}) || !slices.Equal(rows[1][1:], []string{tag, "16M", "Enabled"}) {
		t.Fatalf("create disk-offering: %v", rows)
	}
	off := rows[1][0]
	if b := e.lastBody("POST", "/v1/disk-offerings"); fmt.Sprint(b["params"]) != "map[diskSize:1.6777216e+07 name:"+tag+"]" {
		t.Fatalf("disk offering params %v", b["params"])
	}
	if rows := tableRows(e.ok("list", "disk-offerings", "--q", "name="+tag)); len(rows) != 2 || rows[1][0] != off {
		t.Fatalf("list disk-offerings: %v", rows)
	}
	vol := e.uuidOf("create", "volume", "--name", tag, "--disk-offering", off, "--primary-storage", ids["ps"], "--host", ids["host"])
	if b := e.lastBody("POST", "/v1/volumes/data"); fmt.Sprint(b["params"]) != "map[diskOfferingUuid:"+off+" hostUuid:"+ids["host"]+" name:"+tag+
		" primaryStorageUuid:"+ids["ps"]+"]" {
		t.Fatalf("volume params %v", b["params"])
	}
	// fileOf is the file of a volume on the host's directory.
	fileOf := func(vol string) string {
		t.Helper()
		inv := e.jsonOut("get", "volume", vol)
		if inv["format"] != "raw" || inv["hostUuid"] != ids["host"] || inv["primaryStorageUuid"] != ids["ps"] || inv["size"] != float64(16<<20) {
			t.Fatalf("volume %s: %v, want a raw file of 16M on the host's local storage", vol, inv)
		}
		return filepath.Join(dir, filepath.FromSlash(inv["installPath"].(string)))
	}
	pattern := func(b byte) []byte { return bytes.Repeat([]byte{b}, 64<<10) }
	// write puts 64K of b at 1M into a volume's file, as a guest would.
	write := func(file string, b byte) {
		t.Helper()
		f, err := os.OpenFile(file, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(pattern(b), 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// holds reports whether a volume's file has 64K of b at 1M and is 16M.
	holds := func(file string, b byte) bool {
		t.Helper()
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return len(data) == 16<<20 && bytes.Equal(data[1<<20:1<<20+64<<10], pattern(b))
	}
	file := fileOf(vol)
	write(file, 'A')

	// The snapshot: its row, its request, its progress.
	r := e.run(nil, "create", "snapshot", "--volume", vol, "--name", tag+"-a")
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	rows = tableRows(r.stdout)
	if len(rows) != 2 || !slices.Equal(rows[0], []string{"UUID", "NAME", "VOLUME", "TYPE", "STATUS", "SIZE"}) ||
		!slices.Equal(rows[1][1:], []string{tag + "-a", vol, "Storage", "Ready", "16M"}) {
		t.Fatalf("create snapshot: %v", rows)
	}
	snap := rows[1][0]
	if b := e.last("POST", "/v1/volumes/"+vol+"/volume-snapshots"); string(b.Body) != `{"params":{"name":"`+tag+`-a"}}` || b.JobUUID == "" {
		t.Fatalf("snapshot request %+v", b)
	}
	if lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n"); !strings.HasPrefix(lines[0], "create snapshot "+tag+"-a: job ") ||
		!strings.HasPrefix(lines[len(lines)-1], "create snapshot "+tag+"-a: done in ") {
		t.Fatalf("snapshot progress %q", r.stderr)
	}
	if rows := tableRows(e.ok("list", "snapshots", "--q", "volumeUuid="+vol)); len(rows) != 2 || rows[1][0] != snap {
		t.Fatalf("list snapshots: %v", rows)
	}
	if got := e.jsonOut("get", "volume-snapshot", snap); got["primaryStorageUuid"] != ids["ps"] || got["latest"] != true {
		t.Fatalf("get snapshot: %v", got)
	}

	// The volume changes; the revert brings the snapshot's bytes back.
	write(file, 'B')
	if !holds(file, 'B') {
		t.Fatal("the volume's file does not hold what was written")
	}
	r = e.run(nil, "snapshot", "revert", snap)
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	if rows := tableRows(r.stdout); len(rows) != 2 || !slices.Equal(rows[1], []string{vol, tag, "Data", "Ready", "16M", ids["ps"], "-"}) {
		t.Fatalf("revert output %q", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "revert snapshot "+snap+": job ") {
		t.Fatalf("revert progress %q", r.stderr)
	}
	if b := e.last("PUT", "/v1/volume-snapshots/"+snap+"/actions"); string(b.Body) != `{"revertVolumeFromSnapshot":{}}` || b.JobUUID == "" {
		t.Fatalf("revert request %+v", b)
	}
	if !holds(file, 'A') {
		t.Fatal("after the revert the volume's file does not hold the snapshot's bytes")
	}

	// Copies: of the snapshot (its bytes), of the volume (the volume's),
	// each on the source's storage and host, as large.
	write(file, 'C')
	fromSnap := e.uuidOf("create", "volume", "--name", tag+"-from-snap", "--from-snapshot", snap)
	if b := e.last("POST", "/v1/volumes/data/from/volume-snapshots/"+snap); string(b.Body) != `{"params":{"name":"`+tag+`-from-snap"}}` {
		t.Fatalf("copy of a snapshot: request %+v", b)
	}
	clone := e.uuidOf("create", "volume", "--name", tag+"-clone", "--from-volume", vol, "--description", "a clone")
	if b := e.last("POST", "/v1/volumes/data/from/volumes/"+vol); string(b.Body) != `{"params":{"description":"a clone","name":"`+tag+`-clone"}}` {
		t.Fatalf("copy of a volume: request %+v", b)
	}
	for _, c := range []struct {
		vol  string
		want byte
	}{{fromSnap, 'A'}, {clone, 'C'}, {vol, 'C'}} {
		if f := fileOf(c.vol); f == file && c.vol != vol || !holds(f, c.want) {
			t.Errorf("volume %s (%s): not a file of its own holding %q", c.vol, f, c.want)
		}
	}
	out := e.ok("list", "volumes", "--q", "name~="+tag+"%", "--sort", "+createDate")
	if rows := tableRows(out); len(rows) != 4 || !slices.Equal(rows[2], []string{fromSnap, tag + "-from-snap", "Data", "Ready", "16M", ids["ps"], "-"}) ||
		!slices.Equal(rows[3], []string{clone, tag + "-clone", "Data", "Ready", "16M", ids["ps"], "-"}) {
		t.Fatalf("list volumes:\n%s", out)
	}

	// What the server refuses, as it says it: a 4xx, no job.
	unknown := "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		args         []string
		method, path string
		status       int
		want         string
	}{
		{[]string{"create", "volume", "--name", "x", "--from-snapshot", unknown}, "POST", "/v1/volumes/data/from/volume-snapshots/" + unknown,
			http.StatusBadRequest, "error: SYS.1007 invalid argument: volumeSnapshotUuid " + unknown + " does not exist\n"},
		{[]string{"create", "volume", "--name", "x", "--from-volume", unknown}, "POST", "/v1/volumes/data/from/volumes/" + unknown,
			http.StatusBadRequest, "error: SYS.1007 invalid argument: volumeUuid " + unknown + " does not exist\n"},
		{[]string{"create", "snapshot", "--volume", unknown, "--name", "x"}, "POST", "/v1/volumes/" + unknown + "/volume-snapshots",
			http.StatusNotFound, "error: SYS.1005 resource not found: volume " + unknown + " not found\n"},
		{[]string{"snapshot", "revert", unknown}, "PUT", "/v1/volume-snapshots/" + unknown + "/actions",
			http.StatusNotFound, "error: SYS.1005 resource not found: volume snapshot " + unknown + " not found\n"},
	} {
		if got := e.fails(tc.args...); got != tc.want {
			t.Errorf("ctl %s: stderr\n%q\nwant\n%q", strings.Join(tc.args, " "), got, tc.want)
		}
		if got := e.last(tc.method, tc.path).Status; got != tc.status {
			t.Errorf("ctl %s: answered %d, want %d", strings.Join(tc.args, " "), got, tc.status)
		}
	}

	// The snapshot's delete removes its file; the copy made of it stays.
	snapFile := filepath.Join(dir, "snapshots", "vol-"+vol, snap)
	if _, err := os.Stat(snapFile); err != nil {
		t.Fatalf("the snapshot's file: %v", err)
	}
	if out := e.ok("delete", "snapshot", snap); out != "Deleted snapshot "+snap+"\n" {
		t.Fatalf("delete snapshot: %q", out)
	}
	if del := e.last(http.MethodDelete, "/v1/volume-snapshots/"+snap); del.JobUUID == "" {
		t.Fatalf("delete request %+v", del)
	}
	if _, err := os.Stat(snapFile); !os.IsNotExist(err) {
		t.Fatalf("the snapshot's file after its delete: %v", err)
	}
	if out := e.ok("list", "snapshots", "--q", "volumeUuid="+vol, "--count"); out != "0\n" {
		t.Fatalf("snapshots after the delete: %q", out)
	}
	if !holds(fileOf(fromSnap), 'A') {
		t.Fatal("the copy of a deleted snapshot lost its bytes")
	}
}
