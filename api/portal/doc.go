// Package portal is mplane's REST API: ZStack's conventions under /v1 and
// /zstack/v1, and the api.portal bus service that carries every mutating
// call to the owner of its resource.
//
// The path of a mutating call (create, action, delete):
//
//  1. The node that receives the HTTP request decodes and validates it at
//     once (malformed JSON, missing or wrong-typed fields, unknown
//     referenced UUIDs: 400 with a catalogue error; unknown resource in the
//     path: 404), writes the job row (processing) and answers 202 with
//     {"location": ".../v1/api-jobs/<id>"}. A retry with the same X-Job-UUID
//     header gets the same job.
//  2. It sends the call to the shared api.portal queue; one node takes it,
//     finds the resource's owner on the ring and calls the owning service
//     ("<service>.<owner>"), which runs it in the resource's chain.
//  3. The portal node records the result in the job row: succeeded with
//     {"inventory": ...}, or failed with the error. Any node answers
//     GET /v1/api-jobs/<id> from the database.
//
// Queries (GET) read the database on the node that receives them.
package portal
