//! `audit --all` and the daemon's sweep of a set or sorted set job: the query's members, gathered per key exactly as
//! a warm run gathers them (`warm::render_rows`), against what Redis holds (`SMEMBERS`; `ZRANGE … WITHSCORES`, and for
//! a top N the best N only, as a reader reads them). Keys of the job's template the query no longer returns are
//! orphans. What differs is compared once more after a pause, so a change in flight is not reported.
//!
//! The members of the whole job are held while it is compared (a few tens of bytes each).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::full::{Finding, FullAudit, MAX_FINDINGS};
use super::{AuditError, RECHECK_AFTER};
use crate::exec::backend::BackendError;
use crate::exec::cache::{Cache, CacheError};
use crate::exec::database::Database;
use crate::exec::warm::{Progress, RunSummary, Sink};
use crate::pure::members::{chunk_members, compared_set, compared_zset, moved_from, readable};
use crate::pure::model::{MemberKind, WarmJob};

/// Keys read from Redis per pipeline.
const BATCH: usize = 1000;

/// The sink that gathers a run's members per key instead of writing them.
#[derive(Default)]
struct Gatherer {
    /// Members (with scores) by the key they are built under.
    built: HashMap<String, Vec<(String, f64)>>,
    /// Each key and the key it is built under, in the order the run renames them.
    keys: Vec<(String, String)>,
    summary: RunSummary,
}

impl Sink for Gatherer {
    async fn push(&mut self, key: String, value: Vec<u8>) -> Result<(), CacheError> {
        if let Some(members) = chunk_members(&value) {
            self.built.entry(key).or_default().extend(members);
        } else if let Some(build) = moved_from(&value) {
            self.keys.push((key, build));
        }
        Ok(())
    }

    fn summary(&mut self) -> &mut RunSummary {
        &mut self.summary
    }

    fn skip(&mut self, counter: impl FnOnce(&mut RunSummary) -> &mut u64, _describe: impl FnOnce() -> String) {
        *counter(&mut self.summary) += 1;
    }

    async fn finish(&mut self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// What the query says each key should hold, as [`crate::pure::members`] compares it.
async fn expected(db: &Database, job: &WarmJob) -> Result<(HashMap<String, Vec<u8>>, RunSummary), AuditError> {
    let mut gatherer = Gatherer::default();
    super::full::read(crate::exec::warm::render_rows(db, job, &Progress::default(), &mut gatherer).await)?;
    let mut expected = HashMap::with_capacity(gatherer.keys.len());
    for (key, build) in std::mem::take(&mut gatherer.keys) {
        let members = gatherer.built.remove(&build).unwrap_or_default();
        if let Some(value) = compared(job, members) {
            expected.insert(key, value);
        }
    }
    Ok((expected, gatherer.summary))
}

/// `members` as compared for `job`: a set's sorted, a sorted set's best first (the best N of a top N).
fn compared(job: &WarmJob, members: Vec<(String, f64)>) -> Option<Vec<u8>> {
    let members_of = job.members.as_deref()?;
    match members_of.kind {
        MemberKind::Set => compared_set(members.into_iter().map(|(member, _)| member).collect()),
        MemberKind::Zset => {
            let top = members_of.top.as_ref().map(|top| top.n as usize);
            compared_zset(members, top)
        }
    }
}

/// What Redis holds at `keys`, compared as the query's members are.
async fn cached(cache: &Cache, job: &WarmJob, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
    // A top N is read as its readers read it: the best N.
    let top = job
        .members
        .as_deref()
        .and_then(|m| m.top.as_ref())
        .map(|top| top.n as usize);
    let mut held = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(BATCH) {
        let values = cache.get_many(chunk, job.encoding.structure).await?;
        held.extend(values.into_iter().map(|value| match (value, top) {
            (Some(value), Some(n)) => crate::pure::members::best(&value, n),
            (value, _) => value,
        }));
    }
    Ok(held)
}

/// Every key of a set or sorted set job, checked; see the module docs. `others` as for [`super::audit_all`].
pub(crate) async fn audit_members(
    cache: &Cache,
    db: &Database,
    job: &WarmJob,
    others: &[WarmJob],
) -> Result<FullAudit, AuditError> {
    let mut audit = FullAudit {
        job: job.name.to_string(),
        slices: 1,
        ..Default::default()
    };
    let (first, summary) = expected(db, job).await?;
    audit.skipped = summary.skipped();
    let keys: Vec<String> = first.keys().cloned().collect();
    let seen: HashSet<Arc<str>> = keys.iter().map(|key| Arc::from(key.as_str())).collect();
    let held = cached(cache, job, &keys).await.map_err(BackendError::from)?;
    audit.checked = keys.len() as u64;
    let suspects: Vec<String> = keys
        .into_iter()
        .zip(held)
        .filter(|(key, held)| held.as_ref() != first.get(key))
        .map(|(key, _)| key)
        .collect();
    let (orphans, cut) = crate::exec::warm::prune::orphans(cache, job, others, &seen)
        .await
        .map_err(BackendError::from)?;
    audit.orphans_unchecked = cut;
    if suspects.is_empty() && orphans.is_empty() {
        return Ok(audit);
    }
    // Once more after a pause: only what is still wrong, by the database's word then, is reported.
    tokio::time::sleep(RECHECK_AFTER).await;
    let (now, _) = expected(db, job).await?;
    let again: Vec<String> = suspects.into_iter().chain(orphans).collect();
    let held = cached(cache, job, &again).await.map_err(BackendError::from)?;
    for (key, held) in again.into_iter().zip(held) {
        let expected = now.get(&key);
        if held.as_ref() == expected {
            continue;
        }
        let finding = Finding {
            cached: held.as_deref().and_then(readable),
            expected: expected.and_then(|value| readable(value)),
            key,
        };
        let (list, count) = match (&finding.cached, &finding.expected) {
            (None, _) => (&mut audit.missing, &mut audit.missing_count),
            (Some(_), None) => (&mut audit.orphaned, &mut audit.orphaned_count),
            (Some(_), Some(_)) => (&mut audit.wrong, &mut audit.wrong_count),
        };
        // Counted all, listed up to the full audit's limit.
        *count += 1;
        if list.len() < MAX_FINDINGS {
            list.push(finding);
        }
    }
    Ok(audit)
}
