//! From a parsed command line to an exit code: signal handlers, the configuration (with the credentials it may
//! take its URLs from), the command, and the documented exit code for how it ended (`cli::exit`).

use std::process::ExitCode;

use crate::cli::exit::{CONFIG as EXIT_CONFIG, DATAERR as EXIT_DATAERR, NOPERM as EXIT_NOPERM};
use crate::cli::exit::{UNAVAILABLE as EXIT_UNAVAILABLE, USAGE as EXIT_USAGE};
use crate::cli::{Cli, Command};
use crate::cli::{commands, demo};
use crate::config;
use crate::exec::warm::Mode;
use crate::ops::{admin, app, signal};
use crate::telemetry::metrics;

/// Runs `cli`'s command; its exit code.
pub async fn run(cli: Cli) -> ExitCode {
    // First, before anything slow: until a handler exists, SIGHUP would kill the process.
    let signals = match signal::Signals::register() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let path = config::resolve_path(cli.config.clone());
    let config = match load(&cli, &path).await {
        Ok(config) => config,
        Err(code) => return code,
    };
    crate::ops::logging::init(&config, cli.log_format);

    // An unknown `--job` is a command-line mistake (64), found before anything connects.
    if let Some(error) = unknown_job(&cli.command, &config) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    match cli.command {
        Command::Check { connect, strict } => check(&config, &path, connect, strict).await,
        Command::Rules { jobs, format, connect } => rules(&config, &jobs, format, connect).await,
        Command::Jobs { output } => {
            match output {
                crate::cli::Output::Text => print!("{}", commands::format_jobs(&config, chrono::Utc::now())),
                crate::cli::Output::Json => println!("{:#}", commands::jobs_json(&config, chrono::Utc::now())),
            }
            ExitCode::SUCCESS
        }
        Command::Status { .. } | Command::Trigger { .. } => admin_command(&cli.command, &config.admin)
            .await
            .unwrap_or(ExitCode::FAILURE),
        Command::Invalidate {
            keys,
            patterns,
            refresh,
            warm,
        } => invalidate(&config, &keys, &patterns, refresh, &warm).await,
        Command::Audit { jobs, all: true, .. } => match commands::run_full_audit(&config, &jobs).await {
            Ok((report, clean)) => {
                print!("{report}");
                success_if(clean)
            }
            Err(error) => failed(&error),
        },
        Command::Audit { jobs, sample, .. } => match commands::run_audit(&config, &jobs, sample as usize).await {
            Ok((report, consistent)) => {
                print!("{report}");
                success_if(consistent)
            }
            Err(error) => failed(&error),
        },
        Command::Binlog { source, action } => {
            crate::cli::binlog_command::run(&config, source.as_deref(), &action).await
        }
        Command::DeadLetters { since, limit, replay } => dead_letters(&config, since.as_deref(), limit, replay).await,
        Command::DemoInit => match demo::init(&config.mysql).await {
            Ok(()) => {
                println!("demo shop schema is up to date in {}", config.mysql.url);
                ExitCode::SUCCESS
            }
            Err(error) => failed(&error.context(format!("demo-init against {}", config.mysql.url))),
        },
        Command::Run { once: false, .. } => daemon(config, signals).await,
        Command::Run {
            once: true,
            jobs,
            dry_run,
        } => once(&config, &jobs, dry_run).await,
    }
}

/// The job a command names (`run --once --job`, `audit --job`, `trigger`) that the configuration does not have.
fn unknown_job(command: &Command, config: &config::Config) -> Option<String> {
    match command {
        Command::Run { once: true, jobs, .. } | Command::Audit { jobs, .. } => commands::unknown_job(config, jobs),
        Command::Trigger { name, .. } => commands::unknown_job(config, std::slice::from_ref(name)),
        _ => None,
    }
}

/// The configuration, with the credentials it may take its URLs from. `status` and `trigger` are answered here when
/// there is no valid configuration (they need only the admin address); otherwise a failure is its exit code.
async fn load(cli: &Cli, path: &std::path::Path) -> Result<config::Config, ExitCode> {
    let credentials = match config::find_credentials(cli.credentials.clone(), path) {
        config::Credentials::Unreadable { directory, error } if cli.command.connects() => {
            eprintln!(
                "error: {} holds the daemon's server URLs but cannot be read ({error}): run as root, or pass \
                 --credentials DIR",
                directory.display()
            );
            return Err(ExitCode::from(EXIT_NOPERM));
        }
        found => found,
    };
    if let config::Credentials::Found {
        directory,
        beside_config: true,
    } = &credentials
        && cli.command.connects()
    {
        eprintln!("note: server URLs from the credentials in {}", directory.display());
    }
    let error = match config::load(path, credentials.directory()) {
        Ok(config) => return Ok(config),
        Err(error) => error,
    };
    let default = config::DEFAULT_ADMIN_LISTEN
        .parse()
        .expect("the default admin address parses");
    if matches!(
        cli.command,
        Command::Status { admin: None, .. } | Command::Trigger { admin: None, .. }
    ) {
        eprintln!(
            "note: {} not loaded; asking the admin endpoint at {default}",
            path.display()
        );
    }
    let settings = config::AdminSettings {
        enabled: true,
        listen: default,
        token: None,
        tls: None,
    };
    if let Some(code) = admin_command(&cli.command, &settings).await {
        return Err(code);
    }
    eprintln!("error: {error}");
    Err(ExitCode::from(EXIT_CONFIG))
}

