//! The rule derived for one table a warm job's query reads, by the query's shape, and the sentence that says what it
//! does.

use std::sync::Arc;

use super::analyze::{Analysis, Shape, TableRead};
use super::{Coverage, Settings, analyzed, schema, scope};
use crate::pure::model::{ChangeRule, KeyTemplate, ReverseLookup, RowFilter, WarmJob};
use crate::pure::predicate::Predicate;
use crate::pure::words;

/// The rule derived for the `index`th table of `job`'s query, with what it does; or [`Coverage::NotCovered`]: why
/// none can be, and the rule that would cover it.
pub(super) fn derive_for(
    job: &WarmJob,
    analysis: &Analysis,
    index: usize,
    database: &str,
    settings: &Settings,
    schema: &schema::Schema,
) -> Result<(ChangeRule, String), Coverage> {
    let deriving = Deriving {
        job,
        read: &analysis.tables[index],
        database,
        settings,
        schema,
    };
    match &analysis.shape {
        // Rows decide what it returns, though no finer rule can be derived: a change in any table it reads re-runs
        // it (a change-driven run prunes what it no longer returns). A result that changes with no row changing
        // (NOW(), a variable) no rule covers.
        Shape::TtlOnly(why) if why.contains(scope::CHANGES_WITHOUT_ROWS) => Err(Coverage::NotCovered {
            why: format!("TTL only: {why}"),
            suggestion: None,
        }),
        Shape::TtlOnly(why) => Err(Coverage::NotCovered {
            why: format!("TTL only: {why}"),
            suggestion: Some(Box::new(deriving.rule(
                Vec::new(),
                Vec::new(),
                vec![job.name.to_string()],
            ))),
        }),
        Shape::Rows {
            driving,
            key_columns,
            filter,
        } if *driving == index => Ok(match &job.members {
            Some(members) => deriving.members(members, key_columns, filter),
            None => deriving.driving(key_columns, filter),
        }),
        // A set's joined table: its members are the driving rows, and no refresh reads one member.
        Shape::Rows { driving, .. } if job.members.is_some() => Ok(deriving.rerun(&analysis.tables[*driving])),
        Shape::Rows { driving, .. } if deriving.read.links.is_empty() => Ok(deriving.rerun(&analysis.tables[*driving])),
        Shape::Rows {
            driving,
            key_columns,
            filter,
        } => Ok(deriving.lookup(&analysis.tables[*driving], key_columns, filter)),
        Shape::Whole {
            keyed_by: Some((table, columns)),
            per_key: true,
            ..
        } if *table == index && job.refresh_query.is_some() => {
            let what = "each key is one group of this table's rows: a changed row refreshes its group's key (through \
                        refresh_query); the group a row left (a delete, a changed group column) has its key deleted";
            Ok((
                deriving.rule(Vec::new(), vec![renamed(&job.key, columns)], Vec::new()),
                what.to_string(),
            ))
        }
        Shape::Whole { why, keyed_by, .. } => {
            let (delete, deletes) = match keyed_by {
                Some((table, columns)) if *table == index => (vec![renamed(&job.key, columns)], true),
                _ => (Vec::new(), false),
            };
            let what = format!(
                "{why}: a change re-runs the job (debounced {}){}",
                words::duration(settings.debounce),
                if deletes {
                    ", after deleting the changed rows' keys"
                } else {
                    ""
                }
            );
            Ok((deriving.rule(delete, Vec::new(), vec![job.name.to_string()]), what))
        }
    }
}

/// One table of one job's query, being given its rule.
struct Deriving<'a> {
    job: &'a WarmJob,
    read: &'a TableRead,
    database: &'a str,
    settings: &'a Settings,
    schema: &'a schema::Schema,
}

