package managementnode

import (
	"context"
	"time"

	"mplane/cloudbus"
)

// probe answers for a resource this node owns (the guard made sure).
func (n *Node) probe(ctx context.Context, req ProbeReq) (ProbeReply, error) {
	if req.SleepMs > 0 {
		select {
		case <-time.After(time.Duration(req.SleepMs) * time.Millisecond):
		case <-ctx.Done():
		}
	}
	n.probes.Add(1)
	hops := 0
	if env := cloudbus.EnvelopeFrom(ctx); env != nil {
		hops = env.Hops
	}
	return ProbeReply{NodeUUID: n.uuid, Epoch: n.Ring().Epoch, Hops: hops}, nil
}

// Probe sends a probe for resource through this node's ring.
func (n *Node) Probe(ctx context.Context, resource string, sleep time.Duration) (ProbeReply, error) {
	target, err := n.TargetFor(Service, resource)
	if err != nil {
		return ProbeReply{}, err
	}
	return cloudbus.Call(ctx, n.bus, target, MsgProbe, ProbeReq{ResourceUUID: resource, SleepMs: int(sleep / time.Millisecond)},
		cloudbus.WithResource(resource))
}
