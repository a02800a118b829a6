//! What to do to the cache, as [`Action`]s: from invalidation messages (under a policy: what a message asks for,
//! and whether it may), from binlog row changes (under the `[[on_change]]` rules), and after a gap in either
//! ([`gap_actions`]). Key patterns are matched by `glob`.
//!
//! Pure: the channel and stream sources hand in raw payloads, the binlog listener row images; this module parses,
//! checks and plans, and the `invalidate` executor applies the resulting [`Action`]s. Everything a message could do wrong is a [`Refusal`]
//! with a reason that is counted and logged; nothing here can touch a key outside the allow-list.
//!
//! Accepted payloads:
//! - a plain key, `product:42`: delete it (the seed's `r.publish('cache_invalidation', cache_key)`);
//! - JSON, `{"delete": [...], "patterns": [...], "refresh": [...], "warm": [...]}`, every field optional but at
//!   least one non-empty, no other fields.

use std::sync::Arc;

use serde::Deserialize;

mod change;
mod refusal;

pub(crate) use change::plan_change;
pub(crate) use refusal::Refusal;

use crate::pure::glob::{allow_pattern, glob_match};
use crate::pure::model::{OnGap, ReverseLookup, SeenRow, WarmJob};

/// One thing a message asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// `UNLINK key`.
    Delete(String),
    /// SCAN MATCH pattern + UNLINK, in batches.
    DeletePattern(String),
    /// Re-render the key from the database through the job whose template matches it.
    Refresh(String),
    /// Run the named warm job now.
    Warm(String),
    /// Write a value (a row projection from the binlog; never produced by a message).
    Set {
        key: String,
        value: Vec<u8>,
        ttl: Option<std::time::Duration>,
    },
    /// Find a job's keys through a derived join rule and refresh (or delete) them (binlog only).
    Lookup(Lookup),
    /// Add, re-score or remove one member of a set or sorted set (binlog only).
    Member(MemberChange),
}

/// One member's change, ready for the write scripts (see `members`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MemberChange {
    pub key: String,
    pub member: String,
    /// The write ([`crate::pure::members::member_change`]).
    pub value: Vec<u8>,
    pub kind: crate::pure::model::MemberKind,
    /// The set's job, warmed again when the key holds fewer than `least` members after the change.
    pub job: Arc<str>,
    /// N for a top N sorted set (below N it is short of the top); 1 after an add, which does not start a missing key
    /// (a set is never started from one member: the key was never warmed, expired, or its rows all left); else 0.
    pub least: u64,
}

impl MemberChange {
    /// A name for the batch's map of actions by key, which no Redis key can take (it holds a NUL): the latest change
    /// of each member counts.
    pub(crate) fn batch_key(&self) -> String {
        format!("\0member\0{}\0{}", self.key, self.member)
    }
}

/// The rows of a job's table that join a changed row (through [`ReverseLookup`]): its join columns' values.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    pub reverse: Arc<ReverseLookup>,
    /// The changed row's values of the join's columns, in `reverse.links` order.
    pub values: Vec<String>,
    /// The changed row, which the refreshes must show (set by the batch; not part of what the lookup is).
    pub seen: Option<SeenRow>,
}

impl PartialEq for Lookup {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values && self.reverse == other.reverse
    }
}

impl Eq for Lookup {}

impl std::hash::Hash for Lookup {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.reverse.job.hash(state);
        self.reverse.table.hash(state);
        self.values.hash(state);
    }
}

impl Lookup {
    /// A name for the batch's map of actions by key, which no Redis key can take (it holds a NUL).
    pub(crate) fn batch_key(&self) -> String {
        format!(
            "\0lookup\0{}\0{}\0{}",
            self.reverse.job,
            self.reverse.table,
            self.values.join("\0")
        )
    }
}

