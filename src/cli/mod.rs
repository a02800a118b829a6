//! The command line: its arguments (`run`, `check`, `rules`, `jobs`, `status`, `trigger`, `invalidate`, `audit`,
//! `dead-letters`, `binlog`, `demo-init`), the exit codes, and the man pages and shell completion drawn from them
//! (`completion`); what each command does is in the modules below (`dispatch` turns a parsed command line into an
//! exit code).

pub(crate) mod binlog_command;
pub(crate) mod check;
pub mod commands;
pub mod completion;
pub(crate) mod demo;
pub mod dispatch;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// The exit codes (sysexits.h), written once: the code uses these constants, and `--help` and the man page print
/// [`exit::CODES`].
pub mod exit {
    /// A job failed, or the audit found stale keys.
    pub(crate) const FAILED: u8 = 1;
    /// The command line was wrong (an unknown `--job` included).
    pub const USAGE: u8 = 64;
    /// The input was refused: an invalidation the daemon would refuse.
    pub(crate) const DATAERR: u8 = 65;
    /// A server or the daemon's admin endpoint could not be reached.
    pub(crate) const UNAVAILABLE: u8 = 69;
    /// Refused for now: the daemon is running (`binlog set`/`reset`); stop it and try again.
    pub(crate) const TEMPFAIL: u8 = 75;
    /// This user may not read what the command needs (the credentials directory).
    pub(crate) const NOPERM: u8 = 77;
    /// The configuration is invalid, or a start-up refusal restarting cannot fix.
    pub const CONFIG: u8 = 78;

    /// Every exit code and what it means, for people.
    pub const CODES: &[(u8, &str)] = &[
        (0, "success"),
        (FAILED, "a job failed, or the audit found stale keys"),
        (USAGE, "bad command line (an unknown --job included)"),
        (
            DATAERR,
            "an invalidation the daemon would refuse (outside the allow-list, unknown job, wildcard in a delete)",
        ),
        (
            UNAVAILABLE,
            "a server or the daemon's admin endpoint could not be reached",
        ),
        (
            TEMPFAIL,
            "refused while the daemon runs (binlog set, binlog reset): stop it and run the command again",
        ),
        (NOPERM, "the credentials directory is not readable by this user"),
        (
            CONFIG,
            "invalid configuration, or a start-up refusal restarting cannot fix (a wrong password, a missing grant or ACL)",
        ),
    ];
}

/// The command-line definition, with the exit codes after `--help`: the one source of `--help`, the man pages and
/// the completions.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    let mut codes = String::from("Exit status:");
    for (code, meaning) in exit::CODES {
        codes.push_str(&format!("\n  {code:<3} {meaning}"));
    }
    let mut command = Cli::command().after_long_help(format!("{}\n\n{codes}", examples(EXAMPLES[0].1)));
    for (name, lines) in &EXAMPLES[1..] {
        command = command.mut_subcommand(name, |sub| sub.after_help(examples(lines)));
    }
    command
}

/// Examples for `--help`: the whole program's first, then per subcommand (shown by `cachewarden SUBCOMMAND --help`).
const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "cachewarden check --connect              # the file against the live servers",
            "cachewarden run --once --job top_products",
            "cachewarden status                       # the running daemon; exit 1 while a job fails",
            "cachewarden invalidate product:42 --refresh",
        ],
    ),
    (
        "run",
        &[
            "cachewarden run                          # the daemon (systemd runs this)",
            "cachewarden run --once                   # every enabled job once, then exit",
            "cachewarden run --once --job top_products --dry-run",
        ],
    ),
    ("check", &["cachewarden check", "cachewarden check --connect --strict"]),
    (
        "status",
        &["cachewarden status", "cachewarden status -o json | jq .failing"],
    ),
    ("trigger", &["cachewarden trigger top_products"]),
    (
        "invalidate",
        &[
            "cachewarden invalidate product:42 product:43",
            "cachewarden invalidate --pattern 'user:1000:*'",
            "cachewarden invalidate product:42 --refresh",
            "cachewarden invalidate --warm top_products",
        ],
    ),
    (
        "audit",
        &["cachewarden audit --job products", "cachewarden audit --all"],
    ),
    (
        "binlog",
        &[
            "cachewarden binlog status",
            "cachewarden binlog replay --from mysql-bin.000042:4",
        ],
    ),
];

