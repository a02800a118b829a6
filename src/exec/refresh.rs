//! Refreshing keys from the database: many keys of one job read in one round trip through its `refresh_query`,
//! rendered exactly as the warm job renders them, checked against the change that asked for them, and written under
//! one stale-set lease.
//!
//! An executor (reads through `database`, writes through `cache`); which keys to refresh was settled before.
//!
//! # One read for many keys
//! A `refresh_query` with one parameter compared by `=` and nothing that acts on the result as a whole (`LIMIT`,
//! `GROUP BY`, `ORDER BY`, `DISTINCT`, `UNION`, `HAVING`, `FOR`) is read for up to [`KEYS_PER_IN_LIST`] keys at once
//! by turning `= :id` into `IN (?, ?, …)`. Any other query is repeated, each copy in parentheses with its own key's
//! values bound, and joined with `UNION ALL` ([`KEYS_PER_UNION`] keys a statement; several times the server's work
//! per key). Either way nothing is spliced into the SQL, and batches are padded to a power of two (repeating a key)
//! so the server keeps a handful of prepared statements.
//!
//! # Never a read older than its event
//! A binlog event can reach us before its transaction is visible to other connections, and a reader endpoint lags
//! the writer. So a refresh caused by a row change carries that row's after image ([`SeenRow`]); every result column
//! the query takes straight from that table (as the server reports each column's origin) must equal the image, or
//! the value is not written. Such a key is left deleted (it was invalidated before the read) and reported back as
//! unverified: the binlog listener reads it again shortly, unless a newer change of the row comes first (a read that
//! is *newer* than its event looks the same, and the newer event's own refresh settles it), and gives up after a
//! while (see `source::binlog`). A miss, never a stale value. A refresh asked for by a message has no image and is
//! written as read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::mysql::MySqlRow;
use tracing::warn;

use crate::exec::backend::BackendError;
use crate::exec::cache::{Cache, CacheError, ReadLease};
use crate::exec::database::{self, Database, DatabaseError};
use crate::pure::model::{KeyOp, SeenRow, WarmJob};
use crate::pure::render::{ColumnError, ColumnSource, RowRenderer};
use crate::pure::value::Cell;
use crate::telemetry::metrics;

/// Keys per `IN (…)` statement at most.
pub(crate) const KEYS_PER_IN_LIST: usize = 1024;
/// Keys per `UNION ALL` statement at most.
pub(crate) const KEYS_PER_UNION: usize = 256;
/// A refresh whose write is refused (its read lease ended) reads again this many times in all, then leaves its keys
/// deleted.
const REFRESH_ATTEMPTS: u32 = 3;

/// Why keys could not be rendered from the database.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyReadError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Columns(#[from] ColumnError),
}

/// One key as the database renders it now.
struct Rendered {
    value: Vec<u8>,
    /// Per result column, its value as key text.
    texts: Vec<Option<String>>,
}

/// What one job's refresh did.
#[derive(Debug, Default)]
pub(crate) struct Refreshed {
    /// Keys written.
    pub written: u64,
    /// Keys deleted: the row is gone, or the value too big (or the query failed for good).
    pub deleted: u64,
    /// Keys left deleted because the read did not show the change that asked for them.
    pub unverified: Vec<String>,
    /// Keys no row renders (counted in `deleted` too).
    pub absent: Vec<String>,
}

/// What `job` renders for `key` from the database now: `Ok(None)` when no row renders that key (or the job has no
/// refresh query). Used by the audit, so it sees exactly what a refresh (and a warm run) would write.
pub(crate) async fn render_from_database(
    db: &Database,
    job: &WarmJob,
    key: &str,
) -> Result<Option<Vec<u8>>, KeyReadError> {
    Ok(read_keys(db, job, &[key])
        .await?
        .remove(key)
        .map(|rendered| rendered.value))
}

/// Which of `keys` (all `job`'s) a row renders now, read through the job's refresh query (none without one).
pub(crate) async fn readable_keys(
    db: &Database,
    job: &WarmJob,
    keys: &[&str],
) -> Result<std::collections::HashSet<String>, KeyReadError> {
    Ok(read_keys(db, job, keys).await?.into_keys().collect())
}

/// The column origins of each job's refresh query, learned once per query text (a prepare).
#[derive(Default)]
pub(crate) struct Origins(Mutex<HashMap<String, Arc<[Option<ColumnSource>]>>>);