impl Deriving<'_> {
    /// A rule on this table that deletes, refreshes and warms these.
    fn rule(&self, delete: Vec<KeyTemplate>, refresh: Vec<KeyTemplate>, warm: Vec<String>) -> ChangeRule {
        ChangeRule {
            database: self.read.database.clone(),
            table: self.read.table.clone(),
            delete,
            refresh,
            warm,
            debounce: self.settings.debounce,
            when_changed: Vec::new(),
            project: None,
            filter: None,
            source: self.job.source.clone(),
            derived_from: Some(self.job.name.clone()),
            lookup: None,
            events: crate::pure::model::RowEvents::ALL,
            members: None,
        }
    }

    /// The table whose rows are the keys: a changed row refreshes (or deletes) its own key.
    fn driving(&self, key_columns: &[(String, String)], filter: &Option<Predicate>) -> (ChangeRule, String) {
        let job = self.job;
        let key = renamed(&job.key, key_columns);
        let mut derived = if job.refresh_query.is_some() {
            self.rule(Vec::new(), vec![key], Vec::new())
        } else {
            self.rule(vec![key], Vec::new(), Vec::new())
        };
        // Only a filtered rule needs to know whether the refresh query applies the filter too (it reads it again).
        derived.filter = filter.clone().map(|predicate| {
            Arc::new(RowFilter {
                read_decides: refresh_applies(job, self.database, filter, self.schema),
                predicate,
            })
        });
        let mut what = if job.refresh_query.is_some() {
            "a changed row refreshes its key (through refresh_query); a deleted row deletes it".to_string()
        } else {
            "a changed or deleted row deletes its key (no refresh_query to read it again)".to_string()
        };
        if let Some(filter) = filter.as_ref().filter(|_| job.refresh_query.is_some()) {
            what.push_str(&format!(
                "; a row outside the filter on {} deletes its key",
                filter.columns().join(", ")
            ));
        }
        (derived, what)
    }

    /// The table whose rows are a set's members: a changed row adds its member, moves it or removes it.
    fn members(
        &self,
        members: &Arc<crate::pure::model::Members>,
        key_columns: &[(String, String)],
        filter: &Option<Predicate>,
    ) -> (ChangeRule, String) {
        let column = |name: &str| {
            key_columns
                .iter()
                .find(|(placeholder, _)| placeholder == name)
                .map_or(name.to_string(), |(_, column)| column.clone())
        };
        let mut derived = self.rule(Vec::new(), Vec::new(), Vec::new());
        derived.filter = filter.clone().map(|predicate| {
            Arc::new(RowFilter {
                predicate,
                read_decides: false,
            })
        });
        derived.members = Some(Arc::new(crate::pure::model::MemberRule {
            job: self.job.name.clone(),
            members: members.clone(),
            key: renamed(&self.job.key, key_columns),
            member: renamed(&members.member, key_columns),
            score: members.score.as_deref().map(column),
        }));
        let mut what = format!(
            "a changed row adds its member to its key's {kind}, moves it to another key's or removes it (a deleted \
             row{}), on keys that exist",
            if filter.is_some() {
                ", or one outside the filter"
            } else {
                ""
            },
            kind = members.kind.as_str(),
        );
        if let Some(top) = &members.top {
            what.push_str(&format!(
                "; the sorted set keeps the top {} and {} more, and is warmed again when it holds fewer than {}",
                top.n, top.buffer, top.n
            ));
        }
        (derived, what)
    }

    /// A joined table no reverse query reaches the keys from: a change re-runs the job, and the run prunes.
    fn rerun(&self, driving: &TableRead) -> (ChangeRule, String) {
        let read = self.read;
        let mut derived = self.rule(Vec::new(), Vec::new(), vec![self.job.name.to_string()]);
        derived.when_changed = read.columns_read.clone().unwrap_or_default();
        let what = format!(
            "it joins {} through another table or without an equality with {}'s columns: a change re-runs the job \
             (debounced {}), and the run deletes the keys its query no longer returns{}",
            read.alias,
            driving.alias,
            words::duration(self.settings.debounce),
            self.only_columns()
        );
        (derived, what)
    }

    /// A joined table linked to the driving one by equalities: a changed row finds the keys that join it by one
    /// reverse query per batch.
    fn lookup(
        &self,
        driving: &TableRead,
        key_columns: &[(String, String)],
        filter: &Option<Predicate>,
    ) -> (ChangeRule, String) {
        let (job, read) = (self.job, self.read);
        let pairs: Vec<String> = read
            .links
            .iter()
            .map(|(column, driving_column)| format!("{}.{column} = {}.{driving_column}", read.alias, driving.alias))
            .collect();
        let refresh = job.refresh_query.is_some()
            && (filter.is_none() || refresh_applies(job, self.database, filter, self.schema));
        let mut derived = self.rule(Vec::new(), Vec::new(), Vec::new());
        derived.when_changed = read.columns_read.clone().unwrap_or_default();
        derived.lookup = Some(Arc::new(ReverseLookup {
            job: job.name.clone(),
            database: driving.database.clone(),
            table: driving.table.clone(),
            links: read.links.clone(),
            key: renamed(&job.key, key_columns),
            refresh,
            max_fanout: self.settings.max_fanout,
        }));
        let what = format!(
            "a changed row {} the keys of the {} rows that join it ({}), found by one query per batch; over \
             max_fanout ({}) keys the job re-runs instead{}",
            if refresh { "refreshes" } else { "deletes" },
            driving.table,
            pairs.join(" AND "),
            self.settings.max_fanout,
            self.only_columns()
        );
        (derived, what)
    }

    /// "; only changes to a, b" when the rule watches only the columns the query reads.
    fn only_columns(&self) -> String {
        match &self.read.columns_read {
            Some(columns) if !columns.is_empty() => format!("; only changes to {}", columns.join(", ")),
            _ => String::new(),
        }
    }
}

/// Whether `job`'s refresh query applies `filter` (its own conditions on the key's parameters aside).
fn refresh_applies(job: &WarmJob, database: &str, filter: &Option<Predicate>, schema: &schema::Schema) -> bool {
    job.refresh_query.as_ref().is_some_and(|refresh| {
        matches!(analyzed(refresh, database, &job.key, schema).0.shape,
            Shape::Rows { filter: ref refresh_filter, .. } if refresh_filter == filter)
    })
}

/// `key` with each placeholder replaced by the table column it comes from (`product:{pid}` with `p.id AS pid` →
/// `product:{id}`), so the binlog's row image renders it.
pub(super) fn renamed(key: &KeyTemplate, columns: &[(String, String)]) -> KeyTemplate {
    let mut source = String::new();
    for part in key.parts() {
        match part {
            crate::pure::model::KeyPart::Literal(text) => source.push_str(&text.replace('{', "{{").replace('}', "}}")),
            crate::pure::model::KeyPart::Column(name) => {
                let column = columns
                    .iter()
                    .find(|(placeholder, _)| placeholder == name)
                    .map_or(name.as_str(), |(_, column)| column.as_str());
                source.push('{');
                source.push_str(column);
                source.push('}');
            }
        }
    }
    KeyTemplate::parse(&source).expect("a template rebuilt from a parsed one's parts parses")
}