/// `lines` under an "Examples:" heading.
fn examples(lines: &[&str]) -> String {
    let mut text = String::from("Examples:");
    for line in lines {
        text.push_str("\n  ");
        text.push_str(line);
    }
    text
}

/// Parses the process's arguments.
pub fn parse() -> Result<Cli, clap::Error> {
    use clap::FromArgMatches as _;
    Cli::from_arg_matches(&command().try_get_matches()?)
}

/// The heading of the options every command takes (after each command's own in its `--help`).
const GLOBAL: &str = "Global options";

/// Keeps a Redis cache warm and correct in front of a MySQL database.
#[derive(Debug, Parser)]
#[command(name = "cachewarden", version, about)]
pub struct Cli {
    /// Configuration file [default: $CACHEWARDEN_CONFIG, else /etc/cachewarden/jobs.toml].
    #[arg(long, short = 'c', global = true, help_heading = GLOBAL, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub config: Option<PathBuf>,

    /// systemd credentials directory holding mysql-url, redis-url and, where used, admin-token and cache-key (as the
    /// unit's LoadCredential= installs them) [default: $CREDENTIALS_DIRECTORY, else credentials/ beside the configuration file, e.g.
    /// /etc/cachewarden/credentials].
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub credentials: Option<PathBuf>,

