// Package testenv gives tests the real RabbitMQ and MariaDB servers they run
// against, isolated per test, and a polling helper.
//
// Servers are found through environment variables with loopback defaults:
//
//	MPLANE_TEST_AMQP_URL   default amqp://guest:guest@127.0.0.1:5672/
//	MPLANE_TEST_MYSQL_DSN  default root:@tcp(127.0.0.1:3306)/test (go-sql-driver form;
//	                       a "mysql://" prefix is accepted)
//
// This package is the one exception to "only conf reads the environment":
// it is imported by tests only.
//
// Guarantees:
//
//   - Each server is probed at most once per test binary; the outcome is
//     cached, so a missing server costs one short timeout, not one per test.
//   - An unreachable server skips the test with a message saying how to fix
//     it, except under CI=true, where it fails the test: CI never passes by
//     skipping.
//   - Isolation: Prefix gives a fresh bus_prefix per call, MySQLDSN a fresh
//     database (dropped by t.Cleanup), SQLiteDSN a file in t.TempDir(). Tests
//     can therefore run in parallel and against a shared broker or server.
//   - Eventually polls; it never sleeps for a fixed time and then checks.
package testenv
