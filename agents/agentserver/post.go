package agentserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"mplane/agents/protocol"
)

// post sends body to url, retrying on connection errors every
// CallbackRetryInterval until CallbackRetryLimit has passed since the first
// attempt. Any HTTP answer, whatever its status, counts as delivered: that
// is what the Python framework does, and why receivers must be idempotent.
// retries counts attempts beyond the first, as they happen.
func (s *Server) post(ctx context.Context, url string, body []byte, h http.Header, retries *atomic.Uint64) (attempts int, err error) {
	first := time.Now()
	for {
		attempts++
		if attempts > 1 {
			retries.Add(1)
		}
		err = s.attempt(ctx, url, body, h)
		if err == nil {
			return attempts, nil
		}
		if ctx.Err() != nil {
			return attempts, err
		}
		if time.Since(first)+s.opts.CallbackRetryInterval > s.opts.CallbackRetryLimit {
			return attempts, fmt.Errorf("gave up after %d attempts: %w", attempts, err)
		}
		s.log.Debug("post failed, retrying", "url", url, "attempt", attempts, "err", err)
		t := time.NewTimer(s.opts.CallbackRetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempts, err
		case <-t.C:
		}
	}
}

func (s *Server) attempt(ctx context.Context, url string, body []byte, h http.Header) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.CallbackAttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	rsp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	// Drain so the connection can be reused; the answer's content is of
	// no interest.
	_, _ = io.Copy(io.Discard, io.LimitReader(rsp.Body, 64<<10))
	_ = rsp.Body.Close()
	return nil
}

// PostEvent posts an unsolicited event to url (the sendCommandUrl given at
// connect) with header commandpath, retrying on connection errors like a
// result. header adds headers (e.g. protocol.SecretHeader); it may be nil.
// It blocks until the event is delivered, the retries are exhausted, ctx
// ends or the server shuts down hard.
func (s *Server) PostEvent(ctx context.Context, url, commandPath string, body any, header http.Header) error {
	data, err := protocol.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode event %s: %w", commandPath, err)
	}
	h := http.Header{}
	for k, vs := range header {
		h[http.CanonicalHeaderKey(k)] = vs
	}
	h.Set("Content-Type", protocol.JSONContentType)
	h.Set(protocol.CommandPathHeader, commandPath)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	unhook := context.AfterFunc(s.baseCtx, stop)
	defer unhook()
	_, err = s.post(ctx, url, data, h, &s.stats.eventRetries)
	if err != nil {
		s.stats.eventsFailed.Add(1)
		return fmt.Errorf("post event %s to %s: %w", commandPath, url, err)
	}
	s.stats.eventsDelivered.Add(1)
	return nil
}
