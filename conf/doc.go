// Package conf holds mplane's one configuration struct and the code that
// fills it.
//
// A Config is built once, in main, by Load and handed to every component as
// plain values; no other package reads environment variables, flags or files.
//
// Guarantees:
//
//   - Precedence is fixed: Default() < config file (YAML) < environment
//     (MPLANE_*) < command-line flags. A flag only overrides when it was set on
//     the command line (pflag's Changed), so flag defaults never mask the file
//     or the environment.
//   - Every setting has one name in three spellings derived from one table:
//     YAML key heartbeat_interval, environment MPLANE_HEARTBEAT_INTERVAL, flag
//     --heartbeat-interval. They cannot drift apart.
//   - Load never touches the process environment; the caller passes it in
//     (os.Environ() in main, a literal slice in tests).
//   - Mistakes are errors, not silent defaults: an unknown or repeated key in
//     the file, a malformed value in the file, the environment or a flag.
//     Errors name the key or variable and the expected form.
//   - Validate reports every problem at once (errors.Join), each saying what
//     is wrong, the value it got and where to set it. Load validates before
//     returning, so a Config from Load is always valid.
//   - Secrets (admin_password, passwords in bus_url and database_dsn) are
//     redacted when a Config is logged through slog (LogValue) and in
//     validation messages.
//
// Durations are Go duration strings ("2s", "1m30s") everywhere, in the file
// too: a bare number is rejected rather than guessed to be seconds.
package conf
