//! Instances sharing one Redis, one active (`[ha]`): the leader lease in Redis, and what each instance is.
//!
//! Instances compete for one key: `SET key token NX PX lease_ttl`. The holder renews it every third of the TTL with
//! a script that extends it only if it still holds this instance's token; a standby tries to take it every
//! [`STANDBY_POLL`], so a released lease is taken at once and an expired one within the TTL plus one poll. A stop
//! (SIGTERM) releases the lease with a script that deletes it only if it is still ours.
//!
//! The token also fences the writes ([`crate::exec::cache::Fence`]): every value-writing script checks that the lease key
//! still holds it, so a leader that was paused or cut off past its lease cannot overwrite what its successor wrote.
//! Locally the fence closes when a renewal has not come back before the lease could have run out by this process's
//! clock (a tenth of the TTL early, for clock drift), before any successor can exist.
//!
//! The token reads `instance|since|nonce` (since = Unix milliseconds of the acquisition), so a standby can say who
//! leads and for how long.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::HaSettings;
use crate::exec::cache::{Cache, CacheError, Fence, LeaseAttempt};
use crate::telemetry::metrics;

/// How often a standby tries to take the lease.
const STANDBY_POLL: Duration = Duration::from_millis(200);

/// What this instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not yet asked Redis.
    Starting,
    Leader,
    Standby,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

/// This instance's role and what it knows of the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub role: Role,
    /// This instance's name.
    pub instance: String,
    /// The leader's name (this instance's when it leads), if any instance holds the lease.
    pub leader: Option<String>,
    /// When the leader took the lease.
    pub leader_since: Option<SystemTime>,
    /// For a leader: whether this term took over from a leader this instance saw alive (so the producers continue
    /// rather than start: no `run_on_start` runs, and the channel resyncs per `on_gap`).
    pub took_over: bool,
}

impl Status {
    /// One line for people: `leader (since 2026-11-26T17:30:00Z)`, `standby (leader: host-a:4242, for 2m5s)`.
    pub(crate) fn describe(&self) -> String {
        let age = self
            .leader_since
            .and_then(|since| SystemTime::now().duration_since(since).ok())
            .map(|age| crate::pure::words::duration(Duration::from_secs(age.as_secs())));
        match (self.role, &self.leader, age) {
            (Role::Leader, _, Some(age)) => format!("leader (for {age})"),
            (Role::Standby, Some(leader), Some(age)) => format!("standby (leader: {leader}, for {age})"),
            (Role::Standby, None, _) => "standby (no leader at the moment)".into(),
            (role, _, _) => role.as_str().into(),
        }
    }

    /// The status as `/ha` serves it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let since = self.leader_since.map(|since| crate::pure::words::time(since.into()));
        let age = self
            .leader_since
            .and_then(|since| SystemTime::now().duration_since(since).ok())
            .map(|age| age.as_secs_f64());
        serde_json::json!({
            "role": self.role.as_str(),
            "instance": self.instance,
            "leader": self.leader,
            "leader_since": since,
            "lease_age_seconds": age,
        })
    }
}

/// Competes for, holds and renews the lease; publishes this instance's [`Status`].
pub(crate) struct LeaderLease {
    cache: Cache,
    settings: HaSettings,
    fence: Arc<Fence>,
    status: watch::Sender<Status>,
}

/// What an attempt to take the lease found.
enum Attempt {
    Taken {
        token: Arc<str>,
        epoch: u64,
        sent: Instant,
    },
    /// Another instance holds it, with this token.
    Held(String),
}

impl LeaderLease {
    /// A lease for `settings`, writing its token into `fence` and this instance's role into `status`. `cache` must
    /// not be fenced itself.
    pub(crate) fn new(cache: Cache, settings: HaSettings, fence: Arc<Fence>, status: watch::Sender<Status>) -> Self {
        Self {
            cache,
            settings,
            fence,
            status,
        }
    }

    /// The status before the first attempt.
    pub(crate) fn starting(settings: &HaSettings) -> Status {
        Status {
            role: Role::Starting,
            instance: settings.instance.clone(),
            leader: None,
            leader_since: None,
            took_over: false,
        }
    }

