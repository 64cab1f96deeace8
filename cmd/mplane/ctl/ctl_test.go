package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"mplane/agents/kvm"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/server"
	"mplane/server/servertest"
)

var splitGap = regexp.MustCompile(`\s{3,}`)

func TestCtlLoginStoresSessionFile(t *testing.T) {
	e := newEnv(t)
	out := e.ok("login", "--account", "admin", "--password", servertest.Password)
	if !strings.Contains(out, "Logged in to "+e.url+" as admin") || !strings.Contains(out, e.sessionFile) || !strings.Contains(out, " (expires ") {
		t.Fatalf("login output %q", out)
	}
	st, err := os.Stat(e.sessionFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("session file mode %v, want 0600", st.Mode().Perm())
	}
	if dst, err := os.Stat(filepath.Dir(e.sessionFile)); err != nil || dst.Mode().Perm() != 0o700 {
		t.Fatalf("session dir mode %v (%v), want 0700", dst.Mode().Perm(), err)
	}
	stored, err := loadSessionFile(e.sessionFile)
	if err != nil || stored == nil || stored.Session == "" || stored.URL != e.url || stored.Account != "admin" || stored.AccountUUID == "" {
		t.Fatalf("stored %+v (%v)", stored, err)
	}
	// The next command uses the stored session, and the stored URL when
	// neither --url nor the environment names one.
	t.Setenv(envURL, "")
	e.ok("list", "zones")
	if got := e.last(http.MethodGet, "/v1/zones").Authorization; got != "OAuth "+stored.Session {
		t.Fatalf("Authorization %q, want the stored session", got)
	}
	// A session is only sent to the API it came from: another address of
	// the same cloud does not get it, and answers 401.
	otherRec := servertest.NewRecorder()
	other := stack.Front(t, otherRec.Wrap)
	stderr := e.fails("--url", other, "list", "zones")
	if reqs := otherRec.Requests(); len(reqs) != 1 || reqs[0].Authorization != "" {
		t.Fatalf("stored session sent to another API: %+v", reqs)
	}
	if !strings.Contains(stderr, "run `mplane ctl login`") {
		t.Fatalf("stderr %q", stderr)
	}
	if out := e.ok("logout"); !strings.Contains(out, "Logged out") {
		t.Fatalf("logout output %q", out)
	}
	// The session ended on the server: it is refused from now on.
	if got := e.last(http.MethodDelete, "/v1/accounts/sessions/"+stored.Session); got.Status != http.StatusOK {
		t.Fatalf("logout's DELETE of the session: %+v", got)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/v1/zones", nil)
	req.Header.Set("Authorization", "OAuth "+stored.Session)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the logged-out session: %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := os.Stat(e.sessionFile); !os.IsNotExist(err) {
		t.Fatalf("session file still there after logout: %v", err)
	}
	if out := e.ok("logout"); !strings.Contains(out, "Not logged in") {
		t.Fatalf("second logout output %q", out)
	}
}

func TestCtlLoginDefaultSessionPath(t *testing.T) {
	e := newEnv(t)
	home := t.TempDir()
	t.Setenv(envSessionFile, "")
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", home)
	t.Setenv(envPassword, servertest.Password)
	e.ok("login")
	want := filepath.Join(home, ".config", "mplane", "ctl.json")
	st, err := os.Stat(want)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("default session file %s: %v %v", want, st, err)
	}
	e.ok("--session-file", filepath.Join(home, "other.json"), "login", "--password", servertest.Password)
	if _, err := os.Stat(filepath.Join(home, "other.json")); err != nil {
		t.Fatalf("--session-file not used: %v", err)
	}
	xdg := filepath.Join(home, "xdg")
	t.Setenv("XDG_CONFIG_HOME", xdg)
	e.ok("login")
	if _, err := os.Stat(filepath.Join(xdg, "mplane", "ctl.json")); err != nil {
		t.Fatalf("XDG_CONFIG_HOME not used: %v", err)
	}
}

func TestCtlLoginPasswordSources(t *testing.T) {
	pw := servertest.Password
	tests := []struct {
		name    string
		env     string
		stdin   string
		args    []string
		wantErr string // "" for success
		local   bool   // the error is found before any request
	}{
		{name: "flag", args: []string{"--password", pw}},
		{name: "environment", env: pw},
		{name: "stdin", stdin: pw + "\n", args: []string{"--password-stdin"}},
		{name: "stdin with CRLF", stdin: pw + "\r\n", args: []string{"--password-stdin"}},
		{name: "empty stdin", args: []string{"--password-stdin"}, local: true,
			wantErr: "error: SYS.1007 invalid argument: --password-stdin: standard input has no password\n"},
		{name: "no password and no terminal", local: true,
			wantErr: "error: SYS.1007 invalid argument: no password: standard input is not a terminal, so there is no prompt; pass --password, --password-stdin or set MPLANE_CTL_PASSWORD\n"},
		{name: "wrong password", args: []string{"--password", "nope"},
			wantErr: "error: SYS.1008 missing, invalid or expired session: wrong account name or password\n"},
		{name: "unknown account", args: []string{"--account", "bob", "--password", pw},
			wantErr: "error: SYS.1008 missing, invalid or expired session: wrong account name or password\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.env != "" {
				t.Setenv(envPassword, tc.env)
			}
			args := append([]string{"login"}, tc.args...)
			r := e.run(strings.NewReader(tc.stdin), args...)
			if tc.wantErr == "" {
				if r.err != nil {
					t.Fatalf("login: %v\n%s", r.err, r.stderr)
				}
				if _, err := os.Stat(e.sessionFile); err != nil {
					t.Fatalf("no session file: %v", err)
				}
				return
			}
			if got := mustFail(t, r, args...); got != tc.wantErr {
				t.Fatalf("stderr\n%q\nwant\n%q", got, tc.wantErr)
			}
			if _, err := os.Stat(e.sessionFile); !os.IsNotExist(err) {
				t.Fatalf("a failed login wrote the session file (%v)", err)
			}
			if n, want := len(e.rec.Requests()), map[bool]int{true: 0, false: 1}[tc.local]; n != want {
				t.Fatalf("%d requests, want %d", n, want)
			}
		})
	}
}

func TestCtlMissingOrExpiredSessionSaysLogin(t *testing.T) {
	e := newEnv(t)
	want := "error: SYS.1008 session missing or expired: run `mplane ctl login`\n"
	if got := e.fails("list", "vms"); got != want {
		t.Fatalf("no session: stderr %q, want %q", got, want)
	}
	session := stack.NewSession(t)
	t.Setenv(envSession, session)
	e.ok("list", "vms")
	stack.Logout(t, session)
	if got := e.fails("create", "zone", "--name", "z"); got != want {
		t.Fatalf("logged out session: stderr %q, want %q", got, want)
	}
}

