package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"mplane/api/auth"
	"mplane/conf"
	"mplane/db"
)

// envNewPassword gives reset-password its password without a prompt.
const envNewPassword = "MPLANE_NEW_PASSWORD"

func newAdminCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Operators' commands that work on the database directly, with no server running",
	}
	cmd.AddCommand(newResetPasswordCmd())
	return cmd
}

func newResetPasswordCmd() *cobra.Command {
	var (
		account  string
		stdin    bool
		generate bool
	)
	cmd := &cobra.Command{
		Use:   "reset-password",
		Short: "Set an account's password in the database (for an operator locked out of admin)",
		Long: "Sets the password of an account (admin by default) directly in the database the\n" +
			"configuration names (the same settings as `mplane server`: data_dir, database_dsn),\n" +
			"and ends every session of the account. Nodes may keep running; they see the new\n" +
			"password at the next login. The password comes from --password-stdin, " + envNewPassword + ",\n" +
			"a prompt without echo when standard input is a terminal, or --generate, which\n" +
			"prints a new random one. It is never a flag: flags show in the process list.",
		Example: "  mplane admin reset-password\n" +
			"  mplane admin reset-password --generate\n" +
			"  echo \"$PW\" | mplane admin reset-password --account ops --password-stdin",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			pw, err := newPassword(cmd, stdin, generate)
			if err != nil {
				return err
			}
			return resetPassword(cmd.Context(), cmd.OutOrStdout(), cfg, account, pw)
		},
	}
	f := cmd.Flags()
	f.StringVar(&account, "account", auth.AdminName, "the account whose password is set")
	f.BoolVar(&stdin, "password-stdin", false, "read the new password from the first line of standard input")
	f.BoolVar(&generate, "generate", false, "generate a new password and print it")
	conf.BindFlags(f)
	return cmd
}

// newPassword: --password-stdin, MPLANE_NEW_PASSWORD, --generate (""),
// then a prompt, twice, on a terminal.
func newPassword(cmd *cobra.Command, stdin, generate bool) (string, error) {
	switch {
	case stdin:
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("read the password from standard input: %w", err)
		}
		if line = strings.TrimRight(line, "\r\n"); line == "" {
			return "", fmt.Errorf("--password-stdin: standard input has no password")
		}
		return line, nil
	case os.Getenv(envNewPassword) != "":
		return os.Getenv(envNewPassword), nil
	case generate:
		return "", nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", fmt.Errorf("no password: standard input is not a terminal; use --password-stdin, %s or --generate", envNewPassword)
	}
	var pws [2]string
	for i, prompt := range []string{"New password: ", "Again: "} {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		pws[i] = string(b)
	}
	if pws[0] != pws[1] {
		return "", fmt.Errorf("the two passwords differ; nothing changed")
	}
	if pws[0] == "" {
		return "", fmt.Errorf("empty password; nothing changed (use --generate for a random one)")
	}
	return pws[0], nil
}

func resetPassword(ctx context.Context, out io.Writer, cfg conf.Config, account, pw string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	gdb, err := db.Open(ctx, cfg.DatabaseURL(), db.Options{})
	if err != nil {
		return fmt.Errorf("open the database: %w", err)
	}
	defer db.Close(gdb)
	if err := auth.Migrate(ctx, gdb); err != nil {
		return err
	}
	generated, err := auth.ResetPassword(ctx, gdb, account, pw, 0)
	if err != nil {
		return err
	}
	if generated != "" {
		fmt.Fprintf(out, "Password of %s set to: %s\n", account, generated)
	} else {
		fmt.Fprintf(out, "Password of %s set.\n", account)
	}
	fmt.Fprintf(out, "Every session of %s has ended; log in again.\n", account)
	return nil
}