/// Refreshes `keys` (all rendered by `job`, which has a `refresh_query`): invalidate them, read them in one go, write
/// what matches its change, read the rest again. `seen` holds the changed row for keys a row change asked for.
pub(crate) async fn refresh_keys(
    cache: &Cache,
    db: &Database,
    origins: &Origins,
    job: &WarmJob,
    keys: &[String],
    seen: &HashMap<String, SeenRow>,
) -> Result<Refreshed, BackendError> {
    // Invalidate first, read after: a value read before this point can no longer land, and from here on a key we do
    // not write is simply absent. The lease comes after the invalidation (so it marks nothing for our own read) and
    // before the read: its version is at least the invalidation's, so a later refresh of the same key, which
    // invalidates while our lease is live, records evidence in our lease that wins over our write.
    cache.invalidate(keys).await?;
    for attempt in 1..=REFRESH_ATTEMPTS {
        let lease = match cache.begin_read(job.timeout).await {
            // A full Redis cannot hold the read's bookkeeping, let alone the values: the keys stay deleted.
            Err(error) if error.is_out_of_memory() => return Ok(out_of_memory(keys.len())),
            lease => lease?,
        };
        let refreshed = refresh_under_lease(db, cache, origins, job, keys, seen, &lease).await;
        cache.end_read(lease).await;
        match refreshed {
            // The write was refused: the lease ended, or (an evicting Redis) its bookkeeping was evicted. The keys
            // are deleted; reading again under a new lease usually lands.
            Err(BackendError::Cache(CacheError::LeaseEnded)) if attempt < REFRESH_ATTEMPTS => {}
            Err(BackendError::Cache(CacheError::LeaseEnded)) => return Ok(refused(keys.len())),
            refreshed => return refreshed,
        }
    }
    unreachable!("the last attempt returns")
}

async fn refresh_under_lease(
    db: &Database,
    cache: &Cache,
    origins: &Origins,
    job: &WarmJob,
    keys: &[String],
    seen: &HashMap<String, SeenRow>,
    lease: &ReadLease,
) -> Result<Refreshed, BackendError> {
    let mut refreshed = Refreshed::default();
    let sources = match origins.of(db, job).await {
        Ok(sources) => sources,
        Err(error) => return give_up(job, keys, &error, refreshed),
    };
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut rows = match read_keys(db, job, &keys).await {
        Ok(rows) => rows,
        Err(KeyReadError::Database(error)) if error.is_transient() => return Err(error.into()),
        Err(error) => return give_up(job, &keys, &error, refreshed),
    };
    let mut ops = Vec::new();
    for key in keys {
        let Some(rendered) = rows.remove(key) else {
            // The row is gone (or no longer renders this key): the key stays deleted.
            refreshed.deleted += 1;
            refreshed.absent.push(key.to_string());
            continue;
        };
        if !shows(&rendered, &sources, seen.get(key)) {
            refreshed.unverified.push(key.to_string());
            continue;
        }
        // Stored as the warm job stores it: the limit is on the stored size.
        let value = job.encoding.encode(rendered.value);
        let size = job.encoding.stored_len(&value);
        if size > job.max_value_bytes {
            warn!(
                key,
                size,
                limit = job.max_value_bytes,
                "Refreshed value exceeds max_value_bytes; leaving the key deleted."
            );
            refreshed.deleted += 1;
        } else {
            ops.push(KeyOp::Set {
                key: key.to_string(),
                value,
                ttl: job.ttl.pick(job.jitter, fastrand::f64()),
                read: lease.stamp(lease.read_at),
            });
        }
    }
    match cache.apply(&ops).await {
        Err(error) if error.is_out_of_memory() => {
            // What did not fit stays deleted (it was invalidated before the read).
            let full = out_of_memory(ops.len());
            refreshed.deleted += full.deleted;
            return Ok(refreshed);
        }
        applied => applied?,
    }
    refreshed.written += ops.len() as u64;
    Ok(refreshed)
}

/// `keys` refreshes left deleted because their writes were refused [`REFRESH_ATTEMPTS`] times in a row: a Redis that
/// evicts the protection's own keys faster than a read completes. Retrying the batch for ever would stall the stream
/// that asked for them; a deleted key is a miss, never stale.
fn refused(keys: usize) -> Refreshed {
    warn!(
        keys,
        attempts = REFRESH_ATTEMPTS,
        "The refreshed keys' writes were refused (the read lease ended: evicted?) every time; leaving them deleted."
    );
    left_deleted(keys, "refused")
}

/// `keys` refreshes left deleted because Redis is full.
fn out_of_memory(keys: usize) -> Refreshed {
    warn!(
        keys,
        "Redis is out of memory (maxmemory under noeviction): leaving the refreshed keys deleted."
    );
    left_deleted(keys, "out_of_memory")
}

/// `keys` refreshes given up for `reason` (counted): they stay deleted.
fn left_deleted(keys: usize, reason: &'static str) -> Refreshed {
    for _ in 0..keys {
        metrics::record_refresh_given_up(reason);
    }
    Refreshed {
        deleted: keys as u64,
        ..Refreshed::default()
    }
}

