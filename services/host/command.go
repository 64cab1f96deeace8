package host

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/thread"
)

// command runs one agent command in the host's chain (at most ChainLevel at
// once per host) and answers with the agent's result. The call ends at the
// message's deadline at the latest (SYS.1001), which frees its slot.
func (s *Service) command(ctx context.Context, req AgentCommandReq) (AgentCommandRep, error) {
	if req.Path == "" || req.Path[0] != '/' {
		return AgentCommandRep{}, errcode.New(errcode.InvalidArgument, "path must be an agent command path such as /vm/start, got %q", req.Path)
	}
	h, err := s.load(ctx, req.HostUUID)
	if err != nil {
		return AgentCommandRep{}, err
	}
	if h.Status != StatusConnected {
		return AgentCommandRep{}, errcode.New(errcode.InvalidState, "host %s is %s, not Connected: command %s not sent", h.UUID, h.Status, req.Path)
	}
	cmd := req.Command
	if len(cmd) == 0 {
		cmd = json.RawMessage("{}")
	}
	return thread.Sync(ctx, s.sched, thread.Task{Signature: chainOf(h.UUID), Name: req.Path, Level: s.opts.ChainLevel},
		func(ctx context.Context) (AgentCommandRep, error) {
			// The wait for the chain may have been long: a node past its
			// lease (frozen, cut off) sends nothing before renewing it.
			if err := s.node.CheckLease(ctx); err != nil {
				return AgentCommandRep{}, err
			}
			var out json.RawMessage
			var err error
			opts := []agentclient.CallOption{agentclient.WithSecret(h.Secret), s.fence()}
			if req.Storage != "" {
				opts = append(opts, agentclient.WithHeader(protocol.StorageHeader, req.Storage))
			}
			if protocol.IsSync(req.Path) {
				err = s.agents.CallSync(ctx, s.agentURL(h), req.Path, cmd, &out, opts...)
			} else {
				err = s.agents.Call(ctx, s.agentURL(h), req.Path, cmd, &out, opts...)
			}
			if err != nil {
				return AgentCommandRep{}, err
			}
			return AgentCommandRep{Result: out}, nil
		})
}

// fence is the fencing token this node sends with every command to a host
// it owns (protocol.FenceHeader): its ring epoch, with its own UUID
// (protocol.NodeHeader). A node that was replaced
// as the host's owner sends an older epoch than its successor, and the
// agent refuses it.
func (s *Service) fence() agentclient.CallOption {
	return agentclient.WithHeaders(http.Header{
		protocol.FenceHeader: {strconv.FormatInt(s.node.Ring().Epoch, 10)},
		protocol.NodeHeader:  {s.node.UUID()},
	})
}
