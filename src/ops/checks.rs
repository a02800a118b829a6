//! The readiness checks: Redis and MySQL pinged on an interval (and Redis' keyspace hit ratio sampled while there),
//! into the daemon's [`Health`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::exec::cache::{Cache, info_field};
use crate::exec::database::Database;
use crate::telemetry::health::{Health, Liveness};
use crate::telemetry::metrics;

/// How often both servers are pinged: fast enough for a load balancer's readiness probe, cheap for the servers.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Pings Redis and MySQL every [`CHECK_INTERVAL`].
pub(crate) struct HealthChecker {
    pub db: Database,
    pub cache: Cache,
    pub health: Health,
    pub liveness: Liveness,
}

impl HealthChecker {
    /// Checks until `shutdown` is cancelled; logs each change of state once.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_ready = true;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.liveness.beat("health");
            let (redis, mysql) = tokio::join!(self.check_redis(), self.check_mysql());
            self.health.set_servers(redis, mysql);
            let state = self.health.state();
            match (was_ready, state.is_ready()) {
                (true, false) => warn!(reason = %state.reason(), "Not ready."),
                (false, true) => info!("Ready again."),
                _ => {}
            }
            was_ready = state.is_ready();
        }
    }

    async fn check_redis(&self) -> Option<String> {
        let mut checked = tokio::time::timeout(CHECK_INTERVAL, self.cache.info_stats()).await;
        // A refused password (rotated under us, or changed and changed back): read `[redis] url` again once,
        // connect anew, and check again.
        if matches!(&checked, Ok(Err(error)) if error.is_auth_failure()) {
            match self.cache.recover_from_refused_password().await {
                Ok(true) => info!("Redis refused the password; [redis] url changed where it is read from: using it."),
                Ok(false) => info!("Redis refused the password; connected again with the same one."),
                Err(error) => debug!(%error, "Redis refused the password; connecting again failed."),
            }
            checked = tokio::time::timeout(CHECK_INTERVAL, self.cache.info_stats()).await;
        }
        match checked {
            Ok(Ok(info)) => {
                if let (Some(hits), Some(misses)) =
                    (info_field(&info, "keyspace_hits"), info_field(&info, "keyspace_misses"))
                {
                    metrics::record_keyspace(hits, misses, info_field(&info, "evicted_keys").unwrap_or(0));
                }
                None
            }
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {CHECK_INTERVAL:?}")),
        }
    }

    /// `[mysql]`, and each binlog source's own server for its jobs (`read_url`), named.
    async fn check_mysql(&self) -> Option<String> {
        let readers = self.db.source_readers();
        let checks = std::iter::once((None, self.db.clone()))
            .chain(readers.into_iter().map(|(source, db)| (Some(source), db)))
            .map(|(source, db)| async move {
                let problem = match tokio::time::timeout(CHECK_INTERVAL, db.ping()).await {
                    Ok(Ok(())) => return None,
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no answer within {CHECK_INTERVAL:?}"),
                };
                Some(match source {
                    None => problem,
                    Some(source) => format!("the server the jobs of source \"{source}\" read (read_url): {problem}"),
                })
            });
        let problems: Vec<String> = futures_util::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_name() {
        let info = "# Stats\r\ntotal_connections_received:5\r\nkeyspace_hits:42\r\nkeyspace_misses:8\r\n";
        assert_eq!(info_field(info, "keyspace_hits"), Some(42));
        assert_eq!(info_field(info, "keyspace_misses"), Some(8));
        assert_eq!(info_field(info, "keyspace"), None);
    }
}
