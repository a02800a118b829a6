//! Binlog row changes → actions under one `[[on_change]]` rule (or a derived one): keys rendered from both row
//! images, a pattern's values glob-escaped, a rule's filter deciding refresh or delete, projections, lookups, and the
//! changed members of sets and sorted sets.
//!
//! Pure, like the rest of `plan`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Action, Lookup, MemberChange};
use crate::pure::members::{MemberOp, member_change};
use crate::pure::model::{
    ChangeRule, KeyPart, KeyTemplate, MemberRule, Projection, ReverseLookup, RowChange, RowFilter, RowImage,
};
use crate::pure::predicate::Truth;

/// What a row change asks of the cache under one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChangePlan {
    pub actions: Vec<Action>,
    /// Placeholders naming columns the row does not have (dropped by an ALTER TABLE, or a typo): reported, skipped.
    pub missing_columns: Vec<String>,
}

/// Plans the cache actions for one changed row under `rule`.
///
/// Both images count: a `delete` template is deleted for the old and the new row, so a changed key column
/// invalidates the old key too; a `refresh` template is refreshed for the new row and, when its key moved, the old
/// key is deleted; a deleted row deletes its refresh keys. `when_changed` ignores updates that touch none of its
/// columns. The kinds of action are planned in the order the module docs describe them.
pub(crate) fn plan_change(rule: &ChangeRule, change: &RowChange) -> ChangePlan {
    let mut plan = ChangePlan::default();
    if !applies(rule, change) {
        return plan;
    }
    for template in &rule.delete {
        plan.deletes(template, change);
    }
    for template in &rule.refresh {
        plan.refreshes(template, rule.filter.as_deref(), change);
    }
    if let Some(projection) = &rule.project {
        plan.projects(projection, change);
    }
    if let Some(reverse) = &rule.lookup {
        plan.looks_up(reverse, change);
    }
    if let Some(members) = &rule.members {
        plan.members(members, rule.filter.as_deref(), change);
    }
    for job in &rule.warm {
        plan.push(Action::Warm(job.clone()));
    }
    plan
}

/// Whether `rule` acts on `change`: its kind of event, and for an update one of the columns it watches changed.
fn applies(rule: &ChangeRule, change: &RowChange) -> bool {
    let (event, is_update) = match (&change.before, &change.after) {
        (Some(_), Some(_)) => (rule.events.update, true),
        (Some(_), None) => (rule.events.delete, false),
        _ => (rule.events.insert, false),
    };
    if !event {
        return false;
    }
    // An update must change a column `when_changed` names, if it names any.
    !is_update || rule.when_changed.is_empty() || change.changed.iter().any(|column| rule.when_changed.contains(column))
}

impl ChangePlan {
    /// Reports `column` missing from the row, once.
    fn note_missing(&mut self, column: String) {
        if !self.missing_columns.contains(&column) {
            self.missing_columns.push(column);
        }
    }

