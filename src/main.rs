use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use cachewarden::cli::{Cli, Command};
use cachewarden::warm::Mode;
use cachewarden::{app, config, demo, signal};

/// sysexits.h EX_USAGE: the command line was wrong.
const EXIT_USAGE: u8 = 64;
/// sysexits.h EX_CONFIG: the configuration is invalid.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can always be built on a supported OS");
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    // First, before anything slow: until a handler exists, SIGHUP would kill the process.
    let signals = match signal::Signals::register() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let path = config::resolve_path(cli.config);
    let config = match config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    match cli.command {
        Command::Check { connect } => {
            if connect {
                let problems = app::check_connect(&config).await;
                if !problems.is_empty() {
                    eprintln!(
                        "error: {} has {} problem(s) when connected:",
                        path.display(),
                        problems.len()
                    );
                    for problem in problems {
                        eprintln!("  {problem}");
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            println!("{}: OK ({} warm jobs)", path.display(), config.jobs.len());
            ExitCode::SUCCESS
        }
        Command::Jobs => {
            print!("{}", app::format_jobs(&config, chrono::Utc::now()));
            ExitCode::SUCCESS
        }
        Command::DemoInit => match demo::init(&config.mysql).await {
            Ok(()) => {
                println!("demo shop schema is up to date in {}", config.mysql.url);
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: demo-init against {}: {error:#}", config.mysql.url);
                ExitCode::FAILURE
            }
        },
        Command::Run { once: false, .. } => match app::run_daemon(config, signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            once: true,
            jobs,
            dry_run,
        } => {
            let mode = if dry_run { Mode::DryRun } else { Mode::Write };
            match app::run_once(&config, &jobs, mode).await {
                Ok(outcomes) => {
                    let summary = app::format_summary(&outcomes);
                    // In a dry run stdout carries the key listing; keep the summary apart from it.
                    if dry_run {
                        eprint!("{summary}");
                    } else {
                        print!("{summary}");
                    }
                    if outcomes.iter().all(|o| o.result.is_ok()) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
