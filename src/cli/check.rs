//! `check --connect`: the configuration held against the live servers. Every warm query is prepared (SQL errors,
//! placeholders that are not result columns, sensitive columns, unmappable types), and every `[[on_change]]` rule is
//! checked against the table it watches (the table exists; every placeholder, projected column and `when_changed`
//! column is one of its columns). The Redis user's ACL is asked about every command and key the configuration
//! needs ([`access`]), and the binlog connection about everything following it needs. Problems carry the file's line
//! like every other configuration problem.

use crate::config::{ChangeRule, Config, LineIndex, Problem};
use crate::exec::cache::Cache;
use crate::exec::database::Database;
use crate::ops::access::{self, Checked};
use crate::pure::model::{SOURCE_DATABASE, SOURCE_TABLE};
use crate::pure::render::RowRenderer;

/// What `check --connect` found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub problems: Vec<Problem>,
    /// What could not be checked, and why (not problems).
    pub notes: Vec<String>,
    /// A server could not be reached at all (not a configuration problem: exit 69, not 78).
    pub unreachable: bool,
}

/// Connects to both servers and checks jobs and rules against them.
pub(crate) async fn check_connect(config: &Config) -> Findings {
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let mut unreachable = false;
    let cache = Cache::connect(&config.redis).await;
    if let Ok(cache) = &cache {
        notes.push(format!("Redis: {}", cache.shape()));
        if config.misses.is_some() {
            notes.extend(crate::source::misses::describe_nodes(cache, &config.redis).await);
        }
    }
    let mut needs = access::redis_needs(config);
    if let Ok(cache) = &cache {
        match access::module_needs(cache, config).await {
            Ok((missing, module)) => {
                problems.extend(missing.into_iter().map(|message| problem("redis".into(), message)));
                needs.extend(module);
            }
            Err(error) => notes.push(format!("could not ask Redis which module commands it has: {error}")),
        }
    }
    match cache {
        Ok(cache) => match access::check(&cache, &needs).await {
            Ok(Checked::Refused(refused)) => problems.extend(refused.into_iter().map(|refusal| {
                problem(
                    refusal.need.purpose,
                    format!(
                        "the Redis ACL refuses `{}`: {}",
                        refusal.need.command.join(" "),
                        refusal.reason
                    ),
                )
            })),
            Ok(Checked::Unchecked(why)) => notes.push(format!(
                "the Redis ACL was not checked ({why}); grant the user +acl|whoami +acl|dryrun to check it"
            )),
            Err(error) => notes.push(format!("the Redis ACL was not checked: {error}")),
        },
        Err(error) => {
            unreachable |= error.is_unreachable();
            problems.push(problem(
                "redis.url".into(),
                format!("cannot connect to {}: {error}", config.redis.url),
            ));
        }
    }
    for binlog in &config.binlogs {
        let label = &binlog.label;
        match crate::source::binlog::preflight(&binlog.url, binlog.server_id).await {
            Ok(server) => {
                notes.extend(server.warnings.iter().map(|warning| format!("{label}: {warning}")));
                notes.push(format!("{label}: {}", server.retention.can_be_down_for()));
            }
            Err(error) => problems.push(problem(label.to_string(), format!("cannot follow the binlog: {error}"))),
        }
    }
    let (problems, mysql_unreachable) = check_database(config, problems, &mut notes).await;
    Findings {
        problems,
        notes,
        unreachable: unreachable || mysql_unreachable,
    }
}

/// The server's cascading foreign keys taken into `config`'s derived rules (see `derive::schema`).
pub(crate) async fn learn_schema(config: &mut Config) -> anyhow::Result<()> {
    let db = Database::of_config(config)?;
    let schema = db.schema_everywhere(&|source| config.databases_read(source)).await;
    db.close().await;
    config.learn_schema(std::sync::Arc::new(schema?));
    Ok(())
}

/// What `check` finds on this host without connecting: a checkpoint file whose directory cannot be written (outside
/// systemd's `StateDirectory=`, `/var/lib/cachewarden` may not exist or belong to someone else).
pub(crate) fn check_local(config: &Config) -> Vec<Problem> {
    (config.binlogs.iter())
        .filter_map(|binlog| match &binlog.checkpoint {
            crate::config::CheckpointStore::File(path) => writable(config, binlog, path),
            crate::config::CheckpointStore::Redis(_) => None,
        })
        .collect()
}

