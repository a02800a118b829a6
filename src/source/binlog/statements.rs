//! Statements logged as text in a row-format binlog (see `derive::statement`) planned for the tables the rules
//! follow: pattern deletes, or a gap's recovery.

use std::time::Instant;

use tracing::warn;

use super::BinlogListener;
use super::batch::Batch;
use crate::config::ChangeRule;
use crate::pure::plan::{self, Action};

/// A statement logged as text (see `derive::statement`): for the tables rules depend on, a `TRUNCATE` or `DROP`
/// deletes every key of their templates (and re-runs their `warm` jobs); a rename, a partition operation or DML
/// logged as a statement is a gap for them (`on_gap`); an unreadable one that may change rows, a gap for every
/// rule. The deletes join `batch`; the warm runs to request once they are applied are returned.
pub(super) fn plan(sql: &str, database: &str, listener: &BinlogListener, batch: &mut Batch) -> Vec<String> {
    use crate::pure::derive::statement::Effect;
    let effect = crate::pure::derive::statement::effect(sql, database);
    let (kind, tables, emptied) = match &effect {
        Effect::None => return Vec::new(),
        Effect::Emptied { kind, tables } => (*kind, Some(tables), true),
        Effect::Gap { kind, tables } => (*kind, Some(tables), false),
        Effect::Unreadable { kind } => (*kind, None, false),
    };
    let rules: Vec<&ChangeRule> = listener
        .rules
        .iter()
        .filter(|rule| {
            tables.is_none_or(|tables| {
                tables.iter().any(|(db, table)| {
                    crate::pure::glob::table_matches(&rule.database, &rule.table, db, table)
                        || (table == "*" && crate::pure::glob::table_matches(&rule.database, "*", db, "*"))
                })
            })
        })
        .collect();
    if rules.is_empty() {
        return Vec::new();
    }
    let patterns: Vec<String> = rules
        .iter()
        .flat_map(|rule| {
            rule.delete
                .iter()
                .chain(&rule.refresh)
                .chain(rule.project.as_ref().map(|projection| &projection.key))
                .chain(rule.lookup.as_ref().map(|lookup| &lookup.key))
        })
        .map(crate::pure::glob::template_pattern)
        .collect();
    let named: Vec<&str> = rules
        .iter()
        .flat_map(|rule| rule.warm.iter().map(String::as_str))
        .collect();
    let actions = if emptied {
        let mut actions: Vec<Action> = patterns.into_iter().map(Action::DeletePattern).collect();
        actions.extend(named.iter().map(|job| Action::Warm(job.to_string())));
        actions
    } else {
        plan::gap_actions(
            listener.settings.on_gap,
            &listener.invalidator.jobs(),
            &patterns,
            &named,
        )
    };
    let statement: String = sql.chars().take(200).collect();
    warn!(
        kind,
        statement,
        rules = rules.len(),
        "A statement logged without row images changed tables the rules follow; {}",
        if emptied {
            "deleting every key of their templates."
        } else {
            "recovering them as after a gap (on_gap)."
        }
    );
    listener.series.statement(kind, 1);
    let now = Instant::now();
    let mut warms = Vec::new();
    for action in actions {
        match action {
            Action::Warm(job) => warms.push(job),
            action => batch.add(action, None, now),
        }
    }
    warms
}
