//! The consistency audit: do cached values equal what the database says now?
//!
//! For each job with a `refresh_query`, a uniform sample of its keys (one SCAN, reservoir-sampled) is compared with
//! the row the job would render for that key today. A mismatch is checked again after a short pause before it counts,
//! so a change that is merely in flight (committed, not yet applied) is not reported as stale. `cachewarden audit`
//! runs it once. `audit --all` checks every key instead (`full`), and the daemon sweeps every key of every job once
//! per `audit_period` (`sweep`), exporting what it finds and, with `audit_repair`, repairing it.
//!
//! The audits read only; the sweep's repairs go through the invalidator, as a binlog change would. A key whose row is
//! gone but which is still cached is stale; a row that is not cached is a miss, not stale.

use std::time::Duration;

mod full;
mod members;
mod sweep;

pub(crate) use full::{FullAudit, Slicing, format_report as format_full_report};

/// Checks every key of `job` (`audit --all`): a set's or sorted set's members read whole (see `members`), any
/// other job's values read as a warm run renders them (`full`), in slices when `slicing` is given and its shape
/// allows.
pub(crate) async fn audit_sliced(
    cache: &Cache,
    db: &Database,
    job: &WarmJob,
    others: &[WarmJob],
    slicing: Option<Slicing>,
) -> Result<FullAudit, AuditError> {
    match job.members {
        // Read whole: a key's members come from rows all over the result.
        Some(_) => members::audit_members(cache, db, job, others).await,
        None => full::audit_sliced(cache, db, job, others, slicing).await,
    }
}

/// [`audit_sliced`] read whole. `others` are the configuration's other jobs: a key one of their templates also fits
/// is not called an orphan of this one.
pub(crate) async fn audit_all(
    cache: &Cache,
    db: &Database,
    job: &WarmJob,
    others: &[WarmJob],
) -> Result<FullAudit, AuditError> {
    audit_sliced(cache, db, job, others, None).await
}
pub(crate) use sweep::Sweeper;

use crate::exec::backend::BackendError;
use crate::exec::cache::Cache;
use crate::exec::database::Database;
use crate::pure::model::{Ttl, WarmJob};

/// A mismatch is looked at again after this long: enough for a change in flight to be applied.
pub(crate) const RECHECK_AFTER: Duration = Duration::from_millis(1500);

/// Why an audit of every key could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The job's query does not render (a column it needs is gone, more than one row for an object job).
    #[error("{0}")]
    Query(String),
}

/// One stale key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StaleKey {
    pub key: String,
    /// What Redis holds.
    pub cached: String,
    /// What the job renders from the database now (`None`: the row is gone).
    pub expected: Option<String>,
    /// How long ago the key was written (its TTL minus what is left): it has been stale at most this long.
    pub written_ago: Option<Duration>,
}

/// One job's audit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobAudit {
    pub job: String,
    pub checked: u64,
    pub stale: Vec<StaleKey>,
    /// Why the job was not audited, if it was not.
    pub skipped: Option<String>,
}

impl JobAudit {
    /// The share of checked keys that were consistent (1.0 when nothing was checked).
    pub(crate) fn ratio(&self) -> f64 {
        if self.checked == 0 {
            1.0
        } else {
            (self.checked - self.stale.len() as u64) as f64 / self.checked as f64
        }
    }
}

/// Audits `jobs`, sampling at most `sample` keys each.
pub(crate) async fn audit(
    cache: &Cache,
    db: &Database,
    jobs: &[WarmJob],
    sample: usize,
) -> Result<Vec<JobAudit>, BackendError> {
    let mut audits = Vec::new();
    for job in jobs {
        let mut report = JobAudit {
            job: job.name.to_string(),
            ..Default::default()
        };
        if let Some(members) = &job.members {
            report.skipped = Some(format!(
                "type = \"{}\": members are not audited yet",
                members.kind.as_str()
            ));
            audits.push(report);
            continue;
        }
        if job.refresh_query.is_none() || job.key.is_single_key() {
            report.skipped = Some("no refresh_query to render one key with".into());
            audits.push(report);
            continue;
        }
        let keys = cache
            .sample_keys(&crate::pure::glob::allow_pattern(&job.key), sample)
            .await?;
        let mut suspects = Vec::new();
        for key in keys {
            match check(cache, db, job, &key).await? {
                Check::Gone => {}
                Check::Consistent => report.checked += 1,
                Check::Mismatch(_) => suspects.push(key),
            }
        }
        if !suspects.is_empty() {
            tokio::time::sleep(RECHECK_AFTER).await;
        }
        for key in suspects {
            match check(cache, db, job, &key).await? {
                Check::Gone => {}
                Check::Consistent => report.checked += 1,
                Check::Mismatch(stale) => {
                    report.checked += 1;
                    report.stale.push(stale);
                }
            }
        }
        audits.push(report);
    }
    Ok(audits)
}

