//! `[[on_change]]`: the change-data-capture rules, each field checked against the jobs and tables it names.

use super::changes::DEFAULT_DEBOUNCE;
use super::entry::Entry;
use super::*;

/// What a rule may name, checked before the rules: the jobs (and those refused, by name and key), `[mysql]` (its
/// database is a bare table's), the defaults a projection is stored with, the binlog sources.
pub(super) struct Known<'a> {
    pub jobs: &'a [WarmJob],
    pub invalid_jobs: &'a [(String, String)],
    pub mysql: Option<&'a MysqlSettings>,
    pub defaults: &'a Defaults,
    pub sources: &'a Sources,
}

impl Context {
    /// One `[[on_change]]` rule, checked against what it may name (`known`); each field reports its own problems.
    pub(super) fn change_rule(&mut self, index: usize, item: &toml::Value, known: &Known<'_>) -> Option<ChangeRule> {
        let Known {
            jobs,
            invalid_jobs,
            mysql,
            defaults,
            sources,
        } = *known;
        let entry = Entry::new("on_change", index, item, "table");
        let before = self.problems.len();
        let raw: RawOnChange = entry.read(self, item)?;
        let source = self.source_ref(&entry, raw.source, sources, true);
        let (table_line, header_line) = (entry.line(self, Some("table")), entry.line(self, None));
        let (database, table) = self.rule_table(raw.table.as_deref(), mysql, &entry.at, table_line, header_line);
        let delete = self.rule_templates(&entry, "delete", raw.delete);
        let refresh = self.rule_templates(&entry, "refresh", raw.refresh);
        self.check_refresh(&entry, &refresh, jobs, invalid_jobs);
        let warm = raw.warm.unwrap_or_default();
        for name in warm.iter().filter(|name| !jobs.iter().any(|job| &*job.name == *name)) {
            entry.problem(self, Some("warm"), format!("no [[warm]] job named \"{name}\""));
        }
        let line = entry.line(self, Some("project"));
        let project = raw
            .project
            .and_then(|raw| self.projection(raw, &entry.at, line, defaults));
        let project = project.and_then(|projection| self.check_projection(&entry, projection, jobs));
        let line = entry.line(self, Some("lookup"));
        let lookup = raw
            .lookup
            .and_then(|raw| self.lookup(raw, &entry.at, line, jobs, mysql));
        let idle = delete.is_empty() && refresh.is_empty() && warm.is_empty() && project.is_none() && lookup.is_none();
        if idle && self.problems.len() == before {
            let message = "does nothing: give it `delete`, `refresh`, `project` or `warm`";
            entry.problem(self, None, message.into());
        }
        let debounce = match raw.debounce {
            Some(text) => parse_duration(&text)
                .map_err(|m| entry.problem(self, Some("debounce"), m))
                .ok(),
            None => Some(DEFAULT_DEBOUNCE),
        };
        let filter = self.rule_filter(&entry, raw.filter, &database, &table);
        if database.contains('*') || table.contains('*') {
            self.pattern_reads(
                &entry,
                &format!("{database}.{table}"),
                !refresh.is_empty(),
                lookup.is_some(),
            );
        }
        let events = self.rule_events(&entry, raw.events);
        if self.problems.len() > before {
            return None;
        }
        Some(ChangeRule {
            database,
            table,
            delete,
            refresh,
            warm,
            debounce: debounce?,
            when_changed: raw.when_changed.unwrap_or_default(),
            project,
            filter: filter.map(|predicate| {
                Arc::new(crate::pure::model::RowFilter {
                    predicate,
                    read_decides: false,
                })
            }),
            source,
            derived_from: None,
            lookup: lookup.map(Arc::new),
            events,
            members: None,
        })
    }

    /// A rule's `where` as a filter over its table's row images.
    fn rule_filter(
        &mut self,
        entry: &Entry,
        condition: Option<String>,
        database: &str,
        table: &str,
    ) -> Option<crate::pure::predicate::Predicate> {
        let condition = condition?;
        crate::pure::derive::analyze::parse_condition(&condition, database, table)
            .map_err(|why| {
                let message = format!("\"{condition}\" cannot be a row filter: {why}");
                entry.problem(self, Some("where"), message)
            })
            .ok()
    }

    /// A table pattern's rule that reads through a job's query (`refresh`, `lookup`): its rows come from several
    /// tables, so that is refused.
    fn pattern_reads(&mut self, entry: &Entry, pattern: &str, refresh: bool, lookup: bool) {
        for (field, used) in [("refresh", refresh), ("lookup", lookup)] {
            if used {
                let message = format!(
                    "\"{pattern}\" is a table pattern: its rows come from several tables, and `{field}` reads \
                     through one job's query; use `delete`, `project` or `warm` (templates may name {{_database}} \
                     and {{_table}})"
                );
                entry.problem(self, Some(field), message);
            }
        }
    }

