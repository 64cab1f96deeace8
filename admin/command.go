package admin

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"mplane/errcode"
)

// Arg is one positional argument of a command.
type Arg struct {
	// Name is its placeholder in the usage, upper case: KEY, SECONDS.
	Name        string `json:"name"`
	Description string `json:"description"`
	// Optional arguments come after the required ones.
	Optional bool `json:"optional,omitempty"`
	// Variadic: the last argument takes every remaining word (zero or
	// more if Optional, else one or more).
	Variadic bool `json:"variadic,omitempty"`
	// Query is the HTTP query parameter that may carry the argument
	// (GET /admin/probe?resource=...); empty means Name in lower case.
	Query string `json:"query,omitempty"`
}

func (a Arg) query() string {
	if a.Query != "" {
		return a.Query
	}
	return strings.ToLower(a.Name)
}

// Command is one admin command, defined once for every transport.
type Command struct {
	// Name is one or more lower-case words: "status", "config set".
	Name        string
	Args        []Arg
	Description string
	// ReadOnly commands only report: they are served to GET over HTTP and
	// on every listener. The others (they change the node, write files or
	// end the process) need POST and HandlerOptions.Mutating.
	ReadOnly bool
	// Run runs the command with its arguments, already counted against
	// Args. The context ends when the transport stops. The result is
	// encoded as JSON. An error is reported with its errcode (anything
	// else is SYS.1000); use errcode.InvalidArgument for bad arguments.
	Run func(ctx context.Context, args []string) (any, error)
}

