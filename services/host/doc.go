// Package host is the host service: it adds KVM hosts, connects their
// agents and keeps them connected, and is the only way commands reach an
// agent.
//
// Guarantees:
//
//   - Every message about a host runs on the host's owner (managementnode
//     guard). Commands to one host run in the host's chain, at most
//     Options.ChainLevel at once (default 10); each ends by the agent's
//     result or at its deadline (SYS.1001), which frees its slot.
//   - Adding a host either leaves it Connected or leaves nothing: if its
//     agent cannot be connected, the row is removed and the error says why.
//   - The owner pings each of its hosts every PingInterval; after
//     MaxPingFailures failures in a row the host is Disconnected and
//     reconnect attempts follow with exponential backoff. A ping answered
//     for another host UUID, or naming another node's event URL (the host
//     changed owner), triggers a reconnect. After a ring change the new
//     owners' trackers pick the hosts up at once.
//   - Each host gets a secret when added, given to the agent at connect;
//     mplane's agent then refuses commands without it and sends it with its
//     events. An event must carry the secret, or, from a legacy agent
//     without one, come from the host's registered address; anything else
//     is refused before any hook sees it.
package host
