package agentclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"mplane/agents/protocol"
	"mplane/errcode"
	"mplane/uid"
)

// Result is the outcome of an async call.
type Result struct {
	TaskUUID string
	// Body is the result JSON as the agent sent it, also when Err is an
	// agent failure (its fields may say more); nil on timeout, cancellation
	// or shutdown.
	Body []byte
	// Err is nil on success; otherwise an error with code
	// errcode.AgentError (success:false, with the agent's error text as
	// details), Timeout, Canceled or ShuttingDown.
	Err error
}

// Decode unmarshals the result body into v (no-op for an empty body).
func (r Result) Decode(v any) error {
	if len(r.Body) == 0 || v == nil {
		return nil
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		return errcode.Wrap(errcode.MalformedMessage, err, "decode result of task %s", r.TaskUUID)
	}
	return nil
}

// CallOption adjusts one call.
type CallOption func(*callOptions)

type callOptions struct {
	header   http.Header
	taskUUID string
	timeout  time.Duration
}

// WithSecret sends the host's secret in protocol.SecretHeader. Use it on
// every command to a host that was given a secret at /host/connect (a
// Python agent ignores the header).
func WithSecret(secret string) CallOption {
	return WithHeader(protocol.SecretHeader, secret)
}

// WithHeader adds a request header.
func WithHeader(key, value string) CallOption {
	return func(o *callOptions) {
		if o.header == nil {
			o.header = http.Header{}
		}
		o.header.Set(key, value)
	}
}

// WithHeaders sets every header of h on the request (see WithHeader).
func WithHeaders(h http.Header) CallOption {
	return func(o *callOptions) {
		if o.header == nil {
			o.header = http.Header{}
		}
		for k, vs := range h {
			for _, v := range vs {
				o.header.Set(k, v)
			}
		}
	}
}

// WithTimeout bounds the call to d from now, within the context's deadline.
func WithTimeout(d time.Duration) CallOption {
	return func(o *callOptions) { o.timeout = d }
}

// WithTaskUUID sets the task UUID instead of a random one. Sending again a
// command whose task is still running on the agent is ignored there; the
// task UUID must not be pending in this client. Results are authenticated
// by the call's token (CallbackTokenParam), not by the task UUID, which
// therefore need not be secret, only unique.
func WithTaskUUID(id string) CallOption {
	return func(o *callOptions) { o.taskUUID = id }
}

func (c *Client) deadline(ctx context.Context, now time.Time, o *callOptions) time.Time {
	d := now.Add(c.opts.DefaultTimeout)
	if ctxd, ok := ctx.Deadline(); ok {
		d = ctxd
	}
	if o.timeout > 0 && now.Add(o.timeout).Before(d) {
		d = now.Add(o.timeout)
	}
	return d
}

// Call sends an async command and waits for its result: it returns nil when
// a success result arrived (decoded into rsp unless rsp is nil), or an
// error (see Result.Err; on an agent failure rsp is still filled with the
// result's fields). The call's deadline is ctx's, or Options.DefaultTimeout
// from now; at the deadline it fails with errcode.Timeout and its record is
// dropped. Errors sending the command are errcode.AgentError (Retryable
// when the agent could not be reached at all, so the command surely did
// not run).
func (c *Client) Call(ctx context.Context, agentURL, path string, cmd, rsp any, opts ...CallOption) error {
	ch := make(chan Result, 1)
	if err := c.Start(ctx, agentURL, path, cmd, func(r Result) { ch <- r }, opts...); err != nil {
		return err
	}
	r := <-ch
	if err := r.Decode(rsp); err != nil && r.Err == nil {
		return err
	}
	return r.Err
}

