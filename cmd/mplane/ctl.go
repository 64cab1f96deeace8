package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"mplane/api/client"
	"mplane/errcode"
)

// Environment variables of mplane ctl. cmd/mplane is the composition root,
// the one place that reads the environment.
const (
	envCtlURL         = "MPLANE_CTL_URL"
	envCtlSession     = "MPLANE_CTL_SESSION"
	envCtlSessionFile = "MPLANE_CTL_SESSION_FILE"
	envCtlPassword    = "MPLANE_CTL_PASSWORD"
	defaultCtlURL     = "http://127.0.0.1:8080"
)

// ctlClientOptions are added to every client ctl makes; tests set fast
// polling here.
var ctlClientOptions []client.Option

// ctlGlobals are the persistent flags of mplane ctl.
type ctlGlobals struct {
	url         string
	output      string
	sessionFile string
}

// newCtlCmd is "mplane ctl": the command-line client of the REST API.
func newCtlCmd() *cobra.Command {
	g := &ctlGlobals{}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Command-line client of the mplane REST API",
		Long: "Manages zones, clusters, hosts, offerings, images, L3 networks and VMs through the\n" +
			"REST API. Log in once with `mplane ctl login`; the session is kept in\n" +
			"~/.config/mplane/ctl.json (0600). Mutating commands wait for their job and print the\n" +
			"resulting inventory (--no-wait prints the job location instead).\n\n" +
			"Environment: " + envCtlURL + " (API URL), " + envCtlSession + " (a session to use),\n" +
			envCtlSessionFile + " (session file), " + envCtlPassword + " (password for login).",
		Example: "  mplane ctl login --account admin\n" +
			"  mplane ctl create zone --name zone1\n" +
			"  mplane ctl list vms --q state=Running --sort -createDate\n" +
			"  mplane ctl vm stop 2f1e... --type cold",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          ctlGroupRunE("command", nil),
	}
	f := cmd.PersistentFlags()
	f.StringVar(&g.url, "url", defaultCtlURL, "API URL (env "+envCtlURL+"; else the URL of the last login)")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	f.StringVar(&g.sessionFile, "session-file", "", "session file (env "+envCtlSessionFile+"; default ~/.config/mplane/ctl.json)")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return ctlReport(c, errcode.New(errcode.InvalidArgument, "%v", err))
	})
	cmd.AddCommand(
		newCtlLoginCmd(g), newCtlLogoutCmd(g),
		newCtlCreateCmd(g), newCtlAddCmd(g),
		newCtlListCmd(g), newCtlGetCmd(g), newCtlDeleteCmd(g),
		newCtlVMCmd(g), newCtlHostCmd(g), newCtlWaitCmd(g),
	)
	return cmd
}

// ctlGroupRunE runs a command that only groups others: without arguments it
// prints its help; an argument that names no subcommand is an error with
// the valid names (cobra would otherwise print help for it silently).
func ctlGroupRunE(what string, valid []string) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		if valid == nil {
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() {
					valid = append(valid, c.Name())
				}
			}
		}
		return ctlReport(cmd, errcode.New(errcode.InvalidArgument, "unknown %s %q for %q; valid: %s",
			what, args[0], cmd.CommandPath(), strings.Join(valid, ", ")))
	}
}

// ctlRun is what one command invocation works with.
type ctlRun struct {
	cmd    *cobra.Command
	g      *ctlGlobals
	out    io.Writer
	errOut io.Writer
	json   bool
	url    string // the API URL, as the user gave it
	c      *client.Client
}

// ctlRunE wraps a command's work: it resolves the URL, the session and the
// output format, builds the client, and reports any error in ctl's form.
func ctlRunE(g *ctlGlobals, fn func(r *ctlRun, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		r, err := newCtlRun(cmd, g)
		if err == nil {
			err = fn(r, args)
		}
		if err != nil {
			return ctlReport(cmd, err)
		}
		return nil
	}
}