    /// A rule's key templates in `field` (`delete`, `refresh`), each one that does not parse reported.
    fn rule_templates(&mut self, entry: &Entry, field: &str, list: Option<Vec<String>>) -> Vec<KeyTemplate> {
        list.unwrap_or_default()
            .iter()
            .filter_map(|text| {
                KeyTemplate::parse(text)
                    .map_err(|message| entry.problem(self, Some(field), format!("\"{text}\": {message}")))
                    .ok()
            })
            .collect()
    }

    /// Each `refresh` template must be a valid job's key with a `refresh_query`, and no pattern.
    fn check_refresh(
        &mut self,
        entry: &Entry,
        refresh: &[KeyTemplate],
        jobs: &[WarmJob],
        invalid_jobs: &[(String, String)],
    ) {
        for template in refresh {
            let usable = jobs
                .iter()
                .any(|job| job.key == *template && job.refresh_query.is_some());
            if !usable {
                let message = match invalid_jobs.iter().find(|(_, key)| key == template.as_str()) {
                    Some((name, _)) => format!(
                        "\"{template}\" is the key of [[warm]] job \"{name}\", which is invalid (see its problems)"
                    ),
                    None => format!("\"{template}\" needs a [[warm]] job with that key template and a refresh_query"),
                };
                entry.problem(self, Some("refresh"), message);
            }
            if template.as_str().contains('*') {
                let message = format!("\"{template}\" is a pattern; patterns can only be deleted");
                entry.problem(self, Some("refresh"), message);
            }
        }
    }

    /// A projection into a hash job's keys updates the hash's fields (see `codec::hash_update`); over a set's or a
    /// document's keys it would replace the structure with a JSON string, and is refused.
    fn check_projection(
        &mut self,
        entry: &Entry,
        mut projection: crate::config::Projection,
        jobs: &[WarmJob],
    ) -> Option<crate::config::Projection> {
        use crate::pure::codec::Structure;
        let keys = crate::pure::glob::allow_pattern(&projection.key);
        let structured = jobs.iter().find(|job| {
            job.encoding.structure != Structure::String
                && (job.key == projection.key
                    || crate::pure::glob::glob_match(&crate::pure::glob::allow_pattern(&job.key), &keys)
                    || crate::pure::glob::glob_match(&keys, &crate::pure::glob::allow_pattern(&job.key)))
        });
        let Some(job) = structured else {
            return Some(projection);
        };
        let what = match job.encoding.structure {
            Structure::Hash => {
                projection.encoding = job.encoding;
                return Some(projection);
            }
            Structure::Json => "JSON documents (type = \"json\"): refresh them instead",
            _ => "sets: their members follow the rows by the job's derived rules (derive_rules = true)",
        };
        let message = format!(
            "\"{}\" writes JSON strings into the keys of [[warm]] job \"{}\", which are {what}",
            projection.key, job.name
        );
        entry.problem(self, Some("project"), message);
        None
    }

    /// `events`: the row events the rule acts on (every one when left out).
    fn rule_events(&mut self, entry: &Entry, names: Option<Vec<String>>) -> crate::pure::model::RowEvents {
        let Some(names) = names else {
            return crate::pure::model::RowEvents::ALL;
        };
        let mut events = crate::pure::model::RowEvents {
            insert: false,
            update: false,
            delete: false,
        };
        for name in &names {
            match name.as_str() {
                "insert" => events.insert = true,
                "update" => events.update = true,
                "delete" => events.delete = true,
                other => {
                    let message = format!("\"{other}\" is no row event: use \"insert\", \"update\" or \"delete\"");
                    entry.problem(self, Some("events"), message);
                }
            }
        }
        if names.is_empty() {
            let message = "is empty: the rule would never act (leave it out for every event)";
            entry.problem(self, Some("events"), message.into());
        }
        events
    }

