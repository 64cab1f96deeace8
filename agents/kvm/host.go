package kvm

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/agentserver"
	"mplane/agents/protocol"
)

// echoHandler answers /host/echo like kvmagent's echo, a sync path that
// returns an empty string: 200 with an empty body, 500 for a taskuuid.
type echoHandler struct{}

func (echoHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", protocol.HTMLContentType)
	if r.Header.Get(protocol.TaskUUIDHeader) != "" {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"success":false,"error":"found async task uuid in header of sync path /host/echo"}`))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// noSecretPaths answer without the host secret: echo is how a node waits
// for the agent to come up; the other GET debug endpoints show counters,
// the VMs and when VM commands started, nothing to act on. Not
// /debug/arrivals: it lists the task UUIDs of the commands, those still
// running among them (openDebugPaths).
var noSecretPaths = map[string]bool{
	protocol.PathEcho:            true,
	protocol.PathDebugStats:      true,
	protocol.PathDebugVMArrivals: true,
	protocol.PathDebugVMs:        true,
}

// openDebugPaths need the host secret unless Options.OpenDebug is set.
var openDebugPaths = map[string]bool{
	protocol.PathDebugArrivals: true,
}

// admit runs before the framework handles a request: it records the
// arrival of every command and enforces the host secret once there is one.
func (a *Agent) admit(r *http.Request, route agentserver.Route) error {
	at := time.Now()
	err := a.check(r, route)
	if route.Kind != agentserver.Raw {
		a.arrivals.add(Arrival{At: at, Path: route.Path, TaskUUID: r.Header.Get(protocol.TaskUUIDHeader),
			Node: r.Header.Get(protocol.NodeHeader), Fence: r.Header.Get(protocol.FenceHeader), Refused: err != nil})
		a.counters.countCommand(route.Path)
	}
	return err
}

// check enforces the host secret, once there is one, and the fencing token.
func (a *Agent) check(r *http.Request, route agentserver.Route) error {
	if noSecretPaths[route.Path] || (a.opts.OpenDebug && openDebugPaths[route.Path]) {
		return nil
	}
	a.mu.Lock()
	secret := a.secret
	a.mu.Unlock()
	if route.Path == protocol.PathConnect && a.claimed(r) {
		return a.checkFence(r, route.Path) // an explicit re-claim: the token stands for the secret
	}
	if route.Path == protocol.PathConnect && secret == "" && a.opts.ClaimToken != "" {
		a.counters.rejected.Add(1)
		a.log.Warn("connect without the claim token refused", "remote_addr", r.RemoteAddr)
		return &agentserver.StatusError{Status: http.StatusUnauthorized,
			Msg: "this host is not claimed yet: a connect must carry its claim token (" + protocol.ClaimHeader + ")"}
	}
	if !secretOK(secret, r.Header.Get(protocol.SecretHeader)) {
		a.counters.rejected.Add(1)
		a.log.Warn("command without the host secret refused", "path", route.Path, "remote_addr", r.RemoteAddr)
		return &agentserver.StatusError{Status: http.StatusUnauthorized,
			Msg: "missing or wrong " + protocol.SecretHeader + " header"}
	}
	return a.checkFence(r, route.Path)
}

// checkFence refuses a command whose fencing token is older than the
// newest this agent has seen (its sender was replaced as the host's owner)
// and remembers a newer one. A command without a token passes.
func (a *Agent) checkFence(r *http.Request, path string) error {
	raw := r.Header.Get(protocol.FenceHeader)
	if raw == "" {
		return nil
	}
	token, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || token < 0 {
		return &agentserver.StatusError{Status: http.StatusBadRequest, Msg: protocol.FenceHeader + " must be a non-negative integer, got " + strconv.Quote(raw)}
	}
	a.mu.Lock()
	newest := a.fence
	if token > newest {
		a.fence = token
	}
	a.mu.Unlock()
	if token < newest {
		a.counters.staleFence.Add(1)
		a.log.Warn("command from a replaced owner refused", "path", path, "token", token, "newest", newest,
			"node", r.Header.Get(protocol.NodeHeader), "remote_addr", r.RemoteAddr)
		return &agentserver.StatusError{Status: http.StatusConflict,
			Msg: fmt.Sprintf(agentclient.StaleFencePrefix+" %d: this host has taken commands under token %d; the sender is no longer the host's owner", token, newest)}
	}
	return nil
}

// secretOK: with no secret held every command passes (the Python agent's
// behaviour); else the header must match, compared in constant time.
func secretOK(held, got string) bool {
	if held == "" {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(held), []byte(got)) == 1
}

// claimed reports whether r carries the agent's claim token.
func (a *Agent) claimed(r *http.Request) bool {
	tok := r.Header.Get(protocol.ClaimHeader)
	return a.opts.ClaimToken != "" && tok != "" && subtle.ConstantTimeCompare([]byte(a.opts.ClaimToken), []byte(tok)) == 1
}

func (a *Agent) connect(ctx context.Context, req *agentserver.Request, cmd protocol.ConnectCmd) (protocol.ConnectRsp, error) {
	if err := a.sleep(ctx); err != nil {
		return protocol.ConnectRsp{}, err
	}
	claim := a.opts.ClaimToken != "" && subtle.ConstantTimeCompare([]byte(a.opts.ClaimToken), []byte(req.Header.Get(protocol.ClaimHeader))) == 1
	a.mu.Lock()
	if a.opts.ClaimToken != "" && cmd.Secret != a.secret && !claim {
		a.mu.Unlock()
		return protocol.ConnectRsp{}, &agentserver.StatusError{Status: http.StatusUnauthorized,
			Msg: "giving this host a secret needs its claim token (" + protocol.ClaimHeader + ")"}
	}
	// admit checked the header; check again under the lock, in case a
	// concurrent connect changed the secret in between.
	if !claim && !secretOK(a.secret, req.Header.Get(protocol.SecretHeader)) {
		a.mu.Unlock()
		return protocol.ConnectRsp{}, errSecretChanged
	}
	a.hostUUID = cmd.HostUUID
	a.sendCommandURL = cmd.SendCommandURL
	if cmd.Secret != "" && cmd.Secret != a.secret {
		a.secret = cmd.Secret
		a.version++
	}
	a.connectStorageLocked()
	a.mu.Unlock()
	if err := a.persist(); err != nil {
		return protocol.ConnectRsp{}, err
	}
	a.log.Info("connected", "host_uuid", cmd.HostUUID, "send_command_url", cmd.SendCommandURL,
		"secret", cmd.Secret != "")
	return protocol.ConnectRsp{LibvirtVersion: "simulated", QemuVersion: "simulated"}, nil
}

func (a *Agent) ping(ctx context.Context, req *agentserver.Request, _ protocol.PingCmd) (protocol.PingRsp, error) {
	if err := a.simulate(ctx, req); err != nil {
		return protocol.PingRsp{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return protocol.PingRsp{HostUUID: a.hostUUID, SendCommandURL: a.sendCommandURL, Version: a.opts.Version}, nil
}

func (a *Agent) capacity(ctx context.Context, req *agentserver.Request, _ struct{}) (protocol.CapacityRsp, error) {
	if err := a.simulate(ctx, req); err != nil {
		return protocol.CapacityRsp{}, err
	}
	a.mu.Lock()
	usedCPU, usedMem := a.usedLocked()
	a.mu.Unlock()
	return protocol.CapacityRsp{
		CPUNum:      a.opts.CPUNum,
		CPUSockets:  1,
		CPUSpeed:    2400,
		TotalMemory: a.opts.MemoryBytes,
		UsedCPU:     usedCPU,
		UsedMemory:  usedMem,
	}, nil
}

// usedLocked sums the running VMs' CPUs and memory.
func (a *Agent) usedLocked() (cpu int, mem int64) {
	for _, vm := range a.vms {
		if vm.State == protocol.VMStateRunning {
			cpu += vm.CPUNum
			mem += vm.Memory
		}
	}
	return cpu, mem
}

// sleep waits Options.Latency, or until ctx ends.
func (a *Agent) sleep(ctx context.Context) error {
	if a.opts.Latency <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(a.opts.Latency)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// simulate is the common part of every async command: the latency, then
// the injected failures.
// faultable reports whether failure injection applies to path.
func (a *Agent) faultable(path string) bool {
	if len(a.opts.FaultPaths) == 0 {
		return true
	}
	for _, p := range a.opts.FaultPaths {
		if p == path {
			return true
		}
	}
	return false
}

// lossy makes a VM command lose its reply at LostReplyRate: it acts, then
// sends no result.
func lossy[Cmd any](a *Agent, f agentserver.Func[Cmd, protocol.VMRsp]) agentserver.Func[Cmd, protocol.VMRsp] {
	return func(ctx context.Context, req *agentserver.Request, cmd Cmd) (protocol.VMRsp, error) {
		rsp, err := f(ctx, req, cmd)
		if a.opts.LostReplyRate > 0 && req.TaskUUID != "" && a.faultable(req.Path) && a.rand01() < a.opts.LostReplyRate {
			a.counters.injectedLostReplies.Add(1)
			return protocol.VMRsp{}, agentserver.ErrNoReply
		}
		return rsp, err
	}
}

func (a *Agent) simulate(ctx context.Context, req *agentserver.Request) error {
	if err := a.sleep(ctx); err != nil {
		return err
	}
	if req.TaskUUID == "" || !a.faultable(req.Path) {
		return nil
	}
	if a.opts.NoCallbackRate > 0 && a.rand01() < a.opts.NoCallbackRate {
		a.counters.injectedNoCallbacks.Add(1)
		return agentserver.ErrNoReply
	}
	if a.opts.FailRate > 0 && a.rand01() < a.opts.FailRate {
		a.counters.injectedFailures.Add(1)
		return errInjected
	}
	return nil
}
