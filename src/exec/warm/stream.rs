//! A job's query turned into rendered keys and values, handed to a [`Sink`]: the warm run's batch writer writes them,
//! the audit compares them with what Redis holds. One path, so that both see exactly the same values.

use std::sync::atomic::Ordering;

use futures_util::TryStreamExt as _;

use super::batch::Aggregate;
use super::members::Sets;
use super::{Progress, RunSummary, WarmError};
use crate::exec::cache::CacheError;
use crate::exec::database::{self, Database};
use crate::pure::model::{Shape, WarmJob};
use crate::pure::render::RowRenderer;
use crate::pure::value::Cell;

/// Where rendered values go.
#[allow(async_fn_in_trait)]
pub(crate) trait Sink {
    /// A key and its rendered value (before the job's encoding: compression is the sink's business).
    async fn push(&mut self, key: String, value: Vec<u8>) -> Result<(), CacheError>;
    /// The run's counts.
    fn summary(&mut self) -> &mut RunSummary;
    /// Counts a skipped row or value (`counter` picks the count) and says why.
    fn skip(&mut self, counter: impl FnOnce(&mut RunSummary) -> &mut u64, describe: impl FnOnce() -> String);
    /// Everything is pushed: finish the work in flight.
    async fn finish(&mut self) -> Result<(), CacheError>;
    /// Waits until everything pushed so far is written (what is pushed after depends on it).
    async fn settle(&mut self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// Streams `job`'s query, renders each row (or gathers a whole-result key) and hands the values to `sink`. (A little
/// over a page on purpose: the per-row path — decode, skip, render, hand over — read top to bottom.)
pub(crate) async fn render_rows(
    db: &Database,
    job: &WarmJob,
    progress: &Progress,
    sink: &mut impl Sink,
) -> Result<(), WarmError> {
    render_query(db, job, job.run_query(), &[], progress, sink).await
}

/// [`render_rows`] for `query` with `params` bound: the job's query, or a slice of it (the audit's sweep).
pub(crate) async fn render_query(
    db: &Database,
    job: &WarmJob,
    query: &str,
    params: &[String],
    progress: &Progress,
    sink: &mut impl Sink,
) -> Result<(), WarmError> {
    let mut conn = db.of(job).acquire(job.timeout).await?;
    let mut rows = conn.rows_bound(query, params);
    let mut renderer: Option<RowRenderer> = None;
    let mut sets = Sets::new(job);
    let mut aggregate = job.key.single_key().filter(|_| sets.is_none()).map(|key| Aggregate {
        key,
        value: vec![b'['],
        rows: 0,
        oversize: false,
    });
    let mut key = String::new();
    let mut value_capacity = 256;

    while let Some(row) = rows.try_next().await? {
        sink.summary().rows += 1;
        progress.rows.fetch_add(1, Ordering::Relaxed);
        let renderer = match &renderer {
            Some(renderer) => renderer,
            None => renderer.insert(RowRenderer::new(job, &database::columns(&row))?),
        };
        let mut raw = Vec::with_capacity(renderer.kinds().len());
        database::raw_values(&row, &mut raw)?;
        let cells = match renderer.decode(&raw) {
            Ok(cells) => cells,
            Err(reason) => {
                let row = sink.summary().rows;
                sink.skip(|s| &mut s.skipped_invalid, || format!("row {row}: {reason}"));
                continue;
            }
        };

        if let Some(aggregate) = &mut aggregate {
            if job.shape == Shape::Object && aggregate.rows >= 1 {
                return Err(WarmError::NotOneRow("more than one".into()));
            }
            aggregate.push(renderer, &cells, job.encoding.rendered_limit(job.max_value_bytes));
            continue;
        }

        key.clear();
        if let Err(reason) = renderer.render_key(&cells, &mut key) {
            let row = sink.summary().rows;
            sink.skip(|s| &mut s.skipped_null_key, || format!("row {row}: {reason}"));
            continue;
        }
        if let Some(sets) = &mut sets {
            add_member(sets, renderer, &cells, &key, job.max_value_bytes, sink).await?;
            continue;
        }
        // Rows of one query tend to be alike: size the value after the previous one, so it rarely grows.
        let mut value = Vec::with_capacity(value_capacity);
        renderer.render_object(&cells, &mut value);
        value_capacity = value.len() + value.len() / 8 + 16;
        sink.push(key.clone(), value).await?;
    }
    drop(rows);
    drop(conn);

    if let Some(aggregate) = aggregate {
        write_whole(aggregate, job, sink).await?;
    }
    if let Some(sets) = sets {
        sets.finish(sink).await?;
    }
    sink.finish().await?;
    Ok(())
}

/// Adds a row's member to its set key, or skips the row (a member over `max_value_bytes`, one that does not render).
async fn add_member(
    sets: &mut Sets,
    renderer: &RowRenderer,
    cells: &[Cell<'_>],
    key: &str,
    max_value_bytes: usize,
    sink: &mut impl Sink,
) -> Result<(), WarmError> {
    match renderer.render_member(cells) {
        // `max_value_bytes` bounds each member: a set's size is its number of rows.
        Ok((member, _)) if member.len() > max_value_bytes => {
            let size = member.len();
            sink.skip(
                |s| &mut s.skipped_oversize,
                || format!("key {key}: a member of {size} bytes exceeds max_value_bytes ({max_value_bytes})"),
            );
        }
        Ok((member, score)) => sets.add(key, member, score, sink).await?,
        Err(reason) => {
            let row = sink.summary().rows;
            sink.skip(|s| &mut s.skipped_invalid, || format!("row {row}: {reason}"));
        }
    }
    Ok(())
}

/// Writes a single-key job's whole result, unless it grew past `max_value_bytes`.
async fn write_whole(aggregate: Aggregate, job: &WarmJob, sink: &mut impl Sink) -> Result<(), WarmError> {
    if aggregate.oversize {
        sink.skip(
            |s| &mut s.skipped_oversize,
            || {
                format!(
                    "key {}: the whole result exceeds max_value_bytes ({}){}",
                    aggregate.key,
                    job.max_value_bytes,
                    if job.encoding.compress == crate::pure::codec::Compression::None {
                        ""
                    } else {
                        " even before compression could shrink it"
                    }
                )
            },
        );
    } else {
        let value = match (job.shape, aggregate.rows) {
            (Shape::Object, 1) | (Shape::Auto, 1) => aggregate.value[1..].to_vec(),
            (Shape::Object, n) => return Err(WarmError::NotOneRow(n.to_string())),
            _ => {
                let mut value = aggregate.value;
                value.push(b']');
                value
            }
        };
        sink.push(aggregate.key, value).await?;
    }
    Ok(())
}
