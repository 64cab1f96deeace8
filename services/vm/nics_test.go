package vm_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"mplane/agents/kvm"
	"mplane/agents/protocol"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/server/servertest"
	"mplane/services/vm"
	"mplane/uid"
)

// network makes an L2 network (no VLAN, on its own interface) attached to
// the test's cluster and an L3 network on it with the range
// <prefix>.10-<prefix>.200 (a /24, gateway <prefix>.1).
func (c *cloud) network(name, prefix string) (l2, l3 string) {
	c.t.Helper()
	l2 = c.createResource("l2-networks/no-vlan", map[string]any{"name": name + "-l2-" + uid.New()[:6], "zoneUuid": c.Defaults["zone"],
		"physicalInterface": "eth-" + uid.New()[:6]})
	c.attachL2(l2, c.cluster)
	l3 = c.createResource("l3-networks", map[string]any{"name": name, "l2NetworkUuid": l2})
	c.createResource("l3-networks/"+l3+"/ip-ranges", map[string]any{"name": name + "-range",
		"startIp": prefix + ".10", "endIp": prefix + ".200", "netmask": "255.255.255.0", "gateway": prefix + ".1"})
	return l2, l3
}

func (c *cloud) attachL3(vmUUID, l3, staticIP string) (vm.VmInstanceVO, error) {
	params := map[string]any{}
	if staticIP != "" {
		params["staticIp"] = staticIP
	}
	return client.CreateAndWait[vm.VmInstanceVO](c.ctx, c.Client, "vm-instances/"+vmUUID+"/l3-networks/"+l3, params)
}

func (c *cloud) detachNic(nicUUID string) (vm.VmInstanceVO, error) {
	j, err := c.Client.Delete(c.ctx, "vm-instances/nics", nicUUID, "")
	if err != nil {
		return vm.VmInstanceVO{}, err
	}
	raw, err := j.Wait(c.ctx, nil)
	if err != nil {
		return vm.VmInstanceVO{}, err
	}
	var v vm.VmInstanceVO
	if err := json.Unmarshal(raw, &v); err != nil {
		c.t.Fatalf("decode the VM a detach answered: %v (%s)", err, raw)
	}
	return v, nil
}

// nicOn is the VM's NIC on l3, nil if it has none.
func nicOn(v vm.VmInstanceVO, l3 string) *vm.VmNicVO {
	for i := range v.VMNics {
		if v.VMNics[i].L3NetworkUUID == l3 {
			return &v.VMNics[i]
		}
	}
	return nil
}

// agentNic is the NIC with mac of the VM as the host's agent has it.
func (c *cloud) agentNic(hostUUID, vmUUID, mac string) *protocol.NicTO {
	c.t.Helper()
	for _, v := range c.agents[hostUUID].VMs() {
		if v.UUID != vmUUID {
			continue
		}
		for i := range v.NICs {
			if v.NICs[i].Mac == mac {
				return &v.NICs[i]
			}
		}
	}
	return nil
}

