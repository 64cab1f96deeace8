package storage

import (
	"bytes"
	"os"
	"slices"
	"testing"

	"mplane/agents/protocol"
)

// TestRoutesAreTheProtocolsStorageCommands pins that the KVM agent, which
// routes protocol.StorageCommandPaths to its mounted storage agents, routes
// every command the storage agent serves (echo and connect are the host's).
func TestRoutesAreTheProtocolsStorageCommands(t *testing.T) {
	a := startAgent(t, Options{QemuImg: QemuImgNone})
	var got []string
	for _, rt := range a.srv.Routes() {
		got = append(got, rt.Path)
	}
	want := append(protocol.StorageCommandPaths(), protocol.PathStorageEcho, protocol.PathStorageConnect)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the agent serves %q; protocol.StorageCommandPaths and echo, connect are %q", got, want)
	}
}

// TestSetConnection connects an agent without /storage/connect, as the KVM
// agent connects the storage it mounts: the secret is required from then
// on, ping answers the UUID and URL, and progress events go to the URL
// with the secret, naming the UUID.
func TestSetConnection(t *testing.T) {
	m := newMgmt(t)
	a := startAgent(t, Options{QemuImg: QemuImgNone})
	e := &env{t: t, m: m, a: a}
	a.SetConnection("host-1", m.eventURL, "s1")

	fails(e, protocol.StoragePing, protocol.StoragePingCmd{}, "401")
	a.secret = "s1"
	if ping := must(e, protocol.StoragePing, protocol.StoragePingCmd{}); ping.UUID != "host-1" || ping.SendCommandURL != m.eventURL {
		t.Fatalf("ping %+v, want host-1 and %s", ping, m.eventURL)
	}
	// An empty secret keeps the one held, as a connect without one.
	a.SetConnection("host-1", m.eventURL, "")
	a.secret = ""
	fails(e, protocol.StoragePing, protocol.StoragePingCmd{}, "401")
	a.secret = "s1"

	data := imageData(t, 2*mib)
	srv := newImageServer(t, data)
	must(e, protocol.DownloadImage, protocol.DownloadImageCmd{ImageUUID: "img-1", URL: srv.url + "/img", InstallPath: "images/i1", ExpectedSize: int64(len(data))})
	if got, _ := os.ReadFile(e.path("images/i1")); !bytes.Equal(got, data) {
		t.Fatal("downloaded content differs")
	}
	eventually(t, "the download's last progress event", func() bool {
		evs := m.progressEvents(t)
		return len(evs) > 0 && evs[len(evs)-1].Progress == "100"
	})
	for _, ev := range m.eventsSoFar() {
		if ev.Secret != "s1" {
			t.Errorf("event %s with secret %q, want s1", ev.Path, ev.Secret)
		}
	}
	for _, ev := range m.progressEvents(t) {
		if ev.ServerUUID != "host-1" || ev.ResourceUUID != "img-1" {
			t.Errorf("progress event %+v, want server host-1, resource img-1", ev)
		}
	}
}
