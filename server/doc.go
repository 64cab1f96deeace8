// Package server is the composition root of a management node: it builds
// every component from the configuration with New(Options), wires them
// explicitly, starts them in dependency order and stops them in reverse.
// `mplane server` runs one in cluster mode; `mplane run` runs one embedded
// (StartEmbedded: the in-process bus, SQLite, simulated hosts), and so do
// the package tests of the services and the portal (servertest).
//
// What a node serves is listed here once: the simple kinds (Kinds) and the
// services whose declared REST resources the portal mounts. Adding a
// resource is one package plus one line in Kinds (or in services, for a
// resource with a service of its own).
package server