/// A definite failure (the query is refused, or its result cannot be rendered): the keys stay deleted.
fn give_up(
    job: &WarmJob,
    keys: &[impl AsRef<str>],
    error: &dyn std::fmt::Display,
    mut refreshed: Refreshed,
) -> Result<Refreshed, BackendError> {
    warn!(
        job = %job.name,
        keys = keys.len(),
        first = keys.first().map(AsRef::as_ref).unwrap_or_default(),
        %error,
        "refresh_query cannot render these keys; leaving them deleted."
    );
    for _ in keys {
        metrics::record_refresh_given_up("query_refused");
    }
    refreshed.deleted += keys.len() as u64;
    Ok(refreshed)
}

/// Whether a read shows the change: every column taken from the changed table equals the row's after image.
fn shows(rendered: &Rendered, sources: &[Option<ColumnSource>], seen: Option<&SeenRow>) -> bool {
    let Some(seen) = seen else { return true };
    rendered.texts.iter().zip(sources).all(|(text, source)| match source {
        Some((table, column)) if **table == *seen.table => {
            seen.image.get(column).is_none_or(|expected| expected == text)
        }
        _ => true,
    })
}

impl Origins {
    async fn of(&self, db: &Database, job: &WarmJob) -> Result<Arc<[Option<ColumnSource>]>, DatabaseError> {
        let query = job.refresh_query.as_deref().unwrap_or_default();
        if let Some(known) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(query) {
            return Ok(known.clone());
        }
        let sources: Arc<[_]> = db
            .of(job)
            .describe(query)
            .await?
            .into_iter()
            .map(|c| c.source)
            .collect();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(query.to_string(), sources.clone());
        Ok(sources)
    }
}

/// Reads `keys` of `job` through its refresh query, many at a time: each key that a row renders, with its value.
/// Keys no row renders are absent.
async fn read_keys(db: &Database, job: &WarmJob, keys: &[&str]) -> Result<HashMap<String, Rendered>, KeyReadError> {
    let mut found = HashMap::with_capacity(keys.len());
    let Some(query) = &job.refresh_query else {
        return Ok(found);
    };
    let in_list = in_list_form(query).filter(|_| job.refresh_params.len() == 1);
    let per_read = if in_list.is_some() {
        KEYS_PER_IN_LIST
    } else {
        KEYS_PER_UNION
    };
    for chunk in keys.chunks(per_read) {
        let copies = chunk.len().next_power_of_two();
        let mut binds: Vec<&str> = Vec::with_capacity(copies * job.refresh_params.len());
        for i in 0..copies {
            let key = chunk[i.min(chunk.len() - 1)];
            let values = job.key.capture(key).unwrap_or_default();
            for param in &job.refresh_params {
                binds.push(
                    values
                        .iter()
                        .find(|(name, _)| name == param)
                        .map_or("", |(_, value)| *value),
                );
            }
        }
        let sql = match in_list {
            Some((before, after)) => in_list_of(before, after, copies),
            None => union_of(query, copies),
        };
        let rows = db.of(job).fetch_bound(&sql, &binds, job.timeout).await?;
        render_rows(job, &rows, &mut found)?;
    }
    Ok(found)
}

/// Where a single-parameter query can take a list: the text before its `= ?` and after it, when the query has
/// exactly one `?`, compared with a plain `=`, and no clause that acts on the whole result.
fn in_list_form(query: &str) -> Option<(&str, &str)> {
    // The query with quoted text and comments blanked out, so that neither a `?` nor a keyword inside them counts.
    let mut code = String::with_capacity(query.len());
    let mut chars = query.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                code.push(' ');
                for (_, d) in chars.by_ref() {
                    code.extend(std::iter::repeat_n(' ', d.len_utf8()));
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek().is_some_and(|(_, d)| *d == '-') => {
                code.push(' ');
                for (_, d) in chars.by_ref() {
                    code.extend(std::iter::repeat_n(' ', d.len_utf8()));
                    if d == '\n' {
                        break;
                    }
                }
            }
            c => code.push(c),
        }
    }
    let upper = code.to_ascii_uppercase();
    let words: Vec<&str> = upper.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').collect();
    if [
        "LIMIT", "GROUP", "ORDER", "DISTINCT", "UNION", "HAVING", "FOR", "OFFSET",
    ]
    .iter()
    .any(|keyword| words.contains(keyword))
    {
        return None;
    }
    let mut marks = code.match_indices('?');
    let (at, _) = marks.next()?;
    if marks.next().is_some() {
        return None;
    }
    let before = code[..at].trim_end();
    let equals = before.strip_suffix('=')?;
    if equals.ends_with(['<', '>', '!', ':', '=']) {
        return None;
    }
    Some((&query[..equals.len()], &query[at + 1..]))
}