func newCtlRun(cmd *cobra.Command, g *ctlGlobals) (*ctlRun, error) {
	r := &ctlRun{cmd: cmd, g: g, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
	switch g.output {
	case "table":
	case "json":
		r.json = true
	default:
		return nil, errcode.New(errcode.InvalidArgument, "--output must be table or json, got %q", g.output)
	}
	stored, err := ctlLoadSessionFile(g.sessionPath())
	if err != nil && cmd.Name() != "login" && cmd.Name() != "logout" {
		// login and logout replace or remove a damaged file.
		return nil, fmt.Errorf("%w; log in again with `mplane ctl login`", err)
	}
	r.url = ctlResolveURL(cmd, g, stored)
	c, err := client.New(r.url, ctlClientOptions...)
	if err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "--url: %v", err)
	}
	r.c = c
	switch {
	case os.Getenv(envCtlSession) != "":
		c.SetSession(os.Getenv(envCtlSession))
	case stored != nil && stored.Session != "" && ctlSameAPI(stored.URL, c.BaseURL()):
		// A session is only sent to the API it was made by.
		c.SetSession(stored.Session)
	}
	return r, nil
}

// ctlResolveURL: --url, else MPLANE_CTL_URL, else the URL of the last login,
// else the default.
func ctlResolveURL(cmd *cobra.Command, g *ctlGlobals, stored *ctlSessionFileData) string {
	if f := cmd.Flags().Lookup("url"); f != nil && f.Changed {
		return g.url
	}
	if u := os.Getenv(envCtlURL); u != "" {
		return u
	}
	if stored != nil && stored.URL != "" {
		return stored.URL
	}
	return defaultCtlURL
}

func ctlSameAPI(storedURL, base string) bool {
	c, err := client.New(storedURL)
	return err == nil && c.BaseURL() == base
}

func (r *ctlRun) ctx() context.Context { return r.cmd.Context() }

// ctlReportedError is an error ctl has printed to stderr already, in its own
// form; main need not print it again (it implements Reported).
type ctlReportedError struct{ err error }

func (e *ctlReportedError) Error() string  { return e.err.Error() }
func (e *ctlReportedError) Unwrap() error  { return e.err }
func (e *ctlReportedError) Reported() bool { return true }

// ctlReport prints err to the command's stderr as
//
//	error: SYS.1007 invalid argument: <details>
//	  caused by: SYS.1001 operation timed out: <details>
//
// and returns it marked as reported, with exit code 1.
func ctlReport(cmd *cobra.Command, err error) error {
	var rep *ctlReportedError
	if errors.As(err, &rep) {
		return err
	}
	fmt.Fprint(cmd.ErrOrStderr(), ctlFormatError(cmd, err))
	return &exitError{code: 1, err: &ctlReportedError{err: err}}
}

func ctlFormatError(cmd *cobra.Command, err error) string {
	var b strings.Builder
	if client.IsUnauthenticated(err) && cmd.Name() != "login" {
		fmt.Fprintf(&b, "error: %s session missing or expired: run `mplane ctl login`\n", errcode.Unauthenticated)
		return b.String()
	}
	var e *errcode.Error
	if !errors.As(err, &e) {
		fmt.Fprintf(&b, "error: %v\n", err)
		return b.String()
	}
	for c := e; c != nil; c = c.Cause {
		if c == e {
			b.WriteString("error: ")
		} else {
			b.WriteString("  caused by: ")
		}
		b.WriteString(string(c.Code))
		if c.Description != "" {
			b.WriteString(" " + c.Description)
		}
		if c.Details != "" {
			b.WriteString(": " + c.Details)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// ctlIsTerminal reports whether v is a terminal (an *os.File on a TTY).
func ctlIsTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// ctlUsage is the InvalidArgument of a command line that does not fit.
func ctlUsage(format string, args ...any) error {
	return errcode.New(errcode.InvalidArgument, format, args...)
}

// ctlArgsUUID checks for exactly one argument, named what.
func ctlArgsUUID(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return ctlReport(cmd, ctlUsage("missing %s; usage: %s", what, ctlUseLine(cmd)))
		case len(args) > 1:
			return ctlReport(cmd, ctlUsage("expected one %s, got %d arguments: %s", what, len(args), strings.Join(args, " ")))
		case strings.TrimSpace(args[0]) == "":
			return ctlReport(cmd, ctlUsage("%s is empty", what))
		}
		return nil
	}
}

// ctlArgsNone rejects positional arguments.
func ctlArgsNone(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return ctlReport(cmd, ctlUsage("unexpected argument %q; usage: %s", args[0], ctlUseLine(cmd)))
	}
	return nil
}

func ctlUseLine(cmd *cobra.Command) string {
	return strings.TrimSuffix(cmd.UseLine(), " [flags]")
}
