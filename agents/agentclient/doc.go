// Package agentclient is the management node's side of the agent protocol
// (docs/agent-protocol.md): it sends commands to agents (Python kvmagent or
// mplane's Go agents alike), completes async calls when their results are
// posted back, and receives agents' events.
//
//	c := agentclient.New(agentclient.Options{CallbackURL: "http://10.0.0.5:8080/asyncrest/callback"})
//	mux.Handle("/asyncrest/callback", c.CallbackHandler())
//	mux.Handle("/asyncrest/sendcommand", agentclient.NewEventHandler(agentclient.EventOptions{Handle: route}))
//	err := c.CallSync(ctx, agentURL, "/host/connect", connectCmd, &connectRsp)
//	err = c.Call(ctx, agentURL, "/vm/start", startCmd, &startRsp, agentclient.WithSecret(secret))
//
// # Guarantees
//
//   - An async call is a row in a table keyed by its task UUID (128 random
//     bits), with a deadline (the context's, or Options.DefaultTimeout). No
//     goroutine is blocked on its behalf while it is pending: a timer
//     (time.AfterFunc) fails it at the deadline and a context hook
//     (context.AfterFunc) when the caller gives up. Call blocks its caller
//     only; Start does not block past the agent's acknowledgement.
//   - Exactly once: every started call ends once, by its result, its
//     deadline (errcode.Timeout, SYS.1001), its context (Canceled) or
//     Close (ShuttingDown); its row is dropped then. A result arriving
//     afterwards is answered 404 and ignored (counted as duplicate, late
//     or unknown in Stats).
//   - Results are parsed by body, never by Content-Type (the Python agent
//     answers text/html). success is the truth; a missing error field or
//     missing null fields are fine. success:false becomes an error with
//     code errcode.AgentError (SYS.1014) whose details are the agent's
//     error text.
//   - Sending failures are errcode.AgentError too, with a *StatusError
//     cause for an HTTP status other than 200; they are Retryable
//     (errcode.IsRetryable) only when the command surely did not run: the
//     agent could not be connected to, or answered 502, 503 or 504.
//   - Commands are JSON without null inside arrays (the Python agent cannot
//     parse it): encoding such a command fails with InvalidArgument. An
//     object command gets the remaining time before its deadline in
//     protocol.TimeoutField (milliseconds), so an agent can give up on work
//     nobody waits for.
//   - Results are authenticated: every async call has a token of its own
//     (128 random bits, hex), sent only in the callbackurl of its command
//     as the query parameter CallbackTokenParam; the agent posts to that
//     URL as given. The callback endpoint answers 400 without taskuuid,
//     404 for a task that is not pending, 403 for a pending one without
//     its token (the call stays pending), all three without reading the
//     body, 413 for a result over MaxResultBytes (the call fails), 200
//     otherwise, at once. Completed tasks are answered 404 as the protocol
//     says; since an agent counts any HTTP answer as delivered, that
//     acknowledges a duplicate delivery as well as 200 would, and the
//     duplicate changes nothing.
//   - The event endpoint answers 400 without commandpath, 404 for an
//     unknown one and 413 for a body over MaxBodyBytes (64 KiB by
//     default), runs the user's Authorize on the URL and headers before
//     it reads the body, and hands the path, body, remote address and
//     secret header of every other event to the user's Handle.
//
// Lock order: Client.mu is a leaf; no user function (done, Handle) and no
// I/O runs under it.
package agentclient
