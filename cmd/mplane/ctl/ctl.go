// Package ctl is `mplane ctl`, the command-line client of the REST API:
// NewCommand builds the command tree, which cmd/mplane mounts under its
// root. It talks to the API with package client only.
package ctl

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
	"mplane/internal/tlsconf"
)

// Environment variables of mplane ctl. They are read here, under
// cmd/mplane, the composition root: the one place that reads the
// environment.
const (
	envURL         = "MPLANE_CTL_URL"
	envSession     = "MPLANE_CTL_SESSION"
	envSessionFile = "MPLANE_CTL_SESSION_FILE"
	envPassword    = "MPLANE_CTL_PASSWORD"
	defaultURL     = "http://127.0.0.1:8080"
)

// clientOptions are added to every client ctl makes; tests set fast
// polling here.
var clientOptions []client.Option

// globals are the persistent flags of mplane ctl.
type globals struct {
	url         string
	output      string
	sessionFile string
	caFile      string
}

// NewCommand is "mplane ctl": the command-line client of the REST API.
func NewCommand() *cobra.Command {
	g := &globals{}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Command-line client of the mplane REST API",
		Long: "Manages zones, clusters, hosts, offerings, disk offerings, images, storage, volumes,\n" +
			"volume snapshots, L3 networks and VMs through the REST API. Log in once with\n" +
			"`mplane ctl login`; the session is kept in ~/.config/mplane/ctl.json (0600).\n" +
			"Mutating commands wait for their job and print the resulting inventory (--no-wait\n" +
			"prints the job location instead).\n\n" +
			"Environment: " + envURL + " (API URL), " + envSession + " (a session to use),\n" +
			envSessionFile + " (session file), " + envPassword + " (password for login).",
		Example: "  mplane ctl login --account admin\n" +
			"  mplane ctl create zone --name zone1\n" +
			"  mplane ctl list vms --q state=Running --sort -createDate\n" +
			"  mplane ctl vm stop 2f1e... --type cold",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE("command", nil),
	}
	f := cmd.PersistentFlags()
	f.StringVar(&g.url, "url", defaultURL, "API URL (env "+envURL+"; else the URL of the last login)")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	f.StringVar(&g.caFile, "ca-file", os.Getenv("MPLANE_CTL_CA_FILE"), "PEM certificates to trust beside the system's, for a node serving HTTPS with a private CA (env MPLANE_CTL_CA_FILE)")
	f.StringVar(&g.sessionFile, "session-file", "", "session file (env "+envSessionFile+"; default ~/.config/mplane/ctl.json)")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return report(c, errcode.New(errcode.InvalidArgument, "%v", err))
	})
	cmd.AddCommand(
		newLoginCmd(g), newLogoutCmd(g),
		newCreateCmd(g), newAddCmd(g),
		newListCmd(g), newGetCmd(g), newDeleteCmd(g),
		newAttachCmd(g), newDetachCmd(g),
		newVMCmd(g), newHostCmd(g), newSnapshotCmd(g), newWaitCmd(g),
	)
	return cmd
}

// groupRunE runs a command that only groups others: without arguments it
// prints its help; an argument that names no subcommand is an error with
// the valid names (cobra would otherwise print help for it silently).
func groupRunE(what string, valid []string) func(*cobra.Command, []string) error {
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
		return report(cmd, errcode.New(errcode.InvalidArgument, "unknown %s %q for %q; valid: %s",
			what, args[0], cmd.CommandPath(), strings.Join(valid, ", ")))
	}
}

// invocation is what one run of a command works with.
type invocation struct {
	cmd    *cobra.Command
	g      *globals
	out    io.Writer
	errOut io.Writer
	json   bool
	url    string // the API URL, as the user gave it
	c      *client.Client
}

// runE wraps a command's work: it resolves the URL, the session and the
// output format, builds the client, and reports any error in ctl's form.
func runE(g *globals, fn func(r *invocation, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		r, err := newInvocation(cmd, g)
		if err == nil {
			err = fn(r, args)
		}
		if err != nil {
			return report(cmd, err)
		}
		return nil
	}
}

