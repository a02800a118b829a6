//! `[[warm]]` tables for a test's configuration, built field by field ([`Warm`]), and the plain job most tests need
//! ([`job`]).

use std::fmt;

use super::*;

/// A `[[warm]]` table. Values are written as TOML strings (escaped); [`Warm::raw`] adds lines as they are.
///
/// `Warm::new(&env, "products").query("SELECT id, name FROM products").field("ttl", "10m").to_string()`
pub struct Warm {
    fields: Vec<(String, String)>,
    raw: Vec<String>,
}

impl Warm {
    /// A job `name` reading `SELECT 1 AS id` every hour into `<the test's prefix><name>:{id}` for an hour.
    pub fn new(env: &TestEnv, name: &str) -> Self {
        let mut warm = Warm {
            fields: Vec::new(),
            raw: Vec::new(),
        };
        warm = warm
            .field("name", name)
            .field("schedule", "every 1h")
            .field("query", "SELECT 1 AS id")
            .field("key", &format!("{}{name}:{{id}}", env.prefix))
            .field("ttl", "1h");
        warm
    }

    /// Sets `field` to the string `value` (replacing what it held).
    pub fn field(mut self, field: &str, value: &str) -> Self {
        let escaped = value.replace('\\', r"\\").replace('"', r#"\""#).replace('\n', r"\n");
        let quoted = format!("\"{escaped}\"");
        match self.fields.iter_mut().find(|(name, _)| name == field) {
            Some((_, held)) => *held = quoted,
            None => self.fields.push((field.to_string(), quoted)),
        }
        self
    }

    pub fn query(self, sql: &str) -> Self {
        self.field("query", sql)
    }

    pub fn schedule(self, schedule: &str) -> Self {
        self.field("schedule", schedule)
    }

    /// The key template, whole (`{id}` and the like as they are: the test's prefix is not added).
    pub fn key(self, template: &str) -> Self {
        self.field("key", template)
    }

    /// Lines written as they are (`enabled = false`, `json_columns = ["tags"]`).
    pub fn raw(mut self, lines: &str) -> Self {
        if !lines.trim().is_empty() {
            self.raw.push(lines.trim_end().to_string());
        }
        self
    }
}

impl fmt::Display for Warm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[[warm]]")?;
        for (field, value) in &self.fields {
            writeln!(f, "{field} = {value}")?;
        }
        for lines in &self.raw {
            writeln!(f, "{lines}")?;
        }
        Ok(())
    }
}

/// A job `name` running `query` on `schedule` into `<prefix><name>:{id}` for an hour, with `extra` lines.
pub fn job(env: &TestEnv, name: &str, query: &str, schedule: &str, extra: &str) -> String {
    Warm::new(env, name)
        .query(query)
        .schedule(schedule)
        .raw(extra)
        .to_string()
}
