package agentclient

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"mplane/agents/protocol"
	"mplane/errcode"
)

// Event is an unsolicited message from an agent.
type Event struct {
	// Path is the commandpath header, e.g. protocol.EventReportVMState.
	Path string
	// Body is the event's JSON body as sent.
	Body []byte
	// RemoteAddr is the sender's address as seen by this node (ip:port);
	// RemoteIP is its IP part. A legacy agent's event (no Secret) should be
	// accepted only from the host's registered address.
	RemoteAddr string
	RemoteIP   string
	// Secret is the protocol.SecretHeader value, "" for a Python agent.
	Secret string
	Header http.Header
	// Query is the query of the URL the agent posted to: a node can put
	// the host's UUID into the sendCommandUrl it gives an agent, so every
	// event names its host even when its body does not.
	Query url.Values
}

// EventOptions configures NewEventHandler.
type EventOptions struct {
	// Handle receives every event with a known path; required. Its error
	// sets the answer's status: that of the errcode code in the error's
	// chain (errcode.CodeOf(err).HTTPStatus(): 401 for Unauthenticated,
	// 403 for PermissionDenied, 500 for anything else...). It runs on the
	// request's goroutine: the agent waits for the answer, so hand slow
	// work off (e.g. to the bus).
	Handle func(ctx context.Context, ev Event) error
	// Authorize, if set, runs before the body is read, with the event as
	// Handle will get it but for its Body (nil): it authenticates the
	// sender from the URL and headers (Query, Secret), so that nobody can
	// make the node read a body, nor Handle run, without credentials. Its
	// error answers the event as Handle's does, the body unread.
	Authorize func(ctx context.Context, ev Event) error
	// Paths are the known command paths. Default protocol.EventPaths().
	Paths []string
	// MaxBodyBytes bounds an event body: a larger one is answered 413,
	// unread if its Content-Length says so. Default DefaultMaxEventBytes.
	MaxBodyBytes int64
	// Logger receives the handler's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultMaxEventBytes is the default EventOptions.MaxBodyBytes: 64 KiB.
// The events agents send are JSON objects of a few hundred bytes at most
// (a VM state is about 110, a progress report about 150).
const DefaultMaxEventBytes = 64 << 10

// NewEventHandler returns the handler of the management node's event
// endpoint (the sendCommandUrl given to agents): 400 without a commandpath
// header, 404 for an unknown one, 413 for a body larger than MaxBodyBytes,
// then the status of Authorize's error (checked before the body is read)
// or of Handle's, 200 when both return nil. The answer's body is a result
// envelope.
func NewEventHandler(opts EventOptions) http.Handler {
	if opts.Handle == nil {
		panic("agentclient: EventOptions.Handle is nil")
	}
	if opts.Paths == nil {
		opts.Paths = protocol.EventPaths()
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxEventBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	known := make(map[string]bool, len(opts.Paths))
	for _, p := range opts.Paths {
		known[p] = true
	}
	return &eventHandler{opts: opts, known: known}
}

type eventHandler struct {
	opts  EventOptions
	known map[string]bool
}

func (h *eventHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.Header.Get(protocol.CommandPathHeader)
	if path == "" {
		writeEnvelope(w, http.StatusBadRequest, "commandpath header missing")
		return
	}
	if !h.known[path] {
		h.opts.Logger.Warn("event with unknown commandpath", "commandpath", path, "remote_addr", r.RemoteAddr)
		writeEnvelope(w, http.StatusNotFound, "unknown commandpath "+path)
		return
	}
	if r.ContentLength > h.opts.MaxBodyBytes {
		h.tooLarge(w, r, path)
		return
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	ev := Event{
		Path:       path,
		RemoteAddr: r.RemoteAddr,
		RemoteIP:   ip,
		Secret:     r.Header.Get(protocol.SecretHeader),
		Header:     r.Header.Clone(),
		Query:      r.URL.Query(),
	}
	if h.opts.Authorize != nil {
		if err := h.opts.Authorize(r.Context(), ev); err != nil {
			h.refuse(w, r, path, err)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		h.tooLarge(w, r, path)
		return
	}
	if err != nil {
		writeEnvelope(w, http.StatusBadRequest, "read event body: "+err.Error())
		return
	}
	ev.Body = body
	if err := h.opts.Handle(r.Context(), ev); err != nil {
		h.refuse(w, r, path, err)
		return
	}
	writeEnvelope(w, http.StatusOK, "")
}

// SecretAuthorizer is an EventOptions.Authorize for events whose sender
// the URL names, in query parameter param (what the sender is: "host",
// "backup storage"), and which must carry that sender's secret in
// protocol.SecretHeader: no name is 400, no secret 401 (without a call to
// secretOf), the sender's error from secretOf (a ResourceNotFound for an
// unknown one: 404), a wrong secret 401 (compared in constant time).
// Events without the secret are refused whatever their source address.
func SecretAuthorizer(param, what string, secretOf func(ctx context.Context, uuid string) (string, error), log *slog.Logger) func(context.Context, Event) error {
	return func(ctx context.Context, ev Event) error {
		uuid := ev.Query.Get(param)
		if uuid == "" {
			return errcode.New(errcode.InvalidArgument, "event %s names no %s: no %s in the URL", ev.Path, what, param)
		}
		token := ev.Query.Get(EventTokenParam)
		if ev.Secret == "" && token == "" {
			log.Warn("agent event without secret refused", "what", what, "uuid", uuid, "path", ev.Path, "remote_ip", ev.RemoteIP)
			return errcode.New(errcode.Unauthenticated, "event for %s %s without %s", what, uuid, protocol.SecretHeader)
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		secret, err := secretOf(ctx, uuid)
		if err != nil {
			return err
		}
		if ev.Secret == "" {
			// An agent that cannot send the header (ZStack's Python
			// agents) posts to the sendCommandUrl it was given, whose
			// token is derived from the secret.
			if subtle.ConstantTimeCompare([]byte(token), []byte(EventToken(secret))) != 1 {
				log.Warn("agent event with a wrong token refused", "what", what, "uuid", uuid, "path", ev.Path, "remote_ip", ev.RemoteIP)
				return errcode.New(errcode.Unauthenticated, "wrong event token for %s %s", what, uuid)
			}
			return nil
		}
		if subtle.ConstantTimeCompare([]byte(ev.Secret), []byte(secret)) != 1 {
			log.Warn("agent event with a wrong secret refused", "what", what, "uuid", uuid, "path", ev.Path, "remote_ip", ev.RemoteIP)
			return errcode.New(errcode.Unauthenticated, "wrong %s for %s %s", protocol.SecretHeader, what, uuid)
		}
		return nil
	}
}

// EventTokenParam is the query parameter of an event URL (the
// sendCommandUrl a node gives an agent at connect) that authenticates the
// events of an agent that cannot send the secret header: EventToken of
// the host's secret.
const EventTokenParam = "token"

// EventToken is the event token of secret: 128 bits of its HMAC-SHA256,
// in hex. Not the secret itself, which must not be in a URL (agents and
// proxies log URLs); it proves the poster was given the URL at connect.
func EventToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("mplane event token"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// refuse answers an event that Authorize or Handle refused, with the
// status of the error's code (500 for an error without one).
func (h *eventHandler) refuse(w http.ResponseWriter, r *http.Request, path string, err error) {
	status := errcode.CodeOf(err).HTTPStatus()
	var e *errcode.Error
	if !errors.As(err, &e) {
		status = http.StatusInternalServerError
	}
	h.opts.Logger.Info("event refused", "commandpath", path, "remote_addr", r.RemoteAddr, "err", err)
	writeEnvelope(w, status, err.Error())
}

func (h *eventHandler) tooLarge(w http.ResponseWriter, r *http.Request, path string) {
	h.opts.Logger.Warn("event body too large refused", "commandpath", path, "remote_addr", r.RemoteAddr,
		"content_length", r.ContentLength, "max_bytes", h.opts.MaxBodyBytes)
	w.Header().Set("Connection", "close")
	writeEnvelope(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("event body larger than %d bytes", h.opts.MaxBodyBytes))
}

func writeEnvelope(w http.ResponseWriter, status int, msg string) {
	body, _ := json.Marshal(protocol.Response{Success: msg == "", Error: msg})
	w.Header().Set("Content-Type", protocol.JSONContentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
