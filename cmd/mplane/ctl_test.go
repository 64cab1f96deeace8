package main

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

	"mplane/api/client"
	"mplane/api/client/clienttest"
	"mplane/errcode"
)

var ctlSplitGap = regexp.MustCompile(`\s{3,}`)

func TestCtlLoginStoresSessionFile(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{Password: "pw"})
	out := e.ok("login", "--account", "admin", "--password", "pw")
	if !strings.Contains(out, "Logged in to "+e.srv.URL+" as admin") || !strings.Contains(out, e.sessionFile) {
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
	stored, err := ctlLoadSessionFile(e.sessionFile)
	if err != nil || stored == nil || stored.Session == "" || stored.URL != e.srv.URL || stored.Account != "admin" {
		t.Fatalf("stored %+v (%v)", stored, err)
	}
	// The next command uses the stored session, and the stored URL when
	// neither --url nor the environment names one.
	t.Setenv(envCtlURL, "")
	e.ok("list", "zones")
	reqs := e.srv.Requests()
	if got := reqs[len(reqs)-1].Authorization; got != "OAuth "+stored.Session {
		t.Fatalf("Authorization %q, want the stored session", got)
	}
	// A session is only sent to the API it came from.
	other := clienttest.NewServer(clienttest.Options{})
	t.Cleanup(other.Close)
	stderr := e.fails("--url", other.URL, "list", "zones")
	if got := other.Requests()[0].Authorization; got != "" {
		t.Fatalf("stored session sent to another API: %q", got)
	}
	if !strings.Contains(stderr, "run `mplane ctl login`") {
		t.Fatalf("stderr %q", stderr)
	}
	if out := e.ok("logout"); !strings.Contains(out, "Logged out") {
		t.Fatalf("logout output %q", out)
	}
	if _, err := os.Stat(e.sessionFile); !os.IsNotExist(err) {
		t.Fatalf("session file still there after logout: %v", err)
	}
}

func TestCtlLoginDefaultSessionPath(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{})
	home := t.TempDir()
	t.Setenv(envCtlSessionFile, "")
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", home)
	t.Setenv(envCtlPassword, "password")
	e.ok("login")
	want := filepath.Join(home, ".config", "mplane", "ctl.json")
	st, err := os.Stat(want)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("default session file %s: %v %v", want, st, err)
	}
	e.ok("--session-file", filepath.Join(home, "other.json"), "login", "--password", "password")
	if _, err := os.Stat(filepath.Join(home, "other.json")); err != nil {
		t.Fatalf("--session-file not used: %v", err)
	}
}

func TestCtlLoginPasswordSources(t *testing.T) {
	tests := []struct {
		name    string
		env     string
		stdin   string
		args    []string
		wantErr string // "" for success
	}{
		{name: "flag", args: []string{"--password", "password"}},
		{name: "environment", env: "password"},
		{name: "stdin", stdin: "password\n", args: []string{"--password-stdin"}},
		{name: "stdin with CRLF", stdin: "password\r\n", args: []string{"--password-stdin"}},
		{name: "empty stdin", args: []string{"--password-stdin"},
			wantErr: "error: SYS.1007 invalid argument: --password-stdin: standard input has no password\n"},
		{name: "no password and no terminal",
			wantErr: "error: SYS.1007 invalid argument: no password: standard input is not a terminal, so there is no prompt; pass --password, --password-stdin or set MPLANE_CTL_PASSWORD\n"},
		{name: "wrong password", args: []string{"--password", "nope"},
			wantErr: "error: SYS.1008 missing, invalid or expired session: wrong account name or password\n"},
		{name: "unknown account", args: []string{"--account", "bob", "--password", "password"},
			wantErr: "error: SYS.1008 missing, invalid or expired session: wrong account name or password\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCtlEnv(t, clienttest.Options{})
			if tc.env != "" {
				t.Setenv(envCtlPassword, tc.env)
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
			if got := ctlMustFail(t, r, args...); got != tc.wantErr {
				t.Fatalf("stderr\n%q\nwant\n%q", got, tc.wantErr)
			}
			if _, err := os.Stat(e.sessionFile); !os.IsNotExist(err) {
				t.Fatalf("a failed login wrote the session file (%v)", err)
			}
			if strings.Contains(tc.name, "no password") && len(e.srv.Requests()) != 0 {
				t.Fatalf("login without a password sent %d requests", len(e.srv.Requests()))
			}
		})
	}
}

