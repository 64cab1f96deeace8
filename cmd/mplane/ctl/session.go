package ctl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"mplane/api/client"
	"mplane/errcode"
)

// sessionFileData is the content of the session file.
type sessionFileData struct {
	URL         string `json:"url"`
	Account     string `json:"account"`
	Session     string `json:"session"`
	AccountUUID string `json:"accountUuid,omitempty"`
	ExpiredDate string `json:"expiredDate,omitempty"`
}

// sessionPath: --session-file, else MPLANE_CTL_SESSION_FILE, else
// $XDG_CONFIG_HOME/mplane/ctl.json, else ~/.config/mplane/ctl.json.
func (g *globals) sessionPath() string {
	if g.sessionFile != "" {
		return g.sessionFile
	}
	if p := os.Getenv(envSessionFile); p != "" {
		return p
	}
	if dir := os.Getenv("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "mplane", "ctl.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".config", "mplane", "ctl.json")
	}
	return filepath.Join(home, ".config", "mplane", "ctl.json")
}

// loadSessionFile reads the session file; a missing file is (nil, nil).
func loadSessionFile(path string) (*sessionFileData, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read session file: %w", err)
	}
	var s sessionFileData
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("session file %s: %w", path, err)
	}
	return &s, nil
}

// saveSessionFile writes the file readable by its owner only (0600, its
// directory 0700), replacing any old one at once: a reader sees the old
// file or the new one, never half of it.
func saveSessionFile(path string, s sessionFileData) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ctl-session-*")
	if err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save session: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save session: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	return nil
}

func newLoginCmd(g *globals) *cobra.Command {
	var (
		account       string
		password      string
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in and keep the session for the next commands",
		Long: "Logs in to the API and stores the session and the URL in the session file\n" +
			"(0600). The password comes from --password, --password-stdin, " + envPassword + ",\n" +
			"or a prompt without echo when standard input is a terminal. The password is\n" +
			"sent as its SHA-512 digest, as ZStack clients do.",
		Example: "  mplane ctl login\n" +
			"  mplane ctl --url http://10.0.0.2:8080 login --account admin\n" +
			"  echo \"$PW\" | mplane ctl login --password-stdin",
		Args: argsNone,
		RunE: runE(g, func(r *invocation, _ []string) error {
			pw, err := loginPassword(r, account, password, passwordStdin)
			if err != nil {
				return err
			}
			s, err := r.c.Login(r.ctx(), account, pw)
			if err != nil {
				return err
			}
			path := g.sessionPath()
			if err := saveSessionFile(path, sessionFileData{
				URL: r.url, Account: account, Session: s.UUID, AccountUUID: s.AccountUUID, ExpiredDate: s.ExpiredDate,
			}); err != nil {
				return err
			}
			if r.json {
				return printJSON(r.out, map[string]any{"inventory": s, "sessionFile": path, "url": r.url})
			}
			fmt.Fprintf(r.out, "Logged in to %s as %s; session saved to %s", r.url, account, path)
			if s.ExpiredDate != "" {
				fmt.Fprintf(r.out, " (expires %s)", s.ExpiredDate)
			}
			fmt.Fprintln(r.out)
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&account, "account", "admin", "account name")
	f.StringVar(&password, "password", "", "password (visible to other local users in the process list; prefer the prompt, --password-stdin or "+envPassword+")")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
	return cmd
}

// loginPassword: --password, --password-stdin, MPLANE_CTL_PASSWORD, then a
// prompt without echo if standard input is a terminal.
func loginPassword(r *invocation, account, flagPassword string, fromStdin bool) (string, error) {
	if r.cmd.Flags().Changed("password") {
		return flagPassword, nil
	}
	in := r.cmd.InOrStdin()
	if fromStdin {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password from standard input: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return "", usageError("--password-stdin: standard input has no password")
		}
		return line, nil
	}
	if pw := os.Getenv(envPassword); pw != "" {
		return pw, nil
	}
	f, ok := in.(*os.File)
	if !ok || !IsTerminal(f) {
		return "", errcode.New(errcode.InvalidArgument,
			"no password: standard input is not a terminal, so there is no prompt; pass --password, --password-stdin or set %s", envPassword)
	}
	fmt.Fprintf(r.errOut, "Password for %s at %s: ", account, r.url)
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(r.errOut)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return string(pw), nil
}

func newLogoutCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the stored session on the server and remove the session file",
		Args:  argsNone,
		RunE: runE(g, func(r *invocation, _ []string) error {
			path := g.sessionPath()
			if stored, _ := loadSessionFile(path); stored != nil && stored.Session != "" {
				if err := endSession(r, stored); err != nil {
					fmt.Fprintf(r.errOut, "warning: could not end the session on %s (%v); it stays valid there until it expires%s\n",
						stored.URL, err, expiresSuffix(stored.ExpiredDate))
				}
			}
			err := os.Remove(path)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				fmt.Fprintf(r.out, "Not logged in (no %s)\n", path)
				return nil
			case err != nil:
				return fmt.Errorf("logout: %w", err)
			}
			fmt.Fprintf(r.out, "Logged out: removed %s\n", path)
			return nil
		}),
	}
}

// endSession logs the stored session out on the API that made it.
func endSession(r *invocation, stored *sessionFileData) error {
	c, err := client.New(stored.URL, clientOptions...)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetSession(stored.Session)
	return c.Logout(r.ctx())
}

func expiresSuffix(date string) string {
	if date == "" {
		return ""
	}
	return " at " + date
}
