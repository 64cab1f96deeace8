package client_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/api/jobs"
	"mplane/server/servertest"
)

// stack is the real embedded cloud the tests share, without simulated
// hosts of its own. Tests run in parallel on it: each talks to it through
// a Front of its own, names what it creates uniquely (tag) and adds the
// hosts it places its VMs on.
var stack *servertest.Stack

func TestMain(m *testing.M) {
	st, err := servertest.Launch(servertest.Options{Hosts: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the shared stack:", err)
		os.Exit(1)
	}
	stack = st
	code := m.Run()
	if err := st.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stop the shared stack:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// env is one test's way to the shared stack: a Front with a Recorder and
// a client through it, logged in with the stack's session.
type env struct {
	rec *servertest.Recorder
	url string
	c   *client.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rec := servertest.NewRecorder()
	e := &env{rec: rec, url: stack.Front(t, rec.Wrap)}
	e.c = newClient(t, e.url, client.WithSession(stack.Client.Session()))
	return e
}

// newClient is a client with fast polls and retries, without a session
// unless opts give one.
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
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// tag is a unique word for the names of what a test creates.
func tag() string { return client.NewJobUUID()[:12] }

// inv is a decoded inventory for tests.
type inv map[string]any

func (i inv) s(k string) string {
	v, _ := i[k].(string)
	return v
}

// vmParams are the params of a VM of the default offering, image and L3
// network on host.
func vmParams(name, host string) map[string]any {
	return map[string]any{"name": name, "instanceOfferingUuid": stack.Defaults["offering"],
		"imageUuid": stack.Defaults["image"], "l3NetworkUuids": []string{stack.Defaults["l3"]}, "hostUuid": host}
}

// gatedHost adds a host whose agent holds every VM start until the gate
// opens: a VM created on it is certainly processing until then.
func gatedHost(t *testing.T) (*servertest.Host, *servertest.Gate) {
	t.Helper()
	gate := servertest.NewGate("/vm/start")
	t.Cleanup(gate.Open)
	return stack.AddHost(t, servertest.AgentOptions{Wrap: gate.Wrap}), gate
}

// jobsWithUUID is the number of API jobs the server recorded with id.
func jobsWithUUID(t *testing.T, id string) int64 {
	t.Helper()
	var n int64
	if err := stack.DB().Model(&jobs.Job{}).Where("uuid = ? OR client_uuid = ?", id, id).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// count is the number of resources at path matching q, as the server
// counts them.
func count(t *testing.T, c *client.Client, path string, q ...string) int {
	t.Helper()
	_, n, err := c.Query(ctx(t), path, client.Query{Q: q, Count: true})
	if err != nil {
		t.Fatalf("count %s %v: %v", path, q, err)
	}
	return n
}

// requestsWith are the recorded requests with method.
func requestsWith(reqs []servertest.Request, method string) []servertest.Request {
	var out []servertest.Request
	for _, r := range reqs {
		if r.Method == method {
			out = append(out, r)
		}
	}
	return out
}
