// Package rest holds the HTTP plumbing shared by every REST handler of
// mplane: JSON answers, catalogue errors, strict decoding of ZStack-style
// request bodies, and mounting a handler under both API prefixes.
//
// Guarantees:
//
//   - Every error answer is {"error": {...}} (an *errcode.Error) with the
//     status of its catalogue code. The decoding functions return only
//     errcode.InvalidArgument for anything the caller got wrong (400), so a
//     client's mistake never becomes a 500; errors that are not catalogued
//     become errcode.Internal (500) through errcode.From.
//   - WriteJSON encodes before it writes the status line: an encoding failure
//     answers a 500 catalogue error, never a 200 with half a body.
//   - DecodeParams and DecodeAction are strict. Request bodies are capped at
//     MaxBodyBytes. Malformed JSON is reported with line, column and byte
//     offset. A field the target struct does not declare is rejected with
//     its full path ("params.disks[1].sizee") and the list of allowed names;
//     names match exactly (encoding/json alone would accept "CPUNUM" for
//     "cpuNum"). A wrong type names the field and the expected JSON type.
//     A field tagged `api:"required"` must be present and not null. If the
//     target implements Validate() error, it runs last, and a plain error
//     from it becomes InvalidArgument.
//   - Handle registers a pattern under /v1 and /zstack/v1 with the same
//     handler, so both prefixes always serve identically; Prefix and URL
//     let a handler build links under the prefix it was reached by.
package rest
