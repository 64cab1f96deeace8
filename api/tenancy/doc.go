// Package tenancy is who owns what: every resource a call creates is
// recorded as its caller's (account_resource_refs, ZStack's
// AccountResourceRefVO), and a normal account's reads go through a filter
// in SQL that keeps only the rows it may see: its own, and of the
// shareable kinds (images, offerings, L3 networks) those shared to it or to
// everyone (shared_resources). The filter is a GORM query callback, so the
// same rule holds for a query of the API, a count, a preload and every
// lookup a call's Build makes of what its params name: a row another
// account owns is absent, exactly as a row that does not exist (404 or
// "does not exist"), never an existence oracle.
//
// The filter applies to a context made by Scope: the portal scopes the
// work it does for a normal account's request, and nothing else, so an
// owner's handlers, flows and sweepers see every row. Admin accounts are
// never scoped.
//
// Rows a call creates on the owner, beside the resource it names (a VM's
// NICs and volumes, a volume's snapshots), implement Child: the create
// callback gives them their parent's owner in the same statement batch,
// and the sweeper (Sweep) repairs the few a crash may leave without one and
// forgets the records of resources that are gone.
//
// Rows made before an account existed, or with no record, belong to no
// one: admins see them, normal accounts do not.
package tenancy