func TestCtlCreateListGetFlow(t *testing.T) {
	e := newEnv(t).loggedIn()
	ids := e.seed()

	// Params on the wire: ZStack names, sizes in bytes, optional fields
	// only when given, defaults where ctl has them.
	if b := e.lastBody("POST", "/v1/instance-offerings"); fmt.Sprint(b["params"]) != "map[cpuNum:1 memorySize:1.073741824e+09 name:small]" {
		t.Fatalf("offering params %v", b["params"])
	}
	hostParams := e.lastBody("POST", "/v1/hosts/kvm")["params"].(map[string]any)
	if len(hostParams) != 3 || hostParams["clusterUuid"] != ids["cluster"] || hostParams["managementIp"] != "127.0.0.1" || hostParams["agentPort"] == nil {
		t.Fatalf("host params %v", hostParams)
	}
	if b := e.lastBody("POST", "/v1/clusters"); b["params"].(map[string]any)["hypervisorType"] != "KVM" {
		t.Fatalf("cluster params %v", b["params"])
	}
	if b := e.lastBody("POST", "/v1/images"); b["params"].(map[string]any)["format"] != "qcow2" ||
		fmt.Sprint(b["params"].(map[string]any)["backupStorageUuids"]) != "["+stack.DefaultBackupStorage(t)+"]" {
		t.Fatalf("image params %v", b["params"])
	}
	if b := e.lastBody("POST", "/v1/l3-networks/"+ids["l3"]+"/ip-ranges"); fmt.Sprint(b["params"]) != "map[endIp:10.0.0.20 gateway:10.0.0.1 netmask:255.255.255.0 startIp:10.0.0.10]" {
		t.Fatalf("ip range params %v", b["params"])
	}
	// The primary storage: LocalStorage's path (the default --type), the
	// directory as ZStack's url; the attach is a POST with empty params.
	if b := e.lastBody("POST", "/v1/primary-storage/local-storage"); fmt.Sprint(b["params"]) != "map[name:ps1 url:/mplane/local zoneUuid:"+ids["zone"]+"]" {
		t.Fatalf("primary storage params %v", b["params"])
	}
	if b := e.last("POST", "/v1/clusters/"+ids["cluster"]+"/primary-storage/"+ids["ps"]); string(b.Body) != `{"params":{}}` || b.JobUUID == "" {
		t.Fatalf("attach primary storage request %+v", b)
	}
	// Attached to seed's cluster, and measured on its host when it connected.
	ps := e.jsonOut("get", "ps", ids["ps"])
	if ps["type"] != "LocalStorage" || ps["url"] != server.DefaultLocalStorageURL || ps["zoneUuid"] != ids["zone"] ||
		fmt.Sprint(ps["attachedClusterUuids"]) != "["+ids["cluster"]+"]" || ps["totalCapacity"].(float64) <= 0 || ps["availableCapacity"].(float64) <= 0 {
		t.Fatalf("primary storage after attach and host add: %v", ps)
	}

	out := e.ok("create", "vm", "--name", "web1", "--offering", ids["offering"], "--image", ids["image"], "--l3", ids["l3"], "--host", ids["host"])
	rows := tableRows(out)
	if len(rows) != 2 || !slices.Equal(rows[0], []string{"UUID", "NAME", "STATE", "HOST", "IP", "CPU", "MEMORY", "ROOT VOLUME"}) {
		t.Fatalf("create vm output:\n%s", out)
	}
	vm := rows[1]
	if vm[1] != "web1" || vm[2] != "Running" || vm[3] != ids["host"] || vm[4] != "10.0.0.10" || vm[5] != "1" || vm[6] != "1G" || len(vm[7]) != 32 {
		t.Fatalf("vm row %q", vm)
	}
	// The VM has its root volume, from the image, on seed's primary
	// storage on its host; it is the VM's only volume.
	inv := e.jsonOut("get", "vm", vm[0])
	vols, _ := inv["allVolumes"].([]any)
	if inv["rootVolumeUuid"] != vm[7] || len(vols) != 1 {
		t.Fatalf("vm volumes: rootVolumeUuid %v, allVolumes %v", inv["rootVolumeUuid"], inv["allVolumes"])
	}
	if root := vols[0].(map[string]any); root["uuid"] != vm[7] || root["type"] != "Root" || root["vmInstanceUuid"] != vm[0] ||
		root["primaryStorageUuid"] != ids["ps"] || root["hostUuid"] != ids["host"] || root["rootImageUuid"] != ids["image"] || root["status"] != "Ready" {
		t.Fatalf("root volume %v", root)
	}
	rows = tableRows(e.ok("list", "volumes", "--q", "vmInstanceUuid="+vm[0]))
	if len(rows) != 2 || !slices.Equal(rows[1], []string{vm[7], rows[1][1], "Root", "Ready", rows[1][4], ids["ps"], vm[0]}) {
		t.Fatalf("list the vm's volumes: %v", rows)
	}
	params := e.lastBody("POST", "/v1/vm-instances")["params"].(map[string]any)
	if fmt.Sprint(params["l3NetworkUuids"]) != "["+ids["l3"]+"]" || params["hostUuid"] != ids["host"] || params["clusterUuid"] != nil {
		t.Fatalf("vm params %v", params)
	}

	hosts := tableRows(e.ok("list", "hosts"))
	if !slices.Equal(hosts[0], []string{"UUID", "NAME", "MANAGEMENT IP", "STATUS", "STATE", "CPU", "MEMORY"}) ||
		!slices.Equal(rowOf(t, hosts, ids["host"])[1:], []string{"127.0.0.1", "127.0.0.1", "Connected", "Enabled", "31/32", "127G/128G"}) {
		t.Fatalf("list hosts:\n%v", hosts)
	}
	offerings := tableRows(e.ok("list", "instance-offerings"))
	if !slices.Equal(rowOf(t, offerings, ids["offering"])[1:], []string{"small", "1", "1G", "Enabled"}) {
		t.Fatalf("list offerings: %v", offerings)
	}
	l3s := tableRows(e.ok("list", "l3"))
	if !slices.Equal(l3s[0], []string{"UUID", "NAME", "ZONE", "L2", "STATE", "IP RANGES"}) || !slices.Equal(rowOf(t, l3s, ids["l3"])[1:5], []string{"public", ids["zone"], ids["l2"], "Enabled"}) {
		t.Fatalf("list l3: %v", l3s)
	}

	// JSON: inventories as the server returned them.
	var list struct {
		Inventories []map[string]any `json:"inventories"`
	}
	if err := json.Unmarshal([]byte(e.ok("list", "vm", "--q", "uuid="+vm[0], "-o", "json")), &list); err != nil || len(list.Inventories) != 1 {
		t.Fatalf("list -o json: %v %v", list, err)
	}
	if inv := list.Inventories[0]; inv["name"] != "web1" || inv["memorySize"] != float64(1<<30) || inv["vmNics"] == nil {
		t.Fatalf("JSON inventory %v", inv)
	}
	for _, name := range []string{"vm", "vms", "vm-instance", "vm-instances"} {
		got := e.jsonOut("get", name, vm[0])
		if got["uuid"] != vm[0] || got["state"] != "Running" {
			t.Fatalf("get %s: %v", name, got)
		}
	}
	rows = tableRows(e.ok("get", "zone", ids["zone"]))
	if !slices.Equal(rows[0], []string{"UUID", "NAME", "STATE", "DESCRIPTION"}) || !slices.Equal(rows[1], []string{ids["zone"], "zone1", "Enabled", "-"}) {
		t.Fatalf("get zone: %v", rows)
	}
	stderr := e.fails("get", "vm", "0123456789abcdef0123456789abcdef")
	if !strings.HasPrefix(stderr, "error: SYS.1005 resource not found: ") {
		t.Fatalf("get unknown vm: %q", stderr)
	}
}

