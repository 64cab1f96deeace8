// Package servertest starts the real thing for tests: a whole embedded
// cloud in the test's process — one management node on the in-process bus
// and a SQLite file in the test's temporary directory, simulated KVM hosts
// on loopback HTTP, the default zone, cluster, offering, image and L3
// network — and a REST client logged in as admin. It is what `mplane run`
// builds, so a test through it exercises the same portal, services and
// agents as a user does, in a few hundred milliseconds.
package servertest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/conf"
	"mplane/server"
	"mplane/services/resource"
)

// Password is the admin password of every stack.
const Password = "servertest-password"

// Options configure a stack; the zero value is a cloud with 2 hosts.
type Options struct {
	// Hosts is the number of simulated hosts: 0 means 2; negative, none.
	Hosts int
	// ExtraKinds are simple kinds served besides server.Kinds.
	ExtraKinds []resource.Kind
	// Configure, if set, adjusts the configuration before the start.
	Configure func(*conf.Config)
	// Wrap, if set, wraps the REST API handler the client talks to (for
	// failure injection between client and server); the client then talks
	// to a test server in front of the node.
	Wrap func(http.Handler) http.Handler
}

// Stack is a running embedded cloud.
type Stack struct {
	*server.Embedded
	// URL is where the client talks: the node, or the wrapping server.
	URL string
	// Client is logged in as admin.
	Client *client.Client
	// Defaults are the UUIDs of the default resources by kind: "zone",
	// "cluster", "offering", "image", "l3".
	Defaults map[string]string
}

// Start starts a stack and stops it when the test ends.
func Start(t testing.TB, opts Options) *Stack {
	t.Helper()
	hosts := opts.Hosts
	switch {
	case hosts == 0:
		hosts = 2
	case hosts < 0:
		hosts = 0
	}
	dir := t.TempDir()
	cfg, err := conf.Load("", []string{"MPLANE_DATA_DIR=" + dir, "MPLANE_API_LISTEN=127.0.0.1:0",
		"MPLANE_ADMIN_PASSWORD=" + Password, "MPLANE_DRAIN_TIMEOUT=1s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := server.StartEmbedded(ctx, server.EmbeddedOptions{
		Options: server.Options{Config: cfg, ExtraKinds: opts.ExtraKinds},
		Hosts:   hosts,
	})
	if err != nil {
		t.Fatalf("start the embedded cloud: %v", err)
	}
	s := &Stack{Embedded: e, URL: e.URL()}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Stop(sctx); err != nil {
			t.Errorf("stop the embedded cloud: %v", err)
		}
	})
	if opts.Wrap != nil {
		target := e.URL()
		proxy := opts.Wrap(reverseProxy(target))
		ts := httptest.NewServer(proxy)
		t.Cleanup(ts.Close)
		s.URL = ts.URL
	}
	c, err := client.New(s.URL, client.WithPollInterval(time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if _, err := c.Login(ctx, "admin", Password); err != nil {
		t.Fatalf("log in to the embedded cloud: %v", err)
	}
	s.Client = c
	s.Defaults = map[string]string{}
	for key, q := range map[string]struct{ path, name string }{
		"zone": {"zones", server.DefaultZone}, "cluster": {"clusters", server.DefaultCluster},
		"offering": {"instance-offerings", server.DefaultOffering}, "image": {"images", server.DefaultImage},
		"l3": {"l3-networks", server.DefaultL3},
	} {
		rows, _, err := client.QueryAs[struct {
			UUID string `json:"uuid"`
		}](ctx, c, q.path, client.Query{Q: []string{"name=" + q.name}})
		if err != nil || len(rows) != 1 {
			t.Fatalf("find the default %s: %d rows, %v", key, len(rows), err)
		}
		s.Defaults[key] = rows[0].UUID
	}
	return s
}

// reverseProxy forwards every request to target.
func reverseProxy(target string) http.Handler {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	return httputil.NewSingleHostReverseProxy(u)
}