/// What messages may do.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Glob patterns (only `*` is special, `\` escapes) that keys and patterns must fall within.
    pub allow: Vec<String>,
    /// Keys + patterns + refreshes + warms in one message.
    pub max_keys_per_message: usize,
    /// Payload size limit.
    pub max_message_bytes: usize,
    /// Names `warm` may ask for.
    pub jobs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    #[serde(default)]
    delete: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    refresh: Vec<String>,
    #[serde(default)]
    warm: Vec<String>,
}

/// Parses and checks one payload. All or nothing: one bad part refuses the whole message.
pub(crate) fn parse_message(payload: &[u8], policy: &Policy) -> Result<Vec<Action>, Refusal> {
    if payload.len() > policy.max_message_bytes {
        return Err(Refusal::TooLarge {
            bytes: payload.len(),
            limit: policy.max_message_bytes,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|_| Refusal::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(Refusal::EmptyKey);
    }
    let message = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Message>(text).map_err(|e| Refusal::MalformedJson(e.to_string()))?
    } else {
        Message {
            delete: vec![text.to_string()],
            patterns: vec![],
            refresh: vec![],
            warm: vec![],
        }
    };
    let count = message.delete.len() + message.patterns.len() + message.refresh.len() + message.warm.len();
    if count == 0 {
        return Err(Refusal::Empty);
    }
    if count > policy.max_keys_per_message {
        return Err(Refusal::TooManyKeys {
            count,
            limit: policy.max_keys_per_message,
        });
    }
    let mut actions = Vec::with_capacity(count);
    for key in message.delete {
        check_key(&key, policy)?;
        actions.push(Action::Delete(key));
    }
    for pattern in message.patterns {
        if pattern.is_empty() {
            return Err(Refusal::EmptyKey);
        }
        if !policy.allow.iter().any(|allow| glob_match(allow, &pattern)) {
            return Err(Refusal::PatternNotAllowed(pattern));
        }
        actions.push(Action::DeletePattern(pattern));
    }
    for key in message.refresh {
        check_key(&key, policy)?;
        actions.push(Action::Refresh(key));
    }
    for job in message.warm {
        if !policy.jobs.contains(&job) {
            return Err(Refusal::UnknownJob(job));
        }
        actions.push(Action::Warm(job));
    }
    Ok(actions)
}

fn check_key(key: &str, policy: &Policy) -> Result<(), Refusal> {
    if key.is_empty() {
        return Err(Refusal::EmptyKey);
    }
    if key.contains(['*', '?', '[']) {
        return Err(Refusal::WildcardInDelete(key.to_string()));
    }
    if !policy.allow.iter().any(|allow| glob_match(allow, key)) {
        return Err(Refusal::KeyNotAllowed(key.to_string()));
    }
    Ok(())
}

/// The recovery after a gap, for a source whose changes may touch the keys `patterns` cover and run the jobs
/// `named`: per `on_gap`, warm every enabled job whose keys they cover (or that is named), delete every key they
/// cover, or nothing. One planner for the channel (its allow-list) and the binlog (its rules' templates and jobs).
///
/// A re-warm writes the rows that exist; a row deleted during the gap has no row to write, and its key would stay.
/// So every key of a re-warmed job's template is deleted first (SCAN + UNLINK, then the run refills them: misses
/// meanwhile, never a stale key). A job whose whole result is one key is simply re-run: it rewrites its key.
pub(crate) fn gap_actions(on_gap: OnGap, jobs: &[WarmJob], patterns: &[String], named: &[&str]) -> Vec<Action> {
    match on_gap {
        OnGap::None => Vec::new(),
        OnGap::Warm => jobs
            .iter()
            .filter(|job| job.enabled)
            .filter(|job| {
                let keys = allow_pattern(&job.key);
                named.contains(&&*job.name) || patterns.iter().any(|pattern| glob_match(pattern, &keys))
            })
            .flat_map(|job| {
                let clear = (!job.key.is_single_key()).then(|| Action::DeletePattern(allow_pattern(&job.key)));
                clear.into_iter().chain([Action::Warm(job.name.to_string())])
            })
            .collect(),
        OnGap::Flush => {
            let mut actions: Vec<Action> = Vec::new();
            for pattern in patterns {
                let action = Action::DeletePattern(pattern.clone());
                if !actions.contains(&action) {
                    actions.push(action);
                }
            }
            actions
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::pure::model::{ChangeRule, KeyTemplate, RowChange, RowImage};

    fn policy() -> Policy {
        Policy {
            allow: vec!["product:*".into(), "user:*".into(), "dashboard:stats".into()],
            max_keys_per_message: 5,
            max_message_bytes: 200,
            jobs: vec!["top_products".into()],
        }
    }

    fn rule() -> ChangeRule {
        ChangeRule {
            database: "shop".into(),
            table: "products".into(),
            delete: vec![KeyTemplate::parse("category:{category_id}:*").unwrap()],
            refresh: vec![KeyTemplate::parse("product:{id}").unwrap()],
            warm: vec!["dashboard_stats".into()],
            debounce: std::time::Duration::from_secs(30),
            when_changed: vec![],
            project: None,
            filter: None,
            source: None,
            derived_from: None,
            lookup: None,
            events: crate::pure::model::RowEvents::ALL,
            members: None,
        }
    }

    fn image(pairs: &[(&str, Option<&str>)]) -> RowImage {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn a_rule_acts_only_on_its_events() {
        let only_deletes = ChangeRule {
            events: crate::pure::model::RowEvents {
                insert: false,
                update: false,
                delete: true,
            },
            ..rule()
        };
        let row = || {
            Some(std::sync::Arc::new(image(&[
                ("id", Some("7")),
                ("category_id", Some("3")),
            ])))
        };
        let insert = RowChange {
            after: row(),
            ..Default::default()
        };
        let update = RowChange {
            before: row(),
            after: row(),
            changed: vec!["category_id".into()],
            ..Default::default()
        };
        let delete = RowChange {
            before: row(),
            ..Default::default()
        };
        assert!(plan_change(&only_deletes, &insert).actions.is_empty());
        assert!(plan_change(&only_deletes, &update).actions.is_empty());
        assert!(!plan_change(&only_deletes, &delete).actions.is_empty());
        assert!(!plan_change(&rule(), &insert).actions.is_empty());
    }

    #[test]
    fn an_insert_refreshes_and_deletes_the_new_rows_keys() {
        let change = RowChange {
            after: Some(std::sync::Arc::new(image(&[
                ("id", Some("7")),
                ("category_id", Some("3")),
            ]))),
            ..Default::default()
        };
        assert_eq!(
            plan_change(&rule(), &change).actions,
            [
                Action::DeletePattern("category:3:*".into()),
                Action::Refresh("product:7".into()),
                Action::Warm("dashboard_stats".into()),
            ]
        );
    }

    #[test]
    fn a_changed_key_column_invalidates_the_old_key_too() {
        let change = RowChange {
            before: Some(std::sync::Arc::new(image(&[
                ("id", Some("7")),
                ("category_id", Some("3")),
            ]))),
            after: Some(std::sync::Arc::new(image(&[
                ("id", Some("8")),
                ("category_id", Some("4")),
            ]))),
            changed: vec!["id".into(), "category_id".into()],
            after_json: None,
        };
        assert_eq!(
            plan_change(&rule(), &change).actions,
            [
                Action::DeletePattern("category:3:*".into()),
                Action::DeletePattern("category:4:*".into()),
                Action::Delete("product:7".into()),
                Action::Refresh("product:8".into()),
                Action::Warm("dashboard_stats".into()),
            ]
        );
    }

    #[test]
    fn row_values_never_widen_a_pattern_or_make_a_key_one() {
        let mut rule = rule();
        rule.delete = vec![
            KeyTemplate::parse("pat:{name}:*").unwrap(),
            KeyTemplate::parse("name:{name}").unwrap(),
            KeyTemplate::parse("v[2]?:{name}:*").unwrap(),
            KeyTemplate::parse("v[2]?:{name}").unwrap(),
        ];
        rule.refresh.clear();
        rule.warm.clear();
        for (hostile, escaped) in [("*", "\\*"), ("ga[mx]ma", "ga\\[mx\\]ma"), ("a?b\\", "a\\?b\\\\")] {
            let change = RowChange {
                after: Some(std::sync::Arc::new(image(&[("name", Some(hostile))]))),
                ..Default::default()
            };
            assert_eq!(
                plan_change(&rule, &change).actions,
                [
                    Action::DeletePattern(format!("pat:{escaped}:*")),
                    Action::Delete(format!("name:{hostile}")),
                    // A `[` or `?` of the template's own is text: escaped in a pattern, as it is in a key.
                    Action::DeletePattern(format!("v\\[2\\]\\?:{escaped}:*")),
                    Action::Delete(format!("v[2]?:{hostile}")),
                ],
                "{hostile}"
            );
        }
    }

    #[test]
    fn a_deleted_row_deletes_its_keys() {
        let change = RowChange {
            before: Some(std::sync::Arc::new(image(&[
                ("id", Some("7")),
                ("category_id", Some("3")),
            ]))),
            ..Default::default()
        };
        let actions = plan_change(&rule(), &change).actions;
        assert!(actions.contains(&Action::Delete("product:7".into())));
        assert!(!actions.iter().any(|a| matches!(a, Action::Refresh(_))));
    }

    #[test]
    fn when_changed_ignores_updates_to_other_columns() {
        let mut rule = rule();
        rule.when_changed = vec!["price".into()];
        let row = image(&[("id", Some("7")), ("category_id", Some("3"))]);
        let stock_only = RowChange {
            before: Some(std::sync::Arc::new(row.clone())),
            after: Some(std::sync::Arc::new(row.clone())),
            changed: vec!["stock".into()],
            after_json: None,
        };
        assert!(plan_change(&rule, &stock_only).actions.is_empty());
        let price = RowChange {
            changed: vec!["price".into()],
            ..stock_only
        };
        assert!(!plan_change(&rule, &price).actions.is_empty());
    }

    #[test]
    fn projections_write_the_chosen_columns_and_follow_key_moves() {
        let mut rule = rule();
        rule.delete.clear();
        rule.refresh.clear();
        rule.warm.clear();
        rule.project = Some(crate::config::Projection {
            key: KeyTemplate::parse("price:{id}").unwrap(),
            columns: vec!["price".into(), "id".into()],
            ttl: crate::pure::model::Ttl::Expires(std::time::Duration::from_secs(60)),
            encoding: crate::pure::codec::Encoding::PLAIN,
        });
        let json: HashMap<String, Vec<u8>> = [("id", "8"), ("price", "\"9.50\""), ("name", "\"x\"")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let change = RowChange {
            before: Some(std::sync::Arc::new(image(&[("id", Some("7"))]))),
            after: Some(std::sync::Arc::new(image(&[("id", Some("8"))]))),
            changed: vec!["id".into()],
            after_json: Some(json),
        };
        assert_eq!(
            plan_change(&rule, &change).actions,
            [
                Action::Delete("price:7".into()),
                Action::Set {
                    key: "price:8".into(),
                    value: br#"{"price":"9.50","id":8}"#.to_vec(),
                    ttl: Some(std::time::Duration::from_secs(60)),
                },
            ]
        );
    }

    #[test]
    fn missing_columns_are_reported_and_null_keys_skipped() {
        let change = RowChange {
            after: Some(std::sync::Arc::new(image(&[("id", None)]))),
            ..Default::default()
        };
        let plan = plan_change(&rule(), &change);
        assert_eq!(plan.missing_columns, ["category_id"]);
        assert_eq!(plan.actions, [Action::Warm("dashboard_stats".into())]);
    }

    #[test]
    fn a_plain_key_is_a_delete() {
        assert_eq!(
            parse_message(b"product:42", &policy()),
            Ok(vec![Action::Delete("product:42".into())])
        );
    }

    #[test]
    fn json_messages_carry_every_kind() {
        let message = br#"{"delete": ["product:1"], "patterns": ["user:1000:*"], "refresh": ["product:2"],
                           "warm": ["top_products"]}"#;
        assert_eq!(
            parse_message(message, &policy()),
            Ok(vec![
                Action::Delete("product:1".into()),
                Action::DeletePattern("user:1000:*".into()),
                Action::Refresh("product:2".into()),
                Action::Warm("top_products".into()),
            ])
        );
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"{\"delete\": [\"product:1\"", "malformed"),
            (b"{\"remove\": [\"product:1\"]}", "malformed"),
            (b"{}", "empty"),
            (b"", "empty_key"),
            (b"{\"delete\": [\"\"]}", "empty_key"),
            (b"product:*", "wildcard_in_delete"),
            (b"{\"delete\": [\"product:[12]\"]}", "wildcard_in_delete"),
            (b"session:abc", "key_not_allowed"),
            (b"{\"patterns\": [\"*\"]}", "pattern_not_allowed"),
            (b"{\"patterns\": [\"prod*\"]}", "pattern_not_allowed"),
            (b"{\"patterns\": [\"dashboard:*\"]}", "pattern_not_allowed"),
            (b"{\"warm\": [\"nope\"]}", "unknown_job"),
            (
                b"{\"delete\": [\"product:1\",\"product:2\",\"product:3\",\"product:4\",\"product:5\",\"product:6\"]}",
                "too_many_keys",
            ),
            (&[0xff, 0xfe], "not_utf8"),
        ];
        for (payload, reason) in cases {
            let refusal = parse_message(payload, &policy()).unwrap_err();
            assert_eq!(
                refusal.reason(),
                *reason,
                "{:?}: {refusal}",
                String::from_utf8_lossy(payload)
            );
        }
        let big = vec![b'a'; 201];
        assert_eq!(parse_message(&big, &policy()).unwrap_err().reason(), "too_large");
    }

    #[test]
    fn one_bad_part_refuses_the_whole_message() {
        let message = br#"{"delete": ["product:1", "secrets:1"]}"#;
        assert_eq!(
            parse_message(message, &policy()),
            Err(Refusal::KeyNotAllowed("secrets:1".into()))
        );
    }

    #[test]
    fn star_is_allowed_only_when_allowed_explicitly() {
        let mut open = policy();
        open.allow.push("*".into());
        assert_eq!(
            parse_message(br#"{"patterns": ["*"]}"#, &open),
            Ok(vec![Action::DeletePattern("*".into())])
        );
    }

    #[test]
    fn a_gap_warms_or_flushes_what_the_source_covers() {
        let jobs = [
            WarmJob::example("products", "product:{id}"),
            WarmJob::example("stats", "dashboard:stats"),
            WarmJob {
                enabled: false,
                ..WarmJob::example("old", "product:old:{id}")
            },
        ];
        let patterns = vec!["product:*".to_string(), "product:*".to_string()];
        assert_eq!(
            gap_actions(OnGap::Warm, &jobs, &patterns, &["stats"]),
            [
                // A row deleted during the gap has no row to re-warm: its job's keys are cleared first.
                Action::DeletePattern("product:*".into()),
                Action::Warm("products".into()),
                Action::Warm("stats".into())
            ]
        );
        assert_eq!(
            gap_actions(OnGap::Flush, &jobs, &patterns, &["stats"]),
            [Action::DeletePattern("product:*".into())]
        );
        assert!(gap_actions(OnGap::None, &jobs, &patterns, &[]).is_empty());
    }
}
