//! The command line: `run [--once [--job NAME]... [--dry-run]]`, `check [--connect]`, `jobs`, `demo-init`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keeps a Redis cache warm and correct in front of a MySQL database.
#[derive(Debug, Parser)]
#[command(name = "cachewarden", version, about)]
pub struct Cli {
    /// Configuration file [default: $CACHEWARDEN_CONFIG, else /etc/cachewarden/jobs.toml].
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

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
    /// Create and seed the demo shop schema in the configured database (for the quick start; never in production).
    DemoInit,
}
