//! The HA fence: the lease token an active instance's writes carry, so that Redis refuses the writes of an instance
//! that lost the lease (paused past it, partitioned, or simply slower than its successor).
//!
//! The `ha` module holds and renews the lease and tells the fence; the cache asks it for the token on every write.
//! Locally, a fence with no token, or whose lease ran out by this process's clock before a renewal arrived, refuses
//! at once ([`super::CacheError::Fenced`]); in Redis, every value-writing script compares the lease key with the
//! token before it writes (see `scripts`). On a cluster a script sees one slot only, so each slot holds a copy of
//! the lease's epoch instead, and the scripts compare that (see `cluster::fence`).

use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The lease key and the token this instance holds it with (if it does).
#[derive(Debug)]
pub struct Fence {
    key: String,
    held: RwLock<Option<Held>>,
}

#[derive(Debug, Clone)]
struct Held {
    token: Arc<str>,
    /// On a cluster, the lease's epoch, which each slot's copy of the fence holds (0 on a single node).
    epoch: u64,
    /// Past this instant the lease may have expired in Redis: stop writing.
    until: Instant,
}

impl Fence {
    /// A fence on the lease at `key`, not held yet.
    pub fn new(key: &str) -> Arc<Self> {
        Arc::new(Self {
            key: key.to_string(),
            held: RwLock::new(None),
        })
    }

    /// The lease key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This instance holds the lease with `token` (and `epoch`) until `until` (a renewal calls it again).
    pub fn hold(&self, token: Arc<str>, epoch: u64, until: Instant) {
        *self.held.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Held { token, epoch, until });
    }

    /// This instance no longer holds the lease: every write is refused from now on.
    pub fn release(&self) {
        *self.held.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// The token to write with, or `None` when this instance may not write.
    pub fn token(&self) -> Option<Arc<str>> {
        self.held().map(|(token, _)| token)
    }

    /// The token and the epoch to write with, or `None` when this instance may not write.
    pub fn held(&self) -> Option<(Arc<str>, u64)> {
        let held = self.held.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        held.as_ref()
            .filter(|held| Instant::now() < held.until)
            .map(|held| (held.token.clone(), held.epoch))
    }
}

/// What an attempt to take the lease found.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// This instance holds it now, under this epoch (see `cluster::fence`; 0 on a single node).
    Taken { epoch: u64 },
    /// Another instance holds it, with this token (empty if it vanished between the two commands).
    HeldBy(String),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_fence_gives_its_token_only_while_held_and_in_time() {
        let fence = Fence::new("cachewarden:leader");
        assert_eq!(fence.token(), None);
        fence.hold("a#1".into(), 7, Instant::now() + Duration::from_secs(5));
        assert_eq!(fence.token().as_deref(), Some("a#1"));
        assert_eq!(fence.held().map(|(_, epoch)| epoch), Some(7));
        fence.hold("a#1".into(), 7, Instant::now() - Duration::from_millis(1));
        assert_eq!(fence.token(), None, "the lease ran out by our clock before a renewal");
        fence.hold("a#1".into(), 7, Instant::now() + Duration::from_secs(5));
        fence.release();
        assert_eq!(fence.token(), None);
    }
}
