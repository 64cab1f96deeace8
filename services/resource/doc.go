// Package resource runs the create and delete of simple resources (zones,
// clusters, instance offerings, images, L3 networks ...) on their owners.
//
// Each resource package describes its type as a Kind: its GORM model, how
// to create a row from validated parameters, and what must be true before a
// row may go. The resource service serves "resource.<node>": every create
// and delete runs on the owner of the resource's UUID (managementnode
// guard), in the resource's chain, so two operations on one resource never
// interleave. Creates are idempotent by UUID: a redelivered create answers
// with the row it made the first time.
package resource
