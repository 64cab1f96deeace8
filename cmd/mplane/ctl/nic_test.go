package ctl

import (
	"fmt"
	"strings"
	"testing"
)

// nicOf is the NIC on l3 in a VM's JSON inventory, nil if none.
func nicOf(vm map[string]any, l3 string) map[string]any {
	nics, _ := vm["vmNics"].([]any)
	for _, n := range nics {
		if m, ok := n.(map[string]any); ok && m["l3NetworkUuid"] == l3 {
			return m
		}
	}
	return nil
}

// TestVMNics: ctl vm attach-l3 (with --ip), set-static-ip, set-default-l3
// and detach-nic send ZStack's calls and print the VM.
func TestVMNics(t *testing.T) {
	e := newEnv(t).loggedIn()
	ids := e.seed()
	vm := e.uuidOf("create", "vm", "--name", "nics", "--offering", ids["offering"], "--image", ids["image"], "--l3", ids["l3"], "--cluster", ids["cluster"])
	l2 := e.uuidOf("create", "l2", "--name", "second", "--zone", ids["zone"], "--interface", "eth1")
	e.ok("attach", "l2", l2, "--cluster", ids["cluster"])
	l3 := e.uuidOf("create", "l3", "--name", "second", "--l2", l2)
	e.ok("create", "ip-range", "--l3", l3, "--start", "10.9.0.10", "--end", "10.9.0.20", "--netmask", "255.255.255.0", "--gateway", "10.9.0.1")

	got := e.jsonOut("vm", "attach-l3", vm, "--l3", l3, "--ip", "10.9.0.15")
	if nic := nicOf(got, l3); nic == nil || nic["ip"] != "10.9.0.15" {
		t.Fatalf("attach-l3 --ip printed %v", got["vmNics"])
	}
	if b := e.lastBody("POST", "/v1/vm-instances/"+vm+"/l3-networks/"+l3); fmt.Sprint(b["params"]) != "map[staticIp:10.9.0.15]" {
		t.Fatalf("attach-l3 params %v", b["params"])
	}
	got = e.jsonOut("vm", "set-static-ip", vm, "--l3", l3, "--ip", "10.9.0.16")
	if nic := nicOf(got, l3); nic == nil || nic["ip"] != "10.9.0.16" {
		t.Fatalf("set-static-ip printed %v", got["vmNics"])
	}
	got = e.jsonOut("vm", "set-default-l3", vm, "--l3", l3)
	if got["defaultL3NetworkUuid"] != l3 {
		t.Fatalf("set-default-l3 printed default %v", got["defaultL3NetworkUuid"])
	}
	if stderr := e.fails("vm", "attach-l3", vm); !strings.Contains(stderr, "--l3") {
		t.Fatalf("attach-l3 without --l3: %q", stderr)
	}
	if stderr := e.fails("vm", "set-static-ip", vm, "--l3", l3, "--ip", "10.9.0.99"); !strings.Contains(stderr, "10.9.0.99") {
		t.Fatalf("set-static-ip outside the ranges: %q", stderr)
	}
	nic := nicOf(got, l3)["uuid"].(string)
	got = e.jsonOut("vm", "detach-nic", nic)
	if nicOf(got, l3) != nil || got["defaultL3NetworkUuid"] != ids["l3"] {
		t.Fatalf("detach-nic printed NICs %v, default %v", got["vmNics"], got["defaultL3NetworkUuid"])
	}
}
