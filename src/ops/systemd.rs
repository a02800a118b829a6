//! systemd's notify protocol: READY, RELOADING, STOPPING, STATUS and the watchdog.
//!
//! Every call is a no-op without `$NOTIFY_SOCKET` (not started by systemd), so the daemon behaves the same in a
//! terminal. Failures to notify are logged, never fatal: a lost READY shows up as a start timeout in systemd.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::telemetry::health::Liveness;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(%error, "Could not notify systemd.");
    }
}

/// Config loaded and first connections made: start-up is complete.
pub(crate) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) has begun; `ready` ends it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub(crate) fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("Stopping: finishing in-flight writes"),
    ]);
}

/// A free-text status line shown by `systemctl status`.
pub(crate) fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// Feeds systemd's watchdog, but only while the work loops prove they are turning.
pub(crate) struct Watchdog {
    pub liveness: Liveness,
}

impl Watchdog {
    /// Pings at half of `WatchdogSec` while every loop has beaten within that half (or within three health checks,
    /// if that is longer); returns at once when the watchdog is not enabled for this process.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let Some(timeout) = sd_notify::watchdog_enabled() else {
            return;
        };
        let period = timeout / 2;
        // A loop is stalled when it misses its own beats, not half a short WatchdogSec: the health loop turns every
        // CHECK_INTERVAL and may wait as long for a Redis that does not answer (that is readiness, not a stall).
        let stalled_after = period.max(3 * crate::ops::checks::CHECK_INTERVAL);
        debug!(?timeout, ?stalled_after, "systemd watchdog enabled.");
        let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.liveness.is_alive(stalled_after) {
                notify(&[NotifyState::Watchdog]);
            } else {
                warn!("A work loop has stalled; not feeding the systemd watchdog.");
            }
        }
    }
}
