//! Pruning: the keys of a job's template that its query no longer returns. A run a row change asked for remembers
//! the keys it wrote and then deletes the others — a row that left an inner join's result, a group that vanished, a
//! row a foreign key's `ON DELETE CASCADE` removed without a binlog event — so what the change took away leaves no
//! key behind. `audit --all` finds its orphans the same way.
//!
//! One SCAN of the template's pattern, bounded ([`MAX_REMEMBERED`] keys remembered; past it nothing is pruned). A key
//! that looks orphaned is looked at once more through the job's `refresh_query` (a row inserted after the query read
//! keeps its key); a job without one loses such a key until its next run — a miss, never a stale value. Deletes go
//! through the protected invalidation, so a refresh in flight cannot bring one back.

use std::collections::HashSet;
use std::sync::Arc;

use crate::exec::cache::{Cache, CacheError};
use crate::exec::database::Database;
use crate::pure::model::WarmJob;

use super::stream::Sink;
use super::{RunSummary, WarmError};

/// At most this many keys of one run are remembered; past it, no key is pruned (or called orphaned).
pub(crate) const MAX_REMEMBERED: usize = 5_000_000;

/// A sink that remembers every key pushed through it to `inner`.
pub(crate) struct Remembering<'a, S> {
    pub inner: &'a mut S,
    /// Every key pushed (`None` once past [`MAX_REMEMBERED`]).
    pub seen: Option<HashSet<Arc<str>>>,
}

impl<'a, S: Sink> Remembering<'a, S> {
    pub(crate) fn new(inner: &'a mut S) -> Self {
        Self {
            inner,
            seen: Some(HashSet::new()),
        }
    }
}

impl<S: Sink> Sink for Remembering<'_, S> {
    async fn push(&mut self, key: String, value: Vec<u8>) -> Result<(), CacheError> {
        if let Some(seen) = &mut self.seen {
            if seen.len() >= MAX_REMEMBERED {
                self.seen = None;
            } else {
                seen.insert(key.as_str().into());
            }
        }
        self.inner.push(key, value).await
    }

    fn summary(&mut self) -> &mut RunSummary {
        self.inner.summary()
    }

    fn skip(&mut self, counter: impl FnOnce(&mut RunSummary) -> &mut u64, describe: impl FnOnce() -> String) {
        self.inner.skip(counter, describe);
    }

    async fn finish(&mut self) -> Result<(), CacheError> {
        self.inner.finish().await
    }

    async fn settle(&mut self) -> Result<(), CacheError> {
        self.inner.settle().await
    }
}

/// Keys of `job`'s template in Redis that are not in `seen` and that no other job's template fits; and, when the
/// SCAN was cut short, why.
pub async fn orphans(
    cache: &Cache,
    job: &WarmJob,
    others: &[WarmJob],
    seen: &HashSet<Arc<str>>,
) -> Result<(Vec<String>, Option<String>), CacheError> {
    let limit = (seen.len() * 2).clamp(100_000, MAX_REMEMBERED);
    let (keys, cut) = cache
        .keys_matching(&crate::pure::glob::allow_pattern(&job.key), limit)
        .await?;
    let cut = cut.then(|| format!("over {limit} keys match the template: only the first were looked at"));
    let others: Vec<&WarmJob> = others.iter().filter(|other| other.name != job.name).collect();
    let orphans = keys
        .into_iter()
        .filter(|key| !seen.contains(key.as_str()) && job.key.capture(key).is_some())
        // A set being built beside its key (see `members`) is no orphan.
        .filter(|key| job.members.is_none() || !key.contains(crate::exec::cache::BUILD_SUFFIX))
        .filter(|key| !others.iter().any(|other| other.key.capture(key).is_some()))
        .collect();
    Ok((orphans, cut))
}

/// Of `keys`, those whose row the job cannot read now: with a `refresh_query`, the keys it renders nothing for;
/// without one, all of them.
pub async fn unreadable(db: &Database, job: &WarmJob, keys: Vec<String>) -> Result<Vec<String>, WarmError> {
    if job.refresh_query.is_none() || keys.is_empty() {
        return Ok(keys);
    }
    let mut gone = Vec::new();
    for chunk in keys.chunks(500) {
        let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let found = crate::exec::refresh::readable_keys(db, job, &keys).await?;
        gone.extend(chunk.iter().filter(|key| !found.contains(key.as_str())).cloned());
    }
    Ok(gone)
}

/// After a run that wrote `seen`: deletes the job's keys the query did not return; how many.
pub(crate) async fn prune(
    cache: &Cache,
    db: &Database,
    job: &WarmJob,
    others: &[WarmJob],
    seen: Option<HashSet<Arc<str>>>,
) -> Result<u64, WarmError> {
    let Some(seen) = seen else {
        tracing::warn!(job = %job.name, "Over {MAX_REMEMBERED} keys: this run pruned none.");
        return Ok(0);
    };
    if job.key.is_single_key() {
        return Ok(0);
    }
    let (orphans, cut) = orphans(cache, job, others, &seen).await?;
    if let Some(why) = cut {
        tracing::warn!(job = %job.name, "Pruning looked at part of the job's keys only: {why}.");
    }
    let gone = unreadable(db, job, orphans).await?;
    for chunk in gone.chunks(1000) {
        cache.invalidate(chunk).await?;
    }
    Ok(gone.len() as u64)
}
