package vm_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"mplane/agents/kvm"
	"mplane/api/client"
	"mplane/errcode"
	"mplane/internal/testenv"
	"mplane/server"
	"mplane/server/servertest"
	"mplane/services/host"
	"mplane/services/network"
	"mplane/services/vm"
	"mplane/uid"
)

// testTimeout bounds every call a test makes on its stack.
const testTimeout = 30 * time.Second

// cloud is an in-process stack as one test sees it. The tests of a group
// share one stack (a stack costs two bcrypt rounds, a second with -race)
// and run one after the other; each works in a cluster of its own, with
// hosts of its own (in), and its creates are placed in that cluster unless
// they say otherwise, so the hosts of one test never take the VMs of
// another.
type cloud struct {
	*servertest.Stack
	t   *testing.T
	ctx context.Context
	// agents are the simulated hosts added so far, by host UUID (every
	// test's).
	agents map[string]*kvm.Agent
	// cluster is this test's cluster ("" for none) and mine its hosts.
	cluster string
	mine    []string
	// dirs are the hosts' local storage directories, by host UUID;
	// storage, if set, what the test's new hosts serve instead.
	dirs    map[string]string
	storage map[string]string
}

// newCloud starts a stack for t, stopped when t ends, without hosts.
//
// The hosts are the tests' own (addAgent), not the stack's (Options.Hosts):
// the tests need their counters and failure injection, and their agents
// are shut down before the stack stops. (The stack stops its own agents
// after the node: a connection such an agent opened to the node's API and
// never used then holds the API server's shutdown for its full 5 s, and the
// stop fails with "context deadline exceeded".)
func newCloud(t *testing.T, opts servertest.Options) *cloud {
	t.Helper()
	opts.Hosts = -1
	st := servertest.Start(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 4*testTimeout)
	t.Cleanup(cancel)
	return &cloud{Stack: st, t: t, ctx: ctx, agents: map[string]*kvm.Agent{}, dirs: map[string]string{}}
}

// in is the cloud as test t sees it: a new cluster of the default zone,
// whose VMs' volumes go on the hosts' local storage, with a simulated host
// per option (none: a cluster without hosts).
func (c *cloud) in(t *testing.T, hosts ...kvm.Options) *cloud {
	t.Helper()
	return c.within(t, false, hosts)
}

// inShared is in with the cluster's VMs on a SharedMountPoint primary
// storage (a directory of the test's that every host of the cluster
// serves) instead of the hosts' local storage: a stopped VM may start on
// any of them.
func (c *cloud) inShared(t *testing.T, hosts ...kvm.Options) *cloud {
	t.Helper()
	return c.within(t, true, hosts)
}

func (c *cloud) within(t *testing.T, shared bool, hosts []kvm.Options) *cloud {
	t.Helper()
	v := *c
	v.t, v.mine, v.storage = t, nil, nil
	v.cluster = v.createResource("clusters", map[string]any{"name": "cluster-" + uid.New()[:8],
		"zoneUuid": c.Defaults["zone"], "hypervisorType": "KVM"})
	ps := c.Defaults["ps"]
	if shared {
		url := "/mplane/smp-" + uid.New()[:8]
		v.storage = map[string]string{url: t.TempDir()}
		ps = v.createResource("primary-storage/smp", map[string]any{"name": "smp-" + uid.New()[:8], "url": url, "zoneUuid": c.Defaults["zone"]})
	}
	v.attachStorage(v.cluster, ps)
	v.attachL2(c.Defaults["l2"], v.cluster)
	for i, o := range hosts {
		v.addAgent(fmt.Sprintf("host%d", i+1), o)
	}
	return &v
}

// params are a valid create's params (name, the default offering, image and
// L3 network, the test's cluster) changed by extra: a nil value removes a
// key.
func (c *cloud) params(name string, extra map[string]any) map[string]any {
	p := map[string]any{"name": name, "instanceOfferingUuid": c.Defaults["offering"], "imageUuid": c.Defaults["image"],
		"l3NetworkUuids": []string{c.Defaults["l3"]}}
	if c.cluster != "" {
		p["clusterUuid"] = c.cluster
	}
	for k, v := range extra {
		if v == nil {
			delete(p, k)
		} else {
			p[k] = v
		}
	}
	return p
}

