// Package e2e holds end-to-end tests: they build the mplane binary, start
// real processes (management nodes, agents) on loopback ports against the
// real RabbitMQ and MariaDB, and drive them over HTTP and the bus as a user
// or a peer would.
package e2e
