//! cachewarden keeps a Redis cache warm and correct in front of a MySQL database.
//!
//! # Layout
//! The folders are the design: producers send work, a pure core turns rows and messages into keys, values and
//! actions, executors own the connections, and the operations run the daemon and the command line around them.
//! Imports point one way: `cli` → `ops` → `source` → `exec` → `config` → `pure`, and every folder above `pure` may
//! report into `telemetry`, which imports nothing of the rest but one list of `pure`'s.
//!
//! - [`source`]: the producers — the cron schedule, the invalidation channel (pub/sub, streams), the binlog
//!   listener, Redis's key misses. They only send triggers and actions.
//! - [`pure`]: the pure core, no I/O — the vocabulary ([`pure::model`]), planning ([`pure::plan`]), rendering and
//!   the type mapping ([`pure::render`], [`pure::value`]), stored encodings and encryption ([`pure::codec`],
//!   [`pure::crypto`]), key patterns ([`pure::glob`]), the SQL read for derived rules ([`pure::derive`],
//!   [`pure::predicate`]), the one trigger sender ([`pure::trigger`]), the one backoff ([`pure::backoff`]) and
//!   words for people ([`pure::words`]).
//! - [`exec`]: the executors, which own the connections — Redis ([`exec::cache`]), MySQL ([`exec::database`]),
//!   warm runs ([`exec::warm`]), invalidations, refreshes and join lookups ([`exec::invalidate`],
//!   [`exec::refresh`], [`exec::reverse`]), dead letters, and their one error ([`exec::backend`]).
//! - [`ops`]: operating the daemon — its wiring ([`ops::app`]), the HA lease ([`ops::ha`]) and the binlog sources'
//!   leases that share them between instances (`ops::share`), the admin endpoint and
//!   status page ([`ops::admin`], [`ops::status`]), the readiness checks, logs, systemd, signals, the audit and the
//!   Redis ACL check ([`ops::access`]).
//! - [`telemetry`]: what every part reports — metrics ([`telemetry::metrics`]) and health
//!   ([`telemetry::health`]); it imports nothing of the rest but one list of `pure`'s, so every folder above `pure`
//!   may report into it.
//! - [`config`]: `jobs.toml` → typed [`config::Config`], every problem reported at once.
//! - [`cli`]: the command line — its definitions and exit codes, a command line to its exit code
//!   ([`cli::dispatch`]), the one-shot commands ([`cli::commands`], [`cli::check`], [`cli::binlog_command`]) and the
//!   demo shop ([`cli::demo`]).
//!
//! # Surface
//! Only what the binary and the tests use is `pub`; everything else is `pub(crate)` or private, and
//! `unreachable_pub` keeps a `pub` inside a private module from pretending otherwise.

#![warn(unreachable_pub)]

pub mod cli;
pub mod config;
pub mod exec;
pub mod ops;
pub mod pure;
pub(crate) mod source;
pub mod telemetry;
