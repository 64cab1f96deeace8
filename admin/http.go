package admin

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"mplane/errcode"
)

// HandlerOptions configure the HTTP transport.
type HandlerOptions struct {
	// Prefix is where the handler is mounted; default "/admin/".
	Prefix string
	// Mutating serves the commands that are not ReadOnly (config set,
	// profiles, exit, respawn...). Without it they answer 403: serve them
	// only on a listener that only operators reach.
	Mutating bool
}

// Handler serves t over HTTP: GET and POST /admin/<words...> answer the
// bare result (GET for ReadOnly commands only), POST /admin/command takes
// a Request and answers a Response. Arguments come from the path words
// after the command, then from query parameters (Arg.Query), in order.
func Handler(t *Table, opts HandlerOptions) http.Handler {
	if opts.Prefix == "" {
		opts.Prefix = "/admin/"
	}
	return &handler{t: t, opts: opts}
}

type handler struct {
	t    *Table
	opts HandlerOptions
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, h.opts.Prefix)
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		writeErr(w, http.StatusMethodNotAllowed, errcode.New(errcode.InvalidArgument, "method %s: use GET (read-only commands) or POST", r.Method))
		return
	}
	if path == "command" {
		h.envelope(w, r)
		return
	}
	var words []string
	for _, p := range strings.Split(path, "/") {
		if p != "" {
			words = append(words, p)
		}
	}
	c, args, err := h.t.Find(words)
	if err != nil {
		writeErr(w, 0, err)
		return
	}
	args, err = queryArgs(c, args, r)
	if err != nil {
		writeErr(w, 0, err)
		return
	}
	if !c.ReadOnly && r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeErr(w, http.StatusMethodNotAllowed, errcode.New(errcode.InvalidArgument,
			"%s changes the node: POST %s%s, or POST %scommand", c.Name, h.opts.Prefix, strings.ReplaceAll(c.Name, " ", "/"), h.opts.Prefix))
		return
	}
	if err := h.allowed(c); err != nil {
		writeErr(w, 0, err)
		return
	}
	o := h.t.run(r.Context(), c, args)
	if o.Err != nil {
		writeErr(w, 0, o.Err)
		o.Finish()
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(o.Result); err != nil {
		writeErr(w, 0, err)
		return
	}
	write(w, http.StatusOK, buf.Bytes())
	o.Finish()
}

// envelope serves POST /admin/command.
func (h *handler) envelope(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeEnvelope(w, http.StatusMethodNotAllowed, &Outcome{Err: errcode.New(errcode.InvalidArgument,
			`POST a request: {"command": ["status"]}`)})
		return
	}
	var req Request
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
	switch {
	case err != nil:
		writeEnvelope(w, 0, &Outcome{Err: errcode.Wrap(errcode.MalformedMessage, err, "read the request")})
		return
	case len(body) > maxRequest:
		writeEnvelope(w, 0, &Outcome{Err: errcode.New(errcode.MalformedMessage, "request longer than %d bytes", maxRequest)})
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeEnvelope(w, 0, &Outcome{Err: errcode.New(errcode.MalformedMessage, `want a JSON request such as {"command": ["status"]}: %v`, err)})
		return
	}
	c, args, err := h.t.Find(req.Command)
	if err == nil {
		err = h.allowed(c)
	}
	if err != nil {
		writeEnvelope(w, 0, &Outcome{Err: err})
		return
	}
	o := h.t.run(r.Context(), c, args)
	writeEnvelope(w, 0, o)
	o.Finish()
}

func (h *handler) allowed(c *Command) error {
	if c.ReadOnly || h.opts.Mutating {
		return nil
	}
	return errcode.New(errcode.PermissionDenied,
		"%s changes the node and is not served on this listener: use the admin socket (mplane daemon) or the admin listener (admin_listen)", c.Name)
}

// queryArgs appends to args the arguments given as query parameters.
func queryArgs(c *Command, args []string, r *http.Request) ([]string, error) {
	q := r.URL.Query()
	known := map[string]bool{}
	gap := ""
	for i, a := range c.Args {
		known[a.query()] = true
		vals, ok := q[a.query()]
		if i < len(args) {
			if ok {
				return nil, errcode.New(errcode.InvalidArgument, "%s: %s given twice (path and query parameter %s)", c.Name, a.Name, a.query())
			}
			continue
		}
		if !ok {
			if gap == "" {
				gap = a.Name
			}
			continue
		}
		if gap != "" {
			return nil, errcode.New(errcode.InvalidArgument, "%s: %s given without %s; usage: %s", c.Name, a.Name, gap, c.Usage())
		}
		if len(vals) > 1 && !a.Variadic {
			return nil, errcode.New(errcode.InvalidArgument, "%s: query parameter %s given %d times", c.Name, a.query(), len(vals))
		}
		args = append(args, vals...)
	}
	for k := range q {
		if !known[k] {
			return nil, errcode.New(errcode.InvalidArgument, "%s: unknown query parameter %q; usage: %s", c.Name, k, c.Usage())
		}
	}
	return args, nil
}

// writeErr answers {"error": {...}} with status, or the code's status.
func writeErr(w http.ResponseWriter, status int, err error) {
	e := errcode.From(err)
	if status == 0 {
		status = e.Code.HTTPStatus()
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	write(w, status, append(b, '\n'))
}

func writeEnvelope(w http.ResponseWriter, status int, o *Outcome) {
	a := answerOf(o)
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		a = answer{Error: errcode.From(err)}
		b, _ = json.MarshalIndent(a, "", "  ")
	}
	if status == 0 {
		status = http.StatusOK
		if a.Error != nil {
			status = a.Error.Code.HTTPStatus()
		}
	}
	write(w, status, append(b, '\n'))
}

// write sends the whole answer and flushes it, so that what runs after
// (Outcome.Finish: exit, respawn) runs once the client has it.
func write(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}
