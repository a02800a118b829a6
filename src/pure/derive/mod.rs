//! Invalidation that follows the SQL: for every warm job, the tables its query reads and how a change in each one
//! reaches the job's keys — an explicit `[[on_change]]` rule, a rule derived from the query, or not covered (the
//! keys may stay stale up to their TTL) — and the derived rules themselves.
//!
//! Pure: `analyze` reads the SQL; this module turns an [`analyze::Analysis`] and the explicit rules into
//! [`JobCoverage`]. `config` adds the derived rules of jobs with `derive_rules` to the rules the binlog follows;
//! `check` and `rules` print the coverage.
//!
//! # What is derived
//! - One row per key from one table: a changed row refreshes the keys of its before and after image (deletes them
//!   when the job has no `refresh_query`); with a `WHERE`, a row whose after image is not in the filter has its key
//!   deleted, and one the filter cannot decide from the image (see `predicate`) too.
//! - Aggregates, `GROUP BY`, `DISTINCT`, `LIMIT`, a whole result in one key: a change in any table it reads re-runs
//!   the job (debounced); where the key's columns are a table's own, that table's changed rows delete their keys
//!   first.
//! - Subqueries, `UNION`, window functions, `NOW()`/`RAND()`, user variables, computed key columns: TTL only, with
//!   the reason.
//! - A joined table (n:1): its changed rows find the keys of the rows that join them through a reverse query on the
//!   job's own table (see `reverse`); a join on columns that are no unique key of the joined table (1:n) makes the
//!   job a whole result. The joins' unqualified columns are placed by the columns the server lists (see `columns`).
//! - A foreign key whose `ON DELETE`/`ON UPDATE` changes the rows of a table the job reads (directly or through a
//!   chain, see `schema`): a parent's delete or referenced-column update re-runs the job (debounced), and that run
//!   deletes the keys its query no longer returns — the binlog never shows the children's change.
//! - Views (known from the server): a one-table view is merged into the query first; any other names its base tables,
//!   and a change there re-runs the job. A key over columns that are no unique key re-runs the job too.
//! - An explicit rule for the same job and table wins over a derived one.

pub(crate) mod analyze;
mod columns;
mod filter;
pub(crate) mod report;
mod rule;
pub(crate) mod schema;
mod scope;
pub(crate) mod statement;
pub(crate) mod top;
pub(crate) mod views;

use std::sync::Arc;
use std::time::Duration;

use crate::pure::glob::{allow_pattern, glob_match, table_matches};
use crate::pure::model::{ChangeRule, KeyTemplate, WarmJob};
use analyze::{Analysis, Shape};

/// What derived rules are made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// How often a derived rule re-runs a job at most.
    pub debounce: Duration,
    /// More keys than this found by one batch's join lookup re-run the job instead.
    pub max_fanout: usize,
}

/// How a change in one table reaches one job's keys.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Coverage {
    /// By explicit `[[on_change]]` rules (their positions, from 0).
    Explicit(Vec<usize>),
    /// By a rule derived from the query; what it does.
    Derived(String),
    /// Not at all: the keys may stay stale up to their TTL. Why, and the rule that would cover it (if any can).
    NotCovered {
        why: String,
        suggestion: Option<Box<ChangeRule>>,
    },
}

/// One table a job reads and how its changes arrive.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableCoverage {
    /// `database.table`.
    pub table: String,
    pub how: Coverage,
}

/// A job's tables and rules.
#[derive(Debug, Clone)]
pub(crate) struct JobCoverage {
    pub job: Arc<str>,
    /// Why the whole job is TTL only, when it is.
    pub ttl_only: Option<String>,
    pub tables: Vec<TableCoverage>,
    /// The rules derived for this job, for the tables no explicit rule covers.
    pub derived: Vec<ChangeRule>,
    /// The views its query reads, and how they were read (merged, or only their base tables named).
    pub views: Option<String>,
}

impl JobCoverage {
    /// Whether no change anywhere can leave this job's keys stale until their TTL: every table it reads is covered,
    /// and a job no rule can be derived for has explicit rules for all of them (and a result rows alone decide).
    pub(crate) fn is_covered(&self) -> bool {
        let ttl_only_covered = self.ttl_only.as_ref().is_none_or(|why| {
            !why.contains(scope::CHANGES_WITHOUT_ROWS)
                && self.tables.iter().all(|t| matches!(t.how, Coverage::Explicit(_)))
        });
        ttl_only_covered && !self.tables.is_empty() && self.tables.iter().all(|t| !t.is_not_covered())
    }
}

