// Package protocol holds the wire contract between management nodes and
// agents (docs/agent-protocol.md): header and body field
// names, the result envelope, event command paths and bodies, and a JSON
// encoder that never emits null inside an array.
//
// It is imported by both sides (agents/agentserver, agents/agentclient, agents/kvm and
// the management node's host service) so that a name on the wire is spelled
// in exactly one place.
//
// Guarantees:
//
//   - Marshal never returns JSON holding null inside an array (the Python
//     agent cannot parse it): it returns an error naming the offending
//     element instead. Object fields whose value is null are omitted.
//   - The constants here are the names used on the wire by ZStack's Python
//     agent framework; the names mplane adds (SecretHeader, TimeoutField)
//     are ignored by a Python agent.
package protocol
