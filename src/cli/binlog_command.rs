//! `cachewarden binlog status|set|reset|replay`: the binlog listener's position shown to an operator (with the running
//! daemon's lag and checkpoint age when it answers) and moved by one —
//! `set` and `reset` only while no daemon runs on this configuration (its admin endpoint answers, or an instance holds
//! the `[ha]` lease), since a running listener saves its own position over any other. Every change prints the old
//! and the new position.

use std::process::ExitCode;

use crate::cli::BinlogAction;
use crate::exec::cache::Cache;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::exit::{CONFIG, FAILED, TEMPFAIL, UNAVAILABLE, USAGE};
use crate::config::{BinlogSettings, CheckpointStore, Config};
use crate::exec::database::Database;
use crate::exec::invalidate::Invalidator;
use crate::exec::warm::{WarmRunner, Warmer};
use crate::pure::model::{OnGap, WarmJob};
use crate::source::binlog::checkpoint::{Checkpoints, Position};
use crate::source::binlog::position::{self, Inspection};
use crate::source::binlog::{BinlogError, BinlogListener, ReplicationUrl, Verdict};
use crate::telemetry::health::Health;

/// Runs the `binlog` subcommand on the source named `source` (the only one when `None`); its exit code.
pub(crate) async fn run(config: &Config, source: Option<&str>, action: &BinlogAction) -> ExitCode {
    let Some(settings) = config.source_of(source) else {
        return no_such_source(config, source);
    };
    let cache = match Cache::connect(&config.redis).await {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("error: Redis at {}: {error}", config.redis.url);
            return ExitCode::from(UNAVAILABLE);
        }
    };
    // The daemon's checkpoint.
    let series = crate::telemetry::metrics::BinlogSeries::new(&settings.name);
    let saved = Checkpoints::new(settings.checkpoint.clone(), cache.clone(), series);
    if let BinlogAction::Replay { from, to } = action {
        return replay(config, settings, &saved, cache, from, to.as_deref()).await;
    }
    if !matches!(action, BinlogAction::Status)
        && let Some(running) = running(config, &cache).await
    {
        eprintln!(
            "error: {running}: a running listener saves its own position over this one. Stop it first (systemctl \
             stop cachewarden, and every [ha] instance), then run this again; the next start reads from the new \
             position"
        );
        return ExitCode::from(TEMPFAIL);
    }
    let outcome = match action {
        BinlogAction::Status => {
            let times = times(config, settings).await;
            position::inspect(settings, &saved).await.map(|inspection| {
                print!("{}", status_text(&inspection, &times));
            })
        }
        BinlogAction::Set { file, pos, gtid } => {
            set_by_hand(settings, &saved, file.as_deref(), *pos, gtid.as_deref()).await
        }
        BinlogAction::Replay { .. } => unreachable!("replayed above"),
        BinlogAction::Reset => saved.remove().await.map(|old| {
            tracing::info!(old = ?old.as_ref().map(ToString::to_string), "The binlog checkpoint was removed by hand.");
            println!(
                "checkpoint: {} → none",
                old.map_or("none".to_string(), |old| old.to_string())
            );
            println!(
                "the next start begins at the server's current position and recovers as after a gap (on_gap = {:?})",
                settings.on_gap
            );
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(match error.verdict() {
                Verdict::Transient => UNAVAILABLE,
                Verdict::AccessDenied => CONFIG,
                _ => FAILED,
            })
        }
    }
}

/// Says that `source` names no binlog source of `config` (or that one must be named); the exit code.
fn no_such_source(config: &Config, source: Option<&str>) -> ExitCode {
    let names: Vec<&str> = config.binlogs.iter().map(|binlog| &*binlog.name).collect();
    match (source, names.as_slice()) {
        (_, []) => eprintln!(
            "error: {} has no [binlog] section: there is no position to show or move",
            config.path.display()
        ),
        (None, names) => eprintln!(
            "error: {} follows several binlog sources ({}): name one with --source",
            config.path.display(),
            names.join(", ")
        ),
        (Some(source), names) => eprintln!(
            "error: {} has no binlog source named \"{source}\" (its sources: {})",
            config.path.display(),
            names.join(", ")
        ),
    }
    ExitCode::from(if names.is_empty() { CONFIG } else { USAGE })
}