impl TableCoverage {
    fn is_not_covered(&self) -> bool {
        matches!(self.how, Coverage::NotCovered { .. })
    }
}

/// Coverage of every job: `explicit` are the `[[on_change]]` rules (those of another binlog source than the job's
/// cover nothing of it), `database` the default database, `settings` what each job's derived rules are made with
/// (its source's), `schema` the server's foreign keys (empty offline).
pub(crate) fn cover(
    jobs: &[WarmJob],
    explicit: &[ChangeRule],
    database: &dyn Fn(&WarmJob) -> String,
    settings: &dyn Fn(&WarmJob) -> Settings,
    schema: &schema::Schema,
) -> Vec<JobCoverage> {
    // The explicit rules each job's source sees, filtered once per source that another source's rules exclude from.
    let mut of_source: Vec<(&Arc<str>, Vec<ChangeRule>)> = Vec::new();
    for source in jobs.iter().filter_map(|job| job.source.as_ref()) {
        let other = |rule: &ChangeRule| rule.source.as_ref().is_some_and(|rule| rule != source);
        if explicit.iter().any(other) && !of_source.iter().any(|(known, _)| *known == source) {
            let seen = explicit.iter().filter(|rule| !other(rule)).cloned().collect();
            of_source.push((source, seen));
        }
    }
    jobs.iter()
        .map(|job| {
            let seen = (job.source.as_ref())
                .and_then(|source| of_source.iter().find(|(known, _)| *known == source))
                .map_or(explicit, |(_, seen)| seen.as_slice());
            cover_job(job, &database(job), seen, &settings(job), schema)
        })
        .collect()
}

fn cover_job(
    job: &WarmJob,
    database: &str,
    explicit: &[ChangeRule],
    settings: &Settings,
    schema: &schema::Schema,
) -> JobCoverage {
    let (query, template, scored) = read_as(job);
    let (analysis, views) = analyzed(&query, database, &template, schema);
    let mut analysis = unique_keys(analysis, schema);
    // A sorted set's score column, from the same query read with the score among the placeholders.
    if let (
        Some(scored),
        Shape::Rows {
            driving, key_columns, ..
        },
    ) = (&scored, &mut analysis.shape)
        && let (
            Analysis {
                shape:
                    Shape::Rows {
                        driving: same,
                        key_columns: columns,
                        ..
                    },
                ..
            },
            _,
        ) = analyzed(&query, database, scored, schema)
        && same == *driving
    {
        *key_columns = columns;
    }
    let analysis = &analysis;
    let mut coverage = JobCoverage {
        views,
        job: job.name.clone(),
        ttl_only: match &analysis.shape {
            Shape::TtlOnly(why) => Some(why.clone()),
            _ => None,
        },
        tables: Vec::new(),
        derived: Vec::new(),
    };
    for (index, read) in analysis.tables.iter().enumerate() {
        let rules: Vec<usize> = explicit
            .iter()
            .enumerate()
            .filter(|(_, rule)| {
                table_matches(&rule.database, &rule.table, &read.database, &read.table) && covers(rule, job)
            })
            .map(|(position, _)| position)
            .collect();
        let table = read.qualified();
        if !rules.is_empty() {
            coverage.tables.push(TableCoverage {
                table,
                how: Coverage::Explicit(rules),
            });
            continue;
        }
        let derived = rule::derive_for(job, analysis, index, database, settings, schema);
        let how = match derived {
            Ok((rule, what)) => {
                coverage.derived.push(rule);
                Coverage::Derived(what)
            }
            Err(not_covered) => not_covered,
        };
        coverage.tables.push(TableCoverage { table, how });
    }
    if coverage.ttl_only.is_none() {
        cover_cascades(job, analysis, explicit, settings, schema, &mut coverage);
    }
    coverage
}

