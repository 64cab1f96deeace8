// Package jobs records asynchronous API calls in the api_jobs table and
// serves their outcome, following ZStack's REST conventions: a mutating call
// answers 202 {"location": "<base>/v1/api-jobs/<uuid>"} at once (Accepted);
// GET on the location answers 202 while the job runs, 200 with the stored
// result when it succeeded, 503 with {"error": {...}} when it failed
// (Handler); a client may choose the job's UUID with X-Job-UUID so that a
// retry gets the same job, and ask for the outcome to be POSTed to an
// X-Web-Hook URL (Webhook.Deliver).
//
// A per-resource handler does:
//
//	j, created, err := store.Create(ctx, jobs.FromRequest(r, "vm.StartVmInstance", vmUUID))
//	if err != nil { rest.WriteError(w, err); return }
//	if created { send the work to the bus portal with j.UUID }
//	jobs.Accepted(w, r, baseURL, j)
//
// and the portal, when the reply comes back:
//
//	j, err := store.Succeed(ctx, jobUUID, map[string]any{"inventory": inv}) // or store.Fail(ctx, jobUUID, e)
//	if errcode.Has(err, errcode.InvalidState) { return } // a redelivered reply: already done
//	if j.WebhookURL != "" { webhook.Deliver(ctx, j) }  // in a goroutine the portal owns
//
// Guarantees:
//
//   - Idempotent creation: one row per UUID, enforced by the primary key.
//     Concurrent Creates with one UUID, on one node or many, return the same
//     job and exactly one of them reports created == true, which is the one
//     that must start the work. A UUID reused by another account or for
//     another API is refused (400), so one account cannot read another's job
//     by guessing its id.
//   - A job finishes once: Succeed and Fail update only a row still in state
//     processing (a conditional UPDATE), so of two racing outcomes exactly
//     one is stored, and a finished job never changes again.
//   - Handler answers from the table, so any node serves any job. A
//     non-admin account sees only its own jobs (403). ?wait long-polls: a
//     job finished through the same Store wakes the waiter at once, one
//     finished elsewhere is seen within PollInterval.
//   - Webhook delivery is bounded: Attempts tries (default 3), each within
//     Timeout (default 10s), with doubling Backoff (default 1s); only
//     failures that may pass (network, 408, 429, 5xx) are retried; redirects
//     are not followed. Delivery is at least once per Deliver call: a
//     receiver may see a job twice (it has X-Job-UUID to deduplicate).
//
// A job whose node died stays processing until FailStale (run periodically
// by the portal) fails it with a Timeout error. Finished jobs stay in the
// table; deleting old ones is left to a periodic task of the caller.
package jobs
