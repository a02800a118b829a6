//! The file's TOML before any section is read: within the limits, no unknown section, and the overrides from systemd
//! credentials and `CACHEWARDEN_*` environment variables applied.

use std::path::Path;

use super::Context;
use crate::config::error::Problem;
use crate::config::lines::LineIndex;

/// The sections a configuration may have (each section's fields are its raw struct's: see `raw::fields_of`).
const SECTIONS: &[&str] = &[
    "mysql", "redis", "defaults", "daemon", "crypto", "ha", "admin", "binlog", "channel", "misses",
];

/// The most `[[warm]]` jobs, `[[on_change]]` rules and `[channel] allow` patterns a configuration may have. Far past
/// what a deployment needs, low enough that checking, starting and the ACL check stay within a second or two and a
/// few tens of MB (60,000 jobs took 31 s and 1.5 GB to start; 200,000 allow patterns, 59 s).
const LIMITS: [(&str, &str, usize, &str); 3] = [
    (
        "warm",
        "[[warm]] jobs",
        2_000,
        "split them across several configurations (a daemon each), or merge jobs that read the same table",
    ),
    (
        "on_change",
        "[[on_change]] rules",
        2_000,
        "merge rules on the same table, or let rules be derived (derive_rules = true)",
    ),
    (
        "channel.allow",
        "[channel] allow patterns",
        1_000,
        "use wider patterns (`product:*` rather than one per key)",
    ),
];

/// Sections that environment variables may set.
const ENV_SECTIONS: &[&str] = &["mysql", "redis", "defaults", "daemon", "admin", "binlog", "ha"];

/// systemd credentials (`LoadCredential=`) read from `$CREDENTIALS_DIRECTORY`, and the field each one sets.
pub(super) const CREDENTIALS: &[(&str, &str, &str)] = &[("mysql-url", "mysql", "url"), ("redis-url", "redis", "url")];

impl Context {
    /// The file's TOML with systemd's credentials and the environment's overrides applied, its unknown sections
    /// reported; or the problem with it.
    pub(super) fn overridden_document(
        &mut self,
        source: &str,
        env: Option<std::collections::HashMap<String, String>>,
        credentials: Option<&Path>,
    ) -> Result<toml::Table, Vec<Problem>> {
        let mut doc = document(source, &self.lines)?;
        if let Some(directory) = credentials {
            self.apply_credentials(&mut doc, directory);
        }
        self.apply_env(&mut doc, env);
        self.unknown_sections(&doc);
        Ok(doc)
    }

    /// Every top-level key that is no section cachewarden knows (with the closest one, if any).
    fn unknown_sections(&mut self, doc: &toml::Table) {
        for key in doc.keys() {
            if key != "warm" && key != "on_change" && !SECTIONS.contains(&key.as_str()) {
                let message = format!(
                    "unknown section or field `{key}`{} (valid: {}, warm, on_change)",
                    crate::pure::words::did_you_mean(key, SECTIONS.iter().copied().chain(["warm", "on_change"])),
                    SECTIONS.join(", ")
                );
                self.problem(self.lines.key_line(None, key), key.clone(), message);
            }
        }
    }

    /// Sets `[section] field` to `value`, remembering `origin` (a variable or credential) for problem messages.
    fn override_field(&mut self, doc: &mut toml::Table, section: &str, field: &str, value: String, origin: String) {
        let table = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match table {
            toml::Value::Table(table) => {
                table.insert(field.to_string(), toml::Value::String(value));
                self.env_fields.insert(format!("{section}.{field}"), origin);
            }
            toml::Value::Array(_) => {
                let message = format!(
                    "cannot set `{field}`: [[{section}]] is a list of entries; set it in the file, in the entry it \
                     is for"
                );
                self.problem(None, origin, message);
            }
            _ => {}
        }
    }

    /// systemd credentials override the file (and are overridden by the environment).
    fn apply_credentials(&mut self, doc: &mut toml::Table, directory: &Path) {
        for (name, section, field) in CREDENTIALS {
            let path = directory.join(name);
            let value = match std::fs::read_to_string(&path) {
                Ok(value) => value.trim().to_string(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    self.problem(
                        None,
                        format!("credential {}", path.display()),
                        format!("cannot be read: {error}"),
                    );
                    continue;
                }
            };
            self.override_field(doc, section, field, value, format!("credential {}", path.display()));
        }
    }

    /// Environment variables (`CACHEWARDEN_SECTION__FIELD`) override the file and its credentials.
    fn apply_env(&mut self, doc: &mut toml::Table, env: Option<std::collections::HashMap<String, String>>) {
        let source = config::Environment::with_prefix("CACHEWARDEN")
            .prefix_separator("_")
            .separator("__")
            .source(env);
        let values = match config::Source::collect(&source) {
            Ok(values) => values,
            Err(error) => {
                self.problem(
                    None,
                    "environment".into(),
                    format!("cannot read CACHEWARDEN_* variables: {error}"),
                );
                return;
            }
        };
        for (key, value) in values {
            // Variables without a `__` (CACHEWARDEN_CONFIG, CACHEWARDEN_LOG, ...) are not overrides.
            let Some((section, field)) = key.split_once('.') else {
                continue;
            };
            let var = format!("CACHEWARDEN_{}__{}", section.to_uppercase(), field.to_uppercase());
            if !ENV_SECTIONS.contains(&section) || field.contains('.') {
                self.problem(
                    None,
                    format!("environment variable {var}"),
                    format!(
                        "only fields of [{}] can be set from the environment",
                        ENV_SECTIONS.join("], [")
                    ),
                );
                continue;
            }
            let value = match value.into_string() {
                Ok(value) => value,
                Err(error) => {
                    self.problem(None, format!("environment variable {var}"), error.to_string());
                    continue;
                }
            };
            self.override_field(doc, section, field, value, var);
        }
    }
}

/// The file's TOML, within the limits; or the problem with it.
fn document(source: &str, lines: &LineIndex) -> Result<toml::Table, Vec<Problem>> {
    let doc: toml::Table = toml::from_str(source).map_err(|error| {
        vec![Problem {
            line: error.span().map(|span| lines.line_at(span.start)),
            location: "file".into(),
            message: format!("not valid TOML: {}", error.message()),
        }]
    })?;
    let over: Vec<Problem> = over_limits(&doc, lines);
    if !over.is_empty() {
        // Checked before anything else: validating 60,000 jobs alone takes half a minute.
        return Err(over);
    }
    Ok(doc)
}

/// A problem for each list of `doc` longer than its limit ([`LIMITS`]).
fn over_limits(doc: &toml::Table, lines: &LineIndex) -> Vec<Problem> {
    LIMITS
        .iter()
        .filter_map(|&(path, what, limit, instead)| {
            let (section, field) = path.split_once('.').map_or((None, path), |(s, f)| (Some(s), f));
            let table = match section {
                Some(section) => doc.get(section)?.as_table()?,
                None => doc,
            };
            let count = table.get(field)?.as_array()?.len();
            (count > limit).then(|| Problem {
                line: lines.key_line(section, field),
                location: path.to_string(),
                message: format!("{count} {what}: at most {limit} are accepted; {instead}"),
            })
        })
        .collect()
}