// create creates a VM through POST /v1/vm-instances and waits for its job.
func (c *cloud) create(name string, extra map[string]any) (vm.VmInstanceVO, error) {
	return client.CreateAndWait[vm.VmInstanceVO](c.ctx, c.Client, "vm-instances", c.params(name, extra))
}

func (c *cloud) mustCreate(name string, extra map[string]any) vm.VmInstanceVO {
	c.t.Helper()
	v, err := c.create(name, extra)
	if err != nil {
		c.t.Fatalf("create VM %s: %v", name, err)
	}
	if v.State != vm.StateRunning {
		c.t.Fatalf("create VM %s: state %q, want Running", name, v.State)
	}
	return v
}

// act runs an action on a VM and waits for its job.
func (c *cloud) act(uuid, action string, body any) (vm.VmInstanceVO, error) {
	if body == nil {
		body = map[string]any{}
	}
	return client.ActionAndWait[vm.VmInstanceVO](c.ctx, c.Client, "vm-instances", uuid, action, body)
}

func (c *cloud) mustAct(uuid, action string, body any) vm.VmInstanceVO {
	c.t.Helper()
	v, err := c.act(uuid, action, body)
	if err != nil {
		c.t.Fatalf("%s VM %s: %v", action, uuid, err)
	}
	return v
}

// del sends DELETE /v1/vm-instances/<uuid> and waits for its job.
func (c *cloud) del(uuid string) error {
	j, err := c.Client.Delete(c.ctx, "vm-instances", uuid, "")
	if err != nil {
		return err
	}
	_, err = j.Wait(c.ctx, nil)
	return err
}

// get reads a VM through GET /v1/vm-instances/<uuid>.
func (c *cloud) get(uuid string) (vm.VmInstanceVO, error) {
	return client.GetAs[vm.VmInstanceVO](c.ctx, c.Client, "vm-instances", uuid)
}

func (c *cloud) mustGet(uuid string) vm.VmInstanceVO {
	c.t.Helper()
	v, err := c.get(uuid)
	if err != nil {
		c.t.Fatalf("get VM %s: %v", uuid, err)
	}
	return v
}

// hosts reads every host through GET /v1/hosts, by UUID.
func (c *cloud) hosts() map[string]host.HostVO {
	c.t.Helper()
	hs, _, err := client.QueryAs[host.HostVO](c.ctx, c.Client, "hosts", client.Query{})
	if err != nil {
		c.t.Fatalf("query hosts: %v", err)
	}
	out := make(map[string]host.HostVO, len(hs))
	for _, h := range hs {
		out[h.UUID] = h
	}
	return out
}

// reservation is the capacity a VM holds, read from the database.
func (c *cloud) reservation(vmUUID string) (host.ReservationVO, bool) {
	c.t.Helper()
	var rs []host.ReservationVO
	if err := c.DB().Where("vm_uuid = ?", vmUUID).Find(&rs).Error; err != nil {
		c.t.Fatalf("read reservation of VM %s: %v", vmUUID, err)
	}
	if len(rs) == 0 {
		return host.ReservationVO{}, false
	}
	return rs[0], true
}

// usedIPsOwnedBy counts the used IPs a NIC holds.
func (c *cloud) usedIPsOwnedBy(nicUUID string) int64 {
	c.t.Helper()
	var n int64
	if err := c.DB().Model(&network.UsedIpVO{}).Where("vm_nic_uuid = ?", nicUUID).Count(&n).Error; err != nil {
		c.t.Fatal(err)
	}
	return n
}

// snapshot is what a failed or refused operation must leave as it was.
type snapshot struct {
	Avail        map[string][2]int64 // host -> available CPU, memory
	Reservations int64
	UsedIPs      int64
	VMs          int64
	NICs         int64
	States       map[string]string // VM -> state
}

