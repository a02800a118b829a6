//! Is the daemon well? Two separate questions, whose answers are kept here.
//!
//! *Ready*: can it reach Redis and MySQL right now, and is no part stalled? `ops::checks::HealthChecker` pings both on
//! an interval; every part reports a stall it is in; `/readyz` and the `*_up` metrics read the result from
//! [`Health`].
//!
//! *Alive*: are the work loops still turning? Each loop calls [`Liveness::beat`] as it goes round; the systemd
//! watchdog is only fed while every registered loop has beaten recently, so a wedged runtime gets restarted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics;

/// The last health check's findings.
#[derive(Debug, Clone)]
pub(crate) struct HealthState {
    /// `None` when Redis answered, else why not.
    pub redis: Option<String>,
    /// `None` when MySQL answered, else why not.
    pub mysql: Option<String>,
    /// Work loops that are stuck, with why (`binlog`: applying changes keeps failing).
    pub stalled: Vec<(Arc<str>, String)>,
}

impl HealthState {
    /// Both servers answered.
    pub(crate) fn is_ready(&self) -> bool {
        self.redis.is_none() && self.mysql.is_none() && self.stalled.is_empty()
    }

    /// A one-line reason for not being ready.
    pub(crate) fn reason(&self) -> String {
        let mut reasons = Vec::new();
        if let Some(redis) = &self.redis {
            reasons.push(format!("redis: {redis}"));
        }
        if let Some(mysql) = &self.mysql {
            reasons.push(format!("mysql: {mysql}"));
        }
        for (task, why) in &self.stalled {
            reasons.push(format!("{task}: {why}"));
        }
        reasons.join("; ")
    }
}

/// Shared view of server health and of stuck work loops.
#[derive(Debug, Clone)]
pub(crate) struct Health(Arc<Mutex<HealthState>>);

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(HealthState {
            redis: Some("not checked yet".into()),
            mysql: Some("not checked yet".into()),
            stalled: Vec::new(),
        })))
    }
}

impl Health {
    /// The latest findings.
    pub(crate) fn state(&self) -> HealthState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reports `task` stuck (`Some(why)`) or working again (`None`); a stuck task makes the daemon not ready.
    pub(crate) fn set_stalled(&self, task: &str, why: Option<String>) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.stalled.retain(|(name, _)| &**name != task);
        if let Some(why) = why {
            state.stalled.push((task.into(), why));
        }
    }

    /// Records why each server did not answer (`None`: it did), here and in the `*_up` metrics.
    pub(crate) fn set_servers(&self, redis: Option<String>, mysql: Option<String>) {
        metrics::record_health(redis.is_none(), mysql.is_none());
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.redis = redis;
        state.mysql = mysql;
    }
}

/// Heartbeats of the work loops.
#[derive(Debug, Clone, Default)]
pub struct Liveness(Arc<Mutex<HashMap<&'static str, Instant>>>);

impl Liveness {
    /// Records that the loop `name` went round just now.
    pub(crate) fn beat(&self, name: &'static str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Instant::now());
    }

    /// Whether at least one loop has registered and every one beat within `max_age`.
    pub(crate) fn is_alive(&self, max_age: Duration) -> bool {
        let beats = self.0.lock().unwrap_or_else(|p| p.into_inner());
        !beats.is_empty() && beats.values().all(|at| at.elapsed() <= max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_needs_every_loop_to_beat() {
        let liveness = Liveness::default();
        assert!(!liveness.is_alive(Duration::from_secs(1)), "nothing registered yet");
        liveness.beat("a");
        liveness.beat("b");
        assert!(liveness.is_alive(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(30));
        liveness.beat("a");
        assert!(!liveness.is_alive(Duration::from_millis(20)), "b is stale");
    }

    #[test]
    fn readiness_reason_names_each_server() {
        let state = HealthState {
            redis: Some("connection refused".into()),
            mysql: None,
            stalled: Vec::new(),
        };
        assert!(!state.is_ready());
        assert_eq!(state.reason(), "redis: connection refused");
    }

    #[test]
    fn a_stalled_task_makes_the_daemon_not_ready_until_it_recovers() {
        let health = Health::default();
        health.set_servers(None, None);
        assert!(health.state().is_ready());
        health.set_stalled("binlog", Some("NOPERM".into()));
        assert!(!health.state().is_ready());
        assert_eq!(health.state().reason(), "binlog: NOPERM");
        health.set_stalled("binlog", None);
        assert!(health.state().is_ready());
    }
}