// TestNics: attach an L3 network to a running and to a stopped VM (a new
// NIC with an IP; plugged into the running VM on its L2 network's bridge),
// static IPs (on attach, by system tag at create, by setVmStaticIp)
// honoured and refused when taken, the default L3 network, QueryVmNic with
// usedIps, detach and destroy giving the IPs back.
func TestNics(t *testing.T) {
	t.Parallel()
	c := newCloud(t, servertest.Options{}).in(t, kvm.Options{})
	_, l3b := c.network("nics-b", "10.40.0")

	running := c.mustCreate("nics-running", nil)
	t.Run("attach to a running VM", func(t *testing.T) {
		v, err := c.attachL3(running.UUID, l3b, "")
		if err != nil {
			t.Fatal(err)
		}
		nic := nicOn(v, l3b)
		if len(v.VMNics) != 2 || nic == nil || !strings.HasPrefix(nic.IP, "10.40.0.") || nic.DeviceID != 1 || nic.Mac == "" {
			t.Fatalf("after attach: NICs %+v, want a second NIC (device 1) with an IP of 10.40.0.10-200", v.VMNics)
		}
		if n := c.usedIPsOwnedBy(nic.UUID); n != 1 {
			t.Errorf("the new NIC holds %d IPs, want 1", n)
		}
		got := c.agentNic(v.HostUUID, v.UUID, nic.Mac)
		if got == nil || got.IP != nic.IP || got.BridgeName == "" {
			t.Errorf("the agent's VM has NIC %+v, want %s with %s on its L2 network's bridge", got, nic.Mac, nic.IP)
		}
		_, err = c.attachL3(running.UUID, l3b, "")
		wantErr(t, err, jobFailed, errcode.InvalidArgument, "already has NIC", nic.UUID)
	})

	stopped := c.mustCreate("nics-stopped", nil)
	c.mustAct(stopped.UUID, "stopVmInstance", nil)
	t.Run("attach to a stopped VM with a static IP", func(t *testing.T) {
		v, err := c.attachL3(stopped.UUID, l3b, "10.40.0.50")
		if err != nil {
			t.Fatal(err)
		}
		nic := nicOn(v, l3b)
		if nic == nil || nic.IP != "10.40.0.50" {
			t.Fatalf("after attach: NICs %+v, want one with 10.40.0.50", v.VMNics)
		}
		v = c.mustAct(stopped.UUID, "startVmInstance", nil)
		if got := c.agentNic(v.HostUUID, v.UUID, nic.Mac); got == nil || got.IP != "10.40.0.50" || got.BridgeName == "" {
			t.Errorf("started VM's NIC on the agent %+v, want 10.40.0.50 on a bridge", got)
		}
		c.mustAct(stopped.UUID, "stopVmInstance", nil)
	})

	t.Run("a static IP in use is refused", func(t *testing.T) {
		other := c.mustCreate("nics-other", nil)
		before := c.snapshot()
		_, err := c.attachL3(other.UUID, l3b, "10.40.0.50")
		wantErr(t, err, jobFailed, errcode.InvalidState, "10.40.0.50", "in use")
		c.requireUnchanged(before, "an attach whose static IP is taken")
		_, err = client.CreateAndWait[vm.VmInstanceVO](c.ctx, c.Client, "vm-instances",
			c.params("nics-taken", map[string]any{"l3NetworkUuids": []string{c.Defaults["l3"], l3b}}), client.SystemTags("staticIp::"+l3b+"::10.40.0.50"))
		wantErr(t, err, jobFailed, errcode.InvalidState, "10.40.0.50", "in use")
		c.requireUnchanged(before, "a create whose static IP is taken")
		_, err = client.CreateAndWait[vm.VmInstanceVO](c.ctx, c.Client, "vm-instances",
			c.params("nics-bad-tag", nil), client.SystemTags("staticIp::"+l3b+"::10.40.0.51"))
		wantErr(t, err, http.StatusBadRequest, errcode.InvalidArgument, "not in l3NetworkUuids")
	})

	t.Run("static IP by system tag", func(t *testing.T) {
		v, err := client.CreateAndWait[vm.VmInstanceVO](c.ctx, c.Client, "vm-instances",
			c.params("nics-tagged", map[string]any{"l3NetworkUuids": []string{c.Defaults["l3"], l3b}}), client.SystemTags("staticIp::"+l3b+"::10.40.0.77"))
		if err != nil {
			t.Fatal(err)
		}
		if nic := nicOn(v, l3b); nic == nil || nic.IP != "10.40.0.77" {
			t.Errorf("created with staticIp::%s::10.40.0.77: NICs %+v", l3b, v.VMNics)
		}
	})

	t.Run("setVmStaticIp", func(t *testing.T) {
		v := c.mustAct(stopped.UUID, "setVmStaticIp", map[string]any{"l3NetworkUuid": l3b, "ip": "10.40.0.60"})
		nic := nicOn(v, l3b)
		if nic.IP != "10.40.0.60" || c.usedIPsOwnedBy(nic.UUID) != 1 {
			t.Fatalf("after setVmStaticIp: NIC %+v holding %d IPs, want 10.40.0.60 only", nic, c.usedIPsOwnedBy(nic.UUID))
		}
		_, err := c.act(stopped.UUID, "setVmStaticIp", map[string]any{"l3NetworkUuid": l3b, "ip": "10.40.0.77"})
		wantErr(t, err, jobFailed, errcode.InvalidState, "10.40.0.77", "in use")
		if v := c.mustGet(stopped.UUID); nicOn(v, l3b).IP != "10.40.0.60" {
			t.Errorf("a refused setVmStaticIp changed the NIC: %+v", nicOn(v, l3b))
		}
		// The old address is free again.
		other := c.mustCreate("nics-reuse", nil)
		if v, err := c.attachL3(other.UUID, l3b, "10.40.0.50"); err != nil || nicOn(v, l3b).IP != "10.40.0.50" {
			t.Errorf("attach with the released 10.40.0.50: %v", err)
		}
	})

	t.Run("default L3 network and QueryVmNic", func(t *testing.T) {
		v := c.mustAct(stopped.UUID, "updateVmInstance", map[string]any{"defaultL3NetworkUuid": l3b})
		if v.DefaultL3NetworkUUID != l3b {
			t.Errorf("default L3 network %s, want %s", v.DefaultL3NetworkUUID, l3b)
		}
		_, err := c.act(stopped.UUID, "updateVmInstance", map[string]any{"defaultL3NetworkUuid": uid.New()})
		wantErr(t, err, jobFailed, errcode.InvalidArgument, "has no NIC on it")
		nics, _, err := client.QueryAs[vm.VmNicVO](c.ctx, c.Client, "vm-instances/nics", client.Query{Q: []string{"vmInstanceUuid=" + stopped.UUID}})
		if err != nil {
			t.Fatal(err)
		}
		if len(nics) != 2 {
			t.Fatalf("QueryVmNic: %d NICs, want 2", len(nics))
		}
		for _, n := range nics {
			if len(n.UsedIPs) != 1 || n.UsedIPs[0].IP != n.IP || n.UsedIPs[0].L3NetworkUUID != n.L3NetworkUUID {
				t.Errorf("NIC %s (%s): usedIps %+v, want its one address", n.UUID, n.IP, n.UsedIPs)
			}
		}
	})

	t.Run("detach", func(t *testing.T) {
		v := c.mustGet(running.UUID)
		nic := nicOn(v, l3b)
		c.mustAct(running.UUID, "updateVmInstance", map[string]any{"defaultL3NetworkUuid": l3b})
		v, err := c.detachNic(nic.UUID)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.VMNics) != 1 || nicOn(v, l3b) != nil || v.DefaultL3NetworkUUID != c.Defaults["l3"] {
			t.Errorf("after detach: NICs %+v, default %s; want the first NIC only, the default back on %s", v.VMNics, v.DefaultL3NetworkUUID, c.Defaults["l3"])
		}
		if n := c.usedIPsOwnedBy(nic.UUID); n != 0 {
			t.Errorf("the detached NIC still holds %d IPs", n)
		}
		if got := c.agentNic(v.HostUUID, v.UUID, nic.Mac); got != nil {
			t.Errorf("the agent's VM still has the detached NIC %+v", got)
		}
		// Again: the NIC is gone.
		_, err = c.detachNic(nic.UUID)
		wantErr(t, err, http.StatusNotFound, errcode.ResourceNotFound, nic.UUID)
	})

	t.Run("destroy gives every IP back", func(t *testing.T) {
		v := c.mustGet(stopped.UUID)
		if err := c.del(v.UUID); err != nil {
			t.Fatal(err)
		}
		for _, n := range v.VMNics {
			if got := c.usedIPsOwnedBy(n.UUID); got != 0 {
				t.Errorf("NIC %s (%s) of the destroyed VM holds %d IPs", n.UUID, n.IP, got)
			}
		}
		other := c.mustCreate("nics-after-destroy", nil)
		if v, err := c.attachL3(other.UUID, l3b, "10.40.0.60"); err != nil || nicOn(v, l3b).IP != "10.40.0.60" {
			t.Errorf("attach with the destroyed VM's 10.40.0.60: %v", err)
		}
	})

	t.Run("refused at once", func(t *testing.T) {
		// An L2 network not attached to the VM's cluster.
		l2x := c.createResource("l2-networks/no-vlan", map[string]any{"name": "nics-x-" + uid.New()[:6], "zoneUuid": c.Defaults["zone"],
			"physicalInterface": "eth-x" + uid.New()[:4]})
		l3x := c.createResource("l3-networks", map[string]any{"name": "nics-x", "l2NetworkUuid": l2x})
		c.createResource("l3-networks/"+l3x+"/ip-ranges", map[string]any{"name": "nics-x-range",
			"startIp": "10.41.0.10", "endIp": "10.41.0.20", "netmask": "255.255.255.0", "gateway": "10.41.0.1"})
		_, err := c.attachL3(running.UUID, l3x, "")
		wantErr(t, err, http.StatusBadRequest, errcode.InvalidArgument, l2x, "not attached to cluster")
		_, err = c.attachL3(running.UUID, l3b, "10.40.0.300")
		wantErr(t, err, http.StatusBadRequest, errcode.InvalidArgument, "staticIp")
	})
}
