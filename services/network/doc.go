// Package network is the network service's model and IP address management
// (IPAM): L2 networks (L2NoVlanNetwork, L2VlanNetwork, VxlanNetworkPool and
// VxlanNetwork, their VNI ranges and their attachments to clusters), L3
// networks, their IPv4 ranges, and the allocation of addresses to VM NICs
// (or any owner), in ZStack's terms and JSON field names (L2NetworkVO,
// VniRangeVO, L3NetworkVO, IpRangeVO, UsedIpVO). Its simple kinds (L2Kinds,
// L3Kind, IPRangeKind) are served by the resource service; the rest is
// plain functions over a *gorm.DB, safe to call from any number of
// goroutines and nodes at once.
//
// Tables (Migrate): l2_networks (UNIQUE (zone_uuid, physical_interface,
// vlan) and UNIQUE vni, both NULL but for the types that have them; a
// VXLAN network's pool_uuid refers to its pool, restricting its delete);
// vni_ranges and l2_network_cluster_refs (cascading with their L2 network;
// an attachment also with its cluster, a foreign key the L2 kinds' models
// add after the clusters' table); l3_networks (l2_network_uuid, a foreign
// key restricting the L2 network's delete, NULL only for networks made
// before L2 networks); l3_network_dns (an L3 network's DNS servers,
// cascading with it); ip_ranges (foreign key to l3_networks);
// used_ips (foreign keys to both, and a UNIQUE index on (l3_network_uuid,
// ip_in_long)). Every other foreign key restricts deletes.
//
// # L2 networks and VNIs
//
// A VLAN is unique per zone and physical interface: the unique index
// decides between racing creates, the loser is refused naming the winner.
// A VXLAN network's VNI comes from the cluster's ID pool VNIPool through
// VNIAllocator (managementnode.IDPool: totally ordered by the sequencer,
// so VNIs are unique across the whole cluster, not only per pool as in
// ZStack), within its pool's VNI ranges: the given one, or the lowest free
// one, ranges in order. The allocation's submission ID is the network's
// (a redelivered create gets the same VNI); a create that fails after it,
// and the delete, release it. Whatever is made under an L2 network (an L3
// network, a pool's VXLAN network or VNI range) locks its row, and so does
// its delete (docs/locking.md). The detach from a cluster is refused while
// a VM of the cluster has a NIC on one of its L3 networks (for a pool, of
// its VXLAN networks'; the VM service's vm_nics and vm_instances tables).
// A VXLAN network has no attachments of its own: it reaches its pool's
// clusters, and its attach and detach are refused. Two L2NoVlanNetworks
// on one physical interface are never attached to one cluster (ZStack's
// rule; the attach locks the cluster's row). VNIReconciler releases the
// VNIs left held for VXLAN networks that do not exist (a create or a
// delete that died between the allocation and the row).
//
// # L3 networks
//
// An L3 network is on an L2 network (required; not a pool), in its zone,
// with ZStack's category (Private, Public, System), system, ipVersion (4),
// dnsDomain and DNS servers (AddDNS, RemoveDNS); its inventory shows its
// DNS servers and its IP ranges.
//
// # Parameters and the resource service
//
// L3Params and IPRangeParams are both the Go parameters and, as JSON, the
// REST API's "params" (ZStack names: name, l2NetworkUuid, startIp, endIp,
// netmask, gateway, networkCidr ...). Validate checks their shape; Check
// also reads the database (the L2 network exists; the range fits with the
// network's other ranges) so that the API can refuse at once. L3Kind and
// IPRangeKind serve creates and deletes through the resource service;
// their creates are idempotent by UUID.
//
// # Validation (errcode.InvalidArgument)
//
// An IP range follows ZStack's rules: start, end, gateway and netmask are
// valid IPv4; the netmask is contiguous with a prefix from /1 to /30;
// start <= end; start, end and gateway are in the gateway's network; the
// range includes neither the network nor the broadcast address, and the
// gateway is neither of them; the gateway is outside the range (so it is
// never allocated). A range's name defaults to "<startIp>-<endIp>". Against the database: a range must not overlap another
// range of its L3 network, and all ranges of a network share one gateway
// and netmask. Ranges of one network are added one at a time (the
// network's row is locked), so concurrent additions cannot overlap.
//
// # Allocation guarantees
//
//   - No address is ever handed out twice on one L3 network, whatever the
//     number of nodes: the unique index is the arbiter. AllocateIP picks a
//     candidate with a query, inserts it, and on a duplicate key (another
//     node won) picks again from a random point, up to
//     AllocateOptions.MaxAttempts times (then a retryable Conflict). Every
//     collision means another allocation succeeded, so retries end when
//     the network fills.
//   - Only addresses inside a range are allocated; never the gateway, the
//     network or the broadcast address.
//   - Choice: LowestFirst (default) takes the lowest free address;
//     Random, the first free address at or after a random point, wrapping
//     around. Either way the used set is never loaded: used addresses are
//     counted on the unique index in doubling strides (64 up to 4096) and
//     only the stride holding the first gap is read, so a /16 costs no more
//     memory than a /29, and a block of n used addresses costs an index
//     scan of n entries in O(log n) queries.
//   - A full network is errcode.CapacityExhausted, naming the network.
//   - ReleaseIP and ReleaseByOwner are idempotent: releasing what is not
//     allocated succeeds, so flow rollbacks may repeat them. A released
//     address can be allocated again at once.
//   - An L3 network or range with used addresses cannot be deleted
//     (errcode.InvalidState), even racing with an allocation: the foreign
//     keys refuse, and an allocation into a network deleted meanwhile
//     fails with ResourceNotFound.
//   - AllocateIP is not idempotent per owner: a caller retrying after an
//     unknown outcome should ReleaseByOwner first, or look the owner's
//     address up.
package network
