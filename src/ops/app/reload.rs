//! SIGHUP: the configuration read again, and every part of it either applied (jobs, the allow-list, rotated
//! credentials) or reported as needing a restart — nothing changes silently.

use tracing::{error, info, warn};

use crate::config::{self, BinlogSettings, ChannelSettings, Config, RedisSettings};
use crate::exec::cache;
use crate::telemetry::metrics;

/// Re-reads the configuration for SIGHUP. `None` (old configuration kept) when it is invalid.
///
/// Jobs are replaced: added jobs are scheduled, removed ones unscheduled, changed ones take effect from their next
/// run; runs in progress finish with the definition they started with. Connection and process settings need a
/// restart: a change to them is reported and otherwise ignored, so nothing changes silently.
pub(super) fn reload(current: &Config) -> Option<Config> {
    let mut new = read_again(current)?;
    // The foreign keys read at start apply to the new file too (a new foreign key needs a restart).
    new.learn_schema(current.schema.clone());
    for section in needing_restart(current, &new) {
        warn!(
            section,
            "SIGHUP: this section changed; it takes effect only after a restart."
        );
    }
    let old: Vec<&str> = current.jobs.iter().map(|job| &*job.name).collect();
    let added: Vec<&str> = new
        .jobs
        .iter()
        .map(|job| &*job.name)
        .filter(|name| !old.contains(name))
        .collect();
    let removed: Vec<&str> = old.iter().copied().filter(|name| new.job(name).is_none()).collect();
    info!(
        jobs = new.jobs.len(),
        ?added,
        ?removed,
        "SIGHUP: configuration reloaded."
    );
    // Only the added jobs' series: the rest (`redis_up`, the keyspace sample) keep what they read.
    metrics::initialise_jobs(&added, current.misses.is_some());
    metrics::record_reload(true);
    Some(applied(current, new))
}

/// The file read again; `None` (each problem logged) when it is invalid.
fn read_again(current: &Config) -> Option<Config> {
    match config::load(&current.path, current.credentials.as_deref()) {
        Ok(new) => Some(new),
        Err(error) => {
            for problem in error.problems() {
                error!(line = problem.line, location = %problem.location, problem = %problem.message, "Invalid configuration.");
            }
            // Each problem was logged above; the summary only counts them (the error's text would list them again).
            match error.problems().len() {
                0 => error!(%error, "SIGHUP: the new configuration is invalid; still running the previous one."),
                problems => error!(
                    problems,
                    "SIGHUP: the new configuration is invalid; still running the previous one."
                ),
            }
            metrics::record_reload(false);
            None
        }
    }
}

/// The sections that changed but take effect only after a restart.
fn needing_restart(current: &Config, new: &Config) -> Vec<&'static str> {
    let fixed = [
        // New credentials in the same URL are applied (see `Work::reconnect`); any other change needs a restart.
        (
            "[redis]",
            !cache::only_credentials_differ(&new.redis.url, &current.redis.url)
                || RedisSettings {
                    url: current.redis.url.clone(),
                    ..new.redis.clone()
                } != current.redis,
        ),
        ("[daemon]", new.daemon != current.daemon),
        ("[admin]", new.admin != current.admin),
        ("[ha]", new.ha != current.ha),
        ("[misses]", new.misses != current.misses),
        (
            "[binlog] and [[on_change]]",
            // The URL is applied (see `Work::reconnect`).
            with_urls_of(&new.binlogs, &current.binlogs) != current.binlogs || new.rules != current.rules,
        ),
        (
            "[channel]",
            ChannelSettings {
                allow: current.channel.allow.clone(),
                ..new.channel.clone()
            } != current.channel,
        ),
    ];
    fixed
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
}

/// What runs from now on: the new jobs and allow-list, rotated credentials, and every other section as it was.
fn applied(current: &Config, new: Config) -> Config {
    Config {
        credentials: current.credentials.clone(),
        redis: if cache::only_credentials_differ(&new.redis.url, &current.redis.url) {
            RedisSettings {
                url: new.redis.url.clone(),
                ..current.redis.clone()
            }
        } else {
            current.redis.clone()
        },
        daemon: current.daemon.clone(),
        admin: current.admin.clone(),
        // Of [binlog], only each source's URL applies without a restart.
        binlogs: with_urls_of(&current.binlogs, &new.binlogs),
        rules: current.rules.clone(),
        ha: current.ha.clone(),
        misses: current.misses.clone(),
        // The allow-list follows the jobs (it defaults to their key templates); the rest needs a restart.
        channel: ChannelSettings {
            allow: new.channel.allow.clone(),
            ..current.channel.clone()
        },
        ..new
    }
}

/// `sources` with the URL of the source of the same name in `urls` (where there is one).
fn with_urls_of(sources: &[BinlogSettings], urls: &[BinlogSettings]) -> Vec<BinlogSettings> {
    sources
        .iter()
        .map(|source| match urls.iter().find(|other| other.name == source.name) {
            Some(other) => BinlogSettings {
                url: other.url.clone(),
                ..source.clone()
            },
            None => source.clone(),
        })
        .collect()
}