/// A problem when the directory of `binlog`'s checkpoint file `path` cannot be written.
fn writable(config: &Config, binlog: &crate::config::BinlogSettings, path: &std::path::Path) -> Option<Problem> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    let probe = directory.join(format!(".cachewarden-check-{}", std::process::id()));
    let error = match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            return None;
        }
        Err(error) => error,
    };
    let text = std::fs::read_to_string(&config.path).unwrap_or_default();
    let lines = LineIndex::new(&text);
    let (line, location) = match &*binlog.label {
        "binlog" => (
            (lines.key_line(Some("binlog"), "checkpoint_file")).or(lines.key_line(Some("binlog"), "checkpoint")),
            "binlog.checkpoint_file".to_string(),
        ),
        _ => {
            // The entry of `[[binlog]]` with this name.
            let doc: toml::Table = toml::from_str(&text).unwrap_or_default();
            let entries = doc.get("binlog").and_then(toml::Value::as_array);
            let index = entries
                .and_then(|entries| {
                    (entries.iter())
                        .position(|entry| entry.get("name").and_then(toml::Value::as_str) == Some(&binlog.name))
                })
                .unwrap_or_default();
            let line = (lines.table_field_line("binlog", index, Some("checkpoint_file")))
                .or(lines.table_field_line("binlog", index, None));
            (line, format!("binlog[{index}] \"{}\".checkpoint_file", binlog.name))
        }
    };
    Some(Problem {
        line,
        location,
        message: format!(
            "the checkpoint file {} cannot be written ({error}): create the directory for this user, set \
             checkpoint_file, or run under systemd (StateDirectory=)",
            path.display()
        ),
    })
}

/// A problem found on a server, located by its configuration path rather than a line.
fn problem(location: String, message: String) -> Problem {
    Problem {
        line: None,
        location,
        message,
    }
}

/// Jobs and rules against the MySQL server, added to `problems`; and whether the server could not be reached.
async fn check_database(config: &Config, mut problems: Vec<Problem>, notes: &mut Vec<String>) -> (Vec<Problem>, bool) {
    let db = match Database::of_config(config) {
        Ok(db) => db,
        Err(error) => {
            problems.push(problem("mysql.url".into(), error.to_string()));
            return (problems, false);
        }
    };
    if let Err(error) = db.ping().await {
        problems.push(problem(
            "mysql.url".into(),
            format!("cannot connect to {}: {error}", config.mysql.url),
        ));
        return (problems, error.is_unreachable());
    }
    let lines = LineIndex::new(&std::fs::read_to_string(&config.path).unwrap_or_default());
    check_job_queries(config, &db, &lines, &mut problems).await;
    check_rules(config, &db, &lines, &mut problems, notes).await;
    db.close().await;
    (problems, false)
}

/// Every rule's table against its server: `[mysql]`'s, or for a rule of another source, that source's (through its
/// url).
async fn check_rules(
    config: &Config,
    db: &Database,
    lines: &LineIndex,
    problems: &mut Vec<Problem>,
    notes: &mut Vec<String>,
) {
    let mut servers: Vec<(std::sync::Arc<str>, Database)> = Vec::new();
    for (index, rule) in config.rules.iter().enumerate() {
        // A derived rule's table is where its job reads it.
        let job = (rule.derived_from.as_ref()).and_then(|name| config.jobs.iter().find(|job| job.name == *name));
        let reads = job.map(|job| db.of(job));
        let server = match config.elsewhere(rule) {
            None => reads.as_ref().unwrap_or(db),
            Some(source) => {
                if !servers.iter().any(|(name, _)| *name == source.name) {
                    let settings = crate::config::MysqlSettings {
                        url: source.url.clone(),
                        pool_size: 1,
                        ..config.mysql.clone()
                    };
                    match Database::new(&settings) {
                        Ok(server) => servers.push((source.name.clone(), server)),
                        Err(error) => {
                            problems.push(problem(source.label.to_string(), error.to_string()));
                            continue;
                        }
                    }
                }
                let found = servers.iter().find(|(name, _)| *name == source.name);
                &found.expect("added above").1
            }
        };
        check_rule_tables(config, server, lines, index, rule, problems, notes).await;
    }
    for (_, server) in servers {
        server.close().await;
    }
}

/// Each job's query and refresh query, described by the server: they must run and render.
async fn check_job_queries(config: &Config, db: &Database, lines: &LineIndex, problems: &mut Vec<Problem>) {
    for (index, job) in config.jobs.iter().enumerate() {
        let at = format!("warm[{index}] \"{}\"", job.name);
        let line = |field| lines.table_field_line("warm", index, Some(field));
        match db.of(job).describe(&job.query).await {
            Ok(columns) => {
                if let Err(error) = RowRenderer::new(job, &columns) {
                    problems.push(Problem {
                        line: line("query"),
                        location: at.clone(),
                        message: error.to_string(),
                    });
                }
            }
            Err(error) => problems.push(Problem {
                line: line("query"),
                location: format!("{at}.query"),
                message: error.to_string(),
            }),
        }
        if let Some(query) = &job.refresh_query
            && let Err(error) = db.of(job).describe(query).await
        {
            problems.push(Problem {
                line: line("refresh_query"),
                location: format!("{at}.refresh_query"),
                message: error.to_string(),
            });
        }
    }
}

