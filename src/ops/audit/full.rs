//! `audit --all` and the daemon's sweep: every key of a job, checked. The job's query is streamed and rendered exactly
//! as a warm run does (the same code path, `warm::render_rows`, or `warm::render_query` slice by slice), the cached
//! values fetched in pipelines and compared; then one SCAN of the job's keys finds those the query no longer returns.
//! What looks wrong is looked at again after a pause, so a change in flight is not reported.

use std::collections::HashSet;
use std::sync::Arc;

use crate::exec::backend::BackendError;
use crate::exec::cache::{Cache, CacheError};
use crate::exec::database::Database;
use crate::exec::warm::prune::{MAX_REMEMBERED, Remembering};
use crate::exec::warm::{Progress, RunSummary, Sink, WarmError};
use crate::pure::model::WarmJob;

use super::{AuditError, RECHECK_AFTER, same_value};

/// Keys compared per pipeline.
const BATCH: usize = 1000;
/// At most this many findings of each kind are kept per job (all are counted).
pub(super) const MAX_FINDINGS: usize = 10_000;

/// What was found wrong about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub key: String,
    /// What Redis holds (`None`: nothing).
    pub cached: Option<String>,
    /// What the job renders now (`None`: the query does not return the key).
    pub expected: Option<String>,
}

/// One job's full audit.
#[derive(Debug, Clone, Default)]
pub(crate) struct FullAudit {
    pub job: String,
    /// Keys the query returned, compared with Redis.
    pub checked: u64,
    /// Cached with another value than the query renders.
    pub wrong: Vec<Finding>,
    /// Returned by the query, not cached.
    pub missing: Vec<Finding>,
    /// Cached, of the job's template, but not returned by the query.
    pub orphaned: Vec<Finding>,
    /// Counts beyond the findings kept.
    pub wrong_count: u64,
    pub missing_count: u64,
    pub orphaned_count: u64,
    /// Why orphans were not (fully) looked for, if they were not.
    pub orphans_unchecked: Option<String>,
    /// The statements the query was read in (1 unless sliced).
    pub slices: u64,
    /// Rows the warm run skips too (a NULL key column, a value over max_value_bytes, an invalid value): not compared.
    pub skipped: u64,
}

impl FullAudit {
    /// Whether anything was found.
    pub(crate) fn clean(&self) -> bool {
        self.wrong_count == 0 && self.missing_count == 0 && self.orphaned_count == 0
    }
}

/// How the sweep reads a job: `size` keys at a time in the key's order, `pause` between slices, each slice a
/// statement of its own (so no read view stays open for the whole sweep).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slicing {
    pub size: usize,
    pub pause: std::time::Duration,
}

/// The job's query read in slices ordered by the key's columns, where it returns one row per key
/// (`SELECT * FROM (<query>) AS cw_slice WHERE <key columns> > <the last slice's> ORDER BY <key columns> LIMIT n`);
/// `None` for other shapes, which are read whole.
fn slice_queries(job: &WarmJob, size: usize) -> Option<(String, String, Vec<String>)> {
    let analysis = crate::pure::derive::analyze::analyze(&job.query, "", &job.key);
    if !matches!(analysis.shape, crate::pure::derive::analyze::Shape::Rows { .. }) {
        return None;
    }
    let mut columns: Vec<String> = Vec::new();
    for placeholder in job.key.placeholders() {
        if !columns.iter().any(|known| known == placeholder) {
            columns.push(placeholder.to_string());
        }
    }
    let quoted: Vec<String> = columns
        .iter()
        .map(|column| format!("cw_slice.`{}`", column.replace('`', "``")))
        .collect();
    let query = job.query.trim().trim_end_matches(';');
    let not_null: Vec<String> = quoted.iter().map(|column| format!("{column} IS NOT NULL")).collect();
    let head = format!("SELECT * FROM ({query}) AS cw_slice WHERE {}", not_null.join(" AND "));
    let tail = format!(" ORDER BY {} LIMIT {size}", quoted.join(", "));
    let marks = vec!["?"; quoted.len()].join(", ");
    let first = format!("{head}{tail}");
    let next = format!("{head} AND ({}) > ({marks}){tail}", quoted.join(", "));
    Some((first, next, columns))
}

