// Package admin is a node's administrative command set, in the style of
// Ceph's admin socket: one Table of commands (each defined once: name,
// arguments, description, handler) served by two transports, a unix socket
// (Socket, for `mplane daemon`) and HTTP (Handler, under /admin/ on the
// admin listener), and the client side of the socket (Resolve, Call).
//
// # Protocol (unix socket)
//
// Line-delimited JSON. The client writes one request per line,
//
//	{"command": ["config", "set", "log_level", "debug"]}
//
// ("command" may also be one string, split at white space:
// {"command": "config set log_level debug"}), and the node answers each
// with one line,
//
//	{"ok": true, "result": {...}}
//	{"ok": false, "error": {"code": "SYS.1007", "description": "invalid argument", "details": "..."}}
//
// in order, on the same connection, until the client closes it. The words
// name the command by its longest match in the table ("config set"); the
// words after it are its arguments. Errors are the catalogue's
// (mplane/errcode): a malformed request is SYS.1004, an unknown command
// SYS.1005, bad arguments SYS.1007. `help` lists every command.
//
// # HTTP
//
//	GET  /admin/<word>/<word>...[/<arg>...][?<arg>=<value>...]   read-only commands; answers the bare result
//	POST /admin/<word>/<word>...[/<arg>...][?<arg>=<value>...]   any command; answers the bare result
//	POST /admin/command   body: a request as above; answers the socket's envelope
//
// Errors answer the catalogue's HTTP status with {"error": {...}}. A
// command that changes the node (not ReadOnly) is served over HTTP only
// where HandlerOptions.Mutating allows it (the dedicated admin listener).
//
// # Security and lifecycle
//
// The socket is created in a directory of mode 0700 (made so when Socket
// creates it) and chmod'ed to 0600 after listen, before it appears under
// its name (it is bound under a temporary name, then renamed), so only the
// node's user can connect whatever the umask. At Start a socket of the
// naming scheme that no process answers on (a node killed without Stop) is
// removed; Stop closes every connection, waits for every goroutine the
// Socket started and removes the socket file and, if it still points at
// it, the link.
//
// Lock order: Socket.mu is a leaf (connections and state); no lock is held
// while a command runs or an answer is written.
package admin