    /// Adds `action` unless it is already planned.
    fn push(&mut self, action: Action) {
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    /// Deletes `template` rendered from each image.
    fn deletes(&mut self, template: &KeyTemplate, change: &RowChange) {
        // A template with a wildcard of its own is a pattern, and a row's values go into it escaped: a value `*` or
        // `ga[mx]ma` must match only itself, never widen the delete. Without one, a value is a literal key.
        let pattern = is_pattern(template);
        for image in [&change.before, &change.after].into_iter().flatten() {
            match render_into(template, image, pattern) {
                Ok(Some(key)) if pattern => self.push(Action::DeletePattern(key)),
                Ok(Some(key)) => self.push(Action::Delete(key)),
                Ok(None) => {}
                Err(column) => self.note_missing(column),
            }
        }
    }

    /// Refreshes the key the new image renders (deleting the old one if the row moved to another key); a row
    /// outside `filter` has its key deleted instead.
    fn refreshes(&mut self, template: &KeyTemplate, filter: Option<&RowFilter>, change: &RowChange) {
        let old = change.before.as_ref().map(|image| render_from_image(template, image));
        let new = change.after.as_ref().map(|image| render_from_image(template, image));
        if let (Some(Err(column)), _) | (_, Some(Err(column))) = (&old, &new) {
            self.note_missing(column.clone());
            return;
        }
        let Some(new) = self.moved(old, new) else {
            return;
        };
        // A row outside the filter has no key: delete it. One the image cannot decide is read again when the read
        // applies the filter, else deleted.
        let keep = match (filter, &change.after) {
            (Some(filter), Some(after)) => match filter.predicate.eval(after) {
                Truth::True => true,
                Truth::Unknown => filter.read_decides,
                Truth::False | Truth::Null => false,
            },
            _ => true,
        };
        self.push(if keep {
            Action::Refresh(new)
        } else {
            Action::Delete(new)
        });
    }

    /// Sets the projection's key from the new image's columns (deleting the old key if the row moved).
    fn projects(&mut self, projection: &Projection, change: &RowChange) {
        let old = change
            .before
            .as_ref()
            .map(|image| render_from_image(&projection.key, image));
        let new = change
            .after
            .as_ref()
            .map(|image| render_from_image(&projection.key, image));
        for result in [&old, &new].into_iter().flatten() {
            if let Err(column) = result {
                self.note_missing(column.clone());
            }
        }
        let (Some(key), Some(json)) = (self.moved(old, new), &change.after_json) else {
            return;
        };
        let value = match project_value(&projection.columns, json) {
            Ok(value) => value,
            Err(column) => return self.note_missing(column),
        };
        // Into a hash job's keys, the projected columns update their fields (the key keeps its TTL).
        let value = match projection.encoding.structure {
            crate::pure::codec::Structure::Hash => {
                crate::pure::codec::hash_update(&value).expect("a projection is a JSON object")
            }
            _ => projection.encoding.encode(value),
        };
        self.push(Action::Set {
            key,
            value,
            ttl: projection.ttl.pick(crate::pure::model::Jitter::None, 0.0),
        });
    }

    /// Of a key rendered from the old and the new image (a failed render counts as none): deletes the old one if
    /// the new one differs, and returns the new one.
    fn moved(
        &mut self,
        old: Option<Result<Option<String>, String>>,
        new: Option<Result<Option<String>, String>>,
    ) -> Option<String> {
        let old = old.and_then(Result::ok).flatten();
        let new = new.and_then(Result::ok).flatten();
        if let Some(old) = old
            && new.as_ref() != Some(&old)
        {
            self.push(Action::Delete(old));
        }
        new
    }

    /// Looks up the keys of the rows each image joins (NULL never joins: an image with a NULL join column reaches
    /// no row).
    fn looks_up(&mut self, reverse: &Arc<ReverseLookup>, change: &RowChange) {
        for image in [&change.before, &change.after].into_iter().flatten() {
            let values: Option<Vec<String>> = reverse
                .links
                .iter()
                .map(|(column, _)| match image.get(column) {
                    None => {
                        self.note_missing(column.clone());
                        None
                    }
                    Some(value) => value.clone(),
                })
                .collect();
            if let Some(values) = values {
                self.push(Action::Lookup(Lookup {
                    reverse: reverse.clone(),
                    values,
                    seen: None,
                }));
            }
        }
    }
}

/// Where one row image puts a member: its key, its member and its score (for a sorted set).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placed {
    key: String,
    member: String,
    score: Option<String>,
}

/// Whether an image is a member of a set's key.
enum Membership {
    /// Not in the result: no image, a NULL key or member, a row outside the filter, a score that is no number.
    Out,
    In(Placed),
    /// The filter cannot tell from the image (see `predicate`).
    Unknown(String),
}