/// The table (or every table a pattern matches today) of the `index`th rule: its columns must be the ones the rule
/// names.
async fn check_rule_tables(
    config: &Config,
    db: &Database,
    lines: &LineIndex,
    index: usize,
    rule: &ChangeRule,
    problems: &mut Vec<Problem>,
    notes: &mut Vec<String>,
) {
    // A derived rule is located by its job (its fields are the job's key and query).
    let (section, position, at) = match &rule.derived_from {
        Some(job) => {
            let position = config.jobs.iter().position(|j| j.name == *job).unwrap_or_default();
            let at = format!(
                "warm[{position}] \"{job}\" (the rule derived for {}.{})",
                rule.database, rule.table
            );
            ("warm", position, at)
        }
        None => (
            "on_change",
            index,
            format!("on_change[{index}] \"{}.{}\"", rule.database, rule.table),
        ),
    };
    let line = |field: &str| {
        let field = if section == "warm" { "query" } else { field };
        lines.table_field_line(section, position, Some(field))
    };
    // A table pattern is held against every table it matches today (none is no problem: shards may come).
    let tables = if rule.is_table_pattern() {
        match db.tables_matching(&rule.database, &rule.table).await {
            Ok(tables) => {
                let names: Vec<String> = tables.iter().map(|(db, table)| format!("{db}.{table}")).collect();
                notes.push(format!(
                    "{at}: the pattern matches {}{}",
                    crate::pure::words::count(names.len(), "table"),
                    if names.is_empty() {
                        " today".to_string()
                    } else {
                        format!(": {}", names.join(", "))
                    }
                ));
                tables
            }
            Err(error) => {
                notes.push(format!(
                    "{at}: the tables the pattern matches could not be listed: {error}"
                ));
                Vec::new()
            }
        }
    } else {
        vec![(rule.database.clone(), rule.table.clone())]
    };
    for (database, table) in tables {
        match db.table_columns(&database, &table).await {
            Ok(columns) => {
                let columns = columns.map(|mut columns| {
                    if rule.is_table_pattern() {
                        columns.extend([SOURCE_DATABASE.to_string(), SOURCE_TABLE.to_string()]);
                    }
                    columns
                });
                for (field, message) in rule_problems(rule, &database, &table, columns.as_deref()) {
                    problems.push(Problem {
                        line: line(field),
                        location: format!("{at}.{field}"),
                        message,
                    });
                }
            }
            Err(error) => problems.push(Problem {
                line: line("table"),
                location: format!("{at}.table"),
                message: format!("cannot read the columns of {database}.{table}: {error}"),
            }),
        }
    }
}

/// What is wrong with `rule` for `database.table` (the rule's, or one its pattern matches) with `columns` (`None`: no
/// such table), as (field, message).
pub(crate) fn rule_problems(
    rule: &ChangeRule,
    database: &str,
    table: &str,
    columns: Option<&[String]>,
) -> Vec<(&'static str, String)> {
    let table = format!("{database}.{table}");
    let Some(columns) = columns else {
        return vec![("table", format!("there is no table {table} on the server"))];
    };
    let mut problems = Vec::new();
    let mut need = |field: &'static str, what: String, column: &str| {
        if !columns.iter().any(|c| c == column) {
            problems.push((
                field,
                format!("{what} names `{column}`, which is not a column of {table}"),
            ));
        }
    };
    for (field, templates) in [("delete", &rule.delete), ("refresh", &rule.refresh)] {
        for template in templates {
            for placeholder in template.placeholders() {
                need(field, format!("\"{template}\""), placeholder);
            }
        }
    }
    if let Some(projection) = &rule.project {
        for placeholder in projection.key.placeholders() {
            need("project", format!("key \"{}\"", projection.key), placeholder);
        }
        for column in &projection.columns {
            need("project", "columns".into(), column);
        }
    }
    for column in &rule.when_changed {
        need("when_changed", "when_changed".into(), column);
    }
    if let Some(lookup) = &rule.lookup {
        for (column, _) in &lookup.links {
            need("lookup", "lookup.on".into(), column);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::model::KeyTemplate;

    #[test]
    fn every_misspelled_name_is_reported_with_its_field() {
        let rule = ChangeRule {
            database: "shop".into(),
            table: "products".into(),
            delete: vec![KeyTemplate::parse("catalog:{idd}:*").unwrap()],
            refresh: vec![KeyTemplate::parse("product:{id}").unwrap()],
            warm: vec![],
            debounce: std::time::Duration::from_secs(1),
            when_changed: vec!["nmae".into()],
            project: None,
            filter: None,
            source: None,
            derived_from: None,
            lookup: None,
            events: crate::pure::model::RowEvents::ALL,
            members: None,
        };
        let columns = vec!["id".to_string(), "name".to_string()];
        let problems = rule_problems(&rule, "shop", "products", Some(&columns));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].0, "delete");
        assert!(problems[0].1.contains("`idd`"));
        assert_eq!(problems[1].0, "when_changed");
        assert_eq!(rule_problems(&rule, "shop", "products", None)[0].0, "table");
    }
}
