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

// EventHandler is this node's event endpoint (the sendCommandUrl agents
// get). Before it reads a body it authenticates the event
// (agentclient.SecretAuthorizer): the host named by the hostUuid query this
// node put in the URL, the host's secret in protocol.SecretHeader; events
// without it are refused whatever their source, since the host's
// registered address proves nothing (every host of an embedded cloud is
// 127.0.0.1). Then it hands the event to the host's owner over the bus,
// which checks the secret again before anything acts on it.
func (s *Service) EventHandler() http.Handler {
	return agentclient.NewEventHandler(agentclient.EventOptions{Logger: s.log, Handle: s.routeEvent,
		Authorize: agentclient.SecretAuthorizer("hostUuid", "host", func(ctx context.Context, uuid string) (string, error) {
			h, err := s.load(ctx, uuid)
			if err != nil {
				return "", err
			}
			return h.Secret, nil
		}, s.log)})
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