impl ChangePlan {
    /// Adds the after image's member to its key and removes the before image's from its own, when they differ.
    fn members(&mut self, rule: &Arc<MemberRule>, filter: Option<&RowFilter>, change: &RowChange) {
        let before = self.membership(rule, filter, change.before.as_deref());
        let after = self.membership(rule, filter, change.after.as_deref());
        let push = |plan: &mut Self, placed: &Placed, op: MemberOp| {
            let least = match (&rule.members.top, &op) {
                (Some(top), _) => top.n,
                (None, MemberOp::Add { .. }) => 1,
                (None, MemberOp::Remove) => 0,
            };
            plan.push(Action::Member(MemberChange {
                value: member_change(&rule.members, &placed.member, &op),
                key: placed.key.clone(),
                member: placed.member.clone(),
                kind: rule.members.kind,
                job: rule.job.clone(),
                least,
            }));
        };
        // What an image cannot decide may be in the set or not: its key goes (a miss) and the job runs.
        for image in [&before, &after] {
            if let Membership::Unknown(key) = image {
                self.push(Action::Delete(key.clone()));
                self.push(Action::Warm(rule.job.to_string()));
            }
        }
        if let Membership::In(old) = &before {
            let stays = matches!(&after, Membership::In(new) if new.key == old.key && new.member == old.member);
            if !stays {
                push(self, old, MemberOp::Remove);
            }
        }
        if let Membership::In(new) = &after
            && !matches!(&before, Membership::In(old) if old == new)
        {
            push(
                self,
                new,
                MemberOp::Add {
                    score: new.score.clone(),
                },
            );
        }
    }

    /// Where `image` puts its member under `rule`.
    fn membership(&mut self, rule: &MemberRule, filter: Option<&RowFilter>, image: Option<&RowImage>) -> Membership {
        let Some(image) = image else {
            return Membership::Out;
        };
        let (key, member) = match (
            render_from_image(&rule.key, image),
            render_from_image(&rule.member, image),
        ) {
            (Ok(Some(key)), Ok(Some(member))) => (key, member),
            (Err(column), _) | (_, Err(column)) => {
                self.note_missing(column);
                return Membership::Out;
            }
            _ => return Membership::Out,
        };
        let score = match &rule.score {
            None => None,
            Some(column) => match image.get(column) {
                None => {
                    self.note_missing(column.clone());
                    return Membership::Out;
                }
                Some(value) => match value.as_deref().and_then(crate::pure::members::score) {
                    Some(score) => Some(score.to_string()),
                    // The warm run skips a row without a numeric score; so does the binlog.
                    None => return Membership::Out,
                },
            },
        };
        match filter.map_or(Truth::True, |filter| filter.predicate.eval(image)) {
            Truth::True => Membership::In(Placed { key, member, score }),
            Truth::Unknown => Membership::Unknown(key),
            Truth::False | Truth::Null => Membership::Out,
        }
    }
}

/// The JSON object of `columns` (in that order) from a row's JSON values, or the first missing column.
fn project_value(columns: &[String], json: &HashMap<String, Vec<u8>>) -> Result<Vec<u8>, String> {
    let mut value = vec![b'{'];
    for (i, column) in columns.iter().enumerate() {
        let cell = json.get(column).ok_or_else(|| column.clone())?;
        if i > 0 {
            value.push(b',');
        }
        crate::pure::value::write_json_string(&mut value, column);
        value.push(b':');
        value.extend_from_slice(cell);
    }
    value.push(b'}');
    Ok(value)
}

/// Whether a key template's own text holds a `*` (`category:{id}:*`): it names a pattern. Only `*` makes one; a
/// `?` or `[` in a template is text (configuration.md, "delete").
pub(super) fn is_pattern(template: &KeyTemplate) -> bool {
    template
        .parts()
        .iter()
        .any(|part| matches!(part, KeyPart::Literal(text) if text.contains('*')))
}

/// [`render_from_image`], as a Redis pattern when the template is one: the row's values glob-escaped, the
/// template's own text with every glob character but its `*` escaped.
fn render_into(template: &KeyTemplate, image: &RowImage, pattern: bool) -> Result<Option<String>, String> {
    let mut key = String::new();
    for part in template.parts() {
        match part {
            KeyPart::Literal(text) if pattern => key.push_str(&crate::pure::glob::escape_glob_but_star(text)),
            KeyPart::Literal(text) => key.push_str(text),
            KeyPart::Column(name) => match image.get(name) {
                None => return Err(name.clone()),
                Some(None) => return Ok(None),
                Some(Some(value)) if pattern => key.push_str(&crate::pure::glob::escape_glob(value)),
                Some(Some(value)) => key.push_str(value),
            },
        }
    }
    Ok(Some(key))
}

