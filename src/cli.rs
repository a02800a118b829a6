//! The command line: `run [--once [--job NAME]... [--dry-run]]`, `check [--connect]`, `jobs`, `status`,
//! `trigger NAME`, `demo-init`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// Keeps a Redis cache warm and correct in front of a MySQL database.
#[derive(Debug, Parser)]
#[command(name = "cachewarden", version, about)]
pub struct Cli {
    /// Configuration file [default: $CACHEWARDEN_CONFIG, else /etc/cachewarden/jobs.toml].
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log line format [default: [daemon] log_format, else text]. Level: RUST_LOG, else [daemon] log_level.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: schedule warm jobs until SIGTERM/SIGINT (or, with --once, run jobs once and exit).
    Run {
        /// Run the warm jobs once, print a summary and exit: 0 if all succeeded, 1 otherwise.
        #[arg(long)]
        once: bool,
        /// With --once: run only this job (repeatable). Disabled jobs run when named.
        #[arg(long = "job", value_name = "NAME", requires = "once")]
        jobs: Vec<String>,
        /// With --once: run the queries and print each key, TTL and value size; write nothing.
        #[arg(long, requires = "once")]
        dry_run: bool,
    },
    /// Validate the configuration and report every problem; exit 78 when it is invalid.
    Check {
        /// Also connect to MySQL and Redis and prepare every query, checking its result columns.
        #[arg(long)]
        connect: bool,
    },
    /// List the warm jobs: schedule, TTL, key template and the next three fire times (UTC).
    Jobs,
    /// Show the running daemon's jobs (last run, next run) and readiness, from its admin endpoint.
    Status {
        /// Admin endpoint address [default: [admin] listen].
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
    /// Ask the running daemon to run a warm job now (refused while that job is running).
    Trigger {
        /// The job to run.
        name: String,
        /// Admin endpoint address [default: [admin] listen].
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
    /// Publish an invalidation message on the configured channel (or stream): delete keys, delete by pattern,
    /// refresh keys from the database, or warm jobs.
    Invalidate {
        /// Keys to delete (or, with --refresh, to refresh).
        keys: Vec<String>,
        /// A pattern to delete with SCAN + UNLINK (repeatable), e.g. 'user:1000:*'.
        #[arg(long = "pattern", value_name = "PATTERN")]
        patterns: Vec<String>,
        /// Refresh the keys from the database instead of deleting them.
        #[arg(long)]
        refresh: bool,
        /// A warm job to run now (repeatable).
        #[arg(long = "warm", value_name = "JOB")]
        warm: Vec<String>,
    },
    /// Compare cached keys with the database (through each job's refresh_query); exit 1 when any is stale.
    Audit {
        /// Audit only this job (repeatable).
        #[arg(long = "job", value_name = "NAME")]
        jobs: Vec<String>,
        /// Keys sampled per job (at most 10,000,000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        sample: u32,
    },
    /// Create and seed the demo shop schema in the configured database (for the quick start; never in production).
    DemoInit,
}
