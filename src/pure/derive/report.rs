//! Coverage and rules for people: `check`'s table per job (explicit, derived, not covered, with the TOML that would
//! cover it) and `rules`' effective rules as `[[on_change]]` TOML or JSON, ready to review or freeze.
//!
//! Pure: hands back text.

use super::{Coverage, JobCoverage};
use crate::pure::model::{ChangeRule, MemberRule, Ttl, WarmJob};

/// `check`'s coverage section, and whether every job is covered (what `check --strict` demands). `binlog` says
/// whether a `[binlog]` is enabled: without one no rule is followed.
pub(crate) fn coverage(coverage: &[JobCoverage], jobs: &[WarmJob], binlog: bool) -> (String, bool) {
    let mut out = String::from("How a change in each table a job reads reaches its keys:\n");
    let mut covered = true;
    let by_name: std::collections::HashMap<&str, &WarmJob> = jobs.iter().map(|job| (&*job.name, job)).collect();
    for job_coverage in coverage {
        let Some(&job) = by_name.get(&*job_coverage.job) else {
            continue;
        };
        let ttl = match job.ttl {
            Ttl::Expires(ttl) => crate::pure::words::duration(ttl),
            Ttl::Never => "never (ttl = \"none\")".into(),
        };
        let stale = format!("keys may stay stale up to the TTL ({ttl})");
        match &job_coverage.ttl_only {
            Some(why) if job_coverage.is_covered() => {
                out.push_str(&format!(
                    "  {}: no rule can be derived ({why}); explicit rules cover every table\n",
                    job.name
                ));
            }
            Some(why) => {
                covered = false;
                out.push_str(&format!("  {}: TTL only: {why}; {stale}\n", job.name));
            }
            None => out.push_str(&format!("  {}:\n", job.name)),
        }
        if let Some(views) = &job_coverage.views {
            out.push_str(&format!("    ({views})\n"));
        }
        if job_coverage.tables.is_empty() && job_coverage.ttl_only.is_none() {
            covered = false;
            out.push_str(&format!("    reads no table the analysis can name; {stale}\n"));
        }
        for table in &job_coverage.tables {
            let line = match &table.how {
                Coverage::Explicit(rules) => {
                    let names: Vec<String> = rules.iter().map(|index| format!("on_change[{index}]")).collect();
                    if binlog {
                        format!("explicit rule {}", names.join(", "))
                    } else {
                        covered = false;
                        format!("NOT COVERED: {} needs an enabled [binlog]; {stale}", names.join(", "))
                    }
                }
                Coverage::Derived(what) if binlog && job.derive_rules => match &job.source {
                    Some(source) => format!("derived: {what} (binlog source {source})"),
                    None => format!("derived: {what}"),
                },
                Coverage::Derived(what) => {
                    covered = false;
                    let how = if binlog {
                        "set derive_rules = true on the job (or in [binlog])"
                    } else {
                        "add a [binlog] with derive_rules = true"
                    };
                    format!("NOT COVERED: {stale}; a rule can be derived ({what}): {how}")
                }
                Coverage::NotCovered { why, suggestion } => {
                    covered = false;
                    let mut line = if job_coverage.ttl_only.is_some() {
                        "not covered".to_string()
                    } else {
                        format!("NOT COVERED: {why}; {stale}")
                    };
                    if let Some(rule) = suggestion {
                        line.push_str(". To cover it (a change re-runs the job):");
                        for toml_line in rules_toml(&[rule]).lines() {
                            line.push_str(&format!("\n        {toml_line}"));
                        }
                    }
                    line
                }
            };
            out.push_str(&format!("    {}  {line}\n", table.table));
        }
    }
    (out, covered)
}

/// The rules `rules` prints: the explicit ones and those derived for the jobs that follow them, limited to the
/// rules acting on `only` jobs when it is not empty.
pub(crate) fn select<'r>(rules: &'r [ChangeRule], jobs: &[WarmJob], only: &[String]) -> Vec<&'r ChangeRule> {
    rules
        .iter()
        .filter(|rule| {
            only.is_empty()
                || only.iter().any(|name| {
                    rule.derived_from.as_deref() == Some(name.as_str())
                        || jobs
                            .iter()
                            .find(|job| *job.name == **name)
                            .is_some_and(|job| super::covers(rule, job))
                })
        })
        .collect()
}

/// Rules as `[[on_change]]` TOML, each derived one headed by the job it came from.
pub(crate) fn rules_toml(rules: &[&ChangeRule]) -> String {
    let mut out = String::new();
    for rule in rules {
        if !out.is_empty() {
            out.push('\n');
        }
        match &rule.members {
            // No [[on_change]] field writes members: such a rule stays derived.
            Some(members) => out.push_str(&members_comment(rule, members)),
            None => rule_toml(rule, &mut out),
        }
    }
    out
}

/// The comment that stands for a derived members rule.
fn members_comment(rule: &ChangeRule, members: &MemberRule) -> String {
    format!(
        "# derived from [[warm]] \"{}\": the members of its {} follow the rows of {}.{} (key {}, member {}{}); no \
         [[on_change]] rule says that, so keep derive_rules = true for it\n",
        members.job,
        members.members.kind.as_str(),
        rule.database,
        rule.table,
        quoted(members.key.as_str()),
        quoted(members.member.as_str()),
        members
            .score
            .as_deref()
            .map(|score| format!(", score {}", quoted(score)))
            .unwrap_or_default(),
    )
}

