//! The one-shot commands: `run --once`, `jobs`, `status`, `invalidate`, `audit`, `dead-letters` — the daemon's parts
//! used briefly, and what they print. (`check --connect` is `check`; the daemon is `app`.)

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::exec::cache::Cache;
use crate::exec::database::Database;
use crate::exec::warm::{Mode, Progress, RunSummary, WarmError, Warmer, panic_message};
use crate::pure::model::WarmJob;

mod status;

pub(crate) use status::Status;

/// One job's result in `run --once`.
pub struct OnceOutcome {
    pub job: Arc<str>,
    pub result: Result<RunSummary, String>,
}

/// Both servers for a one-shot command: no retries, a clear error naming the (redacted) URL that failed.
async fn connect_now(config: &Config) -> anyhow::Result<(Database, Cache)> {
    let db = Database::of_config(config)?;
    db.ping()
        .await
        .with_context(|| format!("MySQL at {}", config.mysql.url))?;
    let cache = Cache::connect(&config.redis)
        .await
        .with_context(|| format!("Redis at {}", config.redis.url))?;
    Ok((db, cache))
}

/// Whether `error` is a server that could not be reached (exit 69), as opposed to one that refused or a job that
/// failed.
pub(crate) fn is_unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<crate::exec::database::DatabaseError>()
            .is_some_and(crate::exec::database::DatabaseError::is_unreachable)
            || cause
                .downcast_ref::<crate::exec::cache::CacheError>()
                .is_some_and(crate::exec::cache::CacheError::is_unreachable)
    })
}

/// Runs the named jobs (or every enabled job) once. Fails fast when MySQL or Redis cannot be reached.
pub async fn run_once(config: &Config, names: &[String], mode: Mode) -> anyhow::Result<Vec<OnceOutcome>> {
    let jobs = select_jobs(config, names)?;
    let (db, cache) = connect_now(config).await?;
    // A partitioned job's pieces are shared with the daemons' workers on the same Redis (this process is named by
    // its host and pid: never the same name as a daemon's claims).
    let instance = Arc::from(format!("{} (run --once)", crate::config::this_process()));
    let pieces = Arc::new(crate::exec::warm::Pieces::new(
        cache.clone(),
        config.pieces_prefix().to_string(),
        instance,
    ));
    let warmer = Arc::new(Warmer::new(db.clone(), cache, config.daemon.max_concurrent_jobs).with_pieces(pieces));

    let progress: Vec<(Arc<str>, Arc<Progress>)> = jobs
        .iter()
        .map(|job| (job.name.clone(), Arc::new(Progress::default())))
        .collect();
    let mut runs = JoinSet::new();
    let mut order = Vec::new();
    for (job, (_, progress)) in jobs.iter().zip(&progress) {
        let (warmer, job, progress) = (warmer.clone(), job.clone(), progress.clone());
        let name = job.name.clone();
        let handle = runs.spawn(async move {
            let Some(guard) = warmer.claim(&job.name) else {
                return Err(WarmError::AlreadyRunning);
            };
            warmer.run(&guard, &job, mode, &progress).await
        });
        order.push((handle.id(), name));
    }

    let ticker = if std::io::stderr().is_terminal() {
        let mut lines = Vec::new();
        for (job, (name, progress)) in jobs.iter().zip(&progress) {
            let estimate = db.of(job).estimate_rows(&job.query).await;
            lines.push(ProgressLine {
                job: name.clone(),
                progress: progress.clone(),
                estimate,
            });
        }
        Some(tokio::spawn(show_progress(lines)))
    } else {
        None
    };
    let mut results = std::collections::HashMap::new();
    while let Some(joined) = runs.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result.map_err(|e| e.to_string())),
            Err(error) if error.is_panic() => (
                error.id(),
                Err(format!("panicked: {}", panic_message(error.into_panic()))),
            ),
            Err(error) => (error.id(), Err(format!("was cancelled: {error}"))),
        };
        results.insert(id, result);
    }
    if let Some(ticker) = ticker {
        ticker.abort();
        eprint!("\r\x1b[2K");
    }
    db.close().await;
    Ok(order
        .into_iter()
        .map(|(id, job)| OnceOutcome {
            job,
            result: results.remove(&id).unwrap_or_else(|| Err("did not report".into())),
        })
        .collect())
}

