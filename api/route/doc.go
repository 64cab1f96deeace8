// Package route is how a service declares its REST API: typed values, next
// to its handlers, that the portal (api/portal) mounts without knowing any
// service.
//
// A service declares Resources. Each names its path ("vm-instances"), its
// query (QueryOf, a schema derived from the model's tags), and its mutating
// calls as Ops: Create (POST /<path>), Action (PUT /<path>/{uuid}/actions,
// keyed by ZStack's action name) and Delete (DELETE /<path>/{uuid}); Call
// for a call on a path of its own (attach, detach), and CallActions for
// ZStack's actions on such a path (PUT
// /global-configurations/{category}/{name}/actions). An Op binds three
// typed things:
//
//   - P, the params type the request body decodes into, strictly (api/rest);
//     if P has Validate() error, the decoder runs it: that is the one place
//     the shape of a request is checked;
//   - Build, which runs on the node that received the request and turns the
//     validated params into the request of the message, checking what they
//     reference in the database (an unknown zoneUuid is a 400 at once);
//   - the message, a managementnode.OwnedMsg[Req, Rep], which runs on the
//     owner of the resource Req names (Req.ResourceUUID), in its chain.
//
// The portal keeps every Op of every Resource in a registry keyed by the
// message's name, so that the node that drives a call across the api.portal
// queue decodes it into Req again and calls the owner with the typed
// message: the only string on the way is the registry key, and it is the
// message's own name.
package route