func TestCtlMissingOrExpiredSessionSaysLogin(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{})
	want := "error: SYS.1008 session missing or expired: run `mplane ctl login`\n"
	if got := e.fails("list", "vms"); got != want {
		t.Fatalf("no session: stderr %q, want %q", got, want)
	}
	e.loggedIn()
	e.ok("list", "vms")
	e.srv.ExpireSessions()
	if got := e.fails("create", "zone", "--name", "z"); got != want {
		t.Fatalf("expired session: stderr %q, want %q", got, want)
	}
}

func TestCtlCreateListGetFlow(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{}).loggedIn()
	ids := e.seed()

	// Params on the wire: ZStack names, sizes in bytes, optional fields
	// only when given, defaults where ctl has them.
	if b := e.lastBody("POST", "/v1/instance-offerings"); fmt.Sprint(b["params"]) != "map[cpuNum:1 memorySize:1.073741824e+09 name:small]" {
		t.Fatalf("offering params %v", b["params"])
	}
	if b := e.lastBody("POST", "/v1/hosts/kvm"); fmt.Sprint(b["params"]) != "map[clusterUuid:"+ids["cluster"]+" managementIp:127.0.0.10]" {
		t.Fatalf("host params %v", b["params"])
	}
	if b := e.lastBody("POST", "/v1/clusters"); b["params"].(map[string]any)["hypervisorType"] != "KVM" {
		t.Fatalf("cluster params %v", b["params"])
	}
	if b := e.lastBody("POST", "/v1/images"); b["params"].(map[string]any)["format"] != "qcow2" {
		t.Fatalf("image params %v", b["params"])
	}

	out := e.ok("create", "vm", "--name", "web1", "--offering", ids["offering"], "--image", ids["image"], "--l3", ids["l3"], "--host", ids["host"])
	rows := ctlTableRows(out)
	if len(rows) != 2 || !slices.Equal(rows[0], []string{"UUID", "NAME", "STATE", "HOST", "IP", "CPU", "MEMORY"}) {
		t.Fatalf("create vm output:\n%s", out)
	}
	vm := rows[1]
	if vm[1] != "web1" || vm[2] != "Running" || vm[3] != ids["host"] || vm[4] != "10.0.0.10" || vm[5] != "1" || vm[6] != "1G" {
		t.Fatalf("vm row %q", vm)
	}
	params := e.lastBody("POST", "/v1/vm-instances")["params"].(map[string]any)
	if fmt.Sprint(params["l3NetworkUuids"]) != "["+ids["l3"]+"]" || params["hostUuid"] != ids["host"] || params["clusterUuid"] != nil {
		t.Fatalf("vm params %v", params)
	}

	hosts := ctlTableRows(e.ok("list", "hosts"))
	if !slices.Equal(hosts[0], []string{"UUID", "NAME", "MANAGEMENT IP", "STATUS", "STATE", "CPU", "MEMORY"}) ||
		!slices.Equal(hosts[1][1:], []string{"127.0.0.10", "127.0.0.10", "Connected", "Enabled", "31/32", "127G/128G"}) {
		t.Fatalf("list hosts:\n%v", hosts)
	}
	offerings := ctlTableRows(e.ok("list", "instance-offerings"))
	if !slices.Equal(offerings[1][1:], []string{"small", "1", "1G", "Enabled"}) {
		t.Fatalf("list offerings: %v", offerings)
	}
	l3s := ctlTableRows(e.ok("list", "l3"))
	if !slices.Equal(l3s[0], []string{"UUID", "NAME", "ZONE", "STATE", "IP RANGES"}) || l3s[1][4] != "10.0.0.10-10.0.0.20" {
		t.Fatalf("list l3: %v", l3s)
	}

	// JSON: inventories as the server returned them.
	var list struct {
		Inventories []map[string]any `json:"inventories"`
	}
	if err := json.Unmarshal([]byte(e.ok("list", "vm", "-o", "json")), &list); err != nil || len(list.Inventories) != 1 {
		t.Fatalf("list -o json: %v %v", list, err)
	}
	if inv := list.Inventories[0]; inv["name"] != "web1" || inv["memorySize"] != float64(1<<30) || inv["vmNics"] == nil {
		t.Fatalf("JSON inventory %v", inv)
	}
	for _, noun := range []string{"vm", "vms", "vm-instance", "vm-instances"} {
		got := e.jsonOut("get", noun, vm[0])
		if got["uuid"] != vm[0] || got["state"] != "Running" {
			t.Fatalf("get %s: %v", noun, got)
		}
	}
	rows = ctlTableRows(e.ok("get", "zone", ids["zone"]))
	if !slices.Equal(rows[0], []string{"UUID", "NAME", "STATE", "DESCRIPTION"}) || !slices.Equal(rows[1], []string{ids["zone"], "zone1", "Enabled", "-"}) {
		t.Fatalf("get zone: %v", rows)
	}
	stderr := e.fails("get", "vm", "0123456789abcdef0123456789abcdef")
	if !strings.HasPrefix(stderr, "error: SYS.1005 resource not found: ") {
		t.Fatalf("get unknown vm: %q", stderr)
	}
}