/// `check [--connect]`: 78 for problems, 69 when a server could not be reached.
/// `rules`: the effective rules (64 for an unknown `--job`).
async fn rules(config: &config::Config, only: &[String], format: crate::cli::RulesFormat, connect: bool) -> ExitCode {
    if let Some(unknown) = only
        .iter()
        .find(|name| !config.jobs.iter().any(|job| *job.name == **name))
    {
        eprintln!(
            "error: no [[warm]] job named \"{unknown}\"{}",
            crate::pure::words::did_you_mean(unknown, config.jobs.iter().map(|job| &*job.name))
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let mut config = config.clone();
    if connect && let Err(error) = crate::cli::check::learn_schema(&mut config).await {
        eprintln!("error: cannot read the foreign keys from {}: {error}", config.mysql.url);
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    let rules = crate::pure::derive::report::select(&config.rules, &config.jobs, only);
    match format {
        crate::cli::RulesFormat::Toml => print!("{}", crate::pure::derive::report::rules_toml(&rules)),
        crate::cli::RulesFormat::Json => print!("{}", crate::pure::derive::report::rules_json(&rules)),
    }
    ExitCode::SUCCESS
}

async fn check(config: &config::Config, path: &std::path::Path, connect: bool, strict: bool) -> ExitCode {
    let mut problems = crate::cli::check::check_local(config);
    let mut unreachable = false;
    let mut config = config.clone();
    let config = &mut config;
    if connect {
        let findings = crate::cli::check::check_connect(config).await;
        for note in findings.notes {
            eprintln!("note: {note}");
        }
        if !findings.unreachable
            && let Err(error) = crate::cli::check::learn_schema(config).await
        {
            eprintln!("note: the foreign keys were not read ({error}): cascades are not shown");
        }
        problems.extend(findings.problems);
        unreachable = findings.unreachable;
    }
    if !problems.is_empty() {
        eprintln!(
            "error: {} has {}{}:",
            path.display(),
            crate::pure::words::count(problems.len(), "problem"),
            if connect { " when connected" } else { "" }
        );
        for problem in problems {
            let line = problem.line.map(|line| format!(":{line}")).unwrap_or_default();
            eprintln!("  {}{line}: {problem}", path.display());
        }
        return ExitCode::from(if unreachable { EXIT_UNAVAILABLE } else { EXIT_CONFIG });
    }
    let (coverage, covered) =
        crate::pure::derive::report::coverage(&config.coverage(), &config.jobs, !config.binlogs.is_empty());
    if strict && !covered {
        print!("{coverage}");
        eprintln!(
            "error: {}: some keys follow only their TTL (see NOT COVERED and TTL only above; --strict)",
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    println!(
        "{}: OK ({})",
        path.display(),
        crate::pure::words::count(config.jobs.len(), "warm job")
    );
    print!("{coverage}");
    ExitCode::SUCCESS
}

/// `invalidate`: checked as the daemon would (65 when it would refuse), then published.
async fn invalidate(
    config: &config::Config,
    keys: &[String],
    patterns: &[String],
    refresh: bool,
    warm: &[String],
) -> ExitCode {
    let Some(message) = commands::invalidation_message(keys, patterns, refresh, warm) else {
        eprintln!("error: nothing to invalidate: name keys, --pattern or --warm");
        return ExitCode::from(EXIT_USAGE);
    };
    if let Err(refusal) = commands::check_invalidation(config, &message) {
        eprintln!("error: the daemon would refuse this message: {refusal}");
        return ExitCode::from(EXIT_DATAERR);
    }
    match commands::publish_invalidation(config, &message).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => failed(&error),
    }
}

/// `dead-letters`: the kept ones listed, or the channel messages among them published again.
async fn dead_letters(config: &config::Config, since: Option<&str>, limit: usize, replay: bool) -> ExitCode {
    let Some(stream) = &config.daemon.dead_letter else {
        eprintln!(
            "error: [daemon] dead_letter is \"\" in {}: no dead letters are kept",
            config.path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let since = match since.map(commands::parse_since) {
        None => None,
        Some(Ok(since)) => Some(since),
        Some(Err(error)) => {
            eprintln!("error: --since: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cache = match crate::exec::cache::Cache::connect(&config.redis).await {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("error: Redis at {}: {error}", config.redis.url);
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let kept = match crate::exec::dead_letter::read(&cache, stream, since, limit).await {
        Ok(kept) => kept,
        Err(error) => return failed(&anyhow::anyhow!("reading {stream}: {error}")),
    };
    print!("{}", commands::format_dead_letters(&kept));
    if !replay {
        return ExitCode::SUCCESS;
    }
    let mut refused = 0;
    for letter in kept.iter().filter(|letter| letter.source == "channel") {
        if !letter.whole() {
            refused += 1;
            println!(
                "{}: not sent again: only {} of its {} bytes were kept",
                letter.id,
                letter.payload.len(),
                letter.size
            );
            continue;
        }
        let message = String::from_utf8_lossy(&letter.payload);
        match commands::check_invalidation(config, &message) {
            Err(refusal) => {
                refused += 1;
                println!("{}: still refused: {refusal}", letter.id);
            }
            Ok(()) => match commands::publish_invalidation(config, &message).await {
                Ok(report) => println!("{}: sent again: {report}", letter.id),
                Err(error) => return failed(&error),
            },
        }
    }
    if refused > 0 {
        ExitCode::from(EXIT_DATAERR)
    } else {
        ExitCode::SUCCESS
    }
}

/// `run`: the daemon, until SIGTERM; 78 for a start-up refusal restarting cannot fix.
async fn daemon(config: config::Config, signals: signal::Signals) -> ExitCode {
    let handle = match metrics::install() {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "Metrics are unavailable.");
            None
        }
    };
    match app::run_daemon(config, signals, handle).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            if error.downcast_ref::<app::Misconfigured>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `run --once [--dry-run]`: the summary (on stderr in a dry run, whose stdout is the key listing).
async fn once(config: &config::Config, jobs: &[String], dry_run: bool) -> ExitCode {
    let mode = if dry_run { Mode::DryRun } else { Mode::Write };
    match commands::run_once(config, jobs, mode).await {
        Ok(outcomes) => {
            let summary = commands::format_summary(&outcomes);
            if dry_run {
                eprint!("{summary}");
            } else {
                print!("{summary}");
            }
            success_if(outcomes.iter().all(|o| o.result.is_ok()))
        }
        Err(error) => failed(&error),
    }
}

/// `status` and `trigger`: they need only the admin endpoint (`--admin`, else `listen`, and the token). `None` for
/// other commands.
async fn admin_command(command: &Command, settings: &config::AdminSettings) -> Option<ExitCode> {
    let at = |admin: &Option<std::net::SocketAddr>| config::AdminSettings {
        listen: admin.unwrap_or(settings.listen),
        ..settings.clone()
    };
    Some(match command {
        Command::Status { admin, output } => {
            let endpoint = at(admin);
            let addr = endpoint.listen;
            let jobs = admin::request_to(&endpoint, hyper::Method::GET, "/jobs").await;
            let ready = admin::request_to(&endpoint, hyper::Method::GET, "/readyz").await;
            match (jobs, ready) {
                (Ok(jobs), Ok(_)) if jobs.status == 503 => {
                    eprintln!("the daemon at {addr} is {}", jobs.body.trim());
                    ExitCode::from(EXIT_UNAVAILABLE)
                }
                (Ok(jobs), Ok(ready)) => {
                    let ha = match admin::request_to(&endpoint, hyper::Method::GET, "/ha").await {
                        Ok(ha) if ha.status == 200 => Some(ha.body),
                        _ => None,
                    };
                    let status = commands::Status {
                        jobs: &jobs.body,
                        ready: ready.status == 200,
                        readiness: ready.body.trim(),
                        ha: ha.as_deref(),
                    };
                    let printed = match output {
                        crate::cli::Output::Text => status.text(),
                        crate::cli::Output::Json => status.json().map(|json| format!("{json:#}\n")),
                    };
                    match printed {
                        Ok(text) => {
                            print!("{text}");
                            success_if(status.healthy())
                        }
                        Err(error) => {
                            eprintln!("error: unexpected answer from {addr}: {error}");
                            ExitCode::FAILURE
                        }
                    }
                }
                (Err(error), _) | (_, Err(error)) => {
                    eprintln!("error: cannot reach the admin endpoint at {addr} (is the daemon running?): {error:#}");
                    ExitCode::from(EXIT_UNAVAILABLE)
                }
            }
        }
        Command::Trigger { name, admin } => {
            let endpoint = at(admin);
            let addr = endpoint.listen;
            match admin::request_to(&endpoint, hyper::Method::POST, &format!("/jobs/{name}/run")).await {
                Ok(response) if response.status == 202 => {
                    print!("{}", response.body);
                    ExitCode::SUCCESS
                }
                // The daemon runs another configuration than the one read here (or none was): a usage error too.
                Ok(response) if response.status == 404 => {
                    eprint!("error: {}", response.body);
                    ExitCode::from(EXIT_USAGE)
                }
                Ok(response) => {
                    eprint!("error: {}", response.body);
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("error: cannot reach the admin endpoint at {addr} (is the daemon running?): {error:#}");
                    ExitCode::from(EXIT_UNAVAILABLE)
                }
            }
        }
        _ => return None,
    })
}

/// Prints `error`; 69 when a server could not be reached, else 1.
fn failed(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", crate::pure::words::error_chain(error));
    if commands::is_unreachable(error) {
        ExitCode::from(EXIT_UNAVAILABLE)
    } else {
        ExitCode::FAILURE
    }
}

/// 0 when `ok`, else 1.
fn success_if(ok: bool) -> ExitCode {
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
