package client_test

import (
	"testing"
	"time"

	"mplane/api/client"
	"mplane/api/client/clienttest"
)

// BenchmarkCreateAndWait measures one create round trip through the
// client (POST, 202, one poll, decode) against the in-memory fake: the
// client's own overhead, not the server's. The first poll waits the
// minimum poll interval (50 ms by default), so it is set tiny here.
func BenchmarkCreateAndWait(b *testing.B) {
	srv := clienttest.NewServer(clienttest.Options{PendingPolls: -1})
	defer srv.Close()
	c, err := client.New(srv.URL, client.WithSession(srv.NewSession()), client.WithPollInterval(time.Microsecond, time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.CreateAndWait[map[string]any](ctx, c, "zones", map[string]any{"name": "z"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQuery measures one query of 100 inventories, decoded into maps.
func BenchmarkQuery(b *testing.B) {
	srv := clienttest.NewServer(clienttest.Options{})
	defer srv.Close()
	for i := range 100 {
		srv.Put("zones", map[string]any{"uuid": client.NewJobUUID(), "name": "zone", "state": "Enabled", "n": i})
	}
	c, err := client.New(srv.URL, client.WithSession(srv.NewSession()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := b.Context()
	q := client.Query{Q: []string{"state=Enabled"}, Limit: 100}
	b.ReportAllocs()
	for b.Loop() {
		zones, _, err := client.QueryAs[map[string]any](ctx, c, "zones", q)
		if err != nil || len(zones) != 100 {
			b.Fatalf("%d zones, %v", len(zones), err)
		}
	}
}
