//! Binlog row changes → actions under one `[[on_change]]` rule (or a derived one): keys rendered from both row
//! images, a pattern's values glob-escaped, a rule's filter deciding refresh or delete, projections, lookups.
//!
//! Pure, like the rest of `plan`.

use std::collections::HashMap;

use super::{Action, Lookup};
use crate::pure::model::{ChangeRule, KeyPart, KeyTemplate, RowChange, RowImage};

/// What a row change asks of the cache under one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangePlan {
    pub actions: Vec<Action>,
    /// Placeholders naming columns the row does not have (dropped by an ALTER TABLE, or a typo): reported, skipped.
    pub missing_columns: Vec<String>,
}

/// Plans the cache actions for one changed row under `rule`.
///
/// Both images count: a `delete` template is deleted for the old and the new row, so a changed key column
/// invalidates the old key too; a `refresh` template is refreshed for the new row and, when its key moved, the old
/// key is deleted; a deleted row deletes its refresh keys. `when_changed` ignores updates that touch none of its
/// columns. (Long on purpose: one block per kind of action, in the order the module docs describe them.)
pub fn plan_change(rule: &ChangeRule, change: &RowChange) -> ChangePlan {
    let mut plan = ChangePlan::default();
    let is_update = change.before.is_some() && change.after.is_some();
    let event = match (&change.before, &change.after) {
        (Some(_), Some(_)) => rule.events.update,
        (Some(_), None) => rule.events.delete,
        _ => rule.events.insert,
    };
    if !event {
        return plan;
    }
    if is_update
        && !rule.when_changed.is_empty()
        && !change.changed.iter().any(|column| rule.when_changed.contains(column))
    {
        return plan;
    }
    let push = |plan: &mut ChangePlan, action: Action| {
        if !plan.actions.contains(&action) {
            plan.actions.push(action);
        }
    };
    let images = [change.before.as_ref(), change.after.as_ref()];
    for template in &rule.delete {
        // A template with a wildcard of its own is a pattern, and a row's values go into it escaped: a value `*`
        // or `ga[mx]ma` must match only itself, never widen the delete. Without one, a value is a literal key.
        let pattern = is_pattern(template);
        for image in images.iter().flatten() {
            match render_into(template, image, pattern) {
                Ok(Some(key)) if pattern => push(&mut plan, Action::DeletePattern(key)),
                Ok(Some(key)) => push(&mut plan, Action::Delete(key)),
                Ok(None) => {}
                Err(column) => note_missing(&mut plan, column),
            }
        }
    }
    for template in &rule.refresh {
        let old = change.before.as_ref().map(|image| render_from_image(template, image));
        let new = change.after.as_ref().map(|image| render_from_image(template, image));
        match (&old, &new) {
            (Some(Err(column)), _) | (_, Some(Err(column))) => {
                note_missing(&mut plan, column.clone());
                continue;
            }
            _ => {}
        }
        let old = old.and_then(Result::ok).flatten();
        let new = new.and_then(Result::ok).flatten();
        if let Some(old) = &old
            && new.as_ref() != Some(old)
        {
            push(&mut plan, Action::Delete(old.clone()));
        }
        if let Some(new) = new {
            // A row outside the filter has no key: delete it. One the image cannot decide is read again when the
            // read applies the filter, else deleted.
            let keep = match (&rule.filter, &change.after) {
                (Some(filter), Some(after)) => match filter.predicate.eval(after) {
                    crate::pure::predicate::Truth::True => true,
                    crate::pure::predicate::Truth::Unknown => filter.read_decides,
                    crate::pure::predicate::Truth::False | crate::pure::predicate::Truth::Null => false,
                },
                _ => true,
            };
            push(
                &mut plan,
                if keep {
                    Action::Refresh(new)
                } else {
                    Action::Delete(new)
                },
            );
        }
    }
    if let Some(projection) = &rule.project {
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
                note_missing(&mut plan, column.clone());
            }
        }
        let old = old.and_then(Result::ok).flatten();
        let new = new.and_then(Result::ok).flatten();
        if let Some(old) = &old
            && new.as_ref() != Some(old)
        {
            push(&mut plan, Action::Delete(old.clone()));
        }
        if let (Some(key), Some(json)) = (new, &change.after_json) {
            match project_value(&projection.columns, json) {
                Ok(value) => push(
                    &mut plan,
                    Action::Set {
                        key,
                        value: projection.encoding.encode(value),
                        ttl: projection.ttl.pick(crate::pure::model::Jitter::None, 0.0),
                    },
                ),
                Err(column) => note_missing(&mut plan, column),
            }
        }
    }
    if let Some(reverse) = &rule.lookup {
        // NULL never joins: an image with a NULL join column reaches no row.
        for image in images.iter().flatten() {
            let values: Option<Vec<String>> = reverse
                .links
                .iter()
                .map(|(column, _)| match image.get(column) {
                    None => {
                        note_missing(&mut plan, column.clone());
                        None
                    }
                    Some(value) => value.clone(),
                })
                .collect();
            if let Some(values) = values {
                push(
                    &mut plan,
                    Action::Lookup(Lookup {
                        reverse: reverse.clone(),
                        values,
                        seen: None,
                    }),
                );
            }
        }
    }
    for job in &rule.warm {
        push(&mut plan, Action::Warm(job.clone()));
    }
    plan
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

fn note_missing(plan: &mut ChangePlan, column: String) {
    if !plan.missing_columns.contains(&column) {
        plan.missing_columns.push(column);
    }
}

/// Whether a key template's own text holds a `*` (`category:{id}:*`): it names a pattern. Only `*` makes one; a
/// `?` or `[` in a template is text (configuration.md, "delete").
pub fn is_pattern(template: &KeyTemplate) -> bool {
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
pub fn render_from_image(template: &KeyTemplate, image: &RowImage) -> Result<Option<String>, String> {
    render_into(template, image, false)
}