func TestCtlListQueryFlags(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{}).loggedIn()
	for i, name := range []string{"web1", "web2", "db1"} {
		state := "Running"
		if i == 2 {
			state = "Stopped"
		}
		e.srv.Put("vm-instances", map[string]any{"uuid": fmt.Sprintf("%032d", i), "name": name, "state": state,
			"createDate": fmt.Sprintf("2024-01-0%dT00:00:00Z", i+1), "cpuNum": 2, "memorySize": 3 << 29})
	}
	r := e.run(nil, "list", "vms", "--q", "name~=web%", "--q", "state=Running", "--sort", "-createDate", "--limit", "1")
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	rows := ctlTableRows(r.stdout)
	if len(rows) != 2 || rows[1][1] != "web2" || rows[1][6] != "1.5G" || rows[1][3] != "-" || rows[1][4] != "-" {
		t.Fatalf("rows %v", rows)
	}
	if r.stderr != "(1-1 of 2 VMs; --start 1 for more)\n" {
		t.Fatalf("paging note %q", r.stderr)
	}
	reqs := e.srv.Requests()
	q := reqs[len(reqs)-1].Query
	if !slices.Equal(q["q"], []string{"name~=web%", "state=Running"}) || q.Get("sort") != "-createDate" || q.Get("limit") != "1" || q.Get("replyWithCount") != "true" {
		t.Fatalf("query sent: %v", q)
	}
	if out := e.ok("list", "vms", "--q", "state=Running", "--count"); out != "2\n" {
		t.Fatalf("--count printed %q", out)
	}
	var counted map[string]int
	if err := json.Unmarshal([]byte(e.ok("list", "vms", "--count", "-o", "json")), &counted); err != nil || counted["total"] != 3 {
		t.Fatalf("--count -o json: %v %v", counted, err)
	}
	var page struct {
		Inventories []map[string]any `json:"inventories"`
		Total       int              `json:"total"`
	}
	if err := json.Unmarshal([]byte(e.ok("list", "vms", "--limit", "2", "--start", "1", "-o", "json")), &page); err != nil ||
		page.Total != 3 || len(page.Inventories) != 2 || page.Inventories[0]["name"] != "web2" {
		t.Fatalf("paged JSON: %+v %v", page, err)
	}
	rows = ctlTableRows(e.ok("list", "vms", "--fields", "uuid,name", "--q", "name=db1"))
	if !slices.Equal(rows[0], []string{"UUID", "NAME"}) || !slices.Equal(rows[1], []string{fmt.Sprintf("%032d", 2), "db1"}) {
		t.Fatalf("--fields: %v", rows)
	}
	if out := e.ok("list", "zones"); out != "UUID   NAME   STATE   DESCRIPTION\n" {
		t.Fatalf("empty list %q", out)
	}
	if stderr := e.fails("list", "vms", "--q", "name"); !strings.HasPrefix(stderr, "error: SYS.1007 invalid argument: q=name: no operator") {
		t.Fatalf("bad condition: %q", stderr)
	}
}

