package client_test

import (
	"fmt"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/server/servertest"
)

// BenchmarkCreateAndWait measures one create round trip through the
// client against the real embedded cloud: POST, 202, polls until the job
// is done on its owner, decode. The first poll waits the minimum poll
// interval (50 ms by default), so it is set tiny here.
func BenchmarkCreateAndWait(b *testing.B) {
	st := servertest.Start(b, servertest.Options{Hosts: -1})
	c, err := client.New(st.URL, client.WithSession(st.Client.Session()), client.WithPollInterval(time.Microsecond, time.Millisecond))
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

// BenchmarkQuery measures one query of 100 inventories, decoded into maps,
// answered by the real embedded cloud from its database.
func BenchmarkQuery(b *testing.B) {
	st := servertest.Start(b, servertest.Options{Hosts: -1})
	c := st.Client
	ctx := b.Context()
	for i := range 100 {
		if _, err := client.CreateAndWait[map[string]any](ctx, c, "zones", map[string]any{"name": fmt.Sprint("zone-", i), "description": "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	q := client.Query{Q: []string{"description=bench"}, Limit: 100}
	b.ReportAllocs()
	for b.Loop() {
		zones, _, err := client.QueryAs[map[string]any](ctx, c, "zones", q)
		if err != nil || len(zones) != 100 {
			b.Fatalf("%d zones, %v", len(zones), err)
		}
	}
}
