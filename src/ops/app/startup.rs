//! Start-up: both servers connected (unreachable ones retried with backoff while a stop signal may still end it),
//! and what they must allow asked before any task starts.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::Misconfigured;
use crate::config::{self, Config};
use crate::exec::cache::Cache;
use crate::exec::database::Database;
use crate::ops::access::{self, Checked};
use crate::ops::signal::{SignalEvent, Signals};
use crate::pure::backoff::Backoff;
use crate::telemetry::health::Health;

/// What the servers must allow, asked before any task starts: the Redis ACL (when the user may ask it, see
/// [`access`]) and the binlog connection. A refusal is [`Misconfigured`]; a server that does not answer now is left
/// to the tasks' own retries.
pub(super) async fn preflight(config: &Config, cache: &Cache) -> anyhow::Result<()> {
    let mut needs = access::redis_needs(config);
    match access::module_needs(cache, config).await {
        Ok((missing, _)) if !missing.is_empty() => return Err(Misconfigured(missing.join("\n")).into()),
        Ok((_, module)) => needs.extend(module),
        Err(error) => warn!(%error, "Could not ask Redis which module commands it has."),
    }
    match access::check(cache, &needs).await {
        Ok(Checked::Refused(refused)) if !refused.is_empty() => {
            let list: Vec<String> = refused.iter().map(|refusal| format!("  {refusal}")).collect();
            return Err(Misconfigured(format!(
                "the Redis ACL refuses {} this configuration needs; grant them (docs/operations.md):\n{}",
                crate::pure::words::count(refused.len(), "command"),
                list.join("\n")
            ))
            .into());
        }
        Ok(Checked::Refused(_)) => info!("The Redis ACL allows every command and key this configuration needs."),
        Ok(Checked::Unchecked(why)) => {
            info!(%why, "The Redis ACL was not checked up front; a refusal will show at run time.")
        }
        Err(error) => warn!(%error, "Could not check the Redis ACL up front."),
    }
    if let Err(why) = crate::ops::versions::check(cache, &config.instance_name()).await {
        return Err(Misconfigured(why).into());
    }
    for binlog in &config.binlogs {
        let label = &binlog.label;
        match crate::source::binlog::preflight(&binlog.url, binlog.server_id).await {
            // (Its warnings are the listener's to log, at its first session.)
            Ok(_) => {}
            // One source of several that cannot be followed stops none of the others: its listener reports it (not
            // ready, naming it) and tries again every minute.
            Err(error) if error.is_definite() && config.binlogs.len() > 1 => {
                error!(%error, source = %binlog.name, "{label}: cannot follow the binlog; the other sources are followed.")
            }
            Err(error) if error.is_definite() => {
                return Err(Misconfigured(format!("[binlog]: cannot follow the binlog: {error}")).into());
            }
            Err(error) => warn!(%error, "{label}: could not check the binlog connection up front; it will be retried."),
        }
    }
    Ok(())
}

/// What the server knows of the jobs' tables (cascading foreign keys, unique keys, views; see `derive::schema`) taken
/// into the derived rules, once at start (a reload keeps it: a new foreign key or index needs a restart). Read only when a job follows its SQL; a failure is logged and the
/// rules stay as the file alone gives them.
pub(super) async fn learn_schema(config: &mut Config, db: &Database) {
    if config.binlogs.is_empty() || !config.jobs.iter().any(|job| job.derive_rules) {
        return;
    }
    match db.schema_everywhere(&|source| config.databases_read(source)).await {
        Ok(schema) => {
            let before = config.rules.len();
            let (keys, unique, views) = (schema.foreign_keys.len(), schema.unique_keys.len(), schema.views.len());
            config.learn_schema(Arc::new(schema));
            info!(
                cascading_foreign_keys = keys,
                unique_keys = unique,
                views,
                rules = config.rules.len(),
                added = config.rules.len().saturating_sub(before),
                "Read the jobs' tables from information_schema and derived the rules with them."
            );
        }
        Err(error) => warn!(
            %error,
            "Could not read the jobs' tables from information_schema: changes foreign keys cascade into them are not \
             followed (keys may stay stale up to their TTL), and key columns are taken as unique."
        ),
    }
}

/// Returns when SIGTERM or SIGINT arrives (a reload or warm-now meanwhile is dropped: the configuration being
/// checked is the one just read, and jobs run at start as configured).
pub(super) async fn stop_requested(signals: &mut Signals) {
    while signals.recv().await != SignalEvent::Stop {}
}

/// Connects to both servers, retrying unreachable ones with backoff (the caller races it against a stop).
pub(super) async fn connect_with_retry(config: &Config, health: &Health) -> anyhow::Result<(Database, Cache)> {
    let (path, credentials) = (config.path.clone(), config.credentials.clone());
    let db = Database::of_config(config)?.rereading(Arc::new(move || {
        config::load(&path, credentials.as_deref()).ok().map(|new| new.mysql)
    }));
    let mut backoff = Backoff::attempts();
    let mut cache = None;
    loop {
        let mut redis_down = None;
        if cache.is_none() {
            match Cache::connect(&config.redis).await {
                Ok(connected) => {
                    let (path, credentials) = (config.path.clone(), config.credentials.clone());
                    connected.rereading(Box::new(move || {
                        config::load(&path, credentials.as_deref())
                            .ok()
                            .map(|new| new.redis.url)
                    }));
                    cache = Some(connected);
                }
                Err(error) if error.is_transient() => {
                    warn!(redis = %config.redis.url, %error, "Redis is unreachable; will retry.");
                    redis_down = Some(format!("waiting for the first connection: {error}"));
                }
                Err(error) => return Err(Misconfigured(format!("Redis at {}: {error}", config.redis.url)).into()),
            }
        }
        let mysql_down = match db.ping().await {
            Ok(()) => None,
            Err(error) if error.is_transient() => {
                warn!(mysql = %config.mysql.url, %error, "MySQL is unreachable; will retry.");
                Some(format!("waiting for the first connection: {error}"))
            }
            Err(error) => return Err(Misconfigured(format!("MySQL at {}: {error}", config.mysql.url)).into()),
        };
        let ready = mysql_down.is_none() && redis_down.is_none();
        health.set_servers(redis_down, mysql_down);
        if ready && let Some(cache) = cache.take() {
            return Ok((db, cache));
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
