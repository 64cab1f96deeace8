package host

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"time"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/cloudbus"
	"mplane/errcode"
	"mplane/managementnode"
)

// EventHandler is this node's event endpoint (the sendCommandUrl agents
// get): it finds the host an event is about (the hostUuid query this node
// put in the URL, or the body's hostUuid) and hands the event to the host's
// owner over the bus, which authenticates it before anything acts on it.
func (s *Service) EventHandler() http.Handler {
	return agentclient.NewEventHandler(agentclient.EventOptions{Logger: s.log, Handle: s.routeEvent})
}

func (s *Service) routeEvent(ctx context.Context, ev agentclient.Event) error {
	hostUUID := ev.Query.Get("hostUuid")
	if hostUUID == "" {
		var b struct {
			HostUUID string `json:"hostUuid"`
		}
		_ = json.Unmarshal(ev.Body, &b)
		hostUUID = b.HostUUID
	}
	if hostUUID == "" {
		return errcode.New(errcode.InvalidArgument, "event %s names no host: no hostUuid in the URL or the body", ev.Path)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := managementnode.CallOwner(ctx, s.node, msgAgentEvent,
		agentEventReq{HostUUID: hostUUID, Path: ev.Path, Body: ev.Body, Secret: ev.Secret, RemoteIP: ev.RemoteIP})
	return err
}

// onEvent runs on the host's owner: an event from our agent must carry the
// host's secret; one without (a legacy Python agent) is accepted only from
// the host's registered address.
func (s *Service) onEvent(ctx context.Context, req agentEventReq) (cloudbus.Empty, error) {
	h, err := s.load(ctx, req.HostUUID)
	if err != nil {
		return cloudbus.Empty{}, err
	}
	switch {
	case req.Secret != "":
		if subtle.ConstantTimeCompare([]byte(req.Secret), []byte(h.Secret)) != 1 {
			s.log.Warn("agent event with a wrong secret refused", "host_uuid", h.UUID, "path", req.Path, "remote_ip", req.RemoteIP)
			return cloudbus.Empty{}, errcode.New(errcode.Unauthenticated, "wrong %s for host %s", protocol.SecretHeader, h.UUID)
		}
	case req.RemoteIP != h.ManagementIP:
		s.log.Warn("agent event without secret from another address refused", "host_uuid", h.UUID, "path", req.Path, "remote_ip", req.RemoteIP)
		return cloudbus.Empty{}, errcode.New(errcode.PermissionDenied, "event for host %s without %s must come from %s", h.UUID, protocol.SecretHeader, h.ManagementIP)
	}
	if req.Path == protocol.EventReconnectMe && s.ctx.Err() == nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			rctx, cancel := context.WithTimeout(s.ctx, time.Minute)
			defer cancel()
			if err := s.reconnect(rctx, h); err != nil {
				s.log.Warn("reconnect asked by the agent failed", "host_uuid", h.UUID, "err", err)
			}
		}()
	}
	s.hooksMu.RLock()
	hooks := append([]func(context.Context, AgentEvent){}, s.hooks...)
	s.hooksMu.RUnlock()
	for _, fn := range hooks {
		fn(ctx, AgentEvent{HostUUID: h.UUID, Path: req.Path, Body: req.Body})
	}
	return cloudbus.Empty{}, nil
}
