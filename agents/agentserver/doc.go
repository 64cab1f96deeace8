// Package agentserver is the agent side of the agent protocol
// (docs/agent-protocol.md): an HTTP framework that behaves on the wire like
// ZStack's Python agent framework (zstacklib.utils.http, served by
// CherryPy), so that a management node cannot tell a Go agent from a Python
// one.
//
// Handlers are registered by path with typed functions:
//
//	srv := agentserver.New(agentserver.Options{Logger: log})
//	agentserver.HandleSync(srv, "/host/connect", a.connect)
//	agentserver.HandleAsync(srv, "/vm/start", a.startVM)
//	go srv.Serve(listener)
//	...
//	srv.Shutdown(ctx)
//
// where a handler is func(ctx, *Request, Cmd) (Rsp, error).
//
// # Wire behaviour
//
//   - Any method is accepted on a registered path, with or without a
//     trailing slash; other paths get 404.
//   - Sync path: a request carrying a taskuuid header gets 500 (the caller
//     thinks the path is async and would wait for a callback forever).
//     Otherwise the handler runs and its result is the answer: 200, body the
//     result JSON.
//   - Async path: without taskuuid, 400. Without callbackurl, 400 (the
//     Python framework answers 200 and fails in its worker thread; nobody
//     could receive the result, so we say so at once). Otherwise 200 with an
//     empty body, before the handler starts; the handler runs in its own
//     goroutine and its result is POSTed to callbackurl with headers
//     taskuuid and Content-Type: application/json.
//   - A command whose taskuuid belongs to a task still running (handler or
//     delivery) is answered 200 and ignored: no second run, no second
//     callback.
//   - Answers carry Content-Type Options.ContentType, by default
//     "text/html;charset=utf-8" as CherryPy sends although the body is JSON.
//     Error answers (400, 404, 500, 503, and Admit's rejections) carry a
//     result envelope {"success":false,"error":"..."} in the body.
//   - Results are {"success":true,"error":"",...fields} or
//     {"success":false,"error":"<message>",...fields}. Null object fields
//     are left out; a result holding null inside an array is turned into a
//     failure result naming the element, never sent. A handler's panic is
//     recovered and reported as a failure result (as kvmagent's @replyerror
//     does for exceptions). A handler returning ErrNoReply sends nothing.
//   - Posting a result or an event is retried on connection errors every
//     Options.CallbackRetryInterval (1s) until Options.CallbackRetryLimit
//     (60s) has passed; any HTTP answer, whatever its status, counts as
//     delivered.
//   - Events (PostEvent) carry header commandpath and are retried the same
//     way.
//   - If the command body has a positive integer field timeoutMs
//     (protocol.TimeoutField), the handler's context ends that many
//     milliseconds after arrival: nobody waits for the result after that.
//     An async handler that then fails with context.DeadlineExceeded sends
//     no result (the caller has failed the call at that deadline; a late
//     "deadline exceeded" could only race its timer). A success is sent
//     even if late.
//
// # Concurrency and lifecycle
//
// Every goroutine the server starts (one per async task, running the
// handler then the delivery, and one waiter at Shutdown) is tracked and
// waited for by Shutdown. Shutdown is idempotent: it refuses new commands
// with 503, lets running tasks finish and deliver until its context ends,
// then cancels their contexts. No lock is held while a handler runs or a
// result is posted; the server's locks (routes, running tasks, HTTP
// servers) are leaves, never held together.
package agentserver