func (c *cloud) snapshot() snapshot {
	c.t.Helper()
	s := snapshot{Avail: map[string][2]int64{}, States: map[string]string{}}
	for uuid, h := range c.hosts() {
		s.Avail[uuid] = [2]int64{h.AvailableCPUCapacity, h.AvailableMemoryCapacity}
	}
	db := c.DB()
	for _, q := range []struct {
		model any
		n     *int64
	}{{&host.ReservationVO{}, &s.Reservations}, {&network.UsedIpVO{}, &s.UsedIPs}, {&vm.VmInstanceVO{}, &s.VMs}, {&vm.VmNicVO{}, &s.NICs}} {
		if err := db.Model(q.model).Count(q.n).Error; err != nil {
			c.t.Fatal(err)
		}
	}
	var vms []vm.VmInstanceVO
	if err := db.Find(&vms).Error; err != nil {
		c.t.Fatal(err)
	}
	for _, v := range vms {
		s.States[v.UUID] = v.State
	}
	return s
}

// requireUnchanged fails if anything of before changed.
func (c *cloud) requireUnchanged(before snapshot, what string) {
	c.t.Helper()
	after := c.snapshot()
	if fmt.Sprint(after) != fmt.Sprint(before) {
		c.t.Fatalf("%s changed the cloud:\nbefore %+v\nafter  %+v", what, before, after)
	}
}

type inv struct {
	UUID string `json:"uuid"`
}

// attachStorage attaches primary storage ps to a cluster: its hosts keep
// their VMs' volumes there.
func (c *cloud) attachStorage(clusterUUID, ps string) {
	c.t.Helper()
	c.createResource("clusters/"+clusterUUID+"/primary-storage/"+ps, map[string]any{})
}

// attachL2 attaches L2 network l2 to a cluster.
func (c *cloud) attachL2(l2, clusterUUID string) {
	c.t.Helper()
	c.createResource("l2-networks/"+l2+"/clusters/"+clusterUUID, map[string]any{})
}

// localStorage adds a local primary storage to a zone (served by every
// simulated host, at server.DefaultLocalStorageURL).
func (c *cloud) localStorage(zoneUUID string) string {
	c.t.Helper()
	return c.createResource("primary-storage/local-storage", map[string]any{"name": "local-" + uid.New()[:8],
		"url": server.DefaultLocalStorageURL, "zoneUuid": zoneUUID})
}

// createResource creates anything through the REST API and returns its UUID.
func (c *cloud) createResource(path string, params map[string]any) string {
	c.t.Helper()
	r, err := client.CreateAndWait[inv](c.ctx, c.Client, path, params)
	if err != nil {
		c.t.Fatalf("create %s %v: %v", path, params, err)
	}
	return r.UUID
}

// offering creates an instance offering.
func (c *cloud) offering(name string, cpu int, mem int64) string {
	c.t.Helper()
	return c.createResource("instance-offerings", map[string]any{"name": name, "cpuNum": cpu, "memorySize": mem})
}

// l3 creates an L3 network in the default zone with, unless start is "", an
// IP range start-end in 192.168.0.0/16. It is on an L2NoVlanNetwork of its
// own, on an interface of its own (an interface has one such network per
// cluster), attached to the default cluster and the test's.
func (c *cloud) l3(name, start, end string) string {
	c.t.Helper()
	l2 := c.createResource("l2-networks/no-vlan", map[string]any{"name": name + "-l2", "zoneUuid": c.Defaults["zone"],
		"physicalInterface": "if" + uid.New()[:8]})
	c.attachL2(l2, c.Defaults["cluster"])
	if c.cluster != "" && c.cluster != c.Defaults["cluster"] {
		c.attachL2(l2, c.cluster)
	}
	uuid := c.createResource("l3-networks", map[string]any{"name": name, "l2NetworkUuid": l2})
	if start != "" {
		c.createResource("l3-networks/"+uuid+"/ip-ranges", map[string]any{"name": name + "-range",
			"startIp": start, "endIp": end, "netmask": "255.255.0.0", "gateway": "192.168.0.1"})
	}
	return uuid
}