    /// A rule's `lookup` table: a join from the changed row to a job's rows (`max_fanout` is set from `[binlog]`
    /// afterwards).
    fn lookup(
        &mut self,
        raw: crate::config::raw::RawLookup,
        at: &str,
        line: Option<usize>,
        jobs: &[WarmJob],
        mysql: Option<&MysqlSettings>,
    ) -> Option<crate::pure::model::ReverseLookup> {
        let before = self.problems.len();
        let fail = |ctx: &mut Self, message: String| ctx.problem(line, format!("{at}.lookup"), message);
        let job = match raw.job.as_deref() {
            Some(name) => match jobs.iter().find(|job| &*job.name == name) {
                Some(job) => Some(job),
                None => {
                    fail(self, format!("no [[warm]] job named \"{name}\""));
                    None
                }
            },
            None => {
                fail(self, "needs `job`, the [[warm]] job whose keys it finds".into());
                None
            }
        };
        let table = raw.table.as_deref().and_then(|text| qualified_table(text, mysql));
        if table.is_none() {
            fail(self, "needs `table`, the job's table, as \"database.table\"".into());
        }
        let links: Vec<(String, String)> = raw
            .on
            .unwrap_or_default()
            .into_iter()
            .map(|(driving, changed)| (changed, driving))
            .collect();
        if links.is_empty() {
            fail(
                self,
                "needs `on = { job_table_column = \"changed_table_column\" }`".into(),
            );
        }
        let key = row_template(
            raw.key.as_deref(),
            "a lookup finds one key per row",
            "the job's key over its table's columns",
        )
        .map_err(|message| fail(self, message))
        .ok();
        let refresh = raw.refresh.unwrap_or(false);
        if let Some(job) = job
            && refresh
            && job.refresh_query.is_none()
        {
            fail(
                self,
                format!("refresh = true needs a refresh_query on job \"{}\"", job.name),
            );
        }
        if self.problems.len() > before {
            return None;
        }
        let ((database, table), job) = (table?, job?);
        Some(crate::pure::model::ReverseLookup {
            job: job.name.clone(),
            database,
            table,
            links,
            key: key?,
            refresh,
            max_fanout: crate::config::DEFAULT_MAX_FANOUT,
        })
    }

    /// A rule's `project` table: key template, columns and TTL, stored as `[defaults]` says.
    fn projection(
        &mut self,
        raw: crate::config::raw::RawProjection,
        at: &str,
        line: Option<usize>,
        defaults: &Defaults,
    ) -> Option<crate::config::Projection> {
        let fail = |ctx: &mut Self, message: String| {
            ctx.problem(line, format!("{at}.project"), message);
        };
        let key = row_template(
            raw.key.as_deref(),
            "a projection writes one key per row",
            "a template such as \"price:{id}\"",
        )
        .map_err(|message| fail(self, message))
        .ok();
        let columns = match raw.columns {
            Some(columns) if !columns.is_empty() => Some(columns),
            _ => {
                fail(self, "needs `columns`, the row's columns to store".into());
                None
            }
        };
        let ttl = match raw.ttl.as_deref().map(parse_ttl) {
            Some(Ok(ttl)) => Some(ttl),
            Some(Err(message)) => {
                fail(self, format!("ttl: {message}"));
                None
            }
            None => {
                fail(self, "needs `ttl` (or \"none\")".into());
                None
            }
        };
        if let Some(columns) = &columns {
            let sensitive = crate::pure::render::sensitive_columns(columns.iter().map(String::as_str), &[]);
            if !sensitive.is_empty() {
                fail(
                    self,
                    format!("columns {} look sensitive and would be cached", sensitive.join(", ")),
                );
            }
        }
        Some(crate::config::Projection {
            key: key?,
            columns: columns?,
            ttl: ttl?,
            encoding: defaults.encoding,
        })
    }

    /// The `database.table` a rule watches (a bare table is in `[mysql] url`'s database).
    fn rule_table(
        &mut self,
        table: Option<&str>,
        mysql: Option<&MysqlSettings>,
        at: &str,
        field_line: Option<usize>,
        rule_line: Option<usize>,
    ) -> (String, String) {
        match table {
            Some(text) => match qualified_table(text, mysql) {
                Some(table) => table,
                None => {
                    self.problem(
                        field_line,
                        format!("{at}.table"),
                        format!("\"{text}\" is not a table: write \"database.table\""),
                    );
                    (String::new(), String::new())
                }
            },
            None => {
                self.problem(
                    rule_line,
                    at.to_string(),
                    "`table` is required (\"database.table\")".into(),
                );
                (String::new(), String::new())
            }
        }
    }
}

/// `"database.table"`, or `"table"` in `[mysql] url`'s database; `None` when it is neither.
fn qualified_table(text: &str, mysql: Option<&MysqlSettings>) -> Option<(String, String)> {
    match text.split_once('.') {
        Some((db, table)) if !db.is_empty() && !table.is_empty() => Some((db.to_string(), table.to_string())),
        None if !text.is_empty() => mysql.and_then(MysqlSettings::database).map(|db| (db, text.to_string())),
        _ => None,
    }
}

/// A key template naming one key per row (it has placeholders): `Err` says what is wrong — why one per row
/// (`per_row`), or what to write (`missing`) when there is none.
fn row_template(text: Option<&str>, per_row: &str, missing: &str) -> Result<KeyTemplate, String> {
    match text.map(KeyTemplate::parse) {
        Some(Ok(key)) if !key.is_single_key() => Ok(key),
        Some(Ok(key)) => Err(format!("key \"{key}\" has no placeholders: {per_row}")),
        Some(Err(message)) => Err(format!("key: {message}")),
        None => Err(format!("needs `key`, {missing}")),
    }
}
