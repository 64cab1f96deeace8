package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/api/jobs"
	"mplane/api/route"
	"mplane/server/servertest"
	"mplane/services/vm"
	"mplane/services/volume"
)

// tenant is an account of the tenancy tests, logged in.
type tenant struct {
	name, uuid, session string
	c                   *client.Client
}

type apiAnswer struct {
	status int
	body   []byte
}

func (a apiAnswer) String() string { return fmt.Sprintf("%d %s", a.status, bytes.TrimSpace(a.body)) }

// call sends one request with session (none if empty) to the stack.
func apiCall(t *testing.T, st *servertest.Stack, session, method, path, body string) apiAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, st.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if session != "" {
		req.Header.Set("Authorization", "OAuth "+session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return apiAnswer{status: resp.StatusCode, body: data}
}

func inventoryUUID(t *testing.T, a apiAnswer) string {
	t.Helper()
	var v struct {
		Inventory struct {
			UUID string `json:"uuid"`
		} `json:"inventory"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil || v.Inventory.UUID == "" {
		t.Fatalf("answer %s has no inventory uuid (%v)", a, err)
	}
	return v.Inventory.UUID
}

// newTenant creates a normal account (as admin) and logs it in.
func newTenant(t *testing.T, st *servertest.Stack, name string) tenant {
	t.Helper()
	pw := name + "-password"
	a := apiCall(t, st, st.Client.Session(), http.MethodPost, "/v1/accounts", fmt.Sprintf(`{"params": {"name": %q, "password": %q}}`, name, pw))
	if a.status != http.StatusOK {
		t.Fatalf("create account %s: %s", name, a)
	}
	tn := tenant{name: name, uuid: inventoryUUID(t, a)}
	c, err := client.New(st.URL, client.WithPollInterval(time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Login(ctx, name, pw); err != nil {
		t.Fatalf("log in as %s: %v", name, err)
	}
	tn.c, tn.session = c, c.Session()
	return tn
}

// TestTenancyMatrix: over every route the node serves, account B gets 404
// for each of account A's resources (get, query, action, delete, calls
// naming them, api-jobs), 403 for infrastructure and for changing what is
// shared with it, and counts show nothing of A's; nothing B sends starts a
// job, and A's resources are as they were.
func TestTenancyMatrix(t *testing.T) {
	st := servertest.Start(t, servertest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := st.Client.Session()
	a, b := newTenant(t, st, "alice"), newTenant(t, st, "bob")

	// A's resources, made from the embedded cloud's public defaults.
	v, err := client.CreateAndWait[vm.VmInstanceVO](ctx, a.c, "vm-instances", map[string]any{"name": "alice-vm",
		"instanceOfferingUuid": st.Defaults["offering"], "imageUuid": st.Defaults["image"], "l3NetworkUuids": []string{st.Defaults["l3"]}})
	if err != nil || v.State != vm.StateRunning || len(v.VMNics) != 1 {
		t.Fatalf("alice's VM: %+v, %v", v, err)
	}
	vol, err := client.CreateAndWait[volume.VolumeVO](ctx, a.c, "volumes/data", map[string]any{"name": "alice-data", "diskSize": 1 << 20,
		"primaryStorageUuid": st.Defaults["ps"], "hostUuid": v.HostUUID})
	if err != nil {
		t.Fatalf("alice's volume: %v", err)
	}
	snap, err := client.CreateAndWait[volume.VolumeSnapshotVO](ctx, a.c, "volumes/"+vol.UUID+"/volume-snapshots", map[string]any{"name": "alice-snap"})
	if err != nil {
		t.Fatalf("alice's snapshot: %v", err)
	}
	reboot := apiCall(t, st, a.session, http.MethodPut, "/v1/vm-instances/"+v.UUID+"/actions", `{"rebootVmInstance": {}}`)
	if reboot.status != http.StatusAccepted {
		t.Fatalf("alice reboots her VM: %s", reboot)
	}
	var loc jobs.LocationBody
	_ = json.Unmarshal(reboot.body, &loc)
	aliceJob := loc.Location[strings.LastIndex(loc.Location, "/")+1:]
	if w := apiCall(t, st, a.session, http.MethodGet, "/v1/api-jobs/"+aliceJob+"?wait=30s", ""); w.status != http.StatusOK {
		t.Fatalf("alice's reboot job: %s", w)
	}
	// Admin's resources that are not shared.
	priv, err := client.CreateAndWait[struct {
		UUID string `json:"uuid"`
	}](ctx, st.Client, "instance-offerings", map[string]any{"name": "private", "cpuNum": 1, "memorySize": 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	privOffering := priv.UUID

	aliceOf := map[string]string{
		"vm-instances": v.UUID, "vm-instances/nics": v.VMNics[0].UUID, "volumes": vol.UUID, "volume-snapshots": snap.UUID,
	}
	aliceUUIDs := []string{v.UUID, v.VMNics[0].UUID, vol.UUID, snap.UUID, v.RootVolumeUUID}
	vars := map[string]string{
		"vmInstanceUuid": v.UUID, "volumeUuid": vol.UUID, "vmNicUuid": v.VMNics[0].UUID, "volumeSnapshotUuid": snap.UUID,
		"l3NetworkUuid": st.Defaults["l3"], "imageUuid": st.Defaults["image"], "clusterUuid": st.Defaults["cluster"],
		"primaryStorageUuid": st.Defaults["ps"], "zoneUuid": st.Defaults["zone"], "l2NetworkUuid": st.Defaults["l2"],
		"backupStorageUuid": st.DefaultBackupStorage(t), "category": "vm", "name": "x", "dns": "8.8.8.8",
	}
	public := map[string]string{"images": st.Defaults["image"], "l3-networks": st.Defaults["l3"], "instance-offerings": st.Defaults["offering"]}
	fill := func(path, uuid string) string {
		out := path
		for k, val := range vars {
			out = strings.ReplaceAll(out, "{"+k+"}", val)
		}
		return strings.ReplaceAll(out, "{uuid}", uuid)
	}
	// An answer leaks when it names alice's resources, or one of their
	// UUIDs the request did not hold.
	leaks := func(path string, ans apiAnswer) bool {
		for _, n := range []string{v.Name, vol.Name, snap.Name} {
			if bytes.Contains(ans.body, []byte(n)) {
				return true
			}
		}
		for _, u := range aliceUUIDs {
			if !strings.Contains(path, u) && bytes.Contains(ans.body, []byte(u)) {
				return true
			}
		}
		return false
	}

	probes := 0
	for _, e := range st.Endpoints() {
		target := aliceOf[e.Resource]
		if target == "" {
			target = vars[strings.TrimSuffix(e.Resource, "s")+"Uuid"]
		}
		if target == "" {
			target = st.Defaults["zone"] // infrastructure: any row will do, B may touch none
		}
		name := e.Method + " " + e.Path
		if e.Action != "" {
			name += " " + e.Action
		}
		body := ""
		switch {
		case e.Action != "":
			body = fmt.Sprintf(`{%q: {}}`, e.Action)
		case e.Method == http.MethodPost || e.Method == http.MethodPut:
			body = `{"params": {}}`
		}
		hasVars := strings.Contains(e.Path, "{")
		t.Run(name, func(t *testing.T) {
			probes++
			path := "/v1" + fill(e.Path, target)
			ans := apiCall(t, st, b.session, e.Method, path, body)
			if ans.status == http.StatusAccepted {
				t.Fatalf("bob's %s %s started a job: %s", e.Method, path, ans)
			}
			if leaks(path, ans) {
				t.Errorf("bob's %s %s answers with alice's resources: %s", e.Method, path, ans)
			}
			switch e.Access {
			case route.AdminOnly:
				if ans.status != http.StatusForbidden {
					t.Errorf("bob's %s %s on infrastructure: %s, want 403", e.Method, path, ans)
				}
				return
			case route.ReadOnly:
				want := http.StatusForbidden
				if e.Method == http.MethodGet {
					want = http.StatusOK
				}
				if ans.status != want {
					t.Errorf("bob's %s %s on a resource all may read: %s, want %d", e.Method, path, ans, want)
				}
				return
			}
			switch {
			case e.Method == http.MethodGet && !hasVars:
				if ans.status != http.StatusOK {
					t.Errorf("bob's query %s: %s, want 200", path, ans)
				}
			case e.Method == http.MethodPost && !hasVars:
				// A create of his own: Shared kinds are admins'.
				if e.Access == route.Shared && ans.status != http.StatusForbidden {
					t.Errorf("bob creates a %s: %s, want 403", e.Resource, ans)
				}
			case e.Path == "/"+e.Resource+"/{uuid}" || e.Path == "/"+e.Resource+"/{uuid}/actions":
				if aliceOf[e.Resource] != "" {
					if ans.status != http.StatusNotFound {
						t.Errorf("bob's %s %s on alice's %s: %s, want 404", e.Method, path, e.Resource, ans)
					}
				}
			default:
				// A call naming alice's resources (or admin's, for
				// shared ones): refused, without a job.
				if ans.status != http.StatusNotFound && ans.status != http.StatusBadRequest && ans.status != http.StatusForbidden {
					t.Errorf("bob's call %s %s: %s, want 404, 400 or 403", e.Method, path, ans)
				}
			}
		})
		// What is shared with bob: he sees it and changes none of it.
		if pub, ok := public[e.Resource]; ok && strings.Contains(e.Path, "{uuid}") {
			t.Run(name+" shared", func(t *testing.T) {
				ans := apiCall(t, st, b.session, e.Method, "/v1"+fill(e.Path, pub), body)
				want := http.StatusForbidden
				if e.Method == http.MethodGet {
					want = http.StatusOK
				}
				if ans.status != want {
					t.Errorf("bob's %s %s on a public %s: %s, want %d", e.Method, e.Path, e.Resource, ans, want)
				}
			})
		}
	}
	if probes < 60 {
		t.Errorf("only %d routes probed", probes)
	}

	t.Run("counts and filters show nothing of alice's", func(t *testing.T) {
		for _, q := range []string{"/v1/vm-instances?count=true", "/v1/volumes?count=true", "/v1/volume-snapshots?count=true",
			"/v1/vm-instances/nics?count=true", "/v1/vm-instances?replyWithCount=true&q=uuid=" + v.UUID, "/v1/volumes?q=vmInstanceUuid=" + v.UUID} {
			ans := apiCall(t, st, b.session, http.MethodGet, q, "")
			var rep struct {
				Total       *int64            `json:"total"`
				Inventories []json.RawMessage `json:"inventories"`
			}
			if err := json.Unmarshal(ans.body, &rep); err != nil || ans.status != 200 || len(rep.Inventories) != 0 || (rep.Total != nil && *rep.Total != 0) {
				t.Errorf("bob's %s: %s, want nothing", q, ans)
			}
			// The same query as alice finds her resources.
			if q == "/v1/vm-instances?count=true" {
				mine := apiCall(t, st, a.session, http.MethodGet, q, "")
				if !bytes.Contains(mine.body, []byte(`"total":1`)) {
					t.Errorf("alice's %s: %s, want her one VM", q, mine)
				}
			}
		}
		// The private offering is no more there for bob than alice's VM.
		if ans := apiCall(t, st, b.session, http.MethodGet, "/v1/instance-offerings/"+privOffering, ""); ans.status != http.StatusNotFound {
			t.Errorf("bob's GET of admin's private offering: %s, want 404", ans)
		}
	})
	t.Run("api-jobs", func(t *testing.T) {
		for _, id := range []string{aliceJob, jobs.ScopedUUID(a.uuid, aliceJob)} {
			if ans := apiCall(t, st, b.session, http.MethodGet, "/v1/api-jobs/"+id, ""); ans.status != http.StatusNotFound || leaks(id, ans) {
				t.Errorf("bob's GET of alice's job %s: %s, want 404", id, ans)
			}
		}
	})
	t.Run("accounts", func(t *testing.T) {
		cases := []struct {
			method, path, body string
			want               int
		}{
			{http.MethodGet, "/v1/accounts/" + a.uuid, "", 404},
			{http.MethodPut, "/v1/accounts/" + a.uuid, `{"updateAccount": {"description": "mine now"}}`, 404},
			{http.MethodDelete, "/v1/accounts/" + a.uuid, "", 403},
			{http.MethodPost, "/v1/accounts", `{"params": {"name": "mallory", "password": "mallory-password", "type": "SystemAdmin"}}`, 403},
			{http.MethodPut, "/v1/accounts/resources/actions", `{"shareResource": {"resourceUuids": ["` + v.UUID + `"], "toPublic": true}}`, 404},
			{http.MethodPut, "/v1/accounts/resources/actions", `{"shareResource": {"resourceUuids": ["` + st.Defaults["image"] + `"], "accountUuids": ["` + b.uuid + `"]}}`, 403},
			{http.MethodPut, "/v1/accounts/resources/actions", `{"revokeResourceSharing": {"resourceUuids": ["` + st.Defaults["image"] + `"], "all": true}}`, 403},
		}
		for _, tc := range cases {
			if ans := apiCall(t, st, b.session, tc.method, tc.path, tc.body); ans.status != tc.want {
				t.Errorf("bob's %s %s: %s, want %d", tc.method, tc.path, ans, tc.want)
			}
		}
		ans := apiCall(t, st, b.session, http.MethodGet, "/v1/accounts", "")
		if ans.status != 200 || !bytes.Contains(ans.body, []byte(b.uuid)) || bytes.Contains(ans.body, []byte(a.uuid)) {
			t.Errorf("bob's account query: %s, want himself only", ans)
		}
	})

	// Nothing bob sent started a job, and alice's resources are as they were.
	var bobJobs int64
	if err := st.DB().Model(&jobs.Job{}).Where("account_uuid = ?", b.uuid).Count(&bobJobs).Error; err != nil || bobJobs != 0 {
		t.Errorf("%d jobs of bob's (%v), want none", bobJobs, err)
	}
	got, err := client.GetAs[vm.VmInstanceVO](ctx, a.c, "vm-instances", v.UUID)
	if err != nil || got.State != vm.StateRunning {
		t.Errorf("alice's VM after bob: %+v, %v", got, err)
	}
	for path, uuid := range aliceOf {
		if ans := apiCall(t, st, a.session, http.MethodGet, "/v1/"+path+"/"+uuid, ""); ans.status != http.StatusOK {
			t.Errorf("alice's GET of her %s: %s", path, ans)
		}
		if ans := apiCall(t, st, admin, http.MethodGet, "/v1/"+path+"/"+uuid, ""); ans.status != http.StatusOK {
			t.Errorf("admin's GET of alice's %s: %s", path, ans)
		}
	}
}
