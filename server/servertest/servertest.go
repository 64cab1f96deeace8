// Package servertest starts the real thing for tests: a whole embedded
// cloud in the test's process — one management node on the in-process bus
// and a SQLite file in the test's temporary directory, simulated KVM hosts
// on loopback HTTP, the default zone, cluster, offering, image, L2 and L3
// network — and a REST client logged in as admin. It is what `mplane run`
// builds, so a test through it exercises the same portal, services and
// agents as a user does, in a few hundred milliseconds.
//
// Failures are injected with real means, not a fake of the API:
//
//   - between the client and the node, a Recorder in Options.Wrap (or
//     Stack.Front) records the requests, answers some itself (Intercept)
//     or cuts the connection after the node did the work (DropResponses);
//   - sessions end with the API's log out (Stack.Logout), and
//     Stack.NewSession opens another;
//   - jobs fail or wait on hosts a test starts itself (Stack.StartAgent,
//     Stack.AddHost): a simulator with little capacity or injected
//     failures, one that is stopped (its port refuses connections), or one
//     behind a Gate that holds its commands until the test opens it.
//
// A stack takes a moment to start (a database, a node, hosts, a login),
// longer under the race detector. The tests of a package may share one
// stack started by Launch in TestMain, each test with a Front and
// sessions of its own.
package servertest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/conf"
	"mplane/internal/tlsconf"
	"mplane/server"
	"mplane/services/resource"

	"golang.org/x/crypto/bcrypt"
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
	// CAFile, for a node configured to serve HTTPS (Configure), is what
	// the stack's client trusts.
	CAFile string
}

// Stack is a running embedded cloud.
type Stack struct {
	*server.Embedded
	// URL is where the client talks: the node, or the wrapping server.
	URL string
	// Client is logged in as admin.
	Client *client.Client
	// Defaults are the UUIDs of the default resources by kind: "zone",
	// "cluster", "offering", "image", "l2" (attached to the default
	// cluster), "l3" (on the default L2 network), "ps" (the local primary
	// storage, attached to the default cluster).
	Defaults map[string]string

	closeOnce sync.Once
	closeErr  error
	closers   []func() error // run in reverse order by Close
}

// Start starts a stack and stops it when the test ends.
func Start(t testing.TB, opts Options) *Stack {
	t.Helper()
	s, err := launch(opts, t.TempDir())
	if s != nil {
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("stop the embedded cloud: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Launch starts a stack outside of any test, for one that the tests of a
// package share (started in TestMain, each test talking to it through a
// Front of its own); Close stops it and removes its data. Tests that share
// a stack share its database: they name what they create uniquely and
// place VMs on the hosts they mean.
func Launch(opts Options) (*Stack, error) {
	dir, err := os.MkdirTemp("", "servertest-")
	if err != nil {
		return nil, err
	}
	s, err := launch(opts, dir)
	if s == nil {
		s = &Stack{}
	}
	// Registered first, so it runs last.
	s.closers = append([]func() error{func() error { return os.RemoveAll(dir) }}, s.closers...)
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// Close stops the stack: the client, the front server if any, the node and
// its simulated hosts. Idempotent; Start's stacks close when their test
// ends.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for i := len(s.closers) - 1; i >= 0; i-- {
			errs = append(errs, s.closers[i]())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// launch starts a stack with its data in dir. On an error it returns the
// stack started so far (nil if none), for Close.
func launch(opts Options, dir string) (*Stack, error) {
	hosts := opts.Hosts
	switch {
	case hosts == 0:
		hosts = 2
	case hosts < 0:
		hosts = 0
	}
	cfg, err := conf.Load("", []string{"MPLANE_DATA_DIR=" + dir, "MPLANE_API_LISTEN=127.0.0.1:0",
		"MPLANE_ADMIN_PASSWORD=" + Password, "MPLANE_DRAIN_TIMEOUT=1s",
		// Tests' webhook receivers are on loopback, which the node refuses by default.
		"MPLANE_WEBHOOK_ALLOW=127.0.0.0/8"}, nil)
	if err != nil {
		return nil, err
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := server.StartEmbedded(ctx, server.EmbeddedOptions{
		Options: server.Options{Config: cfg, ExtraKinds: opts.ExtraKinds, BcryptCost: bcrypt.MinCost},
		Hosts:   hosts,
	})
	if err != nil {
		return nil, fmt.Errorf("start the embedded cloud: %w", err)
	}
	s := &Stack{Embedded: e, URL: e.URL()}
	s.closers = append(s.closers, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return e.Stop(sctx)
	})
	if opts.Wrap != nil {
		target := e.URL()
		proxy := opts.Wrap(reverseProxy(target))
		ts := httptest.NewServer(proxy)
		s.closers = append(s.closers, func() error { ts.Close(); return nil })
		s.URL = ts.URL
	}
	copts := []client.Option{client.WithPollInterval(time.Millisecond, 20*time.Millisecond)}
	if opts.CAFile != "" {
		hc, err := tlsconf.Client(opts.CAFile)
		if err != nil {
			return s, err
		}
		copts = append(copts, client.WithHTTPClient(hc))
	}
	c, err := client.New(s.URL, copts...)
	if err != nil {
		return s, err
	}
	s.closers = append(s.closers, func() error { c.Close(); return nil })
	if _, err := c.Login(ctx, "admin", Password); err != nil {
		return s, fmt.Errorf("log in to the embedded cloud: %w", err)
	}
	s.Client = c
	s.Defaults = map[string]string{}
	for key, q := range map[string]struct{ path, name string }{
		"zone": {"zones", server.DefaultZone}, "cluster": {"clusters", server.DefaultCluster},
		"offering": {"instance-offerings", server.DefaultOffering}, "image": {"images", server.DefaultImage},
		"l3": {"l3-networks", server.DefaultL3}, "ps": {"primary-storage", server.DefaultPrimaryStorage},
		"l2": {"l2-networks", server.DefaultL2},
	} {
		rows, _, err := client.QueryAs[struct {
			UUID string `json:"uuid"`
		}](ctx, c, q.path, client.Query{Q: []string{"name=" + q.name}})
		if err != nil || len(rows) != 1 {
			return s, fmt.Errorf("find the default %s: %d rows, %v", key, len(rows), err)
		}
		s.Defaults[key] = rows[0].UUID
	}
	return s, nil
}

// reverseProxy forwards every request to target.
func reverseProxy(target string) http.Handler {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	return httputil.NewSingleHostReverseProxy(u)
}