/// `binlog set`: the checkpoint moved to `file`:`pos` or to the GTID position `gtid`, old and new printed.
async fn set_by_hand(
    settings: &BinlogSettings,
    saved: &Checkpoints,
    file: Option<&str>,
    pos: Option<u64>,
    gtid: Option<&str>,
) -> Result<(), BinlogError> {
    let set = match (file, pos, gtid) {
        (_, _, Some(gtid)) => position::set_gtid(settings, saved, gtid).await,
        (Some(file), Some(pos), None) => position::set(settings, saved, file, pos).await,
        _ => unreachable!("clap asks for --file and --pos, or --gtid"),
    };
    set.map(|(old, new)| {
        tracing::info!(old = ?old.as_ref().map(ToString::to_string), new = %new, "The binlog checkpoint was set by hand.");
        println!("checkpoint: {} → {new}", old.map_or("none".to_string(), |old| old.to_string()));
        match &new.gtid {
            Some(gtid) if new.file.is_empty() => {
                println!("the next start reads the binlog after the transactions of {gtid}")
            }
            _ => println!("the next start reads the binlog from {}:{}", new.file, new.pos),
        }
    })
}

/// How long a replay may read without its position moving before it gives up.
const REPLAY_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// `binlog replay`: a listener of its own (a server id of its own, a checkpoint in a temporary file that starts at
/// `from`), applying the configuration's rules through an invalidator and warm runner of its own until its position
/// reaches `to`.
async fn replay(
    config: &Config,
    settings: &BinlogSettings,
    saved: &Checkpoints,
    cache: Cache,
    from: &str,
    to: Option<&str>,
) -> ExitCode {
    let failed = |message: String, code: u8| {
        eprintln!("error: {message}");
        ExitCode::from(code)
    };
    let (start, end) = match replay_range(settings, saved, from, to).await {
        Ok(range) => range,
        Err((message, code)) => return failed(message, code),
    };
    let mut config = config.clone();
    if let Err(error) = crate::cli::check::learn_schema(&mut config).await {
        tracing::warn!(%error, "Could not read the foreign keys and views: the replay follows the rules the file gives.");
    }
    let scratch = std::env::temp_dir().join(format!("cachewarden-replay-{}", std::process::id()));
    let series = crate::telemetry::metrics::BinlogSeries::new(&settings.name);
    let checkpoints = Checkpoints::new(CheckpointStore::File(scratch.clone()), cache.clone(), series);
    if let Err(error) = checkpoints.save(&start).await {
        return failed(error.to_string(), FAILED);
    }
    let db = match Database::of_config(&config) {
        Ok(db) => db,
        Err(error) => return failed(error.to_string(), CONFIG),
    };
    let (listener, runner) = replayer(&config, settings, &checkpoints, cache, db.clone());
    let shutdown = CancellationToken::new();
    let reading = tokio::spawn(listener.run(shutdown.clone()));
    let warming = tokio::spawn(runner.run(shutdown.clone()));
    info!(from = %start, to = %end, "Replaying a range of the binlog through the rules.");
    let outcome = replayed(&checkpoints, &start, &end).await;
    shutdown.cancel();
    let _ = tokio::join!(reading, warming);
    db.close().await;
    let _ = std::fs::remove_file(&scratch);
    match outcome {
        Ok(reached) => {
            info!(from = %start, to = %end, reached = %reached, "The binlog range was replayed.");
            println!("replayed {start} → {end} (applied through {reached})");
            ExitCode::SUCCESS
        }
        Err(message) => failed(message, FAILED),
    }
}