/// One job on the progress line.
struct ProgressLine {
    job: Arc<str>,
    progress: Arc<Progress>,
    /// The server's row estimate for the job's query, if it gave one.
    estimate: Option<u64>,
}

/// Redraws one status line on stderr while jobs run, for people watching long jobs: rows, rate, elapsed time, and
/// an ETA where the server estimated the row count.
async fn show_progress(lines: Vec<ProgressLine>) {
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        let line: Vec<String> = lines
            .iter()
            .map(|line| {
                progress_text(
                    &line.job,
                    line.progress.rows.load(Ordering::Relaxed),
                    line.progress.keys.load(Ordering::Relaxed),
                    line.estimate,
                    elapsed,
                )
            })
            .collect();
        eprint!("\r\x1b[2K{}", line.join(" | "));
    }
}

/// `job: 42000/1000000 rows (4%), 41000 keys, 21000 rows/s, 2s, ETA 46s`; without an estimate (or once the rows
/// pass it) no total and no ETA.
fn progress_text(job: &str, rows: u64, keys: u64, estimate: Option<u64>, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { rows as f64 / seconds } else { 0.0 };
    // Whole seconds: a line redrawn twice a second need not show milliseconds.
    let elapsed = crate::pure::words::duration(Duration::from_secs(elapsed.as_secs()));
    match estimate.filter(|&total| total > 0 && rows <= total) {
        Some(total) => {
            let eta = if rate > 0.0 {
                crate::pure::words::duration(Duration::from_secs(((total - rows) as f64 / rate).ceil() as u64))
            } else {
                "?".into()
            };
            format!(
                "{job}: {rows}/~{total} rows ({}%), {keys} keys, {rate:.0} rows/s, {elapsed}, ETA {eta}",
                rows * 100 / total
            )
        }
        None => format!("{job}: {rows} rows, {keys} keys, {rate:.0} rows/s, {elapsed}"),
    }
}

/// The first of `names` that is no job of `config`, said as an error (a command-line mistake: exit 64).
pub fn unknown_job(config: &Config, names: &[String]) -> Option<String> {
    let name = names.iter().find(|name| config.job(name).is_none())?;
    let known: Vec<&str> = config.jobs.iter().map(|job| &*job.name).collect();
    Some(format!(
        "no warm job named \"{name}\" in {}{} (jobs: {})",
        config.path.display(),
        crate::pure::words::did_you_mean(name, known.iter().copied()),
        known.join(", ")
    ))
}

/// The jobs `--job` names (disabled ones included), or every enabled job.
fn select_jobs(config: &Config, names: &[String]) -> anyhow::Result<Vec<WarmJob>> {
    if let Some(error) = unknown_job(config, names) {
        anyhow::bail!(error);
    }
    if names.is_empty() {
        return Ok(config.jobs.iter().filter(|job| job.enabled).cloned().collect());
    }
    Ok(names.iter().filter_map(|name| config.job(name).cloned()).collect())
}

