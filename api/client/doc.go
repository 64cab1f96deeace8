// Package client is the Go client of mplane's REST API, which follows
// ZStack's REST conventions (see the "api" section of the architecture). The
// CLI (mplane ctl), the end-to-end tests and the benchmarks use it.
//
//	c, err := client.New("http://127.0.0.1:8080")
//	_, err = c.Login(ctx, "admin", "password")
//	zone, err := client.CreateAndWait[map[string]any](ctx, c, "zones", map[string]any{"name": "zone1"})
//	job, err := c.Action(ctx, "vm-instances", vmUUID, "stopVmInstance", map[string]any{"type": "cold"})
//	inv, err := job.Wait(ctx, func(elapsed time.Duration, state string) { ... })
//	vms, total, err := client.QueryAs[VM](ctx, c, "vm-instances", client.Query{
//		Q: []string{"state=Running", "name~=web%"}, Limit: 10, Sort: "-createDate", ReplyWithCount: true})
//
// # Guarantees
//
//   - The client is generic: it speaks the wire contract (paths, {"params":
//     {...}}, action bodies, jobs, q=) and leaves inventories as
//     json.RawMessage; QueryAs, GetAs, WaitAs and CreateAndWait decode them
//     into the caller's types.
//   - Every answer the API gives with an error status becomes a
//     *StatusError that keeps the HTTP status and unwraps to the
//     *errcode.Error decoded from {"error": {...}}, so errcode.Has,
//     errcode.CodeOf and errors.As work on what the client returns. A body
//     that is not the contract's JSON becomes a *StatusError with the status
//     and the first bytes of the body instead of a decoding error.
//   - Failures to talk to the server are wrapped with what the client was
//     doing ("create zones: Post \"http://...\": ... connection refused").
//   - A mutating call (create, action, delete) carries an X-Job-UUID chosen
//     by the client (32 random hex digits, a ZStack UUID). When the
//     connection fails before an answer is read, the client sends the
//     request again with the same X-Job-UUID, so the server hands back the
//     job it may already have started instead of doing the work twice. Only
//     transport failures are retried, never an answer: a status is the
//     server's word.
//   - Job.Wait polls the job's location with a backoff (50 ms doubling to
//     1 s by default) until it is done (200), failed (503 with the job's
//     error, as a *StatusError) or the context ends; the job goes on on the
//     server in the last case.
//   - The session is sent only to the origin (scheme, host and port) of
//     the base URL, even when a job location names another.
//   - One http.Client (own transport, idle connections kept per host) for
//     every call; a Client is safe for concurrent use, and SetSession may be
//     called at any time.
package client
