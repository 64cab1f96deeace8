package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/api/client"
	"mplane/api/jobs"
	"mplane/conf"
	"mplane/errcode"
	"mplane/server/servertest"
)

// TestBadInputIsRefusedAtTheEdge: each kind of bad input an audit of the
// API sent is answered 400 with what to fix, and changes nothing: no job,
// no row.
func TestBadInputIsRefusedAtTheEdge(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	admin := st.Client.Session()
	list := strings.TrimSuffix(strings.Repeat("x,", 1000), ",")
	var manyLists []string
	for i := 0; i < 33; i++ {
		manyLists = append(manyLists, "q=name?="+list)
	}
	cases := []struct {
		name, method, path, body, detail string
	}{
		{"a malformed UUID in a delete's path", http.MethodDelete, "/v1/zones/not-a-uuid", "",
			`the uuid in the path must be a UUID (32 lowercase hexadecimal digits), got "not-a-uuid"`},
		{"a malformed UUID in a get's path", http.MethodGet, "/v1/zones/ZONE", "", "the uuid in the path must be a UUID"},
		{"a malformed UUID in an action's path", http.MethodPut, "/v1/zones/1234/actions", `{"updateZone": {"name": "z"}}`, "the uuid in the path must be a UUID"},
		{"a malformed UUID in a call's path", http.MethodPost, "/v1/clusters/abc/primary-storage/" + st.Defaults["ps"], "",
			`{clusterUuid} in the path must be a UUID`},
		{"a malformed UUID in the params", http.MethodPost, "/v1/clusters", `{"params": {"name": "c", "zoneUuid": "zone-1", "hypervisorType": "KVM"}}`,
			`params.zoneUuid must be a UUID (32 lowercase hexadecimal digits), got "zone-1"`},
		{"a ';' in a query", http.MethodGet, "/v1/zones?q=name=x;", "", "the query string holds a ';'"},
		{"33 lists of 1,000 values", http.MethodGet, "/v1/zones?" + strings.Join(manyLists, "&"), "", "too many values in the q parameters"},
		{"a name of a million bytes", http.MethodPost, "/v1/zones", `{"params": {"name": "` + strings.Repeat("n", 1_000_000) + `"}}`,
			"name must be at most 255 characters"},
		{"a NUL in a name", http.MethodPost, "/v1/zones", `{"params": {"name": "a\u0000b"}}`, "params.name must not hold a NUL character"},
		{"a bidi override in a name", http.MethodPost, "/v1/zones", `{"params": {"name": "a\u202eb"}}`,
			"params.name must not hold control or format characters (found U+202E)"},
		{"an int64-max memory size", http.MethodPost, "/v1/instance-offerings", `{"params": {"name": "o", "cpuNum": 1, "memorySize": 9223372036854775807}}`,
			"memorySize must be from 16777216 bytes (16 MiB) to 70368744177664 bytes (64 TiB)"},
		{"a file:// image URL", http.MethodPost, "/v1/images", `{"params": {"name": "i", "url": "file:///etc/shadow", "backupStorageUuids": ["` + st.DefaultBackupStorage(t) + `"]}}`,
			"url must be an http or https URL"},
		{"a field given twice", http.MethodPost, "/v1/zones", `{"params": {"name": "z1", "name": "z2"}}`, `field "name" is given twice`},
		{"invalid UTF-8", http.MethodPost, "/v1/zones", "{\"params\": {\"name\": \"z\xff\"}}", "request body is not valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := apiCall(t, st, admin, tc.method, tc.path, tc.body)
			var body struct{ Error *errcode.Error }
			_ = json.Unmarshal(a.body, &body)
			if a.status != http.StatusBadRequest || body.Error == nil || body.Error.Code != errcode.InvalidArgument || !strings.Contains(body.Error.Details, tc.detail) {
				t.Fatalf("%s %s: %s, want 400 with %q", tc.method, truncated(tc.path), truncated(a.String()), tc.detail)
			}
		})
	}
	var jobsN, zones int64
	st.DB().Table("api_jobs").Count(&jobsN)
	st.DB().Table("zones").Count(&zones)
	if jobsN != 0 || zones != 1 {
		t.Errorf("%d jobs and %d zones after the bad requests, want none and the default zone", jobsN, zones)
	}
	// The same requests made right are accepted: the checks refuse only
	// what they say.
	if a := apiCall(t, st, admin, http.MethodGet, "/v1/zones?q=name=x%3B", ""); a.status != http.StatusOK || !bytes.Contains(a.body, []byte(`"inventories":[]`)) {
		t.Errorf("an encoded ';': %s", a)
	}
	if a := apiCall(t, st, admin, http.MethodPost, "/v1/zones", `{"params": {"name": "z\u00e9\u4e16 ok", "description": "line one\nline two"}}`); a.status != http.StatusAccepted {
		t.Errorf("a name in UTF-8 and a description with a newline: %s", a)
	}
}