/// The summary table `run --once` prints.
pub(crate) fn format_summary(outcomes: &[OnceOutcome]) -> String {
    let mut rows = vec![[
        "JOB".to_string(),
        "RESULT".into(),
        "ROWS".into(),
        "KEYS".into(),
        "SKIPPED".into(),
        "BYTES".into(),
        "DURATION".into(),
    ]];
    for outcome in outcomes {
        rows.push(match &outcome.result {
            Ok(s) => [
                outcome.job.to_string(),
                "ok".into(),
                s.rows.to_string(),
                s.keys_written.to_string(),
                s.skipped().to_string(),
                if s.bytes_rendered > s.bytes_written {
                    format!(
                        "{} (of {})",
                        crate::pure::words::bytes(s.bytes_written),
                        crate::pure::words::bytes(s.bytes_rendered)
                    )
                } else {
                    crate::pure::words::bytes(s.bytes_written)
                },
                crate::pure::words::duration(s.duration),
            ],
            Err(_) => [
                outcome.job.to_string(),
                "FAILED".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        });
    }
    let mut out = table(&rows);
    for outcome in outcomes {
        match &outcome.result {
            Err(error) => out.push_str(&format!("{}: {error}\n", outcome.job)),
            Ok(summary) if summary.evicted_keys > 0 => out.push_str(&format!(
                "{}: Redis evicted {} during the run (maxmemory): some of the keys written may be gone\n",
                outcome.job,
                crate::pure::words::count(summary.evicted_keys as usize, "key")
            )),
            Ok(_) => {}
        }
    }
    out
}

/// The table `cachewarden jobs` prints.
pub(crate) fn format_jobs(config: &Config, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut rows = vec![[
        "JOB".to_string(),
        "ENABLED".into(),
        "SCHEDULE".into(),
        "TTL".into(),
        "KEY".into(),
        "NEXT RUNS (UTC)".into(),
    ]];
    for job in &config.jobs {
        let ttl = match job.ttl {
            crate::pure::model::Ttl::Expires(ttl) => crate::pure::words::duration(ttl),
            crate::pure::model::Ttl::Never => "none".into(),
        };
        let next = if job.enabled {
            job.schedule
                .upcoming(now, 3)
                .iter()
                .map(|t| crate::pure::words::time(*t))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "-".into()
        };
        rows.push([
            job.name.to_string(),
            if job.enabled { "yes" } else { "no" }.into(),
            job.schedule.written.clone(),
            ttl,
            job.key.to_string(),
            next,
        ]);
    }
    table(&rows)
}

/// `jobs -o json`: per job its name, whether enabled, schedule, TTL in seconds (null: none), key template,
/// whether it fills on a miss, and the next three fire times (UTC, RFC 3339; none for a disabled job).
pub(crate) fn jobs_json(config: &Config, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    config
        .jobs
        .iter()
        .map(|job| {
            let next: Vec<String> = if job.enabled {
                job.schedule.upcoming(now, 3).iter().map(|t| t.to_rfc3339()).collect()
            } else {
                Vec::new()
            };
            serde_json::json!({
                "name": &*job.name,
                "enabled": job.enabled,
                "schedule": job.schedule.written,
                "ttl_seconds": match job.ttl {
                    crate::pure::model::Ttl::Expires(ttl) => Some(ttl.as_secs_f64()),
                    crate::pure::model::Ttl::Never => None,
                },
                "key": job.key.to_string(),
                "type": job.encoding.structure.as_str(),
                "members": job.members.as_ref().map(|members| members.describe()),
                "fill_on_miss": job.fill_on_miss,
                "next_runs": next,
            })
        })
        .collect()
}

/// Runs the consistency audit once; returns the report and whether every sampled key was consistent.
pub(crate) async fn run_audit(config: &Config, names: &[String], sample: usize) -> anyhow::Result<(String, bool)> {
    let jobs = if names.is_empty() {
        config.jobs.clone()
    } else {
        select_jobs(config, names)?
    };
    let (db, cache) = connect_now(config).await?;
    let audits = crate::ops::audit::audit(&cache, &db, &jobs, sample).await?;
    db.close().await;
    let consistent = audits.iter().all(|a| a.stale.is_empty());
    Ok((crate::ops::audit::format_report(&audits), consistent))
}

/// Checks every key of the jobs (`audit --all`); returns the report and whether nothing was found.
pub(crate) async fn run_full_audit(config: &Config, names: &[String]) -> anyhow::Result<(String, bool)> {
    let jobs = if names.is_empty() {
        config.jobs.clone()
    } else {
        select_jobs(config, names)?
    };
    let (db, cache) = connect_now(config).await?;
    let mut audits = Vec::new();
    for job in &jobs {
        audits.push(crate::ops::audit::audit_all(&cache, &db, job, &config.jobs).await?);
    }
    db.close().await;
    let clean = audits.iter().all(crate::ops::audit::FullAudit::clean);
    Ok((crate::ops::audit::format_full_report(&audits), clean))
}

/// The message `cachewarden invalidate` publishes: a plain key when that says it all (what the seed's publisher
/// sends), else JSON. `None` when there is nothing to ask for.
pub(crate) fn invalidation_message(
    keys: &[String],
    patterns: &[String],
    refresh: bool,
    warm: &[String],
) -> Option<String> {
    if keys.is_empty() && patterns.is_empty() && warm.is_empty() {
        return None;
    }
    if let [key] = keys
        && patterns.is_empty()
        && warm.is_empty()
        && !refresh
        && !key.trim_start().starts_with('{')
    {
        return Some(key.clone());
    }
    let (delete, refresh_keys) = if refresh { (&[][..], keys) } else { (keys, &[][..]) };
    let mut message = serde_json::Map::new();
    for (field, values) in [
        ("delete", delete),
        ("patterns", patterns),
        ("refresh", refresh_keys),
        ("warm", warm),
    ] {
        if !values.is_empty() {
            message.insert(field.into(), serde_json::json!(values));
        }
    }
    Some(serde_json::Value::Object(message).to_string())
}

/// Whether the daemon would apply `message`: the same check, with the same reason when it would refuse it.
pub(crate) fn check_invalidation(config: &Config, message: &str) -> Result<(), crate::pure::plan::Refusal> {
    crate::pure::plan::parse_message(message.as_bytes(), &config.channel_policy()).map(drop)
}

/// Publishes `message` on the configured channel, or adds it to the configured stream.
pub(crate) async fn publish_invalidation(config: &Config, message: &str) -> anyhow::Result<String> {
    let cache = Cache::connect(&config.redis)
        .await
        .with_context(|| format!("Redis at {}", config.redis.url))?;
    match &config.channel.stream {
        Some(stream) => {
            let id = cache.stream_add(&stream.name, message).await?;
            Ok(format!("added to stream {} as {id}: {message}", stream.name))
        }
        None => {
            let receivers = cache.publish(&config.channel.name, message).await?;
            if receivers == 0 {
                eprintln!(
                    "warning: nobody is subscribed to {}: is the daemon running? (pub/sub keeps nothing)",
                    config.channel.name
                );
            }
            Ok(format!(
                "published to {} ({}): {message}",
                config.channel.name,
                crate::pure::words::count(receivers as usize, "subscriber")
            ))
        }
    }
}

/// Left-aligned columns separated by two spaces.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `--since`: an RFC 3339 time, or a duration ago (`90m`, `1h`, `2d`).
pub(crate) fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither a time (2026-12-05T06:00:00Z) nor a duration ago (1h)"))?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| format!("{text:?} is too long ago"))?;
    Ok(chrono::Utc::now() - ago)
}