/// `--from` (located on the server) and `--to` (the server's current position when left out), `from` first; or what
/// is wrong, with the exit code.
async fn replay_range(
    settings: &BinlogSettings,
    saved: &Checkpoints,
    from: &str,
    to: Option<&str>,
) -> Result<(Position, Position), (String, u8)> {
    let Some(start) = Position::parse(from).filter(|position| !position.file.is_empty()) else {
        return Err((
            format!("--from {from:?} is not FILE:POS (e.g. binlog.000042:1234)"),
            USAGE,
        ));
    };
    let start = position::locate(settings, &start.file, start.pos)
        .await
        .map_err(|error| (error.to_string(), FAILED))?;
    let end = match to {
        Some(to) => Position::parse(to)
            .filter(|position| !position.file.is_empty())
            .ok_or_else(|| (format!("--to {to:?} is not FILE:POS"), USAGE))?,
        None => position::inspect(settings, saved)
            .await
            .map(|inspection| Position::at(inspection.server.file, inspection.server.pos))
            .map_err(|error| (error.to_string(), UNAVAILABLE))?,
    };
    if start.earlier(&end) != Some(&start) {
        return Err((format!("--from {start} is not before --to {end}"), USAGE));
    }
    Ok((start, end))
}

/// A listener of the replay's own (a server id of its own, its checkpoint in `checkpoints`, no gap recovery) and the
/// warm runner its rules' warm runs go to.
fn replayer(
    config: &Config,
    settings: &BinlogSettings,
    checkpoints: &Checkpoints,
    cache: Cache,
    db: Database,
) -> (BinlogListener, WarmRunner) {
    let (_jobs_tx, jobs) = watch::channel::<Arc<[WarmJob]>>(config.jobs.clone().into());
    let (triggers_tx, triggers) = mpsc::channel(256);
    let warmer = Arc::new(Warmer::new(
        db.clone(),
        cache.clone(),
        config.daemon.max_concurrent_jobs,
    ));
    let health = Health::default();
    let invalidator = Invalidator::new(
        cache,
        db,
        jobs.clone(),
        triggers_tx,
        config.channel.max_keys_per_pattern,
        health.clone(),
    )
    .with_warmer(warmer.clone());
    let listener = BinlogListener {
        settings: BinlogSettings {
            // Its own: the daemon's connection (same id) would be cut off by it.
            server_id: 0x8000_0000 | fastrand::u32(..0x7fff_ffff),
            on_gap: OnGap::None,
            ..settings.clone()
        },
        checkpoints: checkpoints.clone(),
        url: Arc::new(ReplicationUrl::new(settings.url.clone(), None)),
        rules: config.rules_of(settings),
        invalidator: Arc::new(invalidator),
        health,
        fallback: None,
        dead_letters: Default::default(),
        series: crate::telemetry::metrics::BinlogSeries::new(&settings.name),
    };
    let runner = WarmRunner::new(warmer, jobs, triggers, config.daemon.shutdown_grace, Default::default());
    (listener, runner)
}

/// Waits until the replay's checkpoint passes `end`; where it got. `Err` when it stays put for [`REPLAY_STALL`].
async fn replayed(checkpoints: &Checkpoints, start: &Position, end: &Position) -> Result<Position, String> {
    let mut last = start.clone();
    let mut moved = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Ok(Some(now)) = checkpoints.load().await else {
            continue;
        };
        if end.earlier(&now) == Some(end) {
            return Ok(now);
        }
        if now.to_string() != last.to_string() {
            (last, moved) = (now, std::time::Instant::now());
        } else if moved.elapsed() > REPLAY_STALL {
            return Err(format!(
                "the replay stayed at {last} for {} without reaching {end} (see the log above)",
                crate::pure::words::duration(REPLAY_STALL)
            ));
        }
    }
}

/// Who is running on this configuration, if anyone: the admin endpoint answering, or the `[ha]` lease held.
async fn running(config: &Config, cache: &Cache) -> Option<String> {
    let addr = config.admin.listen;
    if config.admin.enabled
        && let Ok(reply) = crate::ops::admin::request_to(&config.admin, hyper::Method::GET, "/healthz").await
        && reply.status == 200
    {
        return Some(format!("a daemon is running (its admin endpoint answers at {addr})"));
    }
    let ha = config.ha.as_ref()?;
    match cache.get(&ha.key).await {
        Ok(Some(_)) => Some(format!("an instance holds the [ha] lease ({})", ha.key)),
        _ => None,
    }
}