// addAgent starts a simulated host of the test's own (so the test can
// inject failures and read its counters) and adds it through POST
// /v1/hosts/kvm to the test's cluster. The agent is shut down when the
// test ends.
func (c *cloud) addAgent(name string, opts kvm.Options) (*kvm.Agent, host.HostVO) {
	c.t.Helper()
	return c.addAgentTo(name, c.cluster, opts)
}

// addAgentTo is addAgent for another cluster; it does not count as one of
// the test's hosts.
func (c *cloud) addAgentTo(name, clusterUUID string, opts kvm.Options) (*kvm.Agent, host.HostVO) {
	c.t.Helper()
	if opts.Storage == nil && c.storage != nil {
		opts.Storage = c.storage
	}
	if opts.Storage == nil {
		opts.Storage = map[string]string{server.DefaultLocalStorageURL: c.t.TempDir()}
	}
	a, err := kvm.New(opts)
	if err != nil {
		c.t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(l) }()
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
		<-served
	})
	h, err := client.CreateAndWait[host.HostVO](c.ctx, c.Client, "hosts/kvm", map[string]any{"name": name,
		"managementIp": "127.0.0.1", "agentPort": l.Addr().(*net.TCPAddr).Port, "clusterUuid": clusterUUID})
	if err != nil {
		c.t.Fatalf("add host %s: %v", name, err)
	}
	if h.Status != host.StatusConnected {
		c.t.Fatalf("host %s is %s, want Connected", name, h.Status)
	}
	c.agents[h.UUID] = a
	c.dirs[h.UUID] = opts.Storage[server.DefaultLocalStorageURL]
	if clusterUUID == c.cluster {
		c.mine = append(c.mine, h.UUID)
	}
	return a, h
}

// isMine reports whether a host is one of the test's.
func (c *cloud) isMine(hostUUID string) bool {
	for _, h := range c.mine {
		if h == hostUUID {
			return true
		}
	}
	return false
}

// agentVM is the state of a VM on a host's agent ("" if it has none).
func (c *cloud) agentVM(hostUUID, vmUUID string) string {
	c.t.Helper()
	a, ok := c.agents[hostUUID]
	if !ok {
		c.t.Fatalf("host %q is not one of the test's", hostUUID)
	}
	for _, v := range a.VMs() {
		if v.UUID == vmUUID {
			return v.State
		}
	}
	return ""
}

// agentHas is the hosts whose agents have the VM.
func (c *cloud) agentHas(vmUUID string) []string {
	var out []string
	for h, a := range c.agents {
		for _, v := range a.VMs() {
			if v.UUID == vmUUID {
				out = append(out, h)
			}
		}
	}
	return out
}

// wantErr fails unless err is an answer with HTTP status and code whose
// message says every one of says.
func wantErr(t *testing.T, err error, status int, code errcode.Code, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want HTTP %d %s saying %q", status, code, says)
	}
	if got := client.StatusCode(err); got != status {
		t.Errorf("HTTP status %d, want %d (%v)", got, status, err)
	}
	if got := errcode.CodeOf(err); got != code {
		t.Errorf("code %s, want %s (%v)", got, code, err)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q: %v", s, err)
		}
	}
}

// jobFailed is the HTTP status of a job that failed (the job location
// answers 503 with the job's error).
const jobFailed = http.StatusServiceUnavailable

func ipToInt(t *testing.T, s string) uint32 {
	t.Helper()
	ip := net.ParseIP(s).To4()
	if ip == nil {
		t.Fatalf("%q is not an IPv4 address", s)
	}
	return binary.BigEndian.Uint32(ip)
}

// inRange reports whether ip is in [start, end].
func inRange(t *testing.T, ip, start, end string) bool {
	t.Helper()
	n := ipToInt(t, ip)
	return n >= ipToInt(t, start) && n <= ipToInt(t, end)
}

var macRE = regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){5}$`)

func eventually(t *testing.T, cond func() bool, what string, args ...any) {
	t.Helper()
	testenv.Eventually(t, testTimeout, cond, append([]any{what}, args...)...)
}
