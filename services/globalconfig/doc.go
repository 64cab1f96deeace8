// Package globalconfig serves ZStack's global configurations: settings of
// the whole cluster, each named by a category and a name
// ("host/ping.interval"), stored in the table global_configs and applied
// on every management node.
//
// A configuration maps to one live setting of the nodes (a conf key:
// host_ping_interval); its default is that setting's built-in default.
// Its row's version counts its updates: 0 means never changed, and then
// every node keeps its own configuration of the setting; once changed
// (version > 0) the global value wins over the node's own, on every node,
// from its start.
//
// An update is a cluster transaction (managementnode.RunTxn) run by the
// configuration's owner, in the configuration's chain, so updates of one
// configuration run one at a time: every running node validates the value
// (stage) before one conditional database write (value and version+1,
// where the version is still the one read), then every node applies it
// (commit). A node that refuses at stage aborts it and nothing changes
// anywhere. A node that missed the commit converges: every node applies,
// at its periodic resync, every row whose version is newer than the one it
// applied.
//
// New registers the service's participant with the node, so it must run
// before the node starts (managementnode.Node.RegisterTxn). For tests,
// MPLANE_TEST_GLOBALCONFIG_REJECT=<category>/<name> makes a node refuse
// every change of that configuration at stage.
package globalconfig
