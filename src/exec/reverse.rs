//! Reverse lookups of derived join rules: from changed rows of a joined table to the keys of the job whose rows join
//! them — one query per batch on the job's own table, by the join's columns, reading at most one row past
//! `max_fanout` — and which keys to refresh, delete, or (past `max_fanout`) which jobs to re-run instead.
//!
//! Executor: reads through `database`, renders keys through `render` as warm runs do; `invalidate` applies what it
//! finds. The query reads only the job's own table, never the changed one, so a joined row that was deleted (an
//! inner join that no longer matches) still finds the rows that joined it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::exec::database::{self, Database, DatabaseError};
use crate::pure::model::{ReverseLookup, SeenRow, WarmJob};
use crate::pure::plan::Lookup;
use crate::pure::render::RowRenderer;

/// Join values per query: a few round trips for a large batch, a statement the server plans once.
const VALUES_PER_QUERY: usize = 512;

/// What the lookups of a batch found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Keys to refresh, with the changed row each read must show.
    pub refresh: Vec<String>,
    pub seen: HashMap<String, SeenRow>,
    /// Keys to delete (the read would not decide: see [`ReverseLookup::refresh`]).
    pub delete: Vec<String>,
    /// Jobs to re-run: their lookups found more than `max_fanout` keys, or could not be read.
    pub rewarm: Vec<Arc<str>>,
}

/// Runs the lookups, grouped by rule: one query per [`VALUES_PER_QUERY`] join values.
pub(crate) async fn find(db: &Database, jobs: &[WarmJob], lookups: &[&Lookup]) -> Result<Found, DatabaseError> {
    let mut found = Found::default();
    let mut groups: Vec<(&Arc<ReverseLookup>, Vec<&Lookup>)> = Vec::new();
    for lookup in lookups {
        match groups.iter_mut().find(|(reverse, _)| **reverse == lookup.reverse) {
            Some((_, members)) => members.push(lookup),
            None => groups.push((&lookup.reverse, vec![lookup])),
        }
    }
    for (reverse, members) in groups {
        let Some(job) = jobs.iter().find(|job| job.name == reverse.job) else {
            continue;
        };
        match keys_of(db, job, reverse, &members).await {
            Ok(None) => {
                tracing::info!(
                    job = %job.name,
                    max_fanout = reverse.max_fanout,
                    "A joined table's changes reach more keys than max_fanout; re-running the job instead."
                );
                crate::telemetry::metrics::record_lookup_rewarm(&job.name, "fanout");
                found.rewarm.push(job.name.clone());
            }
            Ok(Some(keys)) => {
                crate::telemetry::metrics::record_lookup_keys(&job.name, keys.len() as u64);
                for (key, seen) in keys {
                    if reverse.refresh {
                        if let Some(seen) = seen {
                            found.seen.insert(key.clone(), seen);
                        }
                        found.refresh.push(key);
                    } else {
                        found.delete.push(key);
                    }
                }
            }
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => {
                tracing::warn!(job = %job.name, %error, "A derived join rule's lookup failed; re-running the job instead.");
                crate::telemetry::metrics::record_lookup_rewarm(&job.name, "query_refused");
                found.rewarm.push(job.name.clone());
            }
        }
    }
    Ok(found)
}