func TestCtlProgressPlainLinesWhenNotATerminal(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{PendingPolls: 3}).loggedIn()
	r := e.run(nil, "create", "zone", "--name", "z1")
	if r.err != nil {
		t.Fatal(r.err)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "create zone z1: job ") || !strings.HasSuffix(lines[0], " submitted") ||
		!strings.HasPrefix(lines[1], "create zone z1: processing (") || !strings.HasPrefix(lines[2], "create zone z1: done in ") {
		t.Fatalf("progress lines:\n%s", r.stderr)
	}
	if strings.ContainsAny(r.stderr, "\r\x1b") {
		t.Fatalf("terminal control codes in plain progress: %q", r.stderr)
	}
	if rows := ctlTableRows(r.stdout); len(rows) != 2 || rows[1][1] != "z1" {
		t.Fatalf("stdout %q", r.stdout)
	}
}

func TestCtlNoWaitThenWait(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{PendingPolls: 2}).loggedIn()
	r := e.run(nil, "create", "zone", "--name", "later", "--no-wait")
	if r.err != nil || r.stderr != "" {
		t.Fatalf("--no-wait: %v %q", r.err, r.stderr)
	}
	loc := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(loc, e.srv.URL+"/v1/api-jobs/") {
		t.Fatalf("--no-wait printed %q, want the job location", loc)
	}
	rows := ctlTableRows(e.ok("wait", loc))
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
}

func TestCtlVMAndHostActions(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{PendingPolls: 1}).loggedIn()
	ids := e.seed()
	vm := e.uuidOf("create", "vm", "--name", "web1", "--offering", ids["offering"], "--image", ids["image"], "--l3", ids["l3"])
	actions := "/v1/vm-instances/" + vm + "/actions"

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
	if !strings.Contains(stderr, "error: SYS.1006 operation not allowed in the resource's current state: vm "+vm+" is Stopped") {
		t.Fatalf("reboot stopped vm: %q", stderr)
	}
	if stderr := e.fails("vm", "stop", vm, "--type", "hard"); stderr != "error: SYS.1007 invalid argument: --type must be grace or cold, got \"hard\"\n" {
		t.Fatalf("bad stop type: %q", stderr)
	}
	rows := ctlTableRows(e.ok("host", "reconnect", ids["host"]))
	if len(rows) != 2 || rows[1][3] != "Connected" {
		t.Fatalf("reconnect: %v", rows)
	}
	if b := e.lastBody("PUT", "/v1/hosts/"+ids["host"]+"/actions"); fmt.Sprint(b) != "map[reconnectHost:map[]]" {
		t.Fatalf("reconnect body %v", b)
	}

	if out := e.ok("delete", "vm", vm, "--mode", "Enforcing"); out != "Deleted vm "+vm+"\n" {
		t.Fatalf("delete output %q", out)
	}
	reqs := e.srv.Requests()
	var del *clienttest.Request
	for i := range reqs {
		if reqs[i].Method == http.MethodDelete {
			del = &reqs[i]
		}
	}
	if del == nil || del.Path != "/v1/vm-instances/"+vm || del.RawQuery != "deleteMode=Enforcing" || del.JobUUID == "" {
		t.Fatalf("delete request %+v", del)
	}
	if e.srv.Get("vm-instances", vm) != nil {
		t.Fatal("vm not deleted")
	}
	if stderr := e.fails("vm", "destroy", vm); !strings.HasPrefix(stderr, "error: SYS.1005 resource not found: no vm-instances with uuid "+vm) {
		t.Fatalf("destroy deleted vm: %q", stderr)
	}
	if stderr := e.fails("delete", "zone", ids["zone"], "--mode", "sometimes"); !strings.Contains(stderr, "--mode must be permissive or enforcing") {
		t.Fatalf("bad mode: %q", stderr)
	}
}

