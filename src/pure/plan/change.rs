//! Binlog row changes → actions under one `[[on_change]]` rule (or a derived one): keys rendered from both row
//! images, a pattern's values glob-escaped, a rule's filter deciding refresh or delete, projections, lookups.
//!
//! Pure, like the rest of `plan`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Action, Lookup};
use crate::pure::model::{ChangeRule, KeyPart, KeyTemplate, Projection, ReverseLookup, RowChange, RowFilter, RowImage};
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
        match project_value(&projection.columns, json) {
            Ok(value) => self.push(Action::Set {
                key,
                value: projection.encoding.encode(value),
                ttl: projection.ttl.pick(crate::pure::model::Jitter::None, 0.0),
            }),
            Err(column) => self.note_missing(column),
        }
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
