// Package resource is the shared base of mplane's resources: the columns
// every resource has (Base), and the resource service that runs the simple
// kinds — zones, clusters, instance offerings, L2 networks and their VNI
// ranges, L3 networks and IP ranges — whose whole life is a row: create,
// update, delete, and actions that change the row.
//
// A simple kind is declared once, in its own package, with NewKind: its
// model, its params, the checks of what the params reference, what depends
// on it. NewKind derives the rest: the typed messages (zone.Kind.MsgCreate
// ...), the handlers on the owner, and the REST routes (route.Resource)
// the portal mounts. A kind may have more: further creates with params of
// their own and operations on paths of their own (Spec.Calls: NewCreate,
// NewCall), and query-only views of some of its rows (Spec.Views). Every
// create, update, action, call and delete of one resource runs on its
// owner (managementnode.Guard), in its chain ("<kind>-<uuid>"), so two
// operations on one resource never interleave.
// Creates are idempotent by UUID: a redelivered create answers with the
// row it made the first time. Deletes of a missing resource succeed.
//
// Validation happens once, at the edge (the params' Validate, run by the
// REST decoder, and Check for the references); the owner checks again only
// what may have changed since: the references (Check), and the dependents
// before a delete.
package resource