func TestCtlJobFailureShowsCodeAndCause(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{}).loggedIn()
	ids := e.seed()
	e.srv.FailNextJob(errcode.Wrap(errcode.CapacityExhausted, errcode.New(errcode.AgentError, "host 127.0.0.10: out of memory"), "no host can run vm web1"))
	r := e.run(nil, "create", "vm", "--name", "web1", "--offering", ids["offering"], "--image", ids["image"], "--l3", ids["l3"])
	stderr := ctlMustFail(t, r, "create vm")
	want := "error: SYS.1015 not enough capacity: no host can run vm web1\n" +
		"  caused by: SYS.1014 agent reported an error: host 127.0.0.10: out of memory\n"
	if !strings.HasSuffix(stderr, want) {
		t.Fatalf("stderr:\n%s\nwant it to end with:\n%s", stderr, want)
	}
	if !strings.Contains(stderr, "create vm web1: failed after ") {
		t.Fatalf("no failure progress line:\n%s", stderr)
	}
}

func TestCtlUsageErrors(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{}).loggedIn()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"create", "offering", "--name", "x"}, "error: SYS.1007 invalid argument: missing required flags: --cpu, --memory\n"},
		{[]string{"create", "offering", "--name", "x", "--cpu", "1", "--memory", "lots"}, "error: SYS.1007 invalid argument: --memory: \"lots\" is not a size; use bytes or a number with K, M, G, T (1024-based), e.g. 512M or 1.5G\n"},
		{[]string{"create", "vm", "--name", "v", "--offering", "o", "--image", "i", "--l3", ","}, "error: SYS.1007 invalid argument: --l3 is empty\n"},
		{[]string{"create", "zone", "--name", "z", "--colour", "red"}, "error: SYS.1007 invalid argument: unknown flag: --colour\n"},
		{[]string{"create", "offering", "--name", "x", "--cpu", "one", "--memory", "1G"}, "error: SYS.1007 invalid argument: invalid argument \"one\" for \"--cpu\" flag: strconv.ParseInt: parsing \"one\": invalid syntax\n"},
		{[]string{"create", "ip-range", "--l3", "a/b", "--start", "1", "--end", "2", "--netmask", "3", "--gateway", "4"}, "error: SYS.1007 invalid argument: --l3 must be a UUID, got \"a/b\"\n"},
		{[]string{"create", "bucket"}, "error: SYS.1007 invalid argument: unknown noun \"bucket\" for \"ctl create\"; valid: zone, cluster, host, offering, image, l3, ip-range, vm\n"},
		{[]string{"list", "buckets"}, "error: SYS.1007 invalid argument: unknown noun \"buckets\" for \"ctl list\"; valid: zone, cluster, host, offering, image, l3, vm\n"},
		{[]string{"vm", "pause", "x"}, "error: SYS.1007 invalid argument: unknown vm action \"pause\" for \"ctl vm\"; valid: destroy, reboot, start, stop\n"},
		{[]string{"get", "vm"}, "error: SYS.1007 invalid argument: missing vm UUID; usage: ctl get vm <uuid>\n"},
		{[]string{"get", "vm", "a", "b"}, "error: SYS.1007 invalid argument: expected one vm UUID, got 2 arguments: a b\n"},
		{[]string{"list", "vms", "extra"}, "error: SYS.1007 invalid argument: unexpected argument \"extra\"; usage: ctl list vm\n"},
		{[]string{"-o", "yaml", "list", "vms"}, "error: SYS.1007 invalid argument: --output must be table or json, got \"yaml\"\n"},
		{[]string{"--url", "ftp://x", "list", "vms"}, "error: SYS.1007 invalid argument: --url: api url \"ftp://x\": want http://host[:port] or https://host[:port]\n"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			before := len(e.srv.Requests())
			if got := e.fails(tc.args...); got != tc.want {
				t.Fatalf("stderr\n%q\nwant\n%q", got, tc.want)
			}
			if n := len(e.srv.Requests()) - before; n != 0 {
				t.Fatalf("a usage error sent %d requests", n)
			}
		})
	}
}