/// `before IN (?, ?, …) after` with `copies` placeholders.
fn in_list_of(before: &str, after: &str, copies: usize) -> String {
    let after = after.trim_end().trim_end_matches(';');
    let mut sql = String::with_capacity(before.len() + after.len() + copies * 3 + 8);
    sql.push_str(before.trim_end());
    sql.push_str(" IN (");
    for i in 0..copies {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('?');
    }
    sql.push(')');
    sql.push_str(after);
    sql
}

/// `copies` copies of `query` joined by `UNION ALL` (one copy: the query itself).
fn union_of(query: &str, copies: usize) -> String {
    let query = query.trim().trim_end_matches(';');
    if copies <= 1 {
        return query.to_string();
    }
    let mut sql = String::with_capacity((query.len() + 13) * copies);
    for i in 0..copies {
        if i > 0 {
            sql.push_str(" UNION ALL ");
        }
        sql.push('(');
        sql.push_str(query);
        sql.push(')');
    }
    sql
}

fn render_rows(job: &WarmJob, rows: &[MySqlRow], found: &mut HashMap<String, Rendered>) -> Result<(), KeyReadError> {
    let Some(first) = rows.first() else { return Ok(()) };
    let columns = database::columns(first);
    let renderer = RowRenderer::new(job, &columns)?;
    let mut raw = Vec::new();
    for row in rows {
        raw.clear();
        database::raw_values(row, &mut raw)?;
        let Ok(cells) = renderer.decode(&raw) else { continue };
        let mut key = String::new();
        if renderer.render_key(&cells, &mut key).is_err() || found.contains_key(&key) {
            continue;
        }
        let mut value = Vec::with_capacity(256);
        renderer.render_object(&cells, &mut value);
        let texts = cells.iter().map(Cell::key_text).collect();
        found.insert(key, Rendered { value, texts });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_keys_are_one_union_of_the_single_key_query() {
        assert_eq!(
            union_of("SELECT a FROM t WHERE id = ?;", 1),
            "SELECT a FROM t WHERE id = ?"
        );
        assert_eq!(
            union_of("SELECT a FROM t WHERE id = ?", 2),
            "(SELECT a FROM t WHERE id = ?) UNION ALL (SELECT a FROM t WHERE id = ?)"
        );
    }

    #[test]
    fn a_plain_single_key_query_reads_many_keys_through_an_in_list() {
        let (before, after) = in_list_form("SELECT id, name FROM products WHERE id = ? AND active = 1").unwrap();
        assert_eq!(
            in_list_of(before, after, 4),
            "SELECT id, name FROM products WHERE id IN (?, ?, ?, ?) AND active = 1"
        );
        let (before, after) = in_list_form("SELECT p.id, 'a = ?' AS note FROM p WHERE p.id=?;").unwrap();
        assert_eq!(
            in_list_of(before, after, 2),
            "SELECT p.id, 'a = ?' AS note FROM p WHERE p.id IN (?, ?)"
        );
        for union_only in [
            "SELECT id FROM p WHERE id = ? LIMIT 1",
            "SELECT id, COUNT(*) FROM p WHERE id = ? GROUP BY id",
            "SELECT id FROM p WHERE id >= ?",
            "SELECT id FROM p WHERE id <=> ?",
            "SELECT id FROM p WHERE a = ? AND b = ?",
            "SELECT DISTINCT id FROM p WHERE id = ?",
            "SELECT id FROM p WHERE id = ? ORDER BY id",
        ] {
            assert!(in_list_form(union_only).is_none(), "{union_only}");
        }
    }

    fn rendered(name: &str) -> Rendered {
        Rendered {
            value: Vec::new(),
            texts: vec![Some("1".into()), Some(name.into()), Some("computed".into())],
        }
    }

    #[test]
    fn a_read_shows_its_change_only_if_every_column_from_the_changed_table_matches() {
        let sources = [
            Some(("shop.products".to_string(), "id".to_string())),
            Some(("shop.products".to_string(), "name".to_string())),
            None,
        ];
        let seen = SeenRow {
            committed_at: 0,
            table: Arc::from("shop.products"),
            image: Arc::new(
                [("id", "1"), ("name", "new"), ("price", "9.50")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                    .collect(),
            ),
        };
        assert!(shows(&rendered("new"), &sources, Some(&seen)));
        assert!(!shows(&rendered("old"), &sources, Some(&seen)));
        assert!(shows(&rendered("old"), &sources, None), "no change to check against");
        let other = SeenRow {
            table: Arc::from("shop.categories"),
            ..seen
        };
        assert!(
            shows(&rendered("old"), &sources, Some(&other)),
            "columns of another table are not compared"
        );
    }
}
