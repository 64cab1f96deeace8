package agentclient

import (
	"crypto/subtle"
	"errors"
	"io"
	"net/http"

	"mplane/agents/protocol"
)

// CallbackHandler returns the handler agents post results to; mount it at
// the path of Options.CallbackURL. Its answers (docs/agent-protocol.md),
// all but the last given without reading the body:
//
//   - 400 without a taskuuid header;
//   - 404 for a task UUID that is not pending: never issued (forged), or
//     already completed, timed out or cancelled. A second delivery of a
//     result is thus answered 404 and ignored: the agent counts any HTTP
//     answer as delivered, so 404 acknowledges it as well as 200 would,
//     and the call is completed at most once;
//   - 403 for a pending task without the call's token in the URL
//     (CallbackTokenParam) or with another one: the post is forged (the
//     token travels only in the callbackurl of the command), and the call
//     stays pending, untouched;
//   - 413 for a result larger than Options.MaxResultBytes (by its
//     Content-Length, or once that much was read): the call fails;
//   - 200 otherwise, written before the call's done function runs, so the
//     agent is never kept waiting by the caller.
//
// Only POST is accepted (405 otherwise).
func (c *Client) CallbackHandler() http.Handler {
	return http.HandlerFunc(c.serveCallback)
}

func (c *Client) serveCallback(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "callbacks are POSTed", http.StatusMethodNotAllowed)
		return
	}
	id := r.Header.Get(protocol.TaskUUIDHeader)
	if id == "" {
		c.stats.badCallbacks.Add(1)
		http.Error(w, "No 'taskuuid' found in the header", http.StatusBadRequest)
		return
	}
	// Who may post is settled before a byte of the body is read: the
	// task must be pending and the URL must carry its call's token.
	cl := c.lookup(id)
	if cl == nil {
		c.notPending(w, id, r)
		return
	}
	if cl.token == "" || subtle.ConstantTimeCompare([]byte(r.URL.Query().Get(CallbackTokenParam)), []byte(cl.token)) != 1 {
		c.stats.rejectedCallbacks.Add(1)
		c.log.Warn("result without the call's token refused", "task_uuid", id, "agent_url", cl.agentURL,
			"path", cl.path, "remote_addr", r.RemoteAddr)
		http.Error(w, "callback for taskuuid["+id+"] without its token", http.StatusForbidden)
		return
	}
	if r.ContentLength > c.opts.MaxResultBytes {
		c.oversized(w, id, cl, r)
		return
	}
	// Read the body before taking the call, so a slow sender cannot hold
	// a taken-but-unfinished call.
	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, c.opts.MaxResultBytes))
	if _, tooLarge := errors.AsType[*http.MaxBytesError](readErr); tooLarge {
		c.oversized(w, id, cl, r)
		return
	}
	if cl = c.takeIf(id, cl, outcomeResult); cl == nil {
		// The call ended (deadline, cancellation) while the body came.
		c.notPending(w, id, r)
		return
	}
	res := Result{TaskUUID: id, Body: body}
	if readErr != nil {
		res.Body = nil
		res.Err = agentFailure(cl.agentURL, cl.path, "result could not be read: "+readErr.Error())
	} else {
		res.Err = resultError(cl.agentURL, cl.path, body, r.Header.Get(protocol.ErrorHeader))
	}
	if res.Err == nil {
		c.stats.succeeded.Add(1)
	} else {
		c.stats.failed.Add(1)
	}
	// A complete, empty answer, flushed before done runs: with the length
	// known, the flush is the whole response (no chunked terminator).
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	cl.finish(res)
}

// oversized fails call cl, whose authenticated result is larger than
// MaxResultBytes, and answers 413: the agent counts that as delivered and
// will not send it again, so the caller learns now rather than at its
// deadline.
func (c *Client) oversized(w http.ResponseWriter, id string, cl *call, r *http.Request) {
	c.stats.oversizedCallbacks.Add(1)
	if cl = c.takeIf(id, cl, outcomeResult); cl == nil {
		c.notPending(w, id, r)
		return
	}
	c.stats.failed.Add(1)
	c.log.Warn("result larger than the client accepts", "task_uuid", id, "agent_url", cl.agentURL, "path", cl.path,
		"content_length", r.ContentLength, "max_bytes", c.opts.MaxResultBytes)
	w.Header().Set("Connection", "close")
	http.Error(w, "result larger than the client accepts", http.StatusRequestEntityTooLarge)
	cl.finish(Result{TaskUUID: id, Err: agentFailure(cl.agentURL, cl.path, "result larger than the client accepts")})
}

// notPending answers 404 a result for a task nobody waits for (any more).
func (c *Client) notPending(w http.ResponseWriter, id string, r *http.Request) {
	c.unknownCallback(id, r)
	http.Error(w, "No callback found for taskuuid["+id+"]", http.StatusNotFound)
}

func (c *Client) unknownCallback(id string, r *http.Request) {
	c.mu.Lock()
	f, known := c.finished.byID[id]
	c.mu.Unlock()
	switch {
	case !known:
		c.stats.unknownCallbacks.Add(1)
		c.log.Warn("result for an unknown task", "task_uuid", id, "remote_addr", r.RemoteAddr)
	case f.outcome == outcomeResult:
		c.stats.duplicateCallbacks.Add(1)
		c.log.Debug("duplicate result ignored", "task_uuid", id, "path", f.path)
	default:
		// The caller was told the call failed, yet the agent may have
		// done the work: worth an operator's attention.
		c.stats.lateCallbacks.Add(1)
		c.log.Warn("result arrived after the call ended", "task_uuid", id,
			"agent_url", f.agentURL, "path", f.path, "remote_addr", r.RemoteAddr)
	}
}