/// The tables whose changes reach the job's tables through foreign keys that change children (see `schema`): each
/// gets a rule that re-runs the job on the parent changes that cascade, and the run prunes what they removed.
fn cover_cascades(
    job: &WarmJob,
    analysis: &Analysis,
    explicit: &[ChangeRule],
    settings: &Settings,
    schema: &schema::Schema,
    coverage: &mut JobCoverage,
) {
    for parent in cascading_parents(analysis, schema) {
        let table = format!("{}.{}", parent.parent_database, parent.parent_table);
        let rules: Vec<usize> = explicit
            .iter()
            .enumerate()
            .filter(|(_, rule)| {
                table_matches(
                    &rule.database,
                    &rule.table,
                    &parent.parent_database,
                    &parent.parent_table,
                ) && covers(rule, job)
            })
            .map(|(position, _)| position)
            .collect();
        if !rules.is_empty() {
            coverage.tables.push(TableCoverage {
                table,
                how: Coverage::Explicit(rules),
            });
            continue;
        }
        let (rule, what) = cascade_rule(job, parent, settings);
        coverage.derived.push(rule);
        coverage.tables.push(TableCoverage {
            table,
            how: Coverage::Derived(what),
        });
    }
}

/// The parent tables whose foreign keys change rows of the tables `analysis` read, one entry per parent with the
/// events, columns and paths of all its cascades merged.
fn cascading_parents(analysis: &Analysis, schema: &schema::Schema) -> Vec<schema::Cascade> {
    let mut parents: Vec<schema::Cascade> = Vec::new();
    for read in &analysis.tables {
        for cascade in schema.cascades_into(&read.database, &read.table) {
            match parents.iter_mut().find(|known| {
                known.parent_database == cascade.parent_database && known.parent_table == cascade.parent_table
            }) {
                Some(known) => {
                    known.on_delete |= cascade.on_delete;
                    known.on_update |= cascade.on_update;
                    for column in cascade.columns {
                        if !known.columns.contains(&column) {
                            known.columns.push(column);
                        }
                    }
                    known.path.push_str(&format!("; {}", cascade.path));
                }
                None => parents.push(cascade),
            }
        }
    }
    parents
}

/// The rule that re-runs `job` on `parent`'s changes that cascade into its tables, and the words `check` says of it.
fn cascade_rule(job: &WarmJob, parent: schema::Cascade, settings: &Settings) -> (ChangeRule, String) {
    let events = crate::pure::model::RowEvents {
        insert: false,
        update: parent.on_update,
        delete: parent.on_delete,
    };
    let what = format!(
        "the database changes rows the binlog does not show ({}): a parent row's {} re-runs the job (debounced \
         {}), and the run deletes the keys its query no longer returns",
        parent.path,
        match (parent.on_delete, parent.on_update) {
            (true, true) => format!("delete or change of {}", parent.columns.join(", ")),
            (true, false) => "delete".to_string(),
            _ => format!("change of {}", parent.columns.join(", ")),
        },
        crate::pure::words::duration(settings.debounce),
    );
    let rule = ChangeRule {
        database: parent.parent_database,
        table: parent.parent_table,
        delete: Vec::new(),
        refresh: Vec::new(),
        warm: vec![job.name.to_string()],
        debounce: settings.debounce,
        when_changed: if parent.on_update { parent.columns } else { Vec::new() },
        project: None,
        filter: None,
        source: job.source.clone(),
        derived_from: Some(job.name.clone()),
        lookup: None,
        events,
        members: None,
    };
    (rule, what)
}

/// Whether an explicit rule acts on `job`'s keys: it warms the job, or one of its templates overlaps the job's.
fn covers(rule: &ChangeRule, job: &WarmJob) -> bool {
    let keys = allow_pattern(&job.key);
    rule.warm.iter().any(|name| **name == *job.name)
        || rule.lookup.as_ref().is_some_and(|lookup| lookup.job == job.name)
        || rule
            .delete
            .iter()
            .chain(&rule.refresh)
            .chain(rule.project.as_ref().map(|projection| &projection.key))
            .any(|template| template == &job.key || glob_match(&allow_pattern(template), &keys))
}

