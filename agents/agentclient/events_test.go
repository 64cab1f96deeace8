package agentclient_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"mplane/agents/agentclient"
	"mplane/agents/protocol"
	"mplane/errcode"
)

// TestEventAuthorizeRunsBeforeTheBody: Authorize sees the event's URL and
// headers, and its refusal answers the event without a byte of the body
// read or Handle run; a body announced larger than MaxBodyBytes is refused
// with 413 unread, one without a length once the limit is passed; the
// default limit is 64 KiB.
func TestEventAuthorizeRunsBeforeTheBody(t *testing.T) {
	var authorized, handled atomic.Int32
	opts := agentclient.EventOptions{
		Authorize: func(_ context.Context, ev agentclient.Event) error {
			authorized.Add(1)
			if ev.Body != nil {
				t.Errorf("Authorize got a body")
			}
			if ev.Query.Get("hostUuid") != "h1" || ev.Secret != "s1" {
				return errcode.New(errcode.Unauthenticated, "who are you")
			}
			return nil
		},
		Handle: func(_ context.Context, ev agentclient.Event) error {
			handled.Add(1)
			return nil
		},
	}
	h := agentclient.NewEventHandler(opts)
	send := func(h http.Handler, query, secret string, length int64, chunked bool) (int, int64) {
		t.Helper()
		body := &countingBody{n: length}
		req := httptest.NewRequest(http.MethodPost, protocol.DefaultEventPath+query, nil)
		req.Body = body
		req.ContentLength = length
		if chunked {
			req.ContentLength = -1
		}
		req.Header.Set(protocol.CommandPathHeader, protocol.EventReportVMState)
		if secret != "" {
			req.Header.Set(protocol.SecretHeader, secret)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, body.read.Load()
	}

	for _, tc := range []struct {
		name, query, secret string
	}{
		{"no secret", "?hostUuid=h1", ""},
		{"wrong secret", "?hostUuid=h1", "guess"},
		{"no host", "", "s1"},
	} {
		for _, chunked := range []bool{false, true} {
			if status, read := send(h, tc.query, tc.secret, 1<<10, chunked); status != http.StatusUnauthorized || read != 0 {
				t.Errorf("%s (chunked %v): %d after reading %d bytes; want 401, nothing read", tc.name, chunked, status, read)
			}
		}
	}
	if handled.Load() != 0 {
		t.Fatalf("Handle ran %d times for refused events", handled.Load())
	}
	before := authorized.Load()
	if status, read := send(h, "?hostUuid=h1", "s1", agentclient.DefaultMaxEventBytes+1, false); status != http.StatusRequestEntityTooLarge || read != 0 {
		t.Errorf("announced too large: %d after reading %d bytes; want 413, nothing read", status, read)
	}
	if authorized.Load() != before {
		t.Error("Authorize ran for an event refused by its length")
	}
	if status, read := send(h, "?hostUuid=h1", "s1", 16<<20, true); status != http.StatusRequestEntityTooLarge || read > 2*agentclient.DefaultMaxEventBytes {
		t.Errorf("too large without a length: %d after reading %d bytes; want 413 near the limit", status, read)
	}
	if status, _ := send(h, "?hostUuid=h1", "s1", agentclient.DefaultMaxEventBytes, false); status != http.StatusOK || handled.Load() != 1 {
		t.Errorf("event at the limit: %d, handled %d times; want 200, once", status, handled.Load())
	}

	opts.MaxBodyBytes = 100
	small := agentclient.NewEventHandler(opts)
	if status, read := send(small, "?hostUuid=h1", "s1", 101, false); status != http.StatusRequestEntityTooLarge || read != 0 {
		t.Errorf("MaxBodyBytes 100, 101 bytes: %d after reading %d; want 413 unread", status, read)
	}
}

// TestSecretAuthorizer: an event carries the host's secret in the header,
// or, for an agent that cannot send it (ZStack's Python agents), the event
// token of the secret in its sendCommandUrl; nothing else is taken.
func TestSecretAuthorizer(t *testing.T) {
	auth := agentclient.SecretAuthorizer("hostUuid", "host", func(_ context.Context, uuid string) (string, error) {
		if uuid != "h1" {
			return "", errcode.New(errcode.ResourceNotFound, "host %s not found", uuid)
		}
		return "s1", nil
	}, slog.New(slog.DiscardHandler))
	ev := func(query, secret string) agentclient.Event {
		q, _ := url.ParseQuery(query)
		return agentclient.Event{Path: protocol.EventReportVMState, Query: q, Secret: secret}
	}
	token := agentclient.EventToken("s1")
	if token == "s1" || len(token) != 32 || agentclient.EventToken("s2") == token {
		t.Fatalf("EventToken %q: want 32 hex digits, not the secret, one per secret", token)
	}
	for _, tc := range []struct {
		name, query, secret string
		code                errcode.Code
	}{
		{"the secret", "hostUuid=h1", "s1", ""},
		{"the token", "hostUuid=h1&token=" + token, "", ""},
		{"neither", "hostUuid=h1", "", errcode.Unauthenticated},
		{"a wrong secret", "hostUuid=h1&token=" + token, "guess", errcode.Unauthenticated},
		{"a wrong token", "hostUuid=h1&token=" + agentclient.EventToken("guess"), "", errcode.Unauthenticated},
		{"the secret as the token", "hostUuid=h1&token=s1", "", errcode.Unauthenticated},
		{"another host", "hostUuid=h2&token=" + token, "", errcode.ResourceNotFound},
	} {
		if err := auth(context.Background(), ev(tc.query, tc.secret)); errcode.CodeOf(err) != tc.code {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.code)
		}
	}
}