func truncated(s string) string {
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

// TestWebhookCannotReachTheNode: an X-Web-Hook to the node's own address is
// refused at once (400), and one whose name resolves to loopback is
// refused when dialled: the receiver never hears of the job (before, the
// node posted to its own /admin/probe).
func TestWebhookCannotReachTheNode(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1, Configure: func(c *conf.Config) { c.WebhookAllow = "" }})
	admin := st.Client.Session()
	var calls atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { calls.Add(1) }))
	defer hook.Close()
	_, port, _ := net.SplitHostPort(hook.Listener.Addr().String())

	req := func(webhook string) apiAnswer {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, _ := http.NewRequestWithContext(ctx, http.MethodPost, st.URL+"/v1/zones", strings.NewReader(`{"params": {"name": "hooked"}}`))
		r.Header.Set("Authorization", "OAuth "+admin)
		r.Header.Set(jobs.HeaderWebHook, webhook)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return apiAnswer{status: resp.StatusCode, body: data}
	}
	for _, u := range []string{st.URL + "/admin/probe", "http://[::1]:" + port + "/hook", "http://169.254.169.254/latest/meta-data"} {
		a := req(u)
		if a.status != http.StatusBadRequest || !bytes.Contains(a.body, []byte("not allowed; an operator may allow it with webhook_allow")) {
			t.Errorf("X-Web-Hook %s: %s, want 400", u, a)
		}
	}
	a := req("http://localhost:" + port + "/hook")
	if a.status != http.StatusAccepted {
		t.Fatalf("X-Web-Hook by a name: %s, want 202 (checked when dialled)", a)
	}
	var loc jobs.LocationBody
	_ = json.Unmarshal(a.body, &loc)
	if w := apiCall(t, st, admin, http.MethodGet, strings.TrimPrefix(loc.Location, st.URL)+"?wait=30s", ""); w.status != http.StatusOK {
		t.Fatalf("the job: %s", w)
	}
	// Delivery is tried and refused at the dial; give it the time a
	// delivery takes.
	time.Sleep(500 * time.Millisecond)
	if n := calls.Load(); n != 0 {
		t.Fatalf("the loopback receiver got %d webhooks, want none", n)
	}
}

// TestAddingAHostDoesNotEchoWhatAnswered: a host added at an address where
// something other than an agent listens fails with fixed words, not with
// what that port answered (adding hosts must not be a port scanner).
func TestAddingAHostDoesNotEchoWhatAnswered(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1})
	secret := "the-foreign-service-says-" + strings.Repeat("x", 8)
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, secret)
	}))
	defer foreign.Close()
	port := foreign.Listener.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := client.CreateAndWait[struct{ UUID string }](ctx, st.Client, "hosts/kvm",
		map[string]any{"name": "h", "managementIp": "127.0.0.1", "agentPort": port, "clusterUuid": st.Defaults["cluster"]})
	if err == nil {
		t.Fatal("a host added at a port without an agent")
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "HTTP 418") || strings.Contains(err.Error(), "teapot") ||
		!strings.Contains(err.Error(), "what answered is not an agent") {
		t.Fatalf("the add failed with %v: want fixed words, without what the port answered", err)
	}
}

// TestAgentClaimToken: with agent_claim_token set, the node claims an
// agent started with the same token; an agent that expects another token
// refuses the node, and the host is not added.
func TestAgentClaimToken(t *testing.T) {
	st := servertest.Start(t, servertest.Options{Hosts: -1, Configure: func(c *conf.Config) { c.AgentClaimToken = "the-cloud's-token" }})
	ok := st.AddHost(t, servertest.AgentOptions{Agent: kvm.Options{ClaimToken: "the-cloud's-token"}})
	if ok.UUID == "" {
		t.Fatal("no host")
	}
	other := st.StartAgent(t, servertest.AgentOptions{Agent: kvm.Options{ClaimToken: "another cloud's"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := client.CreateAndWait[struct{ UUID string }](ctx, st.Client, "hosts/kvm",
		map[string]any{"name": "theirs", "managementIp": other.IP, "agentPort": other.Port, "clusterUuid": st.Defaults["cluster"]})
	if err == nil || !strings.Contains(err.Error(), "claim token") {
		t.Fatalf("adding an agent that expects another claim token: %v, want refused for the claim token", err)
	}
}

// TestAgentNetworks: with agent_networks a host at an address literal
// outside is refused at once (400), one inside is added; the dialer that
// refuses the rest (names included) is netguard's (TestOnly).
func TestAgentNetworks(t *testing.T) {
	// The embedded cloud's own agents are at 127.0.0.1.
	st := servertest.Start(t, servertest.Options{Hosts: -1, Configure: func(c *conf.Config) { c.AgentNetworks = "127.0.0.1/32" }})
	admin := st.Client.Session()
	a := apiCall(t, st, admin, http.MethodPost, "/v1/hosts/kvm",
		`{"params": {"name": "h", "managementIp": "127.0.0.2", "agentPort": 7070, "clusterUuid": "`+st.Defaults["cluster"]+`"}}`)
	if a.status != http.StatusBadRequest || !bytes.Contains(a.body, []byte("address 127.0.0.2 is not in agent_networks")) {
		t.Fatalf("a host outside agent_networks: %s, want 400", a)
	}
	// One inside is added (the dialer lets it through).
	if h := st.AddHost(t, servertest.AgentOptions{}); h.UUID == "" {
		t.Fatal("a host in agent_networks was not added")
	}
}