    /// Competes for the lease until `shutdown`; holds it for as long as renewals succeed; releases it on the way out.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        // Whether a leader other than this instance has been seen alive: a term after that is a takeover.
        let mut seen_other = false;
        let mut complained = false;
        loop {
            let (token, epoch, sent) = loop {
                match self.try_take().await {
                    Ok(Attempt::Taken { token, epoch, sent }) => break (token, epoch, sent),
                    Ok(Attempt::Held(holder)) => {
                        complained = false;
                        seen_other = true;
                        let (leader, since) = parse_token(&holder);
                        self.publish(Role::Standby, leader, since, false);
                    }
                    Err(error) => {
                        if !complained {
                            warn!(%error, "Cannot reach Redis to compete for the HA lease; standing by.");
                            complained = true;
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(STANDBY_POLL) => {}
                }
            };
            complained = false;
            self.fence.hold(token.clone(), epoch, self.deadline(sent));
            let (_, since) = parse_token(&token);
            self.publish(Role::Leader, Some(self.settings.instance.clone()), since, seen_other);
            metrics::record_ha_role(true, true);

            let stopping = self.hold(&token, epoch, &shutdown).await;
            self.fence.release();
            if stopping {
                self.give_back(&token).await;
                return;
            }
            seen_other = true;
            metrics::record_ha_role(false, true);
            self.publish(Role::Standby, None, None, false);
        }
    }

    /// Renews every third of the TTL until the lease is lost (false) or `shutdown` (true).
    async fn hold(&self, token: &Arc<str>, epoch: u64, shutdown: &CancellationToken) -> bool {
        let interval = self.settings.lease_ttl / 3;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = tokio::time::sleep(interval) => {}
            }
            // After a pause (SIGSTOP, a VM freeze) the lease may be gone: stop writing before asking.
            if self.fence.token().is_none() {
                warn!("The HA lease ran out before it could be renewed; stopped writing, now standby.");
                return false;
            }
            let sent = Instant::now();
            match self.try_renew(token).await {
                Ok(true) => self.fence.hold(token.clone(), epoch, self.deadline(sent)),
                Ok(false) => {
                    warn!("Another instance holds the HA lease now; stopped writing, now standby.");
                    return false;
                }
                Err(error) => warn!(%error, "Cannot renew the HA lease; still the leader until it runs out."),
            }
        }
    }

    fn deadline(&self, sent: Instant) -> Instant {
        deadline(self.settings.lease_ttl, sent)
    }

    async fn try_take(&self) -> Result<Attempt, CacheError> {
        let token = new_token(&self.settings.instance);
        let sent = Instant::now();
        Ok(
            match self
                .cache
                .take_lease(&self.settings.key, &token, self.settings.lease_ttl)
                .await?
            {
                LeaseAttempt::Taken { epoch } => Attempt::Taken { token, epoch, sent },
                LeaseAttempt::HeldBy(holder) => Attempt::Held(holder),
            },
        )
    }

    async fn try_renew(&self, token: &str) -> Result<bool, CacheError> {
        self.cache
            .renew_lease(&self.settings.key, token, self.settings.lease_ttl)
            .await
    }

    /// Releases the lease so that a standby takes over at once.
    async fn give_back(&self, token: &str) {
        match self.cache.release_lease(&self.settings.key, token).await {
            Ok(()) => info!("Released the HA lease."),
            Err(error) => warn!(%error, "Cannot release the HA lease; a standby takes over when it runs out."),
        }
        metrics::record_ha_role(false, true);
    }

    /// Publishes this instance's status, logging every change of role or leader.
    fn publish(&self, role: Role, leader: Option<String>, since: Option<SystemTime>, took_over: bool) {
        let next = Status {
            role,
            instance: self.settings.instance.clone(),
            leader,
            leader_since: since,
            took_over,
        };
        let previous = self.status.send_replace(next.clone());
        if previous.role != next.role || previous.leader != next.leader {
            info!(instance = %next.instance, role = %next.describe(), took_over, "HA role changed.");
        }
    }
}

/// When a lease of `ttl` set or renewed at `sent` may have run out in Redis: its TTL later, less a tenth for clock
/// drift.
pub(crate) fn deadline(ttl: Duration, sent: Instant) -> Instant {
    sent + ttl - ttl / 10
}

/// A new lease token for `instance`: `instance|since|nonce`, which says who holds a lease and since when.
pub(crate) fn new_token(instance: &str) -> Arc<str> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("{instance}|{since}|{:016x}", fastrand::u64(..)).into()
}

/// The instance name and acquisition time in a token (`instance|since|nonce`); an unreadable token is shown as is.
fn parse_token(token: &str) -> (Option<String>, Option<SystemTime>) {
    let mut parts = token.rsplitn(3, '|');
    let (_nonce, since, instance) = (parts.next(), parts.next(), parts.next());
    match (instance, since.and_then(|since| since.parse::<u64>().ok())) {
        (Some(instance), Some(since)) => (
            Some(instance.to_string()),
            Some(UNIX_EPOCH + Duration::from_millis(since)),
        ),
        _ if token.is_empty() => (None, None),
        _ => (Some(token.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_says_who_leads_and_since_when() {
        let (instance, since) = parse_token("ip-10-0-1-7:4242|1764178200000|00ff00ff00ff00ff");
        assert_eq!(instance.as_deref(), Some("ip-10-0-1-7:4242"));
        assert_eq!(since, Some(UNIX_EPOCH + Duration::from_millis(1_764_178_200_000)));
        // A name may hold the separator itself.
        assert_eq!(parse_token("a|b|1|ff").0.as_deref(), Some("a|b"));
        assert_eq!(parse_token("garbage"), (Some("garbage".into()), None));
        assert_eq!(parse_token(""), (None, None));
    }
}