func TestCtlListQueryFlags(t *testing.T) {
	e := newEnv(t).loggedIn()
	tag := client.NewJobUUID()[:12]
	c := stack.Client
	cx := t.Context()
	host := stack.AddHost(t, servertest.AgentOptions{}).UUID
	off, err := client.CreateAndWait[map[string]any](cx, c, "instance-offerings", map[string]any{"name": tag, "cpuNum": 2, "memorySize": 3 << 29})
	if err != nil {
		t.Fatal(err)
	}
	vms := map[string]string{}
	for _, name := range []string{"web1", "web2", "db1"} {
		vm, err := client.CreateAndWait[map[string]any](cx, c, "vm-instances", map[string]any{"name": tag + "-" + name,
			"instanceOfferingUuid": off["uuid"], "imageUuid": stack.Defaults["image"], "l3NetworkUuids": []string{stack.Defaults["l3"]}, "hostUuid": host})
		if err != nil {
			t.Fatal(err)
		}
		vms[name] = vm["uuid"].(string)
	}
	if _, err := client.ActionAndWait[map[string]any](cx, c, "vm-instances", vms["db1"], "stopVmInstance", nil); err != nil {
		t.Fatal(err)
	}
	e.rec.Reset()
	r := e.run(nil, "list", "vms", "--q", "name~="+tag+"-web%", "--q", "state=Running", "--sort", "-createDate", "--limit", "1")
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	rows := tableRows(r.stdout)
	if len(rows) != 2 || rows[1][0] != vms["web2"] || rows[1][1] != tag+"-web2" || rows[1][3] != host || rows[1][5] != "2" || rows[1][6] != "1.5G" {
		t.Fatalf("rows %v", rows)
	}
	if r.stderr != "(1-1 of 2 VMs; --start 1 for more)\n" {
		t.Fatalf("paging note %q", r.stderr)
	}
	q := e.last(http.MethodGet, "/v1/vm-instances").Query
	if !slices.Equal(q["q"], []string{"name~=" + tag + "-web%", "state=Running"}) || q.Get("sort") != "-createDate" || q.Get("limit") != "1" || q.Get("replyWithCount") != "true" {
		t.Fatalf("query sent: %v", q)
	}
	if out := e.ok("list", "vms", "--q", "name~="+tag+"-%", "--q", "state=Running", "--count"); out != "2\n" {
		t.Fatalf("--count printed %q", out)
	}
	var counted map[string]int
	if err := json.Unmarshal([]byte(e.ok("list", "vms", "--q", "name~="+tag+"-%", "--count", "-o", "json")), &counted); err != nil || counted["total"] != 3 {
		t.Fatalf("--count -o json: %v %v", counted, err)
	}
	var page struct {
		Inventories []map[string]any `json:"inventories"`
		Total       int              `json:"total"`
	}
	if err := json.Unmarshal([]byte(e.ok("list", "vms", "--q", "name~="+tag+"-%", "--sort", "+createDate", "--limit", "2", "--start", "1", "-o", "json")), &page); err != nil ||
		page.Total != 3 || len(page.Inventories) != 2 || page.Inventories[0]["name"] != tag+"-web2" || page.Inventories[1]["name"] != tag+"-db1" {
		t.Fatalf("paged JSON: %+v %v", page, err)
	}
	rows = tableRows(e.ok("list", "vms", "--fields", "uuid,name", "--q", "name="+tag+"-db1"))
	if !slices.Equal(rows[0], []string{"UUID", "NAME"}) || len(rows) != 2 || !slices.Equal(rows[1], []string{vms["db1"], tag + "-db1"}) {
		t.Fatalf("--fields: %v", rows)
	}
	// A field the inventory lacks (a stopped VM has no host) shows as "-".
	if rows := tableRows(e.ok("list", "vms", "--q", "name="+tag+"-db1")); len(rows) != 2 || rows[1][2] != "Stopped" || rows[1][3] != "-" {
		t.Fatalf("stopped vm: %v", rows)
	}
	if out := e.ok("list", "zones", "--q", "name="+tag); out != "UUID   NAME   STATE   DESCRIPTION\n" {
		t.Fatalf("empty list %q", out)
	}
	if stderr := e.fails("list", "vms", "--q", "name"); !strings.HasPrefix(stderr, "error: SYS.1007 invalid argument: ") || !strings.Contains(stderr, "unknown operator") {
		t.Fatalf("bad condition: %q", stderr)
	}
	if stderr := e.fails("list", "vms", "--limit", "-1"); stderr != "error: SYS.1007 invalid argument: --limit and --start must not be negative\n" {
		t.Fatalf("negative limit: %q", stderr)
	}
}

func TestCtlProgressPlainLinesWhenNotATerminal(t *testing.T) {
	e := newEnv(t).loggedIn()
	// The host holds the VM's start until a poll was answered "still
	// running": ctl certainly sees the job processing.
	gate := servertest.NewGate("/vm/start")
	t.Cleanup(gate.Open)
	host := stack.AddHost(t, servertest.AgentOptions{Wrap: gate.Wrap})
	e.rec.OnResponse(func(r servertest.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.Path, "/api-jobs/") && r.Status == http.StatusAccepted {
			gate.Open()
		}
	})
	r := e.run(nil, "create", "vm", "--name", "web1", "--offering", stack.Defaults["offering"], "--image", stack.Defaults["image"],
		"--l3", stack.Defaults["l3"], "--host", host.UUID)
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "create vm web1: job ") || !strings.HasSuffix(lines[0], " submitted") ||
		!strings.HasPrefix(lines[1], "create vm web1: processing (") || !strings.HasPrefix(lines[2], "create vm web1: done in ") {
		t.Fatalf("progress lines:\n%s", r.stderr)
	}
	if strings.ContainsAny(r.stderr, "\r\x1b") {
		t.Fatalf("terminal control codes in plain progress: %q", r.stderr)
	}
	if rows := tableRows(r.stdout); len(rows) != 2 || rows[1][1] != "web1" || rows[1][3] != host.UUID {
		t.Fatalf("stdout %q", r.stdout)
	}
}