/// The dead letters as a table: when, source, reason, what was wrong, and the message (cut to 200 bytes).
pub(crate) fn format_dead_letters(kept: &[crate::exec::dead_letter::Kept]) -> String {
    if kept.is_empty() {
        return "no dead letters\n".into();
    }
    let mut text = String::new();
    for letter in kept {
        let at = letter.at().map_or("?".into(), crate::pure::words::time);
        text.push_str(&format!(
            "{} {at} {} {}: {}\n",
            letter.id, letter.source, letter.reason, letter.detail
        ));
        if !letter.payload.is_empty() {
            let shown = String::from_utf8_lossy(&letter.payload[..letter.payload.len().min(200)]);
            let cut = if letter.size > 200 {
                format!(" … ({} bytes)", letter.size)
            } else {
                String::new()
            };
            text.push_str(&format!("    message: {shown}{cut}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_progress_line_has_rate_elapsed_and_an_eta_where_an_estimate_exists() {
        let line = super::progress_text("catalog", 40_000, 39_000, Some(1_000_000), Duration::from_millis(2_500));
        assert_eq!(
            line,
            "catalog: 40000/~1000000 rows (4%), 39000 keys, 16000 rows/s, 2s, ETA 1m"
        );
        let line = super::progress_text("catalog", 40_000, 39_000, None, Duration::from_secs(2));
        assert_eq!(line, "catalog: 40000 rows, 39000 keys, 20000 rows/s, 2s");
        // Past the estimate: no total and no ETA rather than a wrong one.
        let line = super::progress_text("catalog", 120, 120, Some(100), Duration::from_secs(1));
        assert_eq!(line, "catalog: 120 rows, 120 keys, 120 rows/s, 1s");
    }
}
