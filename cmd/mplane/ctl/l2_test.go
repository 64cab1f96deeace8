package ctl

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"mplane/api/client"
)

// TestCtlL2Networks: L2 networks of each type, a VXLAN pool's VNI range,
// attach and detach, L3 networks on L2 networks, and deletes, with ctl;
// the params on the wire are ZStack's.
func TestCtlL2Networks(t *testing.T) {
	e := newEnv(t).loggedIn()
	tag := client.NewJobUUID()[:12]
	zone := e.uuidOf("create", "zone", "--name", tag)
	cluster := e.uuidOf("create", "cluster", "--name", tag, "--zone", zone)

	rows := tableRows(e.ok("create", "l2", "--name", tag+"-flat", "--zone", zone, "--interface", "eth0"))
	if len(rows) != 2 || !slices.Equal(rows[0], []string{"UUID", "NAME", "TYPE", "ZONE", "INTERFACE", "VLAN/VNI", "POOL", "CLUSTERS"}) ||
		!slices.Equal(rows[1][1:], []string{tag + "-flat", "L2NoVlanNetwork", zone, "eth0", "-", "-", "-"}) {
		t.Fatalf("create l2: %v", rows)
	}
	flat := rows[1][0]
	if b := e.lastBody("POST", "/v1/l2-networks/no-vlan"); fmt.Sprint(b["params"]) != "map[name:"+tag+"-flat physicalInterface:eth0 zoneUuid:"+zone+"]" {
		t.Fatalf("no-vlan params %v", b["params"])
	}
	vlan := e.jsonOut("create", "l2", "--type", "vlan", "--vlan", "300", "--name", tag+"-v300", "--zone", zone, "--interface", "eth1")
	if vlan["type"] != "L2VlanNetwork" || vlan["vlan"] != 300.0 {
		t.Fatalf("create vlan: %v", vlan)
	}
	if b := e.lastBody("POST", "/v1/l2-networks/vlan"); fmt.Sprint(b["params"]) != "map[name:"+tag+"-v300 physicalInterface:eth1 vlan:300 zoneUuid:"+zone+"]" {
		t.Fatalf("vlan params %v", b["params"])
	}
	stderr := e.fails("create", "l2", "--type", "vlan", "--vlan", "300", "--name", tag+"-dup", "--zone", zone, "--interface", "eth1")
	if !strings.Contains(stderr, "error: SYS.1006 ") || !strings.Contains(stderr, "in use by l2 network "+vlan["uuid"].(string)) {
		t.Fatalf("a taken vlan: %q", stderr)
	}

	pool := e.uuidOf("create", "l2", "--type", "vxlan-pool", "--name", tag+"-pool", "--zone", zone, "--interface", "eth2")
	rows = tableRows(e.ok("create", "vni-range", "--pool", pool, "--name", "r", "--start", "7000", "--end", "7001"))
	if len(rows) != 2 || !slices.Equal(rows[0], []string{"UUID", "NAME", "POOL", "START", "END"}) || !slices.Equal(rows[1][1:], []string{"r", pool, "7000", "7001"}) {
		t.Fatalf("create vni-range: %v", rows)
	}
	if b := e.lastBody("POST", "/v1/l2-networks/vxlan-pool/"+pool+"/vni-range"); fmt.Sprint(b["params"]) != "map[endVni:7001 name:r startVni:7000]" {
		t.Fatalf("vni range params %v", b["params"])
	}
	vx := e.jsonOut("create", "l2", "--type", "vxlan", "--name", tag+"-vx", "--pool", pool)
	if vx["vni"] != 7000.0 || vx["poolUuid"] != pool || vx["zoneUuid"] != zone || vx["physicalInterface"] != "eth2" {
		t.Fatalf("create vxlan: %v", vx)
	}
	if b := e.lastBody("POST", "/v1/l2-networks/vxlan"); fmt.Sprint(b["params"]) != "map[name:"+tag+"-vx poolUuid:"+pool+"]" {
		t.Fatalf("vxlan params %v", b["params"])
	}
	if got := e.jsonOut("create", "l2", "--type", "vxlan", "--name", tag+"-vx2", "--pool", pool, "--vni", "7001"); got["vni"] != 7001.0 {
		t.Fatalf("create vxlan --vni 7001: %v", got)
	}
	stderr = e.fails("create", "l2", "--type", "vxlan", "--name", tag+"-vx3", "--pool", pool)
	if !strings.Contains(stderr, "\nerror: SYS.1015 not enough capacity: ") || !strings.Contains(stderr, "vxlan pool "+pool) {
		t.Fatalf("a full pool: %q", stderr)
	}

	// Lists, by type with the noun's query.
	rows = tableRows(e.ok("list", "l2", "--q", "zoneUuid="+zone, "--sort", "+name"))
	if len(rows) != 6 { // the header and 5 networks
		t.Fatalf("list l2 of the zone: %v", rows)
	}
	if r := rowOf(t, rows, vx["uuid"].(string)); !slices.Equal(r[2:7], []string{"VxlanNetwork", zone, "eth2", "7000", pool}) {
		t.Fatalf("vxlan row %v", r)
	}
	if r := rowOf(t, rows, vlan["uuid"].(string)); r[5] != "300" {
		t.Fatalf("vlan row %v", r)
	}
	if rows := tableRows(e.ok("list", "vni-ranges", "--q", "l2NetworkUuid="+pool)); len(rows) != 2 {
		t.Fatalf("list vni-ranges: %v", rows)
	}

	// Attach, an L3 network on it, detach.
	r := e.run(nil, "attach", "l2", flat, "--cluster", cluster)
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	if rows := tableRows(r.stdout); len(rows) != 2 || rows[1][7] != cluster {
		t.Fatalf("attach output %q", r.stdout)
	}
	if b := e.last("POST", "/v1/l2-networks/"+flat+"/clusters/"+cluster); string(b.Body) != `{"params":{}}` {
		t.Fatalf("attach body %s", b.Body)
	}
	l3 := e.jsonOut("create", "l3", "--name", tag, "--l2", flat)
	if l3["zoneUuid"] != zone || l3["l2NetworkUuid"] != flat {
		t.Fatalf("create l3 --l2: %v", l3)
	}
	if b := e.lastBody("POST", "/v1/l3-networks"); fmt.Sprint(b["params"]) != "map[l2NetworkUuid:"+flat+" name:"+tag+"]" {
		t.Fatalf("l3 params %v", b["params"])
	}
	// ZStack's fields; --zone is a check of the L2 network's zone.
	pub := e.jsonOut("create", "l3", "--name", tag+"-pub", "--l2", flat, "--zone", zone, "--category", "Public", "--dns-domain", "corp.example.org")
	if pub["category"] != "Public" || pub["dnsDomain"] != "corp.example.org" || pub["zoneUuid"] != zone {
		t.Fatalf("create l3 --category --dns-domain: %v", pub)
	}
	if stderr := e.fails("create", "l3", "--name", tag+"-x", "--l2", flat, "--zone", cluster); !strings.Contains(stderr, "is not the zone "+zone+" of l2 network "+flat) {
		t.Fatalf("create l3 with another zone: %q", stderr)
	}
	got := e.jsonOut("detach", "l2", flat, "--cluster", cluster)
	if got["uuid"] != flat || fmt.Sprint(got["attachedClusterUuids"]) != "[]" {
		t.Fatalf("detach: %v", got)
	}
	if del := e.last(http.MethodDelete, "/v1/l2-networks/"+flat+"/clusters/"+cluster); del.JobUUID == "" {
		t.Fatalf("detach request %+v", del)
	}

	// Deletes: refused while an L3 network is on it, unless enforcing.
	stderr = e.fails("delete", "l2", flat)
	if !strings.Contains(stderr, "still has 2 L3 networks") {
		t.Fatalf("delete of an l2 with an l3: %q", stderr)
	}
	if out := e.ok("delete", "l2", flat, "--mode", "enforcing"); out != "Deleted l2 "+flat+"\n" {
		t.Fatalf("delete --mode enforcing: %q", out)
	}
	if del := e.last(http.MethodDelete, "/v1/l2-networks/"+flat); del.RawQuery != "deleteMode=Enforcing" {
		t.Fatalf("delete request %+v", del)
	}
	if out := e.ok("delete", "l2", pool, "--mode", "enforcing"); out != "Deleted l2 "+pool+"\n" {
		t.Fatalf("delete the pool: %q", out)
	}
	if rows := tableRows(e.ok("list", "l2", "--q", "zoneUuid="+zone)); len(rows) != 2 || rows[1][0] != vlan["uuid"] {
		t.Fatalf("left after the deletes: %v", rows)
	}
}
