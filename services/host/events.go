package host

import (
	"bytes"
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

// maxEventBytes bounds the body of an agent's event. The events our agents
// send are at most a few hundred bytes (a VM state about 110, a progress
// report about 150); 64 KiB leaves room for kvmagent's larger ones.
const maxEventBytes = agentclient.DefaultMaxEventBytes

// EventHandler is this node's event endpoint (the sendCommandUrl agents
// get). Before it reads a body it authenticates the event (authorizeEvent):
// the host named by the hostUuid query this node put in the URL, the
// host's secret in protocol.SecretHeader. Then it hands the event to the
// host's owner over the bus, which checks the secret again before anything
// acts on it.
func (s *Service) EventHandler() http.Handler {
	return agentclient.NewEventHandler(agentclient.EventOptions{Logger: s.log, MaxBodyBytes: maxEventBytes,
		Authorize: s.authorizeEvent, Handle: s.routeEvent})
}

// authorizeEvent runs before an event's body is read: the URL must name a
// host (400), the event must carry a secret (401, without a look at the
// database), the host must exist (404) and the secret be its own (401).
// Events without a secret are refused whatever their source: the host's
// registered address proves nothing (every host of an embedded cloud is
// 127.0.0.1), so a legacy agent that cannot send the header has its events
// refused too.
func (s *Service) authorizeEvent(ctx context.Context, ev agentclient.Event) error {
	hostUUID := ev.Query.Get("hostUuid")
	if hostUUID == "" {
		return errcode.New(errcode.InvalidArgument, "event %s names no host: no hostUuid in the URL", ev.Path)
	}
	if ev.Secret == "" {
		s.log.Warn("agent event without secret refused", "host_uuid", hostUUID, "path", ev.Path, "remote_ip", ev.RemoteIP)
		return errcode.New(errcode.Unauthenticated, "event for host %s without %s", hostUUID, protocol.SecretHeader)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	h, err := s.load(ctx, hostUUID)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(ev.Secret), []byte(h.Secret)) != 1 {
		s.log.Warn("agent event with a wrong secret refused", "host_uuid", h.UUID, "path", ev.Path, "remote_ip", ev.RemoteIP)
		return errcode.New(errcode.Unauthenticated, "wrong %s for host %s", protocol.SecretHeader, h.UUID)
	}
	return nil
}

// routeEvent forwards an authenticated event to its host's owner. A body
// that is not JSON is refused (400): the bus carries it as JSON.
func (s *Service) routeEvent(ctx context.Context, ev agentclient.Event) error {
	hostUUID := ev.Query.Get("hostUuid")
	body := bytes.TrimSpace(ev.Body)
	if len(body) > 0 && !json.Valid(body) {
		return errcode.New(errcode.MalformedMessage, "event %s for host %s: the body is not JSON", ev.Path, hostUUID)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := managementnode.CallOwner(ctx, s.node, msgAgentEvent,
		agentEventReq{HostUUID: hostUUID, Path: ev.Path, Body: body, Secret: ev.Secret, RemoteIP: ev.RemoteIP})
	return err
}

// onEvent runs on the host's owner and checks the event's secret again
// (the host may have been reconnected with another since the endpoint
// looked). From the endpoint only events with the right secret come
// (authorizeEvent); the rule for one without (accepted only from the
// host's registered address) is left for other senders on the bus, and
// unreachable over HTTP.
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