/// One rule's `[[on_change]]` table, headed by where it came from.
fn rule_toml(rule: &ChangeRule, out: &mut String) {
    match &rule.derived_from {
        Some(job) => out.push_str(&format!("# derived from [[warm]] \"{job}\"\n")),
        None => out.push_str("# explicit\n"),
    }
    out.push_str("[[on_change]]\n");
    if let Some(source) = &rule.source {
        out.push_str(&format!("source = {}\n", quoted(source)));
    }
    out.push_str(&format!(
        "table = {}\n",
        quoted(&format!("{}.{}", rule.database, rule.table))
    ));
    action_fields(rule, out);
    if !rule.when_changed.is_empty() {
        out.push_str(&format!(
            "when_changed = {}\n",
            list(rule.when_changed.iter().map(String::as_str).collect())
        ));
    }
    if let Some(filter) = &rule.filter {
        out.push_str(&format!("where = {}\n", quoted(&filter.predicate.to_string())));
    }
    if rule.events != crate::pure::model::RowEvents::ALL {
        out.push_str(&format!("events = {}\n", list(rule.events.names())));
    }
}

/// A rule's fields that say what it does: delete, refresh, project, lookup, warm.
fn action_fields(rule: &ChangeRule, out: &mut String) {
    if !rule.delete.is_empty() {
        out.push_str(&format!(
            "delete = {}\n",
            list(rule.delete.iter().map(|t| t.as_str()).collect())
        ));
    }
    if !rule.refresh.is_empty() {
        out.push_str(&format!(
            "refresh = {}\n",
            list(rule.refresh.iter().map(|t| t.as_str()).collect())
        ));
    }
    if let Some(projection) = &rule.project {
        let ttl = match projection.ttl {
            Ttl::Expires(ttl) => crate::pure::words::duration(ttl),
            Ttl::Never => "none".into(),
        };
        out.push_str(&format!(
            "project = {{ key = {}, columns = {}, ttl = {} }}\n",
            quoted(projection.key.as_str()),
            list(projection.columns.iter().map(String::as_str).collect()),
            quoted(&ttl)
        ));
    }
    if let Some(lookup) = &rule.lookup {
        let on: Vec<String> = lookup
            .links
            .iter()
            .map(|(changed, driving)| format!("{driving} = {}", quoted(changed)))
            .collect();
        out.push_str(&format!(
            "lookup = {{ job = {}, table = {}, on = {{ {} }}, key = {}, refresh = {} }}\n",
            quoted(&lookup.job),
            quoted(&format!("{}.{}", lookup.database, lookup.table)),
            on.join(", "),
            quoted(lookup.key.as_str()),
            lookup.refresh
        ));
    }
    if !rule.warm.is_empty() {
        out.push_str(&format!(
            "warm = {}\n",
            list(rule.warm.iter().map(String::as_str).collect())
        ));
        out.push_str(&format!(
            "debounce = {}\n",
            quoted(&crate::pure::words::duration(rule.debounce))
        ));
    }
}

/// `["a", "b"]`.
fn list(items: Vec<&str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(quoted).collect();
    format!("[{}]", quoted.join(", "))
}

/// Rules as a JSON array of objects with the TOML's fields and `derived_from`.
pub(crate) fn rules_json(rules: &[&ChangeRule]) -> String {
    let rules: Vec<serde_json::Value> = rules
        .iter()
        .map(|rule| {
            serde_json::json!({
                "table": format!("{}.{}", rule.database, rule.table),
                "derived_from": rule.derived_from.as_deref(),
                "delete": rule.delete.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "refresh": rule.refresh.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "project": rule.project.as_ref().map(|p| serde_json::json!({
                    "key": p.key.as_str(),
                    "columns": p.columns,
                })),
                "warm": rule.warm,
                "debounce_seconds": rule.debounce.as_secs_f64(),
                "when_changed": rule.when_changed,
                "events": rule.events.names(),
                "where": rule.filter.as_ref().map(|filter| filter.predicate.to_string()),
                "lookup": rule.lookup.as_ref().map(|lookup| serde_json::json!({
                    "job": &*lookup.job,
                    "table": format!("{}.{}", lookup.database, lookup.table),
                    "on": lookup.links.iter().map(|(changed, driving)| (driving.clone(), changed.clone()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                    "key": lookup.key.as_str(),
                    "refresh": lookup.refresh,
                })),
                "members": rule.members.as_ref().map(|members| serde_json::json!({
                    "job": &*members.job,
                    "type": members.members.kind.as_str(),
                    "key": members.key.as_str(),
                    "member": members.member.as_str(),
                    "score": members.score,
                    "top": members.members.top.as_ref().map(|top| top.n),
                    "buffer": members.members.top.as_ref().map(|top| top.buffer),
                })),
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&rules).expect("JSON values always serialize");
    text.push('\n');
    text
}

/// A TOML basic string (its escapes are JSON's).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}