func TestCtlNoWaitThenWait(t *testing.T) {
	e := newEnv(t).loggedIn()
	r := e.run(nil, "create", "zone", "--name", "later", "--no-wait")
	if r.err != nil || r.stderr != "" {
		t.Fatalf("--no-wait: %v %q", r.err, r.stderr)
	}
	loc := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(loc, e.url+"/v1/api-jobs/") {
		t.Fatalf("--no-wait printed %q, want the job location", loc)
	}
	rows := tableRows(e.ok("wait", loc))
	if len(rows) != 2 || rows[1][1] != "later" {
		t.Fatalf("wait: %v", rows)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	if got := e.jsonOut("wait", id); got["name"] != "later" {
		t.Fatalf("wait by uuid: %v", got)
	}
	var nw map[string]string
	if err := json.Unmarshal([]byte(e.ok("-o", "json", "create", "zone", "--name", "x", "--no-wait")), &nw); err != nil || nw["jobUuid"] == "" || nw["location"] == "" {
		t.Fatalf("--no-wait -o json: %v %v", nw, err)
	}
	// A delete's result has no inventory.
	zone := e.uuidOf("create", "zone", "--name", "gone")
	delLoc := strings.TrimSpace(e.ok("delete", "zone", zone, "--no-wait"))
	if out := e.ok("wait", delLoc); out != "Job "+delLoc[strings.LastIndex(delLoc, "/")+1:]+" succeeded\n" {
		t.Fatalf("wait for a delete: %q", out)
	}
	unknown := client.NewJobUUID()
	if stderr := e.fails("wait", unknown); !strings.HasSuffix(stderr, "\nerror: SYS.1005 resource not found: api job "+unknown+" not found\n") {
		t.Fatalf("wait for an unknown job: %q", stderr)
	}
}

func TestCtlVMAndHostActions(t *testing.T) {
	e := newEnv(t).loggedIn()
	ids := e.seed()
	vm := e.uuidOf("create", "vm", "--name", "web1", "--offering", ids["offering"], "--image", ids["image"], "--l3", ids["l3"], "--cluster", ids["cluster"])
	actions := "/v1/vm-instances/" + vm + "/actions"
	if got := e.lastBody("POST", "/v1/vm-instances")["params"].(map[string]any)["clusterUuid"]; got != ids["cluster"] {
		t.Fatalf("vm clusterUuid %v", got)
	}

	if got := e.jsonOut("vm", "stop", vm, "--type", "cold"); got["state"] != "Stopped" {
		t.Fatalf("stop: %v", got)
	}
	if b := e.lastBody("PUT", actions); fmt.Sprint(b) != "map[stopVmInstance:map[type:cold]]" {
		t.Fatalf("stop body %v", b)
	}
	e.ok("vms", "start", vm)
	if b := e.lastBody("PUT", actions); fmt.Sprint(b) != "map[startVmInstance:map[]]" {
		t.Fatalf("start body %v", b)
	}
	e.ok("vm", "stop", vm)
	if b := e.lastBody("PUT", actions); fmt.Sprint(b) != "map[stopVmInstance:map[type:grace]]" {
		t.Fatalf("default stop body %v", b)
	}
	// Rebooting a stopped VM is refused by the job.
	stderr := e.fails("vm", "reboot", vm)
	if !strings.HasSuffix(stderr, "error: SYS.1006 operation not allowed in the resource's current state: cannot reboot VM "+vm+": it is Stopped; reboot needs the VM to be Running\n") ||
		!strings.Contains(stderr, "reboot vm "+vm+": failed after ") {
		t.Fatalf("reboot stopped vm: %q", stderr)
	}
	if stderr := e.fails("vm", "stop", vm, "--type", "hard"); stderr != "error: SYS.1007 invalid argument: --type must be grace or cold, got \"hard\"\n" {
		t.Fatalf("bad stop type: %q", stderr)
	}
	rows := tableRows(e.ok("host", "reconnect", ids["host"]))
	if len(rows) != 2 || rows[1][0] != ids["host"] || rows[1][3] != "Connected" {
		t.Fatalf("reconnect: %v", rows)
	}
	if b := e.lastBody("PUT", "/v1/hosts/"+ids["host"]+"/actions"); fmt.Sprint(b) != "map[reconnectHost:map[]]" {
		t.Fatalf("reconnect body %v", b)
	}

	if out := e.ok("delete", "vm", vm, "--mode", "Enforcing"); out != "Deleted vm "+vm+"\n" {
		t.Fatalf("delete output %q", out)
	}
	del := e.last(http.MethodDelete, "/v1/vm-instances/"+vm)
	if del.RawQuery != "deleteMode=Enforcing" || del.JobUUID == "" {
		t.Fatalf("delete request %+v", del)
	}
	// Deleting a VM destroys it.
	if got := e.jsonOut("get", "vm", vm); got["state"] != "Destroyed" {
		t.Fatalf("vm after delete: %v", got)
	}
	unknown := "0123456789abcdef0123456789abcdef"
	if stderr := e.fails("vm", "destroy", unknown); !strings.HasPrefix(stderr, "error: SYS.1005 resource not found: ") || !strings.Contains(stderr, unknown) {
		t.Fatalf("destroy an unknown vm: %q", stderr)
	}
	if stderr := e.fails("delete", "zone", ids["zone"], "--mode", "sometimes"); !strings.Contains(stderr, "--mode must be permissive or enforcing") {
		t.Fatalf("bad mode: %q", stderr)
	}
}

func TestCtlJobFailureShowsCodeAndCause(t *testing.T) {
	e := newEnv(t).loggedIn()
	// A host that went down: the reconnect fails on its owner, caused by
	// the agent being unreachable, caused by the refused connection.
	down := stack.AddHost(t, servertest.AgentOptions{})
	if err := down.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	r := e.run(nil, "host", "reconnect", down.UUID)
	stderr := mustFail(t, r, "host reconnect")
	url := "http://" + down.Agent.Addr()
	// Progress lines first (how many depends on the polls), then the
	// error with its causes, last.
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	n := len(lines)
	if n < 5 || !strings.HasPrefix(lines[n-4], "reconnect host "+down.UUID+": failed after ") ||
		lines[n-3] != "error: SYS.1014 agent reported an error: reconnect host "+down.UUID+" at "+url ||
		lines[n-2] != "  caused by: SYS.1014 agent reported an error: agent "+url+"/host/echo unreachable" ||
		!strings.HasPrefix(lines[n-1], "  caused by: SYS.1000 internal error: Post \""+url+"/host/echo\": ") {
		t.Fatalf("stderr:\n%s", stderr)
	}
	// A VM no host has room for.
	small := stack.AddHost(t, servertest.AgentOptions{Agent: kvm.Options{CPUNum: 1, MemoryBytes: 512 << 20}})
	r = e.run(nil, "create", "vm", "--name", "big", "--offering", stack.Defaults["offering"], "--image", stack.Defaults["image"],
		"--l3", stack.Defaults["l3"], "--host", small.UUID)
	stderr = mustFail(t, r, "create vm")
	if !strings.Contains(stderr, "\nerror: SYS.1015 not enough capacity: ") || !strings.Contains(stderr, "create vm big: failed after ") {
		t.Fatalf("stderr:\n%s", stderr)
	}
}

func TestCtlUsageErrors(t *testing.T) {
	e := newEnv(t).loggedIn()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"create", "offering", "--name", "x"}, "error: SYS.1007 invalid argument: missing required flags: --cpu, --memory\n"},
		{[]string{"create", "offering", "--name", "x", "--cpu", "1", "--memory", "lots"}, "error: SYS.1007 invalid argument: --memory: \"lots\" is not a size; use bytes or a number with K, M, G, T (1024-based), e.g. 512M or 1.5G\n"},
		{[]string{"create", "vm", "--name", "v", "--offering", "o", "--image", "i", "--l3", ","}, "error: SYS.1007 invalid argument: --l3 is empty\n"},
		{[]string{"create", "zone", "--name", " "}, "error: SYS.1007 invalid argument: --name is empty\n"},
		{[]string{"create", "zone", "--name", "z", "--colour", "red"}, "error: SYS.1007 invalid argument: unknown flag: --colour\n"},
		{[]string{"create", "offering", "--name", "x", "--cpu", "one", "--memory", "1G"}, "error: SYS.1007 invalid argument: invalid argument \"one\" for \"--cpu\" flag: strconv.ParseInt: parsing \"one\": invalid syntax\n"},
		{[]string{"create", "ip-range", "--l3", "a/b", "--start", "1", "--end", "2", "--netmask", "3", "--gateway", "4"}, "error: SYS.1007 invalid argument: --l3 must be a UUID, got \"a/b\"\n"},
		{[]string{"create", "bucket"}, "error: SYS.1007 invalid argument: unknown noun \"bucket\" for \"ctl create\"; valid: zone, cluster, host, offering, disk-offering, image, primary-storage, backup-storage, volume, snapshot, l2, vni-range, l3, ip-range, vm\n"},
		{[]string{"create", "primary-storage", "--name", "p", "--type", "nfs", "--dir", "/d", "--zone", "z"}, "error: SYS.1007 invalid argument: --type must be local or smp, got \"nfs\"\n"},
		{[]string{"create", "primary-storage", "--name", "p"}, "error: SYS.1007 invalid argument: missing required flags: --dir, --zone\n"},
		{[]string{"create", "vm", "--name", "v", "--offering", "o", "--image", "i", "--l3", "l", "--data-disk-offering", ""}, "error: SYS.1007 invalid argument: --data-disk-offering is empty\n"},
		{[]string{"attach", "bucket"}, "error: SYS.1007 invalid argument: unknown noun \"bucket\" for \"ctl attach\"; valid: primary-storage, l2, volume\n"},
		{[]string{"detach", "vm", "x"}, "error: SYS.1007 invalid argument: unknown noun \"vm\" for \"ctl detach\"; valid: primary-storage, l2, volume\n"},
		{[]string{"attach", "ps", "p"}, "error: SYS.1007 invalid argument: missing required flags: --cluster\n"},
		{[]string{"detach", "primary-storage", "p", "--cluster", " "}, "error: SYS.1007 invalid argument: --cluster must be a UUID, got \"\"\n"},
		{[]string{"attach", "volume", "--vm", "v"}, "error: SYS.1007 invalid argument: missing volume UUID; usage: ctl attach volume <uuid> --vm <vm-uuid>\n"},
		{[]string{"attach", "volume", "a/b", "--vm", "v"}, "error: SYS.1007 invalid argument: volume UUID must be a UUID, got \"a/b\"\n"},
		{[]string{"detach", "volume", "v", "--vm", "a/b"}, "error: SYS.1007 invalid argument: --vm must be a UUID, got \"a/b\"\n"},
		{[]string{"list", "buckets"}, "error: SYS.1007 invalid argument: unknown noun \"buckets\" for \"ctl list\"; valid: zone, cluster, host, offering, disk-offering, image, l2, vni-range, l3, vm, primary-storage, backup-storage, volume, snapshot\n"},
		{[]string{"create", "volume", "--name", "v", "--size", "1G", "--from-snapshot", "s"}, "error: SYS.1007 invalid argument: --size cannot be given with --from-snapshot: a copy is as large as its source\n"},
		{[]string{"create", "volume", "--name", "v", "--from-volume", "s", "--disk-offering", "d", "--host", "h"}, "error: SYS.1007 invalid argument: --disk-offering cannot be given with --from-volume: a copy is as large as its source; --host cannot be given with --from-volume: a copy is made where its source is\n"},
		{[]string{"create", "volume", "--name", "v", "--from-snapshot", "s", "--from-volume", "v"}, "error: SYS.1007 invalid argument: give --from-snapshot or --from-volume, not both\n"},
		{[]string{"create", "volume", "--name", "v", "--size", "1G", "--disk-offering", "d"}, "error: SYS.1007 invalid argument: give --size or --disk-offering, not both\n"},
		{[]string{"create", "volume", "--name", "v"}, "error: SYS.1007 invalid argument: missing the size: give --size or --disk-offering (or --from-snapshot or --from-volume for a copy)\n"},
		{[]string{"create", "volume", "--from-snapshot", "a/b"}, "error: SYS.1007 invalid argument: missing required flags: --name; --from-snapshot must be a UUID, got \"a/b\"\n"},
		{[]string{"create", "snapshot", "--name", "s"}, "error: SYS.1007 invalid argument: missing required flags: --volume\n"},
		{[]string{"create", "disk-offering", "--name", "d", "--size", "big"}, "error: SYS.1007 invalid argument: --size: \"big\" is not a size; use bytes or a number with K, M, G, T (1024-based), e.g. 512M or 1.5G\n"},
		{[]string{"create", "disk-offering", "--name", "d"}, "error: SYS.1007 invalid argument: missing required flags: --size\n"},
		{[]string{"create", "l2", "--name", "n"}, "error: SYS.1007 invalid argument: --type novlan needs --zone, --interface\n"},
		{[]string{"create", "l2", "--name", "n", "--type", "vlan", "--zone", "z", "--interface", "eth0"}, "error: SYS.1007 invalid argument: --type vlan needs --vlan\n"},
		{[]string{"create", "l2", "--name", "n", "--type", "VXLAN", "--vlan", "3"}, "error: SYS.1007 invalid argument: --type vxlan needs --pool; --vlan is only for --type vlan\n"},
		{[]string{"create", "l2", "--name", "n", "--zone", "z", "--interface", "eth0", "--vni", "7", "--pool", "p"}, "error: SYS.1007 invalid argument: --pool is only for --type vxlan; --vni is only for --type vxlan\n"},
		{[]string{"create", "l2", "--name", "n", "--type", "qinq"}, "error: SYS.1007 invalid argument: --type must be novlan, vlan, vxlan-pool or vxlan, got \"qinq\"\n"},
		{[]string{"create", "vni-range", "--pool", "p", "--name", "r"}, "error: SYS.1007 invalid argument: missing required flags: --start, --end\n"},
		{[]string{"create", "l3", "--name", "n"}, "error: SYS.1007 invalid argument: missing required flags: --l2\n"},
		{[]string{"create", "l3", "--name", "n", "--zone", "z"}, "error: SYS.1007 invalid argument: missing required flags: --l2\n"},
		{[]string{"attach", "l2", "n"}, "error: SYS.1007 invalid argument: missing required flags: --cluster\n"},
		{[]string{"snapshot", "revert"}, "error: SYS.1007 invalid argument: missing snapshot UUID; usage: ctl snapshot revert <uuid>\n"},
		{[]string{"snapshot", "delete", "s"}, "error: SYS.1007 invalid argument: unknown snapshot action \"delete\" for \"ctl snapshot\"; valid: revert\n"},
		{[]string{"vm", "pause", "x"}, "error: SYS.1007 invalid argument: unknown vm action \"pause\" for \"ctl vm\"; valid: attach-l3, destroy, detach-nic, reboot, set-default-l3, set-static-ip, start, stop\n"},
		{[]string{"add", "router"}, "error: SYS.1007 invalid argument: unknown noun \"router\" for \"ctl add\"; valid: host\n"},
		{[]string{"get", "vm"}, "error: SYS.1007 invalid argument: missing vm UUID; usage: ctl get vm <uuid>\n"},
		{[]string{"get", "vm", "a", "b"}, "error: SYS.1007 invalid argument: expected one vm UUID, got 2 arguments: a b\n"},
		{[]string{"get", "vm", " "}, "error: SYS.1007 invalid argument: vm UUID is empty\n"},
		{[]string{"list", "vms", "extra"}, "error: SYS.1007 invalid argument: unexpected argument \"extra\"; usage: ctl list vm\n"},
		{[]string{"-o", "yaml", "list", "vms"}, "error: SYS.1007 invalid argument: --output must be table or json, got \"yaml\"\n"},
		{[]string{"--url", "ftp://x", "list", "vms"}, "error: SYS.1007 invalid argument: --url: api url \"ftp://x\": want http://host[:port] or https://host[:port]\n"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			before := len(e.rec.Requests())
			if got := e.fails(tc.args...); got != tc.want {
				t.Fatalf("stderr\n%q\nwant\n%q", got, tc.want)
			}
			if n := len(e.rec.Requests()) - before; n != 0 {
				t.Fatalf("a usage error sent %d requests", n)
			}
		})
	}
}

