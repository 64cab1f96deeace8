package client_test

import (
	"context"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/api/client/clienttest"
)

// newFake starts a fake API and a client of it, logged in unless the
// test says otherwise. Polls and retries are fast: tests count them, they
// never time them.
func newFake(t *testing.T, opts clienttest.Options, login bool) (*clienttest.Server, *client.Client) {
	t.Helper()
	srv := clienttest.NewServer(opts)
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)
	if login {
		c.SetSession(srv.NewSession())
	}
	return srv, c
}

func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{
		client.WithPollInterval(time.Millisecond, 4*time.Millisecond),
		client.WithRetries(2, time.Millisecond),
	}, opts...)
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", url, err)
	}
	t.Cleanup(c.Close)
	return c
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// inv is a decoded inventory for tests.
type inv map[string]any

func (i inv) s(k string) string {
	v, _ := i[k].(string)
	return v
}

// seed creates a zone, cluster, host, offering, image and an L3 network
// with an IP range, and returns their UUIDs by kind.
func seed(t *testing.T, c *client.Client) map[string]string {
	t.Helper()
	cx := ctx(t)
	out := map[string]string{}
	mk := func(key, path string, params map[string]any) {
		t.Helper()
		v, err := client.CreateAndWait[inv](cx, c, path, params)
		if err != nil {
			t.Fatalf("create %s: %v", path, err)
		}
		out[key] = v.s("uuid")
	}
	mk("zone", "zones", map[string]any{"name": "zone1"})
	mk("cluster", "clusters", map[string]any{"name": "cluster1", "zoneUuid": out["zone"], "hypervisorType": "KVM"})
	mk("host", "hosts/kvm", map[string]any{"managementIp": "127.0.0.10", "clusterUuid": out["cluster"]})
	mk("offering", "instance-offerings", map[string]any{"name": "small", "cpuNum": 1, "memorySize": 1 << 30})
	mk("image", "images", map[string]any{"name": "cirros", "url": "http://example.invalid/cirros.qcow2", "format": "qcow2"})
	mk("l3", "l3-networks", map[string]any{"name": "l3", "zoneUuid": out["zone"]})
	mk("range", "l3-networks/"+out["l3"]+"/ip-ranges", map[string]any{
		"startIp": "10.0.0.10", "endIp": "10.0.0.20", "netmask": "255.255.255.0", "gateway": "10.0.0.1"})
	return out
}
