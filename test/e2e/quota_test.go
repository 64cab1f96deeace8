package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"mplane/api/client"
	"mplane/api/quota"
	"mplane/api/tenancy"
	"mplane/errcode"
	"mplane/internal/testenv"
	"mplane/services/vm"
)

// call sends one JSON request with a session and answers the status and
// body.
func call(t *testing.T, base, session, method, path, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "OAuth "+session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func usageOf(t *testing.T, base, session, account string) map[string]quota.Usage {
	t.Helper()
	status, body := call(t, base, session, http.MethodGet, "/v1/accounts/quota/"+account+"/usages", "")
	var rep struct{ Usages []quota.Usage }
	if err := json.Unmarshal(body, &rep); status != 200 || err != nil {
		t.Fatalf("usages of %s: %d %s", account, status, body)
	}
	out := map[string]quota.Usage{}
	for _, u := range rep.Usages {
		out[u.Name] = u
	}
	return out
}

// TestClusterQuotaRace: a normal account with a quota of 40 VMs sends 100
// creates at once through two nodes: exactly 40 succeed and 60 are refused
// at once with QuotaExceeded; its usage is what exists. Then, with room
// for more, a node is killed -9 while the account's creates run: once
// every create has ended, its usage again equals the VMs it has.
func TestClusterQuotaRace(t *testing.T) {
	v := newVMCloud(t, "--cpu", "256", "--storage-latency", "100ms")
	admin := v.clients[0]
	base := v.servers[0].url
	// The admin's offering, image and L3 network, public; an account of
	// 40 VMs.
	share := fmt.Sprintf(`{"shareResource": {"resourceUuids": [%q, %q, %q], "toPublic": true}}`, v.cl.offering, v.cl.image, v.cl.l3)
	if status, body := call(t, base, admin.Session(), http.MethodPut, "/v1/accounts/resources/actions", share); status != 200 {
		t.Fatalf("share the cloud's offering, image and L3: %d %s", status, body)
	}
	status, body := call(t, base, admin.Session(), http.MethodPost, "/v1/accounts", `{"params": {"name": "tenant", "password": "tenant-password"}}`)
	var acct struct{ Inventory struct{ UUID string } }
	if err := json.Unmarshal(body, &acct); status != 200 || err != nil {
		t.Fatalf("create the account: %d %s", status, body)
	}
	tenant := acct.Inventory.UUID
	setQuota := func(n int) {
		t.Helper()
		body := fmt.Sprintf(`{"updateQuota": {"identityUuid": %q, "name": "vm.num", "value": %d}}`, tenant, n)
		if status, rep := call(t, base, admin.Session(), http.MethodPut, "/v1/accounts/quotas/actions", body); status != 200 {
			t.Fatalf("updateQuota: %d %s", status, rep)
		}
	}
	setQuota(40)
	var clients []*client.Client
	for _, s := range v.servers[:2] {
		c, err := client.New(s.url, client.WithPollInterval(20*time.Millisecond, 200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := c.Login(ctx, "tenant", "tenant-password"); err != nil {
			t.Fatalf("log in as tenant at %s: %v", s.url, err)
		}
		cancel()
		clients = append(clients, c)
	}
	vmsOfTenant := func() (n, cpu, mem int64) {
		var r struct{ N, CPU, Mem int64 }
		v.gdb.Model(&vm.VmInstanceVO{}).Select("COUNT(*) AS n, COALESCE(SUM(cpu_num),0) AS cpu, COALESCE(SUM(memory_size),0) AS mem").
			Where("uuid IN (?)", v.gdb.Model(&tenancy.RefVO{}).Select("resource_uuid").Where("account_uuid = ?", tenant)).Scan(&r)
		return r.N, r.CPU, r.Mem
	}
	creates := func(names []string, through func(i int) *client.Client) map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var mu sync.Mutex
		outcomes := map[string]int{}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				_, err := createVM(ctx, through(i), v.cl, name, nil)
				mu.Lock()
				outcomes[string(errcode.CodeOf(err))]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		return outcomes
	}

	var names []string
	for i := 0; i < 100; i++ {
		names = append(names, fmt.Sprintf("q-%03d", i))
	}
	start := time.Now()
	outcomes := creates(names, func(i int) *client.Client { return clients[i%2] })
	t.Logf("100 creates against a quota of 40 through 2 nodes in %v: %v", time.Since(start).Round(time.Millisecond), outcomes)
	if outcomes[""] != 40 || outcomes[string(errcode.QuotaExceeded)] != 60 {
		t.Fatalf("outcomes %v, want 40 created and 60 refused with %s", outcomes, errcode.QuotaExceeded)
	}
	if n, _, _ := vmsOfTenant(); n != 40 {
		t.Fatalf("the tenant has %d VMs, want 40", n)
	}
	if u := usageOf(t, base, admin.Session(), tenant); u[quota.VMNum].Used != 40 || u[quota.VMNum].Total != 40 {
		t.Fatalf("usage %+v, want 40 of 40", u[quota.VMNum])
	}
	// The refused creates started no job's work and left nothing.
	var refusedRunning int64
	v.gdb.Table("api_jobs").Where("account_uuid = ? AND state = ?", tenant, "processing").Count(&refusedRunning)
	if refusedRunning != 0 {
		t.Errorf("%d of the tenant's jobs still processing", refusedRunning)
	}

	// Room for 40 more; kill -9 the third node (which owns some of the new
	// VMs) once some of them run.
	setQuota(80)
	victim := v.servers[2]
	var more []string
	for i := 0; i < 40; i++ {
		more = append(more, fmt.Sprintf("k-%03d", i))
	}
	done := make(chan map[string]int, 1)
	go func() { done <- creates(more, func(i int) *client.Client { return clients[i%2] }) }()
	testenv.Eventually(t, 2*time.Minute, func() bool {
		n, _, _ := vmsOfTenant()
		return n >= 45
	}, "5 of the new VMs exist")
	victim.kill()
	t.Logf("killed %s with %d of 40 creates in flight or done", victim.uuid, func() int64 { n, _, _ := vmsOfTenant(); return n - 40 }())
	outcomes = <-done
	t.Logf("creates around the kill: %v", outcomes)
	// Every create has ended; the jobs settle (the takeover re-runs or
	// fails those of the dead node): the usage equals what exists.
	testenv.Eventually(t, 2*time.Minute, func() bool {
		var processing int64
		v.gdb.Table("api_jobs").Where("account_uuid = ? AND state = ?", tenant, "processing").Count(&processing)
		return processing == 0
	}, "the tenant's jobs end")
	var last map[string]quota.Usage
	var n, cpu, mem int64
	ok := func() bool {
		last = usageOf(t, base, admin.Session(), tenant)
		n, cpu, mem = vmsOfTenant()
		return last[quota.VMNum].Used == n && last[quota.VMCPUNum].Used == cpu && last[quota.VMMemorySize].Used == mem
	}
	deadline := time.Now().Add(time.Minute)
	for !ok() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if !ok() {
		t.Fatalf("usage %d VMs %d vCPUs %d memory, the tenant has %d VMs %d vCPUs %d memory", last[quota.VMNum].Used, last[quota.VMCPUNum].Used,
			last[quota.VMMemorySize].Used, n, cpu, mem)
	}
	t.Logf("after the kill: usage %d VMs = %d VMs that exist", last[quota.VMNum].Used, n)
	if bytes.Contains(body, []byte("password")) {
		t.Error("the account's inventory holds its password")
	}
}