/// What `binlog status` says about time: the running daemon's lag and checkpoint age (from its metrics), or what can
/// be known without it.
struct Times {
    /// Seconds the applied changes are behind the server's clock, as the running daemon measures it.
    lag: Option<f64>,
    /// Seconds since the checkpoint was saved, and where that comes from.
    age: Option<(f64, &'static str)>,
    /// Why the lag is not known.
    no_daemon: String,
}

/// The value of the unlabelled sample `name` in the Prometheus text a running daemon's `/metrics` answered.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// [`Times`] from the daemon's `/metrics` when it answers, else the checkpoint file's time.
async fn times(config: &Config, settings: &BinlogSettings) -> Times {
    let addr = config.admin.listen;
    let now = crate::telemetry::metrics::unix_now().as_secs_f64();
    if config.admin.enabled
        && let Ok(reply) = crate::ops::admin::request_to(&config.admin, hyper::Method::GET, "/metrics").await
        && reply.status == 200
    {
        let labelled = |name: &str| format!("{name}{{source=\"{}\"}}", settings.name);
        let saved = sample(
            &reply.body,
            &labelled("cachewarden_binlog_checkpoint_timestamp_seconds"),
        );
        return Times {
            lag: sample(&reply.body, &labelled("cachewarden_binlog_lag_seconds")),
            age: saved
                .filter(|saved| *saved > 0.0)
                .map(|saved| ((now - saved).max(0.0), "the running daemon's last save")),
            no_daemon: String::new(),
        };
    }
    let age = match &settings.checkpoint {
        CheckpointStore::File(path) => std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|at| ((now - at.as_secs_f64()).max(0.0), "the checkpoint file's time")),
        CheckpointStore::Redis(_) => None,
    };
    let no_daemon = if config.admin.enabled {
        format!("no daemon answers at {addr}")
    } else {
        "the admin endpoint is off".to_string()
    };
    Times {
        lag: None,
        age,
        no_daemon,
    }
}

/// `binlog status` for people.
fn status_text(inspection: &Inspection, times: &Times) -> String {
    let mut text = String::new();
    let checkpoint = inspection.checkpoint.as_ref().map_or(
        "none (the next start begins at the server's position and recovers as after a gap)".into(),
        |c| c.to_string(),
    );
    text.push_str(&format!("checkpoint: {checkpoint}\n"));
    text.push_str(&format!("server:     {}\n", inspection.server));
    match (inspection.checkpoint_on_server(), inspection.bytes_behind()) {
        (Some(true), Some(behind)) => text.push_str(&format!("behind:     {behind} bytes of binlog\n")),
        (Some(false), _) => text.push_str(
            "behind:     the checkpoint's file is no longer on the server (purged): the next start is a gap\n",
        ),
        _ => text.push_str("behind:     another server's offset: the next start resumes by its GTID position\n"),
    }
    match times.lag {
        Some(lag) => text.push_str(&format!(
            "lag:        {} behind the server's clock (the running daemon's)\n",
            crate::pure::words::seconds(lag)
        )),
        None => text.push_str(&format!(
            "lag:        not measured: {} (a daemon measures it as it applies)\n",
            times.no_daemon
        )),
    }
    if inspection.checkpoint.is_some() {
        match times.age {
            Some((age, from)) => text.push_str(&format!(
                "saved:      {} ago ({from})\n",
                crate::pure::words::seconds(age)
            )),
            None => text.push_str(&format!(
                "saved:      not known: {} and a Redis checkpoint keeps no time\n",
                times.no_daemon
            )),
        }
    }
    let files: Vec<&str> = inspection.files.iter().map(|(file, _)| file.as_str()).collect();
    text.push_str(&format!(
        "files:      {} ({} … {})\n",
        files.len(),
        files.first().unwrap_or(&"-"),
        files.last().unwrap_or(&"-")
    ));
    text.push_str(&format!("retention:  {}\n", inspection.retention.can_be_down_for()));
    for warning in &inspection.warnings {
        text.push_str(&format!("warning:    {warning}\n"));
    }
    text
}
