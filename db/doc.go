// Package db opens mplane's database, SQLite or MySQL/MariaDB, as a *gorm.DB
// configured the same way everywhere, and reads the database server's clock.
//
// DSNs have one of two forms (conf.Config.DatabaseURL gives the effective one):
//
//	sqlite:<path>          a file; its parent directory is created
//	sqlite::memory:        a private in-memory database (tests)
//	mysql://<driver DSN>   go-sql-driver form, e.g. mysql://root:@tcp(127.0.0.1:3306)/mplane
//
// Guarantees:
//
//   - Times: GORM's clock (CreatedAt, UpdatedAt) is UTC, truncated to
//     milliseconds so a value read back equals the value written on both
//     backends. MySQL connections always use parseTime=true and, unless the
//     DSN says otherwise, loc=UTC and charset=utf8mb4. Now returns the
//     database server's clock in UTC, for heartbeats compared across nodes.
//   - SQLite concurrency: WAL journal, busy_timeout 5000 ms, foreign_keys on,
//     and every transaction begins IMMEDIATE. The write lock is therefore
//     taken, or waited for, at BEGIN; a transaction that reads and then
//     writes cannot fail with SQLITE_BUSY half-way, which a DEFERRED one can
//     whatever the busy timeout. Concurrent writers queue instead of failing.
//   - MySQL isolation: every connection runs at READ COMMITTED (whatever
//     the server's default), which the management nodes' write fence needs:
//     see managementnode.FenceWrites.
//   - MySQL start-up: Open retries the first ping with capped, jittered
//     backoff until ctx is done, logging each retry at warn, so a node can
//     start while the database is briefly unreachable. Errors that waiting
//     cannot fix (access denied, unknown database) fail at once. Pass a ctx
//     with a deadline (conf.Config.StartupTimeout): without one Open retries
//     until ctx is cancelled.
//   - Errors are translated by GORM (TranslateError): a duplicate key is
//     gorm.ErrDuplicatedKey and a foreign key violation
//     gorm.ErrForeignKeyViolated, on both backends, for errors.Is.
//   - Logging: GORM logs through the injected slog.Logger. Slow statements
//     are logged at warn, with the SQL but never its parameter values (they
//     may hold secrets). Failed statements are logged at debug only, because
//     GORM returns the error to the caller, who owns reporting it;
//     gorm.ErrRecordNotFound is never logged. db.Debug() logs every
//     statement at info.
//   - No passwords in errors or logs: the MySQL server is named by its
//     address and database only.
package db
