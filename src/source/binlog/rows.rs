//! A rows event's changed rows planned into a batch: both images decoded through the one value mapping, each
//! rule's actions (`plan::plan_change`) gathered, warm runs debounced and held (see `holds`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::error;

use super::batch::Batch;
use super::checkpoint::Position;
use super::{BinlogError, BinlogListener, SessionState, decode};
use crate::config::ChangeRule;
use crate::exec::dead_letter::DeadLetter;
use crate::pure::model::{RowChange, SOURCE_DATABASE, SOURCE_TABLE, SeenRow};
use crate::pure::plan::{self, Action};

impl BinlogListener {
    /// Plans the rows of one rows event into `batch` (and debounced warm runs); `last_end` is the position after the
    /// last complete transaction, where the checkpoint waits for the warm runs these changes ask for.
    pub(super) fn plan_rows(
        &self,
        rows: &mysql_async::binlog::events::RowsEventData<'_>,
        tme: &mysql_async::binlog::events::TableMapEvent<'_>,
        committed_at: u32,
        batch: &mut Batch,
        last_end: &Position,
        state: &mut SessionState,
    ) -> Result<(), BinlogError> {
        let (database, table) = (tme.database_name(), tme.table_name());
        let rules: Vec<(usize, &ChangeRule)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| crate::pure::glob::table_matches(&rule.database, &rule.table, &database, &table))
            .collect();
        if rules.is_empty() {
            return Ok(());
        }
        // A table pattern's templates may name the row's database and table (`order:{_database}:{id}`).
        let source = rules.iter().any(|(_, rule)| rule.names_source());
        let shape = decode::TableShape::of(tme);
        let projects = rules.iter().any(|(_, rule)| rule.project.is_some());
        let refreshes = rules
            .iter()
            .any(|(_, rule)| !rule.refresh.is_empty() || rule.lookup.is_some());
        let table_name: Arc<str> = Arc::from(format!("{database}.{table}"));
        let now = Instant::now();
        for row in rows.rows(tme) {
            let (before, after) = row.map_err(|source| BinlogError::Undecodable {
                what: "row event",
                source,
            })?;
            let before = before.as_ref().map(|row| decode::decode_row(row, &shape));
            let after = after.as_ref().map(|row| decode::decode_row(row, &shape));
            let mut change = row_change(before.as_ref(), after.as_ref(), projects);
            if source {
                for image in [&mut change.before, &mut change.after].into_iter().flatten() {
                    let image = Arc::make_mut(image);
                    image.insert(SOURCE_DATABASE.into(), Some(database.to_string()));
                    image.insert(SOURCE_TABLE.into(), Some(table.to_string()));
                }
            }
            batch.rows += 1;
            batch.started.get_or_insert(now);
            let seen = match (&change.after, refreshes) {
                (Some(image), true) => Some(SeenRow {
                    table: table_name.clone(),
                    image: image.clone(),
                    committed_at,
                }),
                _ => None,
            };
            for (index, rule) in &rules {
                let plan = plan::plan_change(rule, &change);
                for column in &plan.missing_columns {
                    self.missing_column(*index, column, &table_name, state);
                }
                for action in plan.actions {
                    match action {
                        Action::Warm(job) => warm_asked(job, rule.debounce, now, last_end, state),
                        action => batch.add(action, seen.as_ref(), now),
                    }
                }
            }
        }
        Ok(())
    }

    /// The `index`th rule names a column `table` does not have: a dead letter each time, an ERROR once.
    fn missing_column(&self, index: usize, column: &str, table: &Arc<str>, state: &mut SessionState) {
        self.series.rule_error(table);
        self.dead_letters.keep(DeadLetter {
            source: "binlog",
            reason: "missing_column".into(),
            detail: format!(
                "[[on_change]] rule {} on {table}: the row has no column {column}; its keys were not rendered",
                index + 1
            ),
            payload: Vec::new(),
            size: 0,
        });
        if state.reported_missing.insert((index, column.to_string())) {
            error!(
                table = %table,
                rule = index + 1,
                column,
                "An [[on_change]] template names a column the table does not have (dropped or renamed?); its keys \
                 cannot be rendered and are skipped. Fix the rule."
            );
        }
    }
}

/// A change asks for a run of `job`: admitted past its debounce, it runs after the batch is applied; either way the
/// checkpoint waits before this change (`last_end`) until the run it asks for has ended.
pub(super) fn warm_asked(job: String, debounce: Duration, now: Instant, last_end: &Position, state: &mut SessionState) {
    let admitted = state.debounce.admit(&job, debounce, now);
    if admitted && !state.warms_after_apply.contains(&job) {
        state.warms_after_apply.push(job.clone());
    }
    match admitted {
        true => state.holds.asked(&job, last_end, SystemTime::now()),
        false => state.holds.deferred(&job, last_end),
    }
}

/// Both images of a changed row as key text, which columns differ between them (as key text: the one value
/// mapping), and the after image as JSON when a rule projects.
fn row_change(
    before: Option<&decode::DecodedRow<'_>>,
    after: Option<&decode::DecodedRow<'_>>,
    json: bool,
) -> RowChange {
    let before_image = before.map(decode::DecodedRow::image);
    let after_image = after.map(decode::DecodedRow::image);
    let changed = match (&before_image, &after_image) {
        (Some(before), Some(after)) => before
            .iter()
            .filter(|(column, value)| after.get(*column) != Some(value))
            .map(|(column, _)| column.clone())
            .collect(),
        _ => Vec::new(),
    };
    RowChange {
        before: before_image.map(Arc::new),
        after: after_image.map(Arc::new),
        changed,
        after_json: after.filter(|_| json).map(decode::DecodedRow::json),
    }
}