pub(crate) enum Check {
    /// The key expired or was deleted meanwhile.
    Gone,
    Consistent,
    Mismatch(StaleKey),
}

pub(crate) async fn check(cache: &Cache, db: &Database, job: &WarmJob, key: &str) -> Result<Check, BackendError> {
    let Some((cached, pttl)) = cache.get_with_ttl(key, job.encoding.structure).await? else {
        return Ok(Check::Gone);
    };
    let expected = match crate::exec::refresh::render_from_database(db, job, key).await {
        Ok(expected) => expected,
        // The query's result no longer renders (a column went away): nothing valid can be cached.
        Err(crate::exec::refresh::KeyReadError::Columns(_)) => None,
        Err(crate::exec::refresh::KeyReadError::Database(error)) => return Err(error.into()),
    };
    // What an application reads: decompressed, and with encrypted columns opened (their nonces differ each time).
    let cached = match crate::pure::codec::decode(&cached) {
        Ok(decoded) => decoded.into_owned(),
        Err(_) => cached,
    };
    if same_value(job, &cached, expected.as_deref()) {
        return Ok(Check::Consistent);
    }
    let written_ago = match job.ttl {
        Ttl::Expires(ttl) if pttl >= 0 => Some(ttl.saturating_sub(Duration::from_millis(pttl as u64))),
        _ => None,
    };
    Ok(Check::Mismatch(StaleKey {
        key: key.to_string(),
        cached: crate::pure::codec::readable(&cached),
        expected: expected.map(|value| String::from_utf8_lossy(&value).into_owned()),
        written_ago,
    }))
}

/// Whether the cached JSON says what the database renders. Byte equality, except for a job with encrypted columns:
/// there each envelope is opened and the plaintexts compared.
pub(crate) fn same_value(job: &WarmJob, cached: &[u8], expected: Option<&[u8]>) -> bool {
    let Some(expected) = expected else { return false };
    if cached == expected {
        return true;
    }
    // A hash is read back as the fields it was written from (see `cache::reads`): compared as the row encodes.
    if job.encoding.structure == crate::pure::codec::Structure::Hash {
        return job.encoding.encode(expected.to_vec()) == cached;
    }
    // A document is printed back by the server its own way (spacing, number forms): compared as JSON.
    if job.encoding.structure == crate::pure::codec::Structure::Json && job.keyring.is_none() {
        let parse = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).ok();
        return matches!((parse(cached), parse(expected)), (Some(a), Some(b)) if a == b);
    }
    let Some(keyring) = &job.keyring else { return false };
    let open = |bytes: &[u8]| -> Option<serde_json::Map<String, serde_json::Value>> {
        let serde_json::Value::Object(mut object) = serde_json::from_slice(bytes).ok()? else {
            return None;
        };
        for column in &job.encrypt_columns {
            let envelope = object.get(column)?;
            let plain = keyring.open(column, envelope).ok()?;
            object.insert(column.clone(), serde_json::from_slice(&plain).ok()?);
        }
        Some(object)
    };
    matches!((open(cached), open(expected)), (Some(a), Some(b)) if a == b)
}

/// The report `cachewarden audit` prints.
pub(crate) fn format_report(audits: &[JobAudit]) -> String {
    let mut out = String::new();
    let (mut checked, mut stale) = (0u64, 0u64);
    for audit in audits {
        match &audit.skipped {
            Some(reason) => out.push_str(&format!("{}: skipped ({reason})\n", audit.job)),
            None if audit.checked == 0 => {
                out.push_str(&format!(
                    "{}: 0 keys checked: no cached key matches the job's template\n",
                    audit.job
                ));
            }
            None => {
                out.push_str(&format!(
                    "{}: {} checked, {} stale, {:.4} consistent\n",
                    audit.job,
                    crate::pure::words::count(audit.checked as usize, "key"),
                    audit.stale.len(),
                    audit.ratio()
                ));
                checked += audit.checked;
                stale += audit.stale.len() as u64;
            }
        }
        for key in &audit.stale {
            let age = key.written_ago.map_or("unknown".into(), |age| {
                crate::pure::words::duration(Duration::from_secs(age.as_secs()))
            });
            out.push_str(&format!(
                "  STALE {} (written {age} ago, stale at most that long)\n    cached:   {}\n    database: {}\n",
                key.key,
                key.cached,
                key.expected.as_deref().unwrap_or("(no row: the key should not exist)")
            ));
        }
    }
    if checked == 0 {
        out.push_str("overall: 0 keys checked: nothing was compared\n");
    } else {
        let ratio = (checked - stale) as f64 / checked as f64;
        out.push_str(&format!(
            "overall: {checked} keys checked, {stale} stale, {ratio:.4} consistent\n"
        ));
    }
    out
}
