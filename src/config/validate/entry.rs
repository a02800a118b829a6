//! One entry of an array of tables (`[[warm]]`, `[[on_change]]`): where its problems are reported — its index and
//! name, each problem at its field's line.

use serde::de::DeserializeOwned;

use super::{Context, deserialize};

/// One `[[table]]` entry of the file.
pub(super) struct Entry {
    table: &'static str,
    index: usize,
    /// `warm[2] "products"`: how problems name it.
    pub at: String,
}

impl Entry {
    /// The `index`th `[[table]]`, named by its `label` field when it has one.
    pub(super) fn new(table: &'static str, index: usize, item: &toml::Value, label: &str) -> Self {
        let at = match item.get(label).and_then(|value| value.as_str()) {
            Some(name) => format!("{table}[{index}] \"{name}\""),
            None => format!("{table}[{index}]"),
        };
        Entry { table, index, at }
    }

    /// The line of `field` in this entry (of its header when `None` or absent).
    pub(super) fn line(&self, ctx: &Context, field: Option<&str>) -> Option<usize> {
        ctx.lines.table_field_line(self.table, self.index, field)
    }

    /// `field` as problems name it: `warm[2] "products".ttl`.
    pub(super) fn location(&self, field: Option<&str>) -> String {
        match field {
            Some(field) => format!("{}.{field}", self.at),
            None => self.at.clone(),
        }
    }

    /// Reports a problem with `field` (with the entry as a whole when `None`).
    pub(super) fn problem(&self, ctx: &mut Context, field: Option<&str>, message: String) {
        let line = self.line(ctx, field);
        ctx.problem(line, self.location(field), message);
    }

    /// The entry as `T`, each unknown field reported; `None` (reported) when it is not one.
    pub(super) fn read<T: DeserializeOwned>(&self, ctx: &mut Context, item: &toml::Value) -> Option<T> {
        match deserialize(item.clone()) {
            Ok((raw, unknown)) => {
                for (field, message) in unknown {
                    self.problem(ctx, Some(&field), message);
                }
                Some(raw)
            }
            Err((field, message)) => {
                self.problem(ctx, field.as_deref(), message);
                None
            }
        }
    }
}