func TestCtlServerErrorsAreShownWithCode(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{}).loggedIn()
	stderr := e.fails("create", "cluster", "--name", "c", "--zone", "0123456789abcdef0123456789abcdef")
	if stderr != "error: SYS.1007 invalid argument: params.zoneUuid: no zones with uuid 0123456789abcdef0123456789abcdef\n" {
		t.Fatalf("stderr %q", stderr)
	}
	e.srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
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
	e := newCtlEnv(t, clienttest.Options{})
	session := e.srv.NewSession()
	t.Setenv(envCtlSession, session)
	// A stored login for another URL is ignored: the environment wins.
	if err := ctlSaveSessionFile(e.sessionFile, ctlSessionFileData{URL: "http://127.0.0.1:1", Session: "old"}); err != nil {
		t.Fatal(err)
	}
	e.ok("list", "zones")
	reqs := e.srv.Requests()
	if len(reqs) != 1 || reqs[0].Authorization != "OAuth "+session {
		t.Fatalf("requests %+v", reqs)
	}
	// --zstack prefix works too.
	e.ok("--url", e.srv.URL+"/zstack/v1", "list", "zones")
	if reqs := e.srv.Requests(); reqs[len(reqs)-1].Path != "/zstack/v1/zones" {
		t.Fatalf("path %q", reqs[len(reqs)-1].Path)
	}
}

func TestCtlDamagedSessionFile(t *testing.T) {
	e := newCtlEnv(t, clienttest.Options{})
	if err := os.MkdirAll(filepath.Dir(e.sessionFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.sessionFile, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if stderr := e.fails("list", "zones"); !strings.Contains(stderr, "log in again with `mplane ctl login`") {
		t.Fatalf("stderr %q", stderr)
	}
	t.Setenv(envCtlPassword, "password")
	e.ok("login")
	e.ok("list", "zones")
}

func TestHumanAndParseSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0B"}, {512, "512B"}, {1024, "1K"}, {1536, "1.5K"}, {1 << 30, "1G"}, {3 << 29, "1.5G"},
		{128 << 30, "128G"}, {127 << 30, "127G"}, {(1 << 30) - 1, "1G"}, {5 << 40, "5T"}, {-2048, "-2K"},
	} {
		if got := ctlHumanSize(tc.n); got != tc.want {
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
		got, err := ctlParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "1X", "1.5", "0.3K", "1iB", "99999999E"} {
		if n, err := ctlParseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, n)
		}
	}
}

func TestCtlNoFlagShadowsAGlobalFlag(t *testing.T) {
	root := newCtlCmd()
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
	srv := clienttest.NewServer(clienttest.Options{})
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Job(client.NewJobUUID())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	p := ctlStartProgress(&buf, true, "create zone z", job)
	p.update(0, client.JobProcessing)
	p.finish(nil)
	out := buf.String()
	// The spinner draws at least once before it stops; every draw starts by
	// going back to the start of the line and clearing it.
	if !strings.HasPrefix(out, "\r\x1b[K"+ctlSpinnerFrames[0]+" create zone z: ") {
		t.Fatalf("no spinner line: %q", out)
	}
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "\r\x1b[Kcreate zone z: done in ") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("the spinner must end in one final line: %q", out)
	}

	buf.Reset()
	p = ctlStartProgress(&buf, true, "stop vm v", job)
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
		if ctlIsTerminal(v) {
			t.Errorf("isTerminal(%T) = true", v)
		}
	}
}
