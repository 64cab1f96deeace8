// Package vm is the VM instance service: create, start, stop, reboot,
// destroy and expunge, each on the VM's owner, in the VM's chain (one
// operation at a time per VM), checked against the VM state machine
// (ZStack's states; an illegal transition is refused with InvalidState
// before anything happens).
//
// Creating a VM is a flow: write the VM (Starting) -> allocate a host
// (filters, then the weigher of the allocation strategy: least used first
// by default, most used first, or random; random among equals) -> reserve
// its capacity (a conditional update in the database: two nodes
// allocating at once can never overcommit a host) -> allocate an IP per L3
// network (a unique index decides) -> start it on the hypervisor through
// the host's owner -> Running. A failure rolls back every step that ran,
// in reverse: no capacity, IP or VM row is left behind, and the error
// names the step. The flow records its progress, so a node taking over
// can roll back what a dead owner left; the records of flows that finished
// cleanly are pruned once older than the flow retention (1h by default).
//
// The allocation strategy and the flow retention change at run time
// (SetAllocationStrategy, SetFlowRetention: the node's live settings
// vm_allocation_strategy and flow_retention).
//
// Stopping releases the host capacity (a stopped VM holds none; starting
// allocates again, its last host first); destroying releases capacity and
// IPs and leaves the VM Destroyed until expunged. Every state write is
// conditional on the version read (optimistic concurrency).
package vm
