package agentclient

import (
	"io"
	"net/http"

	"mplane/agents/protocol"
)

// CallbackHandler returns the handler agents post results to; mount it at
// the path of Options.CallbackURL. Its answers (docs/agent-protocol.md):
//
//   - 400 without a taskuuid header;
//   - 404 for a task UUID that is not pending: never issued (forged), or
//     already completed, timed out or cancelled. A second delivery of a
//     result is thus answered 404 and ignored: the agent counts any HTTP
//     answer as delivered, so 404 acknowledges it as well as 200 would,
//     and the call is completed at most once;
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
	// Read the body before taking the call, so a slow sender cannot hold
	// a taken-but-unfinished call.
	body, readErr := io.ReadAll(io.LimitReader(r.Body, c.opts.MaxResultBytes+1))
	cl := c.take(id, outcomeResult)
	if cl == nil {
		c.unknownCallback(id, r)
		http.Error(w, "No callback found for taskuuid["+id+"]", http.StatusNotFound)
		return
	}
	res := Result{TaskUUID: id, Body: body}
	switch {
	case readErr != nil:
		res.Body = nil
		res.Err = agentFailure(cl.agentURL, cl.path, "result could not be read: "+readErr.Error())
	case int64(len(body)) > c.opts.MaxResultBytes:
		res.Body = nil
		res.Err = agentFailure(cl.agentURL, cl.path, "result larger than the client accepts")
	default:
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