func TestCtlGroupsWithoutArgumentsPrintHelp(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{{}, {"create"}, {"list"}, {"vm"}, {"snapshot"}, {"attach"}, {"detach"}} {
		r := e.run(nil, args...)
		if r.err != nil || !strings.Contains(r.stdout, "Usage:") {
			t.Fatalf("ctl %v: %v, stdout %q", args, r.err, r.stdout)
		}
	}
	if n := len(e.rec.Requests()); n != 0 {
		t.Fatalf("help sent %d requests", n)
	}
}

func TestCtlServerErrorsAreShownWithCode(t *testing.T) {
	e := newEnv(t).loggedIn()
	stderr := e.fails("create", "cluster", "--name", "c", "--zone", "0123456789abcdef0123456789abcdef")
	if stderr != "error: SYS.1007 invalid argument: zoneUuid 0123456789abcdef0123456789abcdef does not exist\n" {
		t.Fatalf("stderr %q", stderr)
	}
	e.rec.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>upstream down</html>"))
		return true
	})
	stderr = e.fails("list", "zones")
	if !strings.HasPrefix(stderr, "error: query zones: GET ") || !strings.Contains(stderr, "HTTP 502 Bad Gateway") || !strings.Contains(stderr, "<html>upstream down</html>") {
		t.Fatalf("non-JSON answer: %q", stderr)
	}
}