    /// Log line format [default: [daemon] log_format, else text]. Level: RUST_LOG, else [daemon] log_level.
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "FORMAT")]
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
        #[arg(long = "job", value_name = "NAME", add = completion::job_argument(), requires = "once")]
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
        /// Also fail (exit 78) when a job reads a table whose changes do not reach its keys (TTL only).
        #[arg(long)]
        strict: bool,
    },
    /// Print the invalidation rules the binlog follows: the [[on_change]] rules and those derived from the warm
    /// queries (`derive_rules`), as TOML to review or freeze, or as JSON.
    Rules {
        /// Only the rules acting on this job's keys (repeatable).
        #[arg(long = "job", value_name = "NAME", add = completion::job_argument())]
        jobs: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RulesFormat::Toml)]
        format: RulesFormat,
        /// Also derive from the server's foreign keys (the rules for changes they cascade, as the daemon does).
        #[arg(long)]
        connect: bool,
    },
    /// List the warm jobs: schedule, TTL, key template and the next three fire times (UTC).
    Jobs {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show the running daemon's jobs (last run, next run) and readiness, from its admin endpoint. Exits 0 when it is
    /// ready and no job's last run failed, 1 when it is not ready or a job is failing, 69 when it cannot be reached.
    Status {
        /// Admin endpoint address [default: [admin] listen].
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Ask the running daemon to run a warm job now (refused while that job is running).
    Trigger {
        /// The job to run.
        #[arg(add = completion::job_argument())]
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
        #[arg(long = "warm", value_name = "JOB", add = completion::job_argument())]
        warm: Vec<String>,
    },
    /// Compare cached keys with the database (through each job's refresh_query); exit 1 when any is stale.
    Audit {
        /// Audit only this job (repeatable).
        #[arg(long = "job", value_name = "NAME", add = completion::job_argument())]
        jobs: Vec<String>,
        /// Keys sampled per job (at most 10,000,000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        sample: u32,
        /// Check every key instead of a sample: stream each job's query as a warm run does, compare every value,
        /// and find cached keys the query no longer returns.
        #[arg(long, conflicts_with = "sample")]
        all: bool,
    },
    /// List the dead letters (refused channel messages, binlog rule errors) kept in [daemon] dead_letter, or send
    /// the channel messages among them again through the same checks.
    DeadLetters {
        /// Only those kept at or after this time (RFC 3339, e.g. 2026-12-05T06:00:00Z) or this long ago (e.g. 1h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Publish the channel messages again (each checked as `invalidate` checks it; refused ones are listed).
        #[arg(long)]
        replay: bool,
    },
    /// Show or move the binlog listener's position (its checkpoint).
    Binlog {
        /// The binlog source (its `name` in `[[binlog]]`); needed when the configuration has several.
        #[arg(long, global = true)]
        source: Option<String>,
        #[command(subcommand)]
        action: BinlogAction,
    },
    /// Create and seed the demo shop schema in the configured database (for the quick start; never in production).
    DemoInit,
}

/// `binlog …`: the listener's position.
#[derive(Debug, Subcommand)]
pub enum BinlogAction {
    /// The checkpoint against the server: both positions, how far behind, whether the server still has the
    /// checkpoint's file, and how long the daemon can be down.
    Status,
    /// Move the checkpoint to --file FILE --pos POS, where an event starts, or to --gtid SET, after the transactions
    /// of a GTID position (e.g. back, to apply a past range again); the next start reads from there. Refused while the
    /// daemon runs (exit 75).
    Set {
        /// A binlog file the server has (SHOW BINARY LOGS).
        #[arg(long, requires = "pos", required_unless_present = "gtid", conflicts_with = "gtid")]
        file: Option<String>,
        /// Where an event starts in it (SHOW BINLOG EVENTS IN 'FILE').
        #[arg(long, requires = "file")]
        pos: Option<u64>,
        /// A GTID position in the server's form: MariaDB `0-1-977[,…]` (@@gtid_binlog_pos), MySQL
        /// `uuid:1-977[,…]` (@@gtid_executed); the next start reads the transactions after it.
        #[arg(long)]
        gtid: Option<String>,
    },
    /// Remove the checkpoint: the next start begins at the server's current position and recovers as after a gap
    /// (on_gap). Refused while the daemon runs (exit 75).
    Reset,
    /// Apply a past range of the binlog again through the rules (e.g. after a bad deploy wiped or corrupted keys),
    /// from --from FILE:POS to --to FILE:POS (default: the server's position now). The daemon's own checkpoint is not
    /// touched, so it may keep running.
    Replay {
        /// Where an event starts: FILE:POS (SHOW BINLOG EVENTS IN 'FILE').
        #[arg(long, value_name = "FILE:POS")]
        from: String,
        /// Where to stop: FILE:POS [default: the server's current position].
        #[arg(long, value_name = "FILE:POS")]
        to: Option<String>,
    },
}

/// How `rules` prints.
/// How `jobs` and `status` print: a table, or JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesFormat {
    Toml,
    Json,
}

impl Command {
    /// Whether the command talks to MySQL or Redis (and so needs the servers' URLs).
    pub fn connects(&self) -> bool {
        match self {
            Command::Run { .. }
            | Command::Invalidate { .. }
            | Command::Audit { .. }
            | Command::Binlog { .. }
            | Command::DeadLetters { .. }
            | Command::DemoInit => true,
            Command::Check { connect, .. } | Command::Rules { connect, .. } => *connect,
            Command::Jobs { .. } | Command::Status { .. } | Command::Trigger { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every example in `--help` is a command line the parser takes (what follows `#` or `|` is not its part).
    #[test]
    fn every_example_parses() {
        for (_, lines) in super::EXAMPLES {
            for line in *lines {
                let line = line.split(['#', '|']).next().unwrap_or_default();
                let words: Vec<&str> = line.split_whitespace().map(|w| w.trim_matches('\'')).collect();
                let parsed = super::command().try_get_matches_from(&words);
                assert!(parsed.is_ok(), "{line}: {}", parsed.unwrap_err());
            }
        }
        let help = super::command().render_long_help().to_string();
        assert!(help.contains("Examples:") && help.contains("Exit status:"), "{help}");
    }
}