/// The keys of `job`'s rows that join the lookups' values, each with the changed row it came from; `None` when
/// more than `max_fanout` rows join them (each statement reads at most one row more than that).
async fn keys_of(
    db: &Database,
    job: &WarmJob,
    reverse: &ReverseLookup,
    lookups: &[&Lookup],
) -> Result<Option<Vec<(String, Option<SeenRow>)>>, DatabaseError> {
    // The job as it renders keys from the driving table's own columns.
    let mut renderer_job = job.clone();
    renderer_job.key = reverse.key.clone();
    let mut keys: Vec<(String, Option<SeenRow>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for chunk in lookups.chunks(VALUES_PER_QUERY) {
        let copies = chunk.len().next_power_of_two();
        let sql = lookup_sql(reverse, copies);
        let mut binds: Vec<&str> = Vec::with_capacity(copies * reverse.links.len());
        for i in 0..copies {
            binds.extend(chunk[i.min(chunk.len() - 1)].values.iter().map(String::as_str));
        }
        let rows = db.of(job).fetch_bound(&sql, &binds, job.timeout).await?;
        if rows.len() > reverse.max_fanout {
            // Cut at the limit: more rows than max_fanout join (rarely fewer keys, when rows share one). The job
            // re-runs, which is right whatever they were, and reading them all would cost what the limit spares.
            return Ok(None);
        }
        let Some(first) = rows.first() else { continue };
        let renderer = RowRenderer::new(&renderer_job, &database::columns(first))
            .map_err(|error| DatabaseError::Refused(sqlx::Error::Protocol(error.to_string())))?;
        let placeholders = reverse.key.placeholders().count();
        let mut raw = Vec::new();
        for row in &rows {
            raw.clear();
            database::raw_values(row, &mut raw)?;
            let Ok(cells) = renderer.decode(&raw) else { continue };
            let mut key = String::new();
            if renderer.render_key(&cells, &mut key).is_err() {
                continue;
            }
            // The join columns follow the key's: they say which changed row this one joined.
            let joined: Vec<Option<String>> = cells[placeholders..].iter().map(|cell| cell.key_text()).collect();
            let seen = chunk
                .iter()
                .find(|lookup| lookup.values.iter().map(Some).eq(joined.iter().map(Option::as_ref)))
                .and_then(|lookup| lookup.seen.clone());
            match index.get(&key) {
                Some(&at) => keys[at].1 = seen.or(keys[at].1.take()),
                None => {
                    index.insert(key.clone(), keys.len());
                    keys.push((key, seen));
                }
            }
        }
        if keys.len() > reverse.max_fanout {
            return Ok(None);
        }
    }
    Ok(Some(keys))
}

/// `SELECT DISTINCT <key columns>, <join columns> FROM db.table WHERE (<join columns>) IN (…) LIMIT <max_fanout + 1>`
/// for `copies` values.
fn lookup_sql(reverse: &ReverseLookup, copies: usize) -> String {
    let quote = |name: &str| format!("`{}`", name.replace('`', "``"));
    let mut select: Vec<String> = reverse.key.placeholders().map(quote).collect();
    let joins: Vec<String> = reverse.links.iter().map(|(_, column)| quote(column)).collect();
    select.extend(joins.iter().cloned());
    let tuple = if joins.len() == 1 {
        "?".to_string()
    } else {
        format!("({})", vec!["?"; joins.len()].join(", "))
    };
    let target = if joins.len() == 1 {
        joins[0].clone()
    } else {
        format!("({})", joins.join(", "))
    };
    format!(
        "SELECT DISTINCT {} FROM {}.{} WHERE {target} IN ({}) LIMIT {}",
        select.join(", "),
        quote(&reverse.database),
        quote(&reverse.table),
        vec![tuple; copies].join(", "),
        reverse.max_fanout.saturating_add(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::model::KeyTemplate;

    #[test]
    fn the_lookup_reads_the_jobs_table_by_the_join_columns() {
        let reverse = ReverseLookup {
            job: "products".into(),
            database: "shop".into(),
            table: "products".into(),
            links: vec![("id".into(), "category_id".into())],
            key: KeyTemplate::parse("product:{id}").unwrap(),
            refresh: true,
            max_fanout: 10,
        };
        assert_eq!(
            lookup_sql(&reverse, 2),
            "SELECT DISTINCT `id`, `category_id` FROM `shop`.`products` WHERE `category_id` IN (?, ?) LIMIT 11"
        );
        let pair = ReverseLookup {
            links: vec![("a".into(), "x".into()), ("b".into(), "y".into())],
            ..reverse
        };
        assert_eq!(
            lookup_sql(&pair, 1),
            "SELECT DISTINCT `id`, `x`, `y` FROM `shop`.`products` WHERE (`x`, `y`) IN ((?, ?)) LIMIT 11"
        );
    }
}
