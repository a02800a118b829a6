//! Stale-set protection, the design and what both topologies share: the read lease ([`ReadLease`]) and its keys.
//!
//! The race it closes: a warm job reads row v1; the application commits v2; the binlog (or a message) invalidates or
//! refreshes the key; then the warm job's SET of v1 lands, stale until its TTL. With `[redis] stale_set_protection`
//! (on by default):
//!
//! - a global counter, `cachewarden:version`, orders events;
//! - a read whose result will be written holds a *read lease* ([`Cache::begin_read`](super::Cache::begin_read) .. [`Cache::end_read`](super::Cache::end_read)): an
//!   entry in the sorted set `cachewarden:readers`, scored by its expiry (Redis clock), and its *evidence* hash
//!   `cachewarden:lease:<id>`, created with a sentinel field, registered in the same script that takes the version
//!   current before the read;
//! - [`Cache::invalidate`](super::Cache::invalidate) increments the counter and unlinks the keys in one Lua script, first recording the new
//!   version for each key in the evidence hash of every live lease (never recreating a hash that is gone);
//! - every write of read data carries a [`ReadStamp`] (version and lease). A big batch first tries the optimistic
//!   path: WATCH the counter and, if it still holds the read's version, send plain SETs in MULTI/EXEC, which Redis
//!   discards if anything is invalidated before EXEC runs. Otherwise the batch goes through a Lua script (EVALSHA)
//!   that refuses it whole unless the lease is live and, when the counter has moved since the read, unless its
//!   evidence hash is intact; and skips each SET whose key the evidence names with a newer version.
//!
//! So a value read before an invalidation can never land after it: the optimistic path writes only if no
//! invalidation at all happened between the read and the write; otherwise an invalidation either came before the
//! lease (the read saw its data) or recorded itself in the lease's evidence, and the script writes only while the
//! lease and its evidence exist. Lost evidence means "refuse", never "nothing happened": under any maxmemory policy a
//! hash (or the lease set, or the counter) that Redis evicts turns the batch into a refusal
//! ([`CacheError::LeaseEnded`]: the caller reads again), never into a stale write. The lease is the fence: once it
//! is ended or expired — a run cut short by its timeout, a write task still queued after its run gave up, a process
//! paused past its lease — its writes are refused unless nothing has been invalidated since the read. Refreshes
//! invalidate first and read after, so two refreshes that finish out of order keep the newer one; row images from
//! the binlog ([`Cache::supersede`](super::Cache::supersede)) are written in the script that invalidates, so nothing can come between. A
//! refused write leaves the key absent (a miss), never stale.
//!
//! Cost: with no read in flight an invalidation is an INCR, a ZRANGEBYSCORE and an UNLINK; with L reads in flight it
//! also writes L hash fields per key. A quiet warm run's batches are plain SETs (plus a WATCH round trip each);
//! after an invalidation, one Lua call per batch, reading the evidence of its keys.
//!
//! Limits: writes made by the application itself are not versioned; a pattern delete records the keys it finds, not
//! keys a concurrent warm run has not written yet. If Redis loses its state (a flush, a restart without
//! persistence), reads in flight have their writes refused, and a new counter starts at a random point
//! (`node::guard::counter_seed`). A counter Redis evicted alone is recreated the same way, and the script that
//! recreates it drops the evidence of every read in flight: their versions belong to the lost counter, and a new
//! one that starts below them would make later invalidations look older than those reads. One node runs it in `node::guard`; a Redis Cluster runs the same design cut along slots
//! (`cluster::guard`).

use std::sync::Arc;
use std::time::Duration;

use super::{LEASE_PREFIX, READERS_KEY, VERSION_KEY};
use crate::pure::model::ReadStamp;

/// A read lease outlives the read's own timeout by this much, so that its writes can land.
pub(super) const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// A read whose result will be written, registered so that invalidations meanwhile leave evidence. End it with
/// [`Cache::end_read`](super::Cache::end_read) once its writes have landed (or it gave up); if the process dies it expires by itself.
#[derive(Debug)]
#[must_use = "a read lease must be ended, or invalidations keep recording evidence for it until it expires"]
pub struct ReadLease {
    id: Option<Arc<str>>,
    /// The version current before the read (0 without protection).
    pub read_at: u64,
}

impl ReadLease {
    pub(super) fn new(id: Arc<str>, read_at: u64) -> Self {
        Self { id: Some(id), read_at }
    }

    /// The lease of a read without protection: nothing registered, `read_at` 0.
    pub(super) fn unprotected() -> Self {
        Self { id: None, read_at: 0 }
    }

    /// The lease's id (`None` without protection).
    pub(super) fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The lease's evidence hash (`cachewarden:lease:<id>`), without protection none.
    pub fn evidence(&self) -> Option<String> {
        self.id.as_ref().map(|id| format!("{LEASE_PREFIX}{id}"))
    }

    /// The stamp for values read under this lease at `version` (`None` without protection: writes are plain).
    pub fn stamp(&self, version: u64) -> Option<ReadStamp> {
        self.id.as_ref().map(|lease| ReadStamp {
            version,
            lease: lease.clone(),
        })
    }
}

/// The keys the script that opens read lease `id` declares: the version counter, the read-lease set and the lease's
/// evidence hash. The call and the ACL check at start (`access`) both use this list.
pub(crate) fn read_lease_keys(id: &str) -> [String; 3] {
    [
        VERSION_KEY.to_string(),
        READERS_KEY.to_string(),
        format!("{LEASE_PREFIX}{id}"),
    ]
}