/// Every key of `job` checked against what its query renders, read in slices when `slicing` is given and the job's
/// shape allows (see [`slice_queries`]). `others` are the configuration's other jobs: a key one of their templates
/// also fits is not called an orphan of this one.
pub(crate) async fn audit_sliced(
    cache: &Cache,
    db: &Database,
    job: &WarmJob,
    others: &[WarmJob],
    slicing: Option<Slicing>,
) -> Result<FullAudit, AuditError> {
    let mut comparer = Comparer {
        last_key: None,
        cache,
        job,
        pending: Vec::with_capacity(BATCH),
        summary: RunSummary::default(),
        suspects: Vec::new(),
        missing: Vec::new(),
        audit: FullAudit {
            job: job.name.to_string(),
            ..Default::default()
        },
    };
    // Every key the query returned, to find the orphans (as a pruning warm run does).
    let mut sink = Remembering::new(&mut comparer);
    let slices = read_all(db, job, slicing, &mut sink).await?;
    let seen = sink.seen.take();
    let Comparer {
        suspects,
        missing,
        mut audit,
        summary,
        ..
    } = comparer;
    audit.slices = slices;
    audit.skipped = summary.skipped();
    let orphans = match seen {
        // Read over a while without a way to read one key: a key of a row added since looks orphaned.
        Some(_) if slices > 1 && job.refresh_query.is_none() => {
            audit.orphans_unchecked = Some(format!(
                "read in {slices} slices and the job has no refresh_query: a key of a row added meanwhile cannot be \
                 told from an orphan"
            ));
            Vec::new()
        }
        Some(seen) if !job.key.is_single_key() => orphans(cache, job, others, &seen, &mut audit).await?,
        Some(_) => Vec::new(),
        None => {
            audit.orphans_unchecked = Some(format!("over {MAX_REMEMBERED} keys: orphans were not looked for"));
            Vec::new()
        }
    };
    if !suspects.is_empty() || !missing.is_empty() || !orphans.is_empty() {
        tokio::time::sleep(RECHECK_AFTER).await;
    }
    recheck(cache, db, job, suspects, missing, orphans, &mut audit).await?;
    Ok(audit)
}

/// Reads every row of `job` into `sink`, in slices when `slicing` allows; how many slices it took.
async fn read_all(
    db: &Database,
    job: &WarmJob,
    slicing: Option<Slicing>,
    sink: &mut Remembering<'_, Comparer<'_>>,
) -> Result<u64, AuditError> {
    let progress = Progress::default();
    let Some((slicing, (first, next, columns))) =
        slicing.and_then(|slicing| slice_queries(job, slicing.size).map(|queries| (slicing, queries)))
    else {
        read(crate::exec::warm::render_rows(db, job, &progress, sink).await)?;
        return Ok(1);
    };
    let mut slices = 1u64;
    let mut after: Vec<String> = Vec::new();
    loop {
        let before = sink.inner.summary.rows;
        let query = if after.is_empty() { &first } else { &next };
        read(crate::exec::warm::render_query(db, job, query, &after, &progress, sink).await)?;
        let Some(last) = sink
            .inner
            .last_key
            .as_deref()
            .filter(|_| sink.inner.summary.rows - before >= slicing.size as u64)
        else {
            return Ok(slices);
        };
        // The next slice starts after the last key's columns (as the key spells them).
        let Some(captured) = job.key.capture(last) else {
            return Ok(slices);
        };
        after = columns
            .iter()
            .filter_map(|column| captured.iter().find(|(name, _)| name == column))
            .map(|(_, value)| value.to_string())
            .collect();
        slices += 1;
        tokio::time::sleep(slicing.pause).await;
    }
}

/// A read's outcome as the audit's error.
pub(super) fn read(result: Result<(), WarmError>) -> Result<(), AuditError> {
    match result {
        Ok(()) => Ok(()),
        Err(WarmError::Cache(error)) => Err(BackendError::from(error).into()),
        Err(WarmError::Database(error)) => Err(BackendError::from(error).into()),
        Err(other) => Err(AuditError::Query(other.to_string())),
    }
}