func TestCtlURLAndSessionFromEnvironment(t *testing.T) {
	e := newEnv(t)
	session := stack.Client.Session()
	t.Setenv(envSession, session)
	// A stored login for another URL is ignored: the environment wins.
	if err := saveSessionFile(e.sessionFile, sessionFileData{URL: "http://127.0.0.1:1", Session: "old"}); err != nil {
		t.Fatal(err)
	}
	e.ok("list", "zones")
	reqs := e.rec.Requests()
	if len(reqs) != 1 || reqs[0].Authorization != "OAuth "+session {
		t.Fatalf("requests %+v", reqs)
	}
	// The /zstack/v1 prefix works too.
	e.ok("--url", e.url+"/zstack/v1", "list", "zones")
	if reqs := e.rec.Requests(); reqs[len(reqs)-1].Path != "/zstack/v1/zones" {
		t.Fatalf("path %q", reqs[len(reqs)-1].Path)
	}
}

func TestCtlDamagedSessionFile(t *testing.T) {
	e := newEnv(t)
	if err := os.MkdirAll(filepath.Dir(e.sessionFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.sessionFile, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if stderr := e.fails("list", "zones"); !strings.Contains(stderr, "log in again with `mplane ctl login`") {
		t.Fatalf("stderr %q", stderr)
	}
	t.Setenv(envPassword, servertest.Password)
	e.ok("login")
	e.ok("list", "zones")
}

func TestColumnsRenderListsAndSizes(t *testing.T) {
	inv, err := decodeInventory(json.RawMessage(`{"uuid": "u", "rootVolumeUuid": "r", "ipRanges": [{"startIp": "10.0.0.10", "endIp": "10.0.0.20"}, {"name": "no ips"}],
		"vmNics": [{"ip": "10.0.0.11"}, {"ip": ""}, {"ip": "10.0.1.2"}], "availableMemoryCapacity": 1073741824, "totalMemoryCapacity": 3221225472,
		"availableCpuCapacity": 3, "totalCpuCapacity": 4, "memorySize": 1610612736, "tags": ["a"], "ha": true}`))
	if err != nil {
		t.Fatal(err)
	}
	value := func(n *noun, header string) string {
		for _, c := range n.columns {
			if c.header == header {
				return c.value(inv)
			}
		}
		t.Fatalf("%s has no column %s", n.name, header)
		return ""
	}
	for _, tc := range []struct{ got, want string }{
		{value(l3Noun, "IP RANGES"), "10.0.0.10-10.0.0.20"},
		{value(vmNoun, "IP"), "10.0.0.11,10.0.1.2"},
		{value(vmNoun, "MEMORY"), "1.5G"},
		{value(vmNoun, "HOST"), "-"},
		{value(vmNoun, "ROOT VOLUME"), "r"},
		{value(hostNoun, "MEMORY"), "1G/3G"},
		{value(hostNoun, "CPU"), "3/4"},
		{value(zoneNoun, "STATE"), "-"},
		{text(inv["tags"]), `["a"]`},
		{text(inv["ha"]), "true"},
		{headerOf("managementIp"), "MANAGEMENT IP"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if _, err := decodeInventory(json.RawMessage(`[1]`)); err == nil {
		t.Error("a list decoded as an inventory")
	}
}

func TestHumanAndParseSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0B"}, {512, "512B"}, {1024, "1K"}, {1536, "1.5K"}, {1 << 30, "1G"}, {3 << 29, "1.5G"},
		{128 << 30, "128G"}, {127 << 30, "127G"}, {(1 << 30) - 1, "1G"}, {5 << 40, "5T"}, {-2048, "-2K"},
	} {
		if got := humanSize(tc.n); got != tc.want {
			t.Errorf("humanSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1048576", 1 << 20}, {"512M", 512 << 20}, {"1G", 1 << 30}, {"1g", 1 << 30}, {"1.5G", 3 << 29},
		{"2GiB", 2 << 30}, {"2GB", 2 << 30}, {"1 T", 1 << 40}, {"100B", 100}, {"4k", 4096},
	} {
		got, err := parseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "1X", "1.5", "0.3K", "1iB", "99999999E"} {
		if n, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, n)
		}
	}
}

func TestCtlNoFlagShadowsAGlobalFlag(t *testing.T) {
	root := NewCommand()
	global := root.PersistentFlags()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if global.Lookup(f.Name) != nil || (f.Shorthand != "" && global.ShorthandLookup(f.Shorthand) != nil) {
				t.Errorf("%s: flag --%s (-%s) hides the global flag of the same name", c.CommandPath(), f.Name, f.Shorthand)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

func TestCtlProgressOnATerminalRedrawsOneLine(t *testing.T) {
	c, err := client.New("http://127.0.0.1:1") // the handle is never polled
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Job(client.NewJobUUID())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	p := startProgress(&buf, true, "create zone z", job)
	p.update(0, client.JobProcessing)
	p.finish(nil)
	out := buf.String()
	// The spinner draws at least once before it stops; every draw starts by
	// going back to the start of the line and clearing it.
	if !strings.HasPrefix(out, "\r\x1b[K"+spinnerFrames[0]+" create zone z: ") {
		t.Fatalf("no spinner line: %q", out)
	}
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "\r\x1b[Kcreate zone z: done in ") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("the spinner must end in one final line: %q", out)
	}

	buf.Reset()
	p = startProgress(&buf, true, "stop vm v", job)
	p.finish(errcode.New(errcode.InvalidState, "x"))
	if !strings.Contains(buf.String(), "stop vm v: failed after ") {
		t.Fatalf("failure line: %q", buf.String())
	}
}

func TestCtlIsTerminalFalseForPipesAndBuffers(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, v := range []any{r, w, &bytes.Buffer{}, strings.NewReader("")} {
		if IsTerminal(v) {
			t.Errorf("IsTerminal(%T) = true", v)
		}
	}
}

// TestCtlStorage: backup and primary storage through ctl: the flags'
// params on the wire, the lists, attach and detach of primary storage.
func TestCtlStorage(t *testing.T) {
	e := newEnv(t).loggedIn()
	if out := e.ok("list", "backup-storage"); !strings.Contains(out, "default-bs") || !strings.Contains(out, "Connected") {
		t.Errorf("list backup-storage:\n%s", out)
	}
	if out := e.ok("list", "ps"); !strings.Contains(out, "local-ps") || !strings.Contains(out, "LocalStorage") {
		t.Errorf("list primary-storage:\n%s", out)
	}
	// Nothing listens there: the add fails, and says so.
	stderr := e.fails("create", "backup-storage", "--name", "bs2", "--hostname", "127.0.0.1", "--port", "1", "--dir", "/srv/images")
	if !strings.Contains(stderr, "SYS.1014") {
		t.Errorf("add an unreachable backup storage: %s", stderr)
	}
	if b := e.lastBody("POST", "/v1/backup-storage/image-store"); fmt.Sprint(b["params"]) != "map[agentPort:1 hostname:127.0.0.1 name:bs2 url:/srv/images]" {
		t.Errorf("backup storage params %v", b["params"])
	}

	// A SharedMountPoint in a zone of its own, attached to a cluster
	// without hosts: nothing measures it, so it has no room.
	tag := client.NewJobUUID()[:12]
	zone := e.uuidOf("create", "zone", "--name", tag)
	cluster := e.uuidOf("create", "cluster", "--name", tag, "--zone", zone)
	rows := tableRows(e.ok("create", "primary-storage", "--name", tag, "--type", "SMP", "--dir", "/mnt/shared", "--zone", zone))
	if len(rows) != 2 || !slices.Equal(rows[0], []string{"UUID", "NAME", "TYPE", "URL", "STATUS", "STATE", "CAPACITY"}) ||
		!slices.Equal(rows[1][1:4], []string{tag, "SharedMountPoint", "/mnt/shared"}) {
		t.Fatalf("create primary-storage: %v", rows)
	}
	ps := rows[1][0]
	if b := e.lastBody("POST", "/v1/primary-storage/smp"); fmt.Sprint(b["params"]) != "map[name:"+tag+" url:/mnt/shared zoneUuid:"+zone+"]" {
		t.Fatalf("smp params %v", b["params"])
	}
	r := e.run(nil, "attach", "ps", ps, "--cluster", cluster)
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	if rows := tableRows(r.stdout); len(rows) != 2 || rows[1][0] != ps {
		t.Fatalf("attach output %q", r.stdout)
	}
	if lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n"); !strings.HasPrefix(lines[0], "attach primary-storage "+ps+" to cluster "+cluster+": job ") ||
		!strings.HasPrefix(lines[len(lines)-1], "attach primary-storage "+ps+" to cluster "+cluster+": done in ") {
		t.Fatalf("attach progress %q", r.stderr)
	}
	if b := e.last("POST", "/v1/clusters/"+cluster+"/primary-storage/"+ps); string(b.Body) != `{"params":{}}` {
		t.Fatalf("attach body %s", b.Body)
	}
	if got := e.jsonOut("get", "ps", ps); fmt.Sprint(got["attachedClusterUuids"]) != "["+cluster+"]" {
		t.Fatalf("attached clusters %v", got["attachedClusterUuids"])
	}
	stderr = e.fails("create", "volume", "--name", tag, "--size", "1M", "--primary-storage", ps)
	if !strings.Contains(stderr, "\nerror: SYS.1015 not enough capacity: ") {
		t.Errorf("create a volume on primary storage without capacity: %s", stderr)
	}
	if b := e.lastBody("POST", "/v1/volumes/data"); fmt.Sprint(b["params"]) != "map[diskSize:1.048576e+06 name:"+tag+" primaryStorageUuid:"+ps+"]" {
		t.Errorf("volume params %v", b["params"])
	}

	got := e.jsonOut("detach", "primary-storage", ps, "--cluster", cluster)
	if got["uuid"] != ps || fmt.Sprint(got["attachedClusterUuids"]) != "[]" {
		t.Fatalf("detach: %v", got)
	}
	if del := e.last(http.MethodDelete, "/v1/clusters/"+cluster+"/primary-storage/"+ps); del.RawQuery != "" || del.JobUUID == "" {
		t.Fatalf("detach request %+v", del)
	}
	if got := e.jsonOut("get", "ps", ps); fmt.Sprint(got["attachedClusterUuids"]) != "[]" {
		t.Fatalf("attached clusters after detach %v", got["attachedClusterUuids"])
	}
	if stderr := e.fails("detach", "ps", ps, "--cluster", cluster); !strings.HasSuffix(stderr,
		"\nerror: SYS.1007 invalid argument: primary storage "+ps+" is not attached to cluster "+cluster+"\n") {
		t.Fatalf("detach again: %q", stderr)
	}
	// A primary storage goes to clusters of its zone only.
	if stderr := e.fails("attach", "ps", ps, "--cluster", stack.Defaults["cluster"]); !strings.Contains(stderr, "\nerror: SYS.1007 invalid argument: cluster "+stack.Defaults["cluster"]+" is in zone ") {
		t.Fatalf("attach to another zone's cluster: %q", stderr)
	}
	if out := e.ok("delete", "ps", ps); out != "Deleted primary-storage "+ps+"\n" {
		t.Fatalf("delete: %q", out)
	}
}

// TestCtlVolumesOfVMs: a VM's root volume, data volumes attached and
// detached, deleted while attached, and made with the VM.
func TestCtlVolumesOfVMs(t *testing.T) {
	e := newEnv(t).loggedIn()
	ids := e.seed()
	vm := e.uuidOf("create", "vm", "--name", "web1", "--offering", ids["offering"], "--image", ids["image"], "--l3", ids["l3"], "--host", ids["host"])
	root := e.jsonOut("get", "vm", vm)["rootVolumeUuid"]
	// volumesOf are the UUID and type of vm's volumes, in device order.
	volumesOf := func(vm string) []string {
		t.Helper()
		var out []string
		for _, v := range e.jsonOut("get", "vm", vm)["allVolumes"].([]any) {
			m := v.(map[string]any)
			out = append(out, fmt.Sprint(m["uuid"], " ", m["type"], " ", m["deviceId"]))
		}
		return out
	}
	onlyRoot := []string{fmt.Sprint(root, " Root 0")}
	if got := volumesOf(vm); !slices.Equal(got, onlyRoot) {
		t.Fatalf("a new VM's volumes %v, want its root volume only", got)
	}

	vol := e.uuidOf("create", "volume", "--name", "data1", "--size", "16M", "--primary-storage", ids["ps"], "--host", ids["host"])
	r := e.run(nil, "attach", "volume", vol, "--vm", vm)
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	if rows := tableRows(r.stdout); len(rows) != 2 || !slices.Equal(rows[1], []string{vol, "data1", "Data", "Ready", "16M", ids["ps"], vm}) {
		t.Fatalf("attach volume output %q", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "attach volume "+vol+" to vm "+vm+": job ") {
		t.Fatalf("attach volume progress %q", r.stderr)
	}
	if b := e.last("POST", "/v1/volumes/"+vol+"/vm-instances/"+vm); string(b.Body) != `{"params":{}}` || b.JobUUID == "" {
		t.Fatalf("attach volume request %+v", b)
	}
	withData := append(slices.Clone(onlyRoot), vol+" Data 1")
	if got := volumesOf(vm); !slices.Equal(got, withData) {
		t.Fatalf("volumes after attach %v, want %v", got, withData)
	}

	// --vm is sent as vmUuid: the server refuses a VM the volume is not
	// attached to, and nothing is detached.
	other := "0123456789abcdef0123456789abcdef"
	stderr := e.fails("detach", "volume", vol, "--vm", other)
	if !strings.Contains(stderr, "SYS.1007") || !strings.Contains(stderr, "is attached to VM "+vm+", not to VM "+other) {
		t.Fatalf("detach from another VM: stderr %q", stderr)
	}
	if del := e.last(http.MethodDelete, "/v1/volumes/"+vol+"/vm-instances"); del.RawQuery != "vmUuid="+other {
		t.Fatalf("detach request %+v", del)
	}
	if got := volumesOf(vm); !slices.Equal(got, withData) {
		t.Fatalf("volumes after a refused detach from another VM %v, want %v", got, withData)
	}
	r = e.run(nil, "-o", "json", "detach", "volume", vol, "--vm", vm)
	if r.err != nil || strings.Contains(r.stderr, "note:") {
		t.Fatal(r.err, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err, r.stdout)
	}
	if got["uuid"] != vol || got["vmInstanceUuid"] != nil || got["deviceId"] != nil || got["status"] != "Ready" {
		t.Fatalf("detached volume %v", got)
	}
	if del := e.last(http.MethodDelete, "/v1/volumes/"+vol+"/vm-instances"); del.RawQuery != "vmUuid="+vm || del.JobUUID == "" {
		t.Fatalf("detach request %+v", del)
	}
	if got := volumesOf(vm); !slices.Equal(got, onlyRoot) {
		t.Fatalf("volumes after detach %v", got)
	}
	if stderr := e.fails("detach", "volume", vol); stderr != "error: SYS.1006 operation not allowed in the resource's current state: volume "+vol+" is not attached to any VM\n" {
		t.Fatalf("detach a detached volume: %q", stderr)
	}
	// From its old VM: done already (the server's detach is idempotent).
	if rows := tableRows(e.ok("detach", "volume", vol, "--vm", vm)); len(rows) != 2 || rows[1][0] != vol || rows[1][6] != "-" {
		t.Fatalf("detach a detached volume from its old VM: %v", rows)
	}

	// Deleting an attached volume: refused, unless Enforcing, which
	// detaches it first.
	e.ok("attach", "volume", vol, "--vm", vm)
	if stderr := e.fails("delete", "volume", vol); !strings.Contains(stderr, "\nerror: SYS.1006 ") || !strings.Contains(stderr, "is attached to VM "+vm) {
		t.Fatalf("delete an attached volume: %q", stderr)
	}
	if out := e.ok("delete", "volume", vol, "--mode", "enforcing"); out != "Deleted volume "+vol+"\n" {
		t.Fatalf("delete --mode enforcing: %q", out)
	}
	if del := e.last(http.MethodDelete, "/v1/volumes/"+vol); del.RawQuery != "deleteMode=Enforcing" {
		t.Fatalf("delete request %+v", del)
	}
	if got := e.jsonOut("get", "volume", vol); got["status"] != "Deleted" || got["vmInstanceUuid"] != nil {
		t.Fatalf("volume after an enforced delete %v", got)
	}
	if got := volumesOf(vm); !slices.Equal(got, onlyRoot) {
		t.Fatalf("volumes after the volume's delete %v", got)
	}
	// The root volume is not a data volume: it goes with the VM.
	if stderr := e.fails("detach", "volume", fmt.Sprint(root)); stderr != "error: SYS.1006 operation not allowed in the resource's current state: volume "+
		fmt.Sprint(root)+" is the root volume of VM "+vm+": it cannot be detached\n" {
		t.Fatalf("detach a root volume: %q", stderr)
	}
	if got := volumesOf(vm); !slices.Equal(got, onlyRoot) {
		t.Fatalf("volumes after detaching the root volume was refused %v", got)
	}

	// Data volumes made with the VM, one per --data-disk-offering.
	offs := make([]string, 2)
	for i, size := range []int64{16 << 20, 32 << 20} {
		off, err := client.CreateAndWait[map[string]any](t.Context(), stack.Client, "disk-offerings",
			map[string]any{"name": fmt.Sprint("ctl-disk-", i), "diskSize": size})
		if err != nil {
			t.Fatal(err)
		}
		offs[i] = off["uuid"].(string)
	}
	rows := tableRows(e.ok("create", "vm", "--name", "db1", "--offering", ids["offering"], "--image", ids["image"], "--l3", ids["l3"],
		"--host", ids["host"], "--data-disk-offering", offs[0], "--data-disk-offering", offs[1]))
	if len(rows) != 2 || rows[1][2] != "Running" {
		t.Fatalf("create vm with data disks: %v", rows)
	}
	db := rows[1][0]
	if got := e.lastBody("POST", "/v1/vm-instances")["params"].(map[string]any)["dataDiskOfferingUuids"]; fmt.Sprint(got) != fmt.Sprint(offs) {
		t.Fatalf("dataDiskOfferingUuids %v, want %v", got, offs)
	}
	inv := e.jsonOut("get", "vm", db)
	vols := inv["allVolumes"].([]any)
	if len(vols) != 3 || inv["rootVolumeUuid"] != rows[1][7] {
		t.Fatalf("vm with data disks: rootVolumeUuid %v, volumes %v", inv["rootVolumeUuid"], vols)
	}
	for i, want := range []struct {
		typ, offering string
		size          float64
	}{{"Root", "", -1}, {"Data", offs[0], 16 << 20}, {"Data", offs[1], 32 << 20}} {
		v := vols[i].(map[string]any)
		if v["type"] != want.typ || v["deviceId"] != float64(i) || v["vmInstanceUuid"] != db || v["status"] != "Ready" ||
			v["primaryStorageUuid"] != ids["ps"] || v["hostUuid"] != ids["host"] ||
			(want.offering != "" && (v["diskOfferingUuid"] != want.offering || v["size"] != want.size)) {
			t.Errorf("volume %d of the VM: %v, want %+v", i, v, want)
		}
	}
	if vols[0].(map[string]any)["uuid"] != rows[1][7] {
		t.Errorf("the first volume %v is not the root volume %s", vols[0], rows[1][7])
	}
}