func newInvocation(cmd *cobra.Command, g *globals) (*invocation, error) {
	r := &invocation{cmd: cmd, g: g, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
	switch g.output {
	case "table":
	case "json":
		r.json = true
	default:
		return nil, errcode.New(errcode.InvalidArgument, "--output must be table or json, got %q", g.output)
	}
	stored, err := loadSessionFile(g.sessionPath())
	if err != nil && cmd.Name() != "login" && cmd.Name() != "logout" {
		// login and logout replace or remove a damaged file.
		return nil, fmt.Errorf("%w; log in again with `mplane ctl login`", err)
	}
	r.url = resolveURL(cmd, g, stored)
	opts := clientOptions
	if g.caFile != "" {
		hc, err := tlsconf.Client(g.caFile)
		if err != nil {
			return nil, errcode.New(errcode.InvalidArgument, "--ca-file: %v", err)
		}
		opts = append(append([]client.Option(nil), opts...), client.WithHTTPClient(hc))
	}
	c, err := client.New(r.url, opts...)
	if err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "--url: %v", err)
	}
	r.c = c
	switch {
	case os.Getenv(envSession) != "":
		c.SetSession(os.Getenv(envSession))
	case stored != nil && stored.Session != "" && sameAPI(stored.URL, c.BaseURL()):
		// A session is only sent to the API it was made by.
		c.SetSession(stored.Session)
	}
	return r, nil
}

// resolveURL: --url, else MPLANE_CTL_URL, else the URL of the last login,
// else the default.
func resolveURL(cmd *cobra.Command, g *globals, stored *sessionFileData) string {
	if f := cmd.Flags().Lookup("url"); f != nil && f.Changed {
		return g.url
	}
	if u := os.Getenv(envURL); u != "" {
		return u
	}
	if stored != nil && stored.URL != "" {
		return stored.URL
	}
	return defaultURL
}

func sameAPI(storedURL, base string) bool {
	c, err := client.New(storedURL)
	return err == nil && c.BaseURL() == base
}

func (r *invocation) ctx() context.Context { return r.cmd.Context() }

// reportedError is an error ctl has printed to stderr already, in its own
// form: main need not print it again (Reported) and exits with ExitCode.
type reportedError struct{ err error }

func (e *reportedError) Error() string  { return e.err.Error() }
func (e *reportedError) Unwrap() error  { return e.err }
func (e *reportedError) Reported() bool { return true }
func (e *reportedError) ExitCode() int  { return 1 }

// report prints err to the command's stderr as
//
//	error: SYS.1007 invalid argument: <details>
//	  caused by: SYS.1001 operation timed out: <details>
//
// and returns it marked as reported, with exit code 1.
func report(cmd *cobra.Command, err error) error {
	var rep *reportedError
	if errors.As(err, &rep) {
		return err
	}
	fmt.Fprint(cmd.ErrOrStderr(), formatError(cmd, err))
	return &reportedError{err: err}
}

func formatError(cmd *cobra.Command, err error) string {
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

// IsTerminal reports whether v is a terminal (an *os.File on a TTY).
func IsTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// usageError is the InvalidArgument of a command line that does not fit.
func usageError(format string, args ...any) error {
	return errcode.New(errcode.InvalidArgument, format, args...)
}

// argsUUID checks for exactly one argument, named what.
func argsUUID(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return report(cmd, usageError("missing %s; usage: %s", what, useLine(cmd)))
		case len(args) > 1:
			return report(cmd, usageError("expected one %s, got %d arguments: %s", what, len(args), strings.Join(args, " ")))
		case strings.TrimSpace(args[0]) == "":
			return report(cmd, usageError("%s is empty", what))
		}
		return nil
	}
}

// argsNone rejects positional arguments.
func argsNone(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return report(cmd, usageError("unexpected argument %q; usage: %s", args[0], useLine(cmd)))
	}
	return nil
}

func useLine(cmd *cobra.Command) string {
	return strings.TrimSuffix(cmd.UseLine(), " [flags]")
}
