//! The one retry delay policy every reconnect and retry loop shares: exponential, capped, with full jitter so that a
//! fleet of daemons does not reconnect in lockstep after an outage.

use std::time::Duration;

/// A connection that stayed up this long was healthy: the next outage starts again from the shortest delay (so that
/// separate short outages do not each wait longer than the last).
pub(crate) const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// Exponential backoff between `min` and `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Redis connections (pub/sub, stream reads) and applying invalidations: retried quickly, at most 10 s apart.
    pub(crate) fn redis() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// The binlog's replication connection: a restarting server takes seconds; at most 30 s apart.
    pub(crate) fn replication() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// Whole attempts — a warm run, the first connections at start-up: seconds apart, at most 30 s.
    pub(crate) fn attempts() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// A backoff whose first delay is about `min` and which never exceeds `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, attempt: 0 }
    }

    /// The delay before the next attempt: `min × 2^n` capped at `max`, then drawn uniformly from its upper half.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(2u32.saturating_pow(self.attempt.min(16)))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Back to the shortest delay, after a healthy period.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Resets when a session that just ended had lasted [`HEALTHY_AFTER`].
    pub(crate) fn session_ended(&mut self, lasted: Duration) {
        if lasted >= HEALTHY_AFTER {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[7] >= Duration::from_millis(500));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