/// `sql` analyzed with its joins' unqualified columns placed (see `columns`) and the views it reads expanded (see
/// `views`), and what was done with the views.
/// The query and template a job is analysed with, and for a sorted set the template with its score too. A set's
/// rows are told apart by key and member together (Redis keeps one score per member: a query returning one member
/// twice for a key is no row per member), and which rows are members does not depend on a top N's order and limit (the
/// sorted set keeps the top itself).
fn read_as(job: &WarmJob) -> (String, KeyTemplate, Option<KeyTemplate>) {
    let Some(members) = &job.members else {
        return (job.query.clone(), job.key.clone(), None);
    };
    let query =
        top::top_query(&job.query, members.score.as_deref()).map_or_else(|_| job.query.clone(), |q| q.unordered);
    let template = |score: Option<&str>| {
        let placeholders: Vec<String> = job
            .key
            .placeholders()
            .chain(members.member.placeholders())
            .chain(score)
            .map(|name| format!("{{{name}}}"))
            .collect();
        KeyTemplate::parse(&placeholders.join("\u{1}")).expect("placeholders joined by a separator parse")
    };
    let scored = members.score.as_deref().map(|score| template(Some(score)));
    (query, template(None), scored)
}

fn analyzed(sql: &str, database: &str, key: &KeyTemplate, schema: &schema::Schema) -> (Analysis, Option<String>) {
    let qualified = columns::qualify(sql, database, schema);
    let sql = qualified.as_deref().unwrap_or(sql);
    match views::expand(sql, database, schema) {
        views::Expansion::NoViews => (analyze::analyze(sql, database, key), None),
        views::Expansion::Merged { sql, views } => (
            analyze::analyze(&sql, database, key),
            Some(format!("reads the view {} (merged)", views.join(", "))),
        ),
        views::Expansion::Opaque { why, bases } => {
            let analysis = analyze::analyze(sql, database, key);
            if matches!(analysis.shape, Shape::TtlOnly(_)) {
                return (analysis, None);
            }
            let tables = bases
                .into_iter()
                .map(|(database, table)| analyze::TableRead {
                    alias: table.clone(),
                    database,
                    table,
                    links: Vec::new(),
                    outer: false,
                    columns_read: None,
                })
                .collect();
            let analysis = Analysis {
                tables,
                shape: Shape::Whole {
                    why: why.clone(),
                    keyed_by: None,
                    per_key: false,
                },
            };
            (
                analysis,
                Some(format!("{why}: a change in its base tables re-runs the job")),
            )
        }
    }
}

/// A one-row-per-key analysis whose key columns are no primary or unique key of their table, or that joins a table
/// on columns that are no primary or unique key of it (1:n: a key's row repeated per joined row), when the schema
/// says, becomes a whole result: several rows may write one key, so a change re-runs the job after deleting its keys.
fn unique_keys(analysis: Analysis, schema: &schema::Schema) -> Analysis {
    let Shape::Rows {
        driving, key_columns, ..
    } = &analysis.shape
    else {
        return analysis;
    };
    let table = &analysis.tables[*driving];
    let columns: Vec<&str> = key_columns.iter().map(|(_, column)| column.as_str()).collect();
    let why = if !schema.is_unique(&table.database, &table.table, &columns) {
        format!(
            "its key columns ({}) are not a primary or unique key of {}: several rows may write one key",
            columns.join(", "),
            table.qualified()
        )
    } else {
        let fanning = analysis.tables.iter().enumerate().find(|(index, joined)| {
            let links: Vec<&str> = joined.links.iter().map(|(column, _)| column.as_str()).collect();
            index != driving && !links.is_empty() && !schema.is_unique(&joined.database, &joined.table, &links)
        });
        let Some((_, joined)) = fanning else {
            return analysis;
        };
        format!(
            "it joins {} on {}, which is not a primary or unique key of it: a key may have several rows (1:n)",
            joined.qualified(),
            joined
                .links
                .iter()
                .map(|(column, _)| column.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Analysis {
        shape: Shape::Whole {
            why,
            keyed_by: Some((*driving, key_columns.clone())),
            per_key: false,
        },
        tables: analysis.tables,
    }
}

/// The rules `config` hands the binlog: the explicit ones, then those derived for jobs that follow their SQL.
pub(crate) fn effective_rules(explicit: &[ChangeRule], coverage: &[JobCoverage], jobs: &[WarmJob]) -> Vec<ChangeRule> {
    let mut rules = explicit.to_vec();
    for job_coverage in coverage {
        if jobs.iter().any(|job| job.name == job_coverage.job && job.derive_rules) {
            rules.extend(job_coverage.derived.iter().cloned());
        }
    }
    rules
}

#[cfg(test)]
mod tests;