/// The sink that compares instead of writing.
struct Comparer<'a> {
    cache: &'a Cache,
    job: &'a WarmJob,
    pending: Vec<(String, Vec<u8>)>,
    /// The last key pushed: where the next slice starts.
    last_key: Option<String>,
    summary: RunSummary,
    /// Keys whose cached value differed, with what was rendered and what was cached.
    suspects: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// Keys not cached, with what was rendered.
    missing: Vec<(String, Vec<u8>)>,
    audit: FullAudit,
}

impl Comparer<'_> {
    async fn compare(&mut self) -> Result<(), CacheError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let keys: Vec<String> = pending.iter().map(|(key, _)| key.clone()).collect();
        let cached = self.cache.get_many(&keys, self.job.encoding.structure).await?;
        for ((key, rendered), cached) in pending.into_iter().zip(cached) {
            self.audit.checked += 1;
            match cached {
                None if self.missing.len() < MAX_FINDINGS => self.missing.push((key, rendered)),
                None => self.audit.missing_count += 1,
                Some(stored) => {
                    let decoded =
                        crate::pure::codec::decode(&stored).map_or_else(|_| stored.clone(), |d| d.into_owned());
                    if !same_value(self.job, &decoded, Some(&rendered)) {
                        if self.suspects.len() < MAX_FINDINGS {
                            self.suspects.push((key, rendered, stored));
                        } else {
                            self.audit.wrong_count += 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Sink for Comparer<'_> {
    async fn push(&mut self, key: String, value: Vec<u8>) -> Result<(), CacheError> {
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.push_str(&key);
            }
            None => self.last_key = Some(key.clone()),
        }
        // A value the warm run does not store (over max_value_bytes once encoded; encoding never grows one) is
        // skipped as the run skips it, never reported missing.
        let limit = self.job.max_value_bytes;
        if value.len() > limit && self.job.encoding.stored_len(&self.job.encoding.encode(value.clone())) > limit {
            self.summary.skipped_oversize += 1;
            return Ok(());
        }
        self.pending.push((key, value));
        if self.pending.len() >= BATCH {
            self.compare().await?;
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
        self.compare().await
    }
}

/// Keys of `job`'s template in Redis that the query did not return (and no other job's template fits).
async fn orphans(
    cache: &Cache,
    job: &WarmJob,
    others: &[WarmJob],
    seen: &HashSet<Arc<str>>,
    audit: &mut FullAudit,
) -> Result<Vec<String>, BackendError> {
    let (orphans, cut) = crate::exec::warm::prune::orphans(cache, job, others, seen).await?;
    audit.orphans_unchecked = cut;
    Ok(orphans)
}

/// Looks at every finding again after the pause: what a change in flight explains is dropped.
async fn recheck(
    cache: &Cache,
    db: &Database,
    job: &WarmJob,
    suspects: Vec<(String, Vec<u8>, Vec<u8>)>,
    missing: Vec<(String, Vec<u8>)>,
    orphans: Vec<String>,
    audit: &mut FullAudit,
) -> Result<(), BackendError> {
    let text = crate::pure::codec::readable;
    let refreshable = job.refresh_query.is_some() && !job.key.is_single_key();
    for (key, rendered, first) in suspects {
        let now = cached(cache, job, &key).await?;
        let still = match (&now, refreshable) {
            // Gone meanwhile (expired, invalidated): nothing cached is wrong.
            (None, _) => false,
            // Read the row again: the value it renders now is the truth.
            (Some(_), true) => matches!(super::check(cache, db, job, &key).await?, super::Check::Mismatch(_)),
            // No way to read one row: still wrong if nothing rewrote it since.
            (Some(now), false) => *now == first,
        };
        if still {
            let finding = Finding {
                key,
                cached: now.as_deref().map(text),
                expected: Some(String::from_utf8_lossy(&rendered).into_owned()),
            };
            keep(&mut audit.wrong, &mut audit.wrong_count, finding);
        }
    }
    for (key, rendered) in missing {
        if cached(cache, job, &key).await?.is_none() {
            let finding = Finding {
                key,
                cached: None,
                expected: Some(String::from_utf8_lossy(&rendered).into_owned()),
            };
            keep(&mut audit.missing, &mut audit.missing_count, finding);
        }
    }
    for key in orphans {
        let Some(now) = cached(cache, job, &key).await? else {
            continue;
        };
        // A row that appeared since the query read: its key is no orphan.
        if refreshable
            && crate::exec::refresh::render_from_database(db, job, &key)
                .await
                .ok()
                .flatten()
                .is_some()
        {
            continue;
        }
        let finding = Finding {
            key,
            cached: Some(text(&now)),
            expected: None,
        };
        keep(&mut audit.orphaned, &mut audit.orphaned_count, finding);
    }
    for list in [&mut audit.wrong, &mut audit.missing, &mut audit.orphaned] {
        list.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Ok(())
}

/// What `key` of `job` holds in Redis now.
async fn cached(cache: &Cache, job: &WarmJob, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
    let keys = [key.to_string()];
    Ok(cache.get_many(&keys, job.encoding.structure).await?.remove(0))
}

/// Counts a finding, and keeps it for the report while `list` has room.
fn keep(list: &mut Vec<Finding>, count: &mut u64, finding: Finding) {
    *count += 1;
    if list.len() < MAX_FINDINGS {
        list.push(finding);
    }
}

/// The report `cachewarden audit --all` prints: per job its counts, then the first few findings of each kind.
pub(crate) fn format_report(audits: &[FullAudit]) -> String {
    const SHOWN: usize = 5;
    let mut out = String::new();
    for audit in audits {
        out.push_str(&format!(
            "{}: {} checked, {} wrong, {} missing, {} orphaned\n",
            audit.job, audit.checked, audit.wrong_count, audit.missing_count, audit.orphaned_count
        ));
        if let Some(why) = &audit.orphans_unchecked {
            out.push_str(&format!("  (orphans: {why})\n"));
        }
        if audit.skipped > 0 {
            out.push_str(&format!(
                "  ({} rows not compared: the warm run skips them too, see its skipped counts)\n",
                audit.skipped
            ));
        }
        let none = "(nothing)";
        for (kind, list) in [
            ("WRONG", &audit.wrong),
            ("MISSING", &audit.missing),
            ("ORPHANED", &audit.orphaned),
        ] {
            for finding in list.iter().take(SHOWN) {
                out.push_str(&format!(
                    "  {kind} {}\n    cached:   {}\n    database: {}\n",
                    finding.key,
                    finding.cached.as_deref().unwrap_or(none),
                    finding
                        .expected
                        .as_deref()
                        .unwrap_or("(the query does not return this key)")
                ));
            }
            if list.len() > SHOWN {
                out.push_str(&format!(
                    "  … and {} more {}\n",
                    list.len() - SHOWN,
                    kind.to_lowercase()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(query: &str, key: &str) -> WarmJob {
        let mut job = WarmJob::example("j", key);
        job.query = query.into();
        job
    }

    #[test]
    fn a_one_row_per_key_job_is_sliced_by_its_key_columns_and_others_are_not() {
        let (first, next, columns) =
            slice_queries(&job("SELECT id, lang, name FROM t;", "t:{id}:{lang}:{id}"), 500).expect("rows are sliced");
        assert_eq!(columns, ["id", "lang"]);
        assert_eq!(
            first,
            "SELECT * FROM (SELECT id, lang, name FROM t) AS cw_slice WHERE cw_slice.`id` IS NOT NULL AND \
             cw_slice.`lang` IS NOT NULL ORDER BY cw_slice.`id`, cw_slice.`lang` LIMIT 500"
        );
        assert!(
            next.contains("AND (cw_slice.`id`, cw_slice.`lang`) > (?, ?) ORDER BY"),
            "{next}"
        );
        for (query, key) in [
            (
                "SELECT category_id, COUNT(*) AS n FROM t GROUP BY category_id",
                "c:{category_id}",
            ),
            ("SELECT id FROM t ORDER BY id LIMIT 5", "top:{id}"),
            ("SELECT id FROM t", "all"),
        ] {
            assert!(slice_queries(&job(query, key), 500).is_none(), "{query}");
        }
    }
}
