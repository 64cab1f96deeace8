package agentserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"mplane/agents/protocol"
)

// Request is what a handler knows of the command besides its body.
type Request struct {
	// Path is the registered path ("/vm/start").
	Path string
	// TaskUUID and CallbackURL are empty for sync commands.
	TaskUUID    string
	CallbackURL string
	Header      http.Header
	RemoteAddr  string
	// Arrived is when the framework received the command.
	Arrived time.Time
	// Deadline is Arrived plus the command's timeoutMs (protocol.TimeoutField);
	// zero when the command has none. The handler's context ends then.
	Deadline time.Time
	// Body is the command as received.
	Body []byte
}

func newRequest(r *http.Request, rt *route, body []byte) *Request {
	req := &Request{
		Path:       rt.path,
		Header:     r.Header.Clone(),
		RemoteAddr: r.RemoteAddr,
		Arrived:    time.Now(),
		Body:       body,
	}
	if rt.kind == Async {
		req.TaskUUID = r.Header.Get(protocol.TaskUUIDHeader)
		req.CallbackURL = r.Header.Get(protocol.CallbackURLHeader)
	}
	if ms, ok := timeoutMs(body); ok {
		req.Deadline = req.Arrived.Add(time.Duration(ms) * time.Millisecond)
	}
	return req
}

func timeoutMs(body []byte) (int64, bool) {
	if len(body) == 0 {
		return 0, false
	}
	var v struct {
		TimeoutMs *int64 `json:"timeoutMs"`
	}
	if json.Unmarshal(body, &v) != nil || v.TimeoutMs == nil || *v.TimeoutMs <= 0 {
		return 0, false
	}
	return *v.TimeoutMs, true
}

func (r *Request) context(parent context.Context) (context.Context, context.CancelFunc) {
	if r.Deadline.IsZero() {
		return context.WithCancel(parent)
	}
	return context.WithDeadline(parent, r.Deadline)
}

// Func handles one command: cmd is the decoded body (zero for an empty
// body). A nil error gives a success result built from rsp; an error gives
// {"success":false,"error":err.Error()} plus rsp's fields, like a Python
// handler that sets rsp.success = False. Returning ErrNoReply sends no
// result at all.
type Func[Cmd, Rsp any] func(ctx context.Context, req *Request, cmd Cmd) (Rsp, error)

// ErrNoReply, returned by an async handler, makes the framework post no
// result: for the management node the command looks like one whose handler
// crashed, and only its deadline ends the wait. A sync handler returning
// it gets a 500 answer. Used for failure injection.
var ErrNoReply = errors.New("agentserver: no reply")

// invoker runs a handler on a request and encodes its result.
type invoker func(ctx context.Context, req *Request) outcome

type outcome struct {
	result []byte
	// reply is false when the handler asked for no reply.
	reply bool
	// expired is set when the handler failed because the command's own
	// deadline (timeoutMs) passed: nobody waits for that result.
	expired bool
}

// HandleSync registers h for path (and path + "/") as a sync endpoint.
func HandleSync[Cmd, Rsp any](s *Server, path string, h Func[Cmd, Rsp]) {
	s.register(&route{path: path, kind: Sync, invoke: invokerOf(s, h)})
}

// HandleAsync registers h for path (and path + "/") as an async endpoint.
func HandleAsync[Cmd, Rsp any](s *Server, path string, h Func[Cmd, Rsp]) {
	s.register(&route{path: path, kind: Async, invoke: invokerOf(s, h)})
}

func invokerOf[Cmd, Rsp any](s *Server, h Func[Cmd, Rsp]) invoker {
	return func(ctx context.Context, req *Request) outcome {
		var cmd Cmd
		if len(req.Body) > 0 {
			if err := json.Unmarshal(req.Body, &cmd); err != nil {
				// The Python handler's jsonobject.loads raises, and
				// @replyerror turns that into a failure result.
				return outcome{result: encodeResult(nil, fmt.Errorf("decode command for %s: %w", req.Path, err)), reply: true}
			}
		}
		rsp, err := call(s, ctx, req, cmd, h)
		if errors.Is(err, ErrNoReply) {
			return outcome{}
		}
		expired := err != nil && errors.Is(err, context.DeadlineExceeded) &&
			!req.Deadline.IsZero() && !time.Now().Before(req.Deadline)
		return outcome{result: encodeResult(rsp, err), reply: true, expired: expired}
	}
}

// call runs h, turning a panic into an error, as kvmagent's @replyerror
// turns an exception into a failure result.
func call[Cmd, Rsp any](s *Server, ctx context.Context, req *Request, cmd Cmd, h Func[Cmd, Rsp]) (rsp Rsp, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.stats.panics.Add(1)
			s.log.Error("handler panicked", "path", req.Path, "task_uuid", req.TaskUUID,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			var zero Rsp
			rsp, err = zero, fmt.Errorf("agent handler for %s panicked: %v", req.Path, p)
		}
	}()
	return h(ctx, req, cmd)
}

// encodeResult builds the result envelope: rsp's fields (nulls left out)
// with success and error set from herr. It never fails: a result that
// cannot be encoded becomes a failure result saying why.
func encodeResult(rsp any, herr error) []byte {
	fields := map[string]any{}
	if rsp != nil {
		data, err := json.Marshal(rsp)
		if err == nil {
			fields, err = protocol.Object(data)
		}
		if err != nil {
			fields = map[string]any{}
			herr = errors.Join(herr, fmt.Errorf("encode result: %w", err))
		}
	}
	if herr != nil {
		msg := herr.Error()
		if msg == "" {
			msg = "agent reported a failure without a message"
		}
		fields["success"] = false
		fields["error"] = msg
	} else {
		fields["success"] = true
		fields["error"] = ""
	}
	out, err := json.Marshal(fields)
	if err != nil {
		// Unreachable: fields holds only values decoded from JSON.
		out = []byte(`{"success":false,"error":"encode result"}`)
	}
	return out
}
