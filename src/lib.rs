//! cachewarden keeps a Redis cache warm and correct in front of a MySQL database.
//!
//! # Layout
//! Producers send [`model::Trigger`]s; a pure core turns rows into keys and values; executors own the connections.
//!
//! - [`config`]: `jobs.toml` → typed [`config::Config`], every problem reported at once.
//! - [`model`]: the vocabulary: warm jobs, key templates, TTLs, triggers, key operations.
//! - [`value`]: MySQL wire values → JSON and key text (pure; documents the type mapping).
//! - [`render`]: a row → its key and JSON value; sensitive-column refusal (pure).
//! - [`codec`]: a rendered value → the bytes stored (compressed over a size) and back (pure).
//! - [`crypto`]: encrypted columns: AES-256-GCM envelopes and the keyring that seals and opens them.
//! - [`warm`]: runs warm jobs: stream rows, render, write in batches; overlap guard, concurrency limit (executor).
//! - [`cache`]: Redis; the single write path every cache write goes through.
//! - [`database`]: MySQL via sqlx: pool, statement timeouts, raw rows.
//! - [`backend`]: a failure of Redis or MySQL, and whether it may pass.
//! - [`backoff`]: the retry delay every reconnect loop shares.
//! - [`signal`]: SIGTERM/SIGINT/SIGHUP/SIGUSR1 as daemon events.
//! - [`invalidate`]: applies invalidation actions (deletes, pattern deletes, refreshes, projections, warm runs).
//! - [`refresh`]: refreshes many keys of a job in one read, checked against the change that asked (executor).
//! - [`reverse`]: a derived join rule's lookup, from changed rows of a joined table to a job's keys (executor).
//! - [`plan`]: messages, binlog row changes and gaps → actions, under the allow-list (pure).
//! - [`derive`]: a warm query's SQL → the tables it reads and the invalidation rules that follow it (pure).
//! - [`predicate`]: a `WHERE` filter evaluated on a binlog row image with MySQL's semantics (pure).
//! - [`glob`]: key templates → allow patterns, and pattern matching (pure).
//! - [`source`]: the producers: the cron schedule, the invalidation channel (pub/sub, streams), the binlog listener.
//! - [`trigger`]: the one way to ask for a warm run.
//! - [`audit`]: compares cached values with the database.
//! - [`admin`], [`health`], [`metrics`], [`systemd`], [`logging`]: operating the daemon; [`status`]: the status page.
//! - [`ha`]: two instances, one active: the leader lease in Redis that fences every value write.
//! - [`app`]: the daemon's wiring: tasks under one supervisor, signals, reload.
//! - [`commands`]: the one-shot commands (`run --once`, `jobs`, `status`, `invalidate`, `audit`) and their output.
//! - [`check`]: `check --connect`, the configuration against the live servers.
//! - [`access`]: what the Redis user must be allowed to do, checked against its ACL (`ACL DRYRUN`).
//! - [`demo`]: the demo shop schema (embedded migrations), for the quick start and tests.
//! - [`cli`]: the command line and the exit codes; [`dispatch`]: a command line to its exit code;
//!   [`words`]: counts, durations, times and sizes in output for people.

pub mod access;
pub mod admin;
pub mod app;
pub mod audit;
pub mod backend;
pub mod backoff;
pub mod binlog_command;
pub mod cache;
pub mod check;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod database;
pub mod dead_letter;
pub mod demo;
pub mod derive;
pub mod dispatch;
pub mod glob;
pub mod ha;
pub mod health;
pub mod invalidate;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod predicate;
pub mod refresh;
pub mod render;
pub mod reverse;
pub mod signal;
pub mod source;
pub mod status;
pub mod systemd;
pub mod trigger;
pub mod value;
pub mod warm;
pub mod words;