// Start is Call without waiting: it posts the command and returns once the
// agent has acknowledged it. Then done is called exactly once, with the
// result, or with a timeout at the deadline, a cancellation when ctx ends,
// or a shutdown error from Close. If Start returns an error, done is never
// called.
//
// done runs on the goroutine that completes the call (the callback
// handler's, after the agent's callback has been answered, or a timer's);
// it must not block for long. It may run before Start returns.
//
// No goroutine waits on behalf of a pending call: it is a table entry, a
// timer and a context hook.
func (c *Client) Start(ctx context.Context, agentURL, path string, cmd any, done func(Result), opts ...CallOption) error {
	if c.opts.CallbackURL == "" {
		return errcode.New(errcode.InvalidArgument, "agentclient: Options.CallbackURL is empty; async calls need it")
	}
	o := applyOptions(opts)
	now := time.Now()
	deadline := c.deadline(ctx, now, o)
	if err := ctx.Err(); err != nil {
		return errcode.Wrap(codeOfContextErr(err), err, "agent %s%s: not sent", agentURL, path)
	}
	if !deadline.After(now) {
		return errcode.New(errcode.Timeout, "agent %s%s: deadline passed before sending", agentURL, path)
	}
	body, err := encodeCommand(cmd, true, deadline.Sub(now))
	if err != nil {
		return errcode.Wrap(errcode.InvalidArgument, err, "encode command for %s%s", agentURL, path)
	}
	id := o.taskUUID
	if id == "" {
		id = uid.New()
	}
	token := newToken()
	cl := &call{taskUUID: id, token: token, agentURL: agentURL, path: path, started: now, deadline: deadline, done: done}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errcode.New(errcode.ShuttingDown, "agent %s%s: client closed", agentURL, path)
	}
	if _, dup := c.pending[id]; dup {
		c.mu.Unlock()
		return errcode.New(errcode.Conflict, "agent %s%s: task %s is already pending", agentURL, path, id)
	}
	// The hooks are set before the lock is released, so whoever takes the
	// call finds them; if one fires at once it waits for the lock.
	c.pending[id] = cl
	cl.timer = time.AfterFunc(deadline.Sub(now), func() { c.expire(id) })
	cl.stopCtx = context.AfterFunc(ctx, func() { c.cancelled(ctx, id) })
	c.mu.Unlock()
	c.stats.started.Add(1)

	h := http.Header{}
	h.Set(protocol.TaskUUIDHeader, id)
	h.Set(protocol.CallbackURLHeader, c.callbackURL(token))
	postCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	_, err = c.post(postCtx, agentURL, path, body, h, o.header, false)
	if err == nil {
		return nil
	}
	if c.take(id, outcomeSendFailed) == nil {
		// The call ended meanwhile (its result, deadline or cancellation
		// came first), and done has been or is being called.
		return nil
	}
	switch {
	case errcode.Has(err, errcode.Timeout):
		c.stats.timedOut.Add(1)
	case errcode.Has(err, errcode.Canceled):
		c.stats.canceled.Add(1)
	default:
		c.stats.sendFailed.Add(1)
	}
	return err
}

// CallbackTokenParam is the query parameter of the callback URL sent with
// each async command (the callbackurl header) that carries the call's
// token: 128 random bits in hex, one per call. The agent posts its result
// to that URL as given (the Python framework and agents/agentserver both
// do), and CallbackHandler accepts a result only with its call's token.
const CallbackTokenParam = "token"

// newToken is a call's callback token: 128 bits from crypto/rand, in hex.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand.Read crashes the program rather than return an error)
	return hex.EncodeToString(b[:])
}

// callbackURL is Options.CallbackURL with the call's token as a query
// parameter.
func (c *Client) callbackURL(token string) string {
	sep := "?"
	if strings.Contains(c.opts.CallbackURL, "?") {
		sep = "&"
	}
	return c.opts.CallbackURL + sep + CallbackTokenParam + "=" + token
}

// CallSync sends a command to a sync path (e.g. /host/connect, /host/echo)
// and decodes the answer into rsp (unless rsp is nil or the body empty, as
// /host/echo's is). A nil cmd sends an empty body. Errors are as for Call.
func (c *Client) CallSync(ctx context.Context, agentURL, path string, cmd, rsp any, opts ...CallOption) error {
	c.stats.syncCalls.Add(1)
	err := c.callSync(ctx, agentURL, path, cmd, rsp, opts)
	if err != nil {
		c.stats.syncFailed.Add(1)
	}
	return err
}

func (c *Client) callSync(ctx context.Context, agentURL, path string, cmd, rsp any, opts []CallOption) error {
	o := applyOptions(opts)
	now := time.Now()
	deadline := c.deadline(ctx, now, o)
	body, err := encodeCommand(cmd, false, deadline.Sub(now))
	if err != nil {
		return errcode.Wrap(errcode.InvalidArgument, err, "encode command for %s%s", agentURL, path)
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	answer, err := c.post(ctx, agentURL, path, body, nil, o.header, true)
	if err != nil {
		return err
	}
	if err := resultError(agentURL, path, answer, ""); err != nil {
		if rsp != nil {
			_ = json.Unmarshal(answer, rsp)
		}
		return err
	}
	if rsp != nil && len(bytes.TrimSpace(answer)) > 0 {
		if err := json.Unmarshal(answer, rsp); err != nil {
			return errcode.Wrap(errcode.MalformedMessage, err, "decode answer of %s%s", agentURL, path)
		}
	}
	return nil
}

func applyOptions(opts []CallOption) *callOptions {
	o := &callOptions{}
	for _, f := range opts {
		f(o)
	}
	return o
}

// post sends one command and returns the answer's body (read only when
// readBody is set; an async acknowledgement's body is drained).
func (c *Client) post(ctx context.Context, agentURL, path string, body []byte, h, extra http.Header, readBody bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, joinURL(agentURL, path), bytes.NewReader(body))
	if err != nil {
		return nil, errcode.Wrap(errcode.InvalidArgument, err, "agent %s%s", agentURL, path)
	}
	for k, vs := range extra {
		req.Header[k] = vs
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", protocol.JSONContentTypeCharset)
	rsp, err := c.http.Do(req)
	if err != nil {
		return nil, transportError(ctx, agentURL, path, err)
	}
	defer rsp.Body.Close()
	var answer []byte
	if readBody || rsp.StatusCode != http.StatusOK {
		answer, err = io.ReadAll(io.LimitReader(rsp.Body, c.opts.MaxResultBytes+1))
		if err != nil {
			return nil, transportError(ctx, agentURL, path, err)
		}
		if int64(len(answer)) > c.opts.MaxResultBytes {
			return nil, errcode.New(errcode.AgentError, "agent %s%s: answer larger than %d bytes", agentURL, path, c.opts.MaxResultBytes)
		}
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(rsp.Body, 64<<10))
	}
	if rsp.StatusCode != http.StatusOK {
		return nil, statusError(agentURL, path, rsp.StatusCode, answer)
	}
	return answer, nil
}