/// The key `template` names for `image`: `Ok(None)` when a placeholder column is NULL, `Err(column)` when the row
/// has no such column.
pub(super) fn render_from_image(template: &KeyTemplate, image: &RowImage) -> Result<Option<String>, String> {
    render_into(template, image, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(pairs: &[(&str, Option<&str>)]) -> RowImage {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    /// A rule keeping `category:{category_id}:products` sets of `{id}` for rows where `filter` holds.
    fn members_rule(filter: &str) -> ChangeRule {
        let members = std::sync::Arc::new(crate::pure::model::Members {
            kind: crate::pure::model::MemberKind::Set,
            member: KeyTemplate::parse("{id}").unwrap(),
            score: None,
            top: None,
        });
        let predicate = crate::pure::derive::analyze::parse_condition(filter, "shop", "products").unwrap();
        ChangeRule {
            database: "shop".into(),
            table: "products".into(),
            delete: vec![],
            refresh: vec![],
            warm: vec![],
            debounce: std::time::Duration::from_secs(30),
            when_changed: vec![],
            project: None,
            source: None,
            derived_from: None,
            lookup: None,
            events: crate::pure::model::RowEvents::ALL,
            filter: Some(std::sync::Arc::new(crate::pure::model::RowFilter {
                predicate,
                read_decides: false,
            })),
            members: Some(std::sync::Arc::new(crate::pure::model::MemberRule {
                job: "sets".into(),
                members,
                key: KeyTemplate::parse("category:{category_id}:products").unwrap(),
                member: KeyTemplate::parse("{id}").unwrap(),
                score: None,
            })),
        }
    }

    #[test]
    fn a_member_moves_between_sets_and_one_the_filter_cannot_judge_deletes_its_set_and_warms() {
        let row = |category: &str, status: &str| {
            Some(std::sync::Arc::new(image(&[
                ("id", Some("7")),
                ("category_id", Some(category)),
                ("status", Some(status)),
            ])))
        };
        let members = |plan: &ChangePlan| -> Vec<(String, String, bool)> {
            plan.actions
                .iter()
                .filter_map(|action| match action {
                    Action::Member(change) => Some((
                        change.key.clone(),
                        change.member.clone(),
                        change.value.windows(3).any(|w| w == b"add"),
                    )),
                    _ => None,
                })
                .collect()
        };
        let rule = members_rule("status = 'a'");
        let moved = RowChange {
            before: row("1", "a"),
            after: row("2", "a"),
            ..Default::default()
        };
        let plan = plan_change(&rule, &moved);
        assert_eq!(
            members(&plan),
            [
                ("category:1:products".to_string(), "7".to_string(), false),
                ("category:2:products".to_string(), "7".to_string(), true)
            ]
        );
        let left = RowChange {
            before: row("1", "a"),
            after: row("1", "b"),
            ..Default::default()
        };
        assert_eq!(
            members(&plan_change(&rule, &left)),
            [("category:1:products".to_string(), "7".to_string(), false)]
        );
        // LOWER() is a function the image cannot evaluate: before or after, the set goes and the job runs.
        let unsure = members_rule("LOWER(status) = 'a'");
        for change in [
            RowChange {
                before: row("1", "A"),
                after: row("1", "b"),
                ..Default::default()
            },
            RowChange {
                before: row("1", "b"),
                after: row("1", "A"),
                ..Default::default()
            },
        ] {
            let plan = plan_change(&unsure, &change);
            assert!(
                plan.actions.contains(&Action::Delete("category:1:products".into())),
                "{plan:?}"
            );
            assert!(plan.actions.contains(&Action::Warm("sets".into())), "{plan:?}");
        }
    }
}