// Usage is the command's synopsis: "config set KEY VALUE", "flows [all]".
func (c *Command) Usage() string {
	parts := []string{c.Name}
	for _, a := range c.Args {
		p := a.Name
		if a.Variadic {
			p += "..."
		}
		if a.Optional {
			p = "[" + p + "]"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

// checkArgs tells what is wrong with the number of args, or nil.
func (c *Command) checkArgs(args []string) error {
	required, variadic := 0, false
	for _, a := range c.Args {
		if !a.Optional {
			required++
		}
		variadic = variadic || a.Variadic
	}
	switch {
	case len(args) < required:
		return errcode.New(errcode.InvalidArgument, "%s: missing argument %s; usage: %s", c.Name, c.Args[len(args)].Name, c.Usage())
	case !variadic && len(args) > len(c.Args):
		return errcode.New(errcode.InvalidArgument, "%s: too many arguments (at most %d, got %d: %q); usage: %s",
			c.Name, len(c.Args), len(args), args, c.Usage())
	}
	return nil
}

// Table is the command set of a node. It is immutable once built, and
// safe for concurrent use.
type Table struct {
	log      *slog.Logger
	byName   map[string]*Command
	names    []string // sorted
	maxWords int
}

// NewTable builds the table of cmds plus the built-in `help`. It rejects a
// command without a name or a handler, a repeated name, and optional or
// variadic arguments that are not last. Every command run is logged at
// debug level on log (name, duration, error; never the arguments).
func NewTable(log *slog.Logger, cmds ...Command) (*Table, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Table{log: log, byName: map[string]*Command{}}
	all := append([]Command{{
		Name: "help", ReadOnly: true,
		Args:        []Arg{{Name: "COMMAND", Optional: true, Variadic: true, Description: "only the commands whose name starts with these words"}},
		Description: "list every command with its arguments and a one-line description",
		Run:         t.help,
	}}, cmds...)
	for i := range all {
		c := &all[i]
		words := strings.Fields(c.Name)
		if len(words) == 0 || strings.Join(words, " ") != c.Name || strings.ToLower(c.Name) != c.Name || strings.ContainsAny(c.Name, "/?") {
			return nil, fmt.Errorf("admin: command name %q: want lower-case words separated by one space", c.Name)
		}
		if c.Run == nil {
			return nil, fmt.Errorf("admin: command %q has no handler", c.Name)
		}
		if _, dup := t.byName[c.Name]; dup {
			return nil, fmt.Errorf("admin: command %q defined twice", c.Name)
		}
		optional := false
		for j, a := range c.Args {
			if a.Name == "" {
				return nil, fmt.Errorf("admin: command %q: argument %d has no name", c.Name, j)
			}
			if optional && !a.Optional {
				return nil, fmt.Errorf("admin: command %q: required argument %s after an optional one", c.Name, a.Name)
			}
			if a.Variadic && j != len(c.Args)-1 {
				return nil, fmt.Errorf("admin: command %q: variadic argument %s is not the last", c.Name, a.Name)
			}
			optional = optional || a.Optional
		}
		t.byName[c.Name] = c
		t.names = append(t.names, c.Name)
		t.maxWords = max(t.maxWords, len(words))
	}
	slices.Sort(t.names)
	return t, nil
}

// Commands lists the commands, sorted by name.
func (t *Table) Commands() []Command {
	out := make([]Command, len(t.names))
	for i, n := range t.names {
		out[i] = *t.byName[n]
	}
	return out
}

// Find returns the command the words name (the longest match) and the
// words after it, its arguments.
func (t *Table) Find(words []string) (*Command, []string, error) {
	if len(words) == 0 {
		return nil, nil, errcode.New(errcode.InvalidArgument, `no command given; "help" lists the commands`)
	}
	for k := min(len(words), t.maxWords); k > 0; k-- {
		if c, ok := t.byName[strings.Join(words[:k], " ")]; ok {
			return c, words[k:], nil
		}
	}
	var near []string
	for _, n := range t.names {
		if strings.HasPrefix(n, words[0]+" ") {
			near = append(near, n)
		}
	}
	if len(near) > 0 {
		return nil, nil, errcode.New(errcode.ResourceNotFound, "unknown command %q; commands starting with %q: %s",
			strings.Join(words, " "), words[0], strings.Join(near, ", "))
	}
	return nil, nil, errcode.New(errcode.ResourceNotFound, `unknown command %q; "help" lists the commands`, strings.Join(words, " "))
}

// Outcome is the result of one command run by Exec.
type Outcome struct {
	// Command is the name of the command run; "" if none was found.
	Command string
	Result  any
	Err     error
	after   []func()
}

// Finish runs what the command asked to run once its answer is sent
// (AfterReply). A transport calls it after writing the answer.
func (o *Outcome) Finish() {
	after := o.after
	o.after = nil
	for _, fn := range after {
		fn()
	}
}

type outcomeKey struct{}

// AfterReply asks the transport to call fn once the answer to the command
// running with ctx has been written (the answer to `exit` is sent before
// the node stops). Call it from the handler's goroutine, before the
// handler returns. It reports false, and fn never runs, when ctx is not a
// command's.
func AfterReply(ctx context.Context, fn func()) bool {
	o, ok := ctx.Value(outcomeKey{}).(*Outcome)
	if !ok {
		return false
	}
	o.after = append(o.after, fn)
	return true
}

// Exec finds the command the words name and runs it.
func (t *Table) Exec(ctx context.Context, words []string) *Outcome {
	c, args, err := t.Find(words)
	if err != nil {
		return &Outcome{Err: err}
	}
	return t.run(ctx, c, args)
}

// run runs c with args; a panic in the handler is its error.
func (t *Table) run(ctx context.Context, c *Command, args []string) *Outcome {
	o := &Outcome{Command: c.Name}
	if err := c.checkArgs(args); err != nil {
		o.Err = err
		return o
	}
	start := time.Now()
	func() {
		defer func() {
			if r := recover(); r != nil {
				o.Err = errcode.New(errcode.Internal, "command %s panicked: %v", c.Name, r)
				t.log.Error("admin command panicked", "command", c.Name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			}
		}()
		o.Result, o.Err = c.Run(context.WithValue(ctx, outcomeKey{}, o), args)
	}()
	t.log.Debug("admin command", "command", c.Name, "took", time.Since(start), "err", o.Err)
	return o
}

// HelpEntry describes one command in the answer of `help`.
type HelpEntry struct {
	Command     string `json:"command"`
	Usage       string `json:"usage"`
	Description string `json:"description"`
	Args        []Arg  `json:"args"`
	ReadOnly    bool   `json:"readOnly"`
}

// Help is the answer of `help`.
type Help struct {
	Commands []HelpEntry `json:"commands"`
}

func (t *Table) help(_ context.Context, args []string) (any, error) {
	prefix := strings.Join(args, " ")
	h := Help{Commands: []HelpEntry{}}
	for _, n := range t.names {
		if prefix != "" && n != prefix && !strings.HasPrefix(n, prefix+" ") {
			continue
		}
		c := t.byName[n]
		a := c.Args
		if a == nil {
			a = []Arg{}
		}
		h.Commands = append(h.Commands, HelpEntry{Command: c.Name, Usage: c.Usage(), Description: c.Description, Args: a, ReadOnly: c.ReadOnly})
	}
	if len(h.Commands) == 0 {
		return nil, errcode.New(errcode.ResourceNotFound, `no command starts with %q; "help" lists the commands`, prefix)
	}
	return h, nil
}