func joinURL(base, path string) string {
	return strings.TrimRight(base, "/") + "/" + strings.TrimLeft(path, "/")
}

// encodeCommand marshals cmd without nulls in arrays and, for a JSON object,
// adds the remaining time in protocol.TimeoutField (unless cmd has it). A
// nil cmd is an empty body for a sync call and {} for an async one (the
// Python async handlers parse their body).
func encodeCommand(cmd any, async bool, remaining time.Duration) ([]byte, error) {
	if cmd == nil {
		if !async {
			return nil, nil
		}
		cmd = struct{}{}
	}
	data, err := protocol.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if len(data) < 2 || data[0] != '{' || bytes.Contains(data, []byte(`"`+protocol.TimeoutField+`"`)) {
		return data, nil
	}
	ms := max(remaining.Milliseconds(), 1)
	field := `"` + protocol.TimeoutField + `":` + strconv.FormatInt(ms, 10)
	out := make([]byte, 0, len(data)+len(field)+1)
	out = append(out, '{')
	out = append(out, field...)
	if rest := bytes.TrimSpace(data[1:]); len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, data[1:]...), nil
}

// expire fails a call at its deadline.
func (c *Client) expire(id string) {
	cl := c.take(id, outcomeTimeout)
	if cl == nil {
		return
	}
	c.stats.timedOut.Add(1)
	cl.finish(Result{TaskUUID: id, Err: errcode.New(errcode.Timeout,
		"agent %s%s (task %s) sent no result within %v", cl.agentURL, cl.path, id,
		cl.deadline.Sub(cl.started).Round(time.Millisecond))})
}

// cancelled fails a call whose context ended before its result came.
func (c *Client) cancelled(ctx context.Context, id string) {
	why := outcomeCanceled
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		why = outcomeTimeout
	}
	cl := c.take(id, why)
	if cl == nil {
		return
	}
	if why == outcomeTimeout {
		c.stats.timedOut.Add(1)
	} else {
		c.stats.canceled.Add(1)
	}
	cl.finish(Result{TaskUUID: id, Err: errcode.Wrap(codeOfContextErr(ctx.Err()), context.Cause(ctx),
		"agent %s%s (task %s): caller stopped waiting", cl.agentURL, cl.path, id)})
}

func codeOfContextErr(err error) errcode.Code {
	if errors.Is(err, context.DeadlineExceeded) {
		return errcode.Timeout
	}
	return errcode.Canceled
}

// resultError interprets a result or sync answer body: nil for success, an
// errcode.AgentError carrying the agent's error text otherwise. The Content
// -Type is never looked at (the Python agent says text/html).
//
// An empty body is a success (a Python handler that returned nothing). A
// body without "success" is a success unless its "error" is non-empty.
// errHeader is the Python framework's "error" header, set when a handler
// raised outside @replyerror; the body is then a traceback.
func resultError(agentURL, path string, body []byte, errHeader string) error {
	if errHeader != "" {
		return agentFailure(agentURL, path, errHeader)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil
	}
	var env struct {
		Success *bool   `json:"success"`
		Error   *string `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return errcode.Wrap(errcode.AgentError, err, "agent %s%s: answer is not a JSON object: %.200q", agentURL, path, body)
	}
	text := ""
	if env.Error != nil {
		text = *env.Error
	}
	ok := text == ""
	if env.Success != nil {
		ok = *env.Success
	}
	if ok {
		return nil
	}
	if text == "" {
		text = "agent reported a failure without a message"
	}
	return agentFailure(agentURL, path, text)
}

func agentFailure(agentURL, path, text string) error {
	return fmt.Errorf("agent %s%s: %w", agentURL, path, errcode.New(errcode.AgentError, "%s", text))
}
