//! `[defaults]` and `[[warm]]`: each job on its own, inheriting the defaults, so one bad job never hides another's
//! problems.

use super::*;
use crate::codec::Structure;

/// Values up to this size are stored plain even when a job compresses: below it compression saves little.
pub(super) const DEFAULT_COMPRESS_OVER: usize = 1024;

/// The seed's advice: keep values under 100 KiB.
pub(super) const DEFAULT_MAX_VALUE_BYTES: usize = 100 * 1024;

/// Enough for a catalog-sized query; long jobs say so explicitly.
pub(super) const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);

impl Context {
    pub(super) fn defaults(
        &mut self,
        raw: RawDefaults,
        keyring: Result<Arc<crate::crypto::Keyring>, String>,
    ) -> Defaults {
        let ttl = raw.ttl.and_then(|ttl| match parse_ttl(&ttl) {
            Ok(ttl) => Some(ttl),
            Err(message) => {
                self.field_problem("defaults", "ttl", message);
                None
            }
        });
        if let (Some(jitter), Some(ttl)) = (&raw.jitter, ttl)
            && let Err(message) = parse_jitter(jitter, ttl)
        {
            self.field_problem("defaults", "jitter", message);
        }
        let max_value_bytes = raw.max_value_bytes.and_then(|size| match parse_size(&size) {
            Ok(size) => Some(size),
            Err(message) => {
                self.field_problem("defaults", "max_value_bytes", message);
                None
            }
        });
        let plain = crate::codec::Encoding {
            compress: crate::codec::Compression::None,
            compress_over: DEFAULT_COMPRESS_OVER,
            structure: Structure::String,
        };
        let encoding = match encoding(raw.compress, raw.compress_over, plain) {
            Ok(encoding) => encoding,
            Err((field, message)) => {
                self.field_problem("defaults", field, message);
                plain
            }
        };
        Defaults {
            ttl,
            jitter: raw.jitter,
            encoding,
            keyring,
            max_value_bytes: max_value_bytes.unwrap_or(DEFAULT_MAX_VALUE_BYTES),
            timeout: self
                .duration("defaults", "timeout", raw.timeout)
                .unwrap_or(DEFAULT_JOB_TIMEOUT),
        }
    }

    /// One `[[warm]]` job, every problem of it reported. (Long on purpose: one short block per field, in the
    /// table's order, each reporting its own problem, so that all of a job's problems are found at once.)
    pub(super) fn warm_job(&mut self, index: usize, item: &toml::Value, defaults: &Defaults) -> Option<WarmJob> {
        let name_hint = match item {
            toml::Value::Table(table) => table.get("name").and_then(|v| v.as_str()).map(str::to_string),
            _ => None,
        };
        let at = match &name_hint {
            Some(name) => format!("warm[{index}] \"{name}\""),
            None => format!("warm[{index}]"),
        };
        let before = self.problems.len();
        let problem = |ctx: &mut Self, field: Option<&str>, message: String| {
            let line = ctx.lines.job_field_line(index, field);
            let location = match field {
                Some(field) => format!("{at}.{field}"),
                None => at.clone(),
            };
            ctx.problem(line, location, message);
        };

        let raw: RawWarmJob = match deserialize(item.clone()) {
            Ok((raw, unknown)) => {
                for (field, message) in unknown {
                    problem(self, Some(&field), message);
                }
                raw
            }
            Err((field, message)) => {
                problem(self, field.as_deref(), message);
                return None;
            }
        };

        let name = match raw.name {
            Some(name) if is_valid_name(&name) => Some(name),
            Some(name) => {
                problem(
                    self,
                    Some("name"),
                    format!("\"{name}\" is not a valid job name: use letters, digits, `_`, `-` and `.`"),
                );
                None
            }
            None => {
                problem(self, None, "`name` is required".into());
                None
            }
        };
        let schedule = match raw.schedule {
            Some(text) => parse_schedule(&text)
                .map_err(|m| problem(self, Some("schedule"), m))
                .ok(),
            None => {
                problem(
                    self,
                    None,
                    "`schedule` is required (a 6-field cron such as \"0 */5 * * * *\", or \"every 5m\")".into(),
                );
                None
            }
        };
        let query = match raw.query {
            Some(query) if !query.trim().is_empty() => Some(query),
            Some(_) => {
                problem(self, Some("query"), "is empty".into());
                None
            }
            None => {
                problem(self, None, "`query` is required".into());
                None
            }
        };
        let key = match raw.key {
            Some(key) => KeyTemplate::parse(&key).map_err(|m| problem(self, Some("key"), m)).ok(),
            None => {
                problem(
                    self,
                    None,
                    "`key` is required (a template such as \"product:{id}\")".into(),
                );
                None
            }
        };
        let ttl = match raw.ttl {
            Some(ttl) => parse_ttl(&ttl).map_err(|m| problem(self, Some("ttl"), m)).ok(),
            None if defaults.ttl.is_some() => defaults.ttl,
            None => {
                problem(
                    self,
                    None,
                    "`ttl` is required (here or in [defaults]); every key gets a TTL unless you write ttl = \"none\""
                        .into(),
                );
                None
            }
        };
        let (jitter_text, jitter_field) = match (&raw.jitter, &defaults.jitter) {
            (Some(text), _) => (Some(text.as_str()), "jitter"),
            (None, Some(text)) => (Some(text.as_str()), "jitter (from [defaults])"),
            (None, None) => (None, "jitter"),
        };
        let jitter = match (jitter_text, ttl) {
            (None, _) => Some(Jitter::None),
            (Some(text), Some(ttl)) => parse_jitter(text, ttl)
                .map_err(|m| problem(self, Some(jitter_field), m))
                .ok(),
            (Some(_), None) => None,
        };
        let timeout = match raw.timeout {
            Some(text) => parse_duration(&text)
                .map_err(|m| problem(self, Some("timeout"), m))
                .ok(),
            None => Some(defaults.timeout),
        };
        let shape = match raw.shape.as_deref() {
            None | Some("auto") => Some(Shape::Auto),
            Some("object") => Some(Shape::Object),
            Some("array") => Some(Shape::Array),
            Some(other) => {
                problem(
                    self,
                    Some("shape"),
                    format!("\"{other}\" is not a shape: use \"auto\", \"object\" or \"array\""),
                );
                None
            }
        };
        if raw.shape.is_some()
            && let Some(key) = &key
            && !key.is_single_key()
        {
            problem(
                self,
                Some("shape"),
                format!("only applies to a key without placeholders; \"{key}\" writes one key per row",),
            );
        }
        let max_value_bytes = match raw.max_value_bytes {
            Some(size) => parse_size(&size)
                .map_err(|m| problem(self, Some("max_value_bytes"), m))
                .ok(),
            None => Some(defaults.max_value_bytes),
        };
        let compress_asked = raw.compress.is_some();
        let mut encoding = encoding(raw.compress, raw.compress_over, defaults.encoding)
            .map_err(|(field, message)| problem(self, Some(field), message))
            .ok();
        let structure = match raw.structure.as_deref() {
            None | Some("string") => Structure::String,
            Some("hash") => Structure::Hash,
            Some(other @ ("zset" | "set" | "json")) => {
                problem(
                    self,
                    Some("type"),
                    format!("\"{other}\" is not supported yet: use \"string\" or \"hash\""),
                );
                Structure::String
            }
            Some(other) => {
                problem(
                    self,
                    Some("type"),
                    format!(
                        "\"{other}\" is not a type: use \"string\" (a JSON value) or \"hash\" (a field per column)"
                    ),
                );
                Structure::String
            }
        };
        if structure == Structure::Hash {
            if let Some(key) = &key
                && key.is_single_key()
            {
                problem(
                    self,
                    Some("type"),
                    format!(
                        "\"hash\" holds one row per key, and \"{key}\" has no placeholder: give the key the row's columns (\"product:{{id}}\")"
                    ),
                );
            }
            if let Some(encoding) = &mut encoding {
                if encoding.compress != crate::codec::Compression::None && compress_asked {
                    problem(
                        self,
                        Some("compress"),
                        "a hash's fields are written as they are: compression applies to type = \"string\" only".into(),
                    );
                }
                // An inherited [daemon] compress does not apply to hashes.
                encoding.compress = crate::codec::Compression::None;
                encoding.structure = Structure::Hash;
            }
            if raw.encrypt_columns.as_ref().is_some_and(|columns| !columns.is_empty()) {
                problem(
                    self,
                    Some("encrypt_columns"),
                    "encrypted columns are written as JSON envelopes: they apply to type = \"string\" only".into(),
                );
            }
        }
        let encrypt_columns = raw.encrypt_columns.unwrap_or_default();
        let keyring = match (&defaults.keyring, encrypt_columns.is_empty()) {
            (_, true) => Some(None),
            (Ok(keyring), false) => Some(Some(keyring.clone())),
            (Err(why), false) => {
                problem(self, Some("encrypt_columns"), why.clone());
                None
            }
        };
        for (field, list) in [
            ("json_columns", &raw.json_columns),
            ("allow_sensitive", &raw.allow_sensitive),
        ] {
            if let Some(list) = list
                && list.iter().any(|c| c.trim().is_empty())
            {
                problem(self, Some(field), "contains an empty column name".into());
            }
        }

        let (refresh_query, refresh_params) = match (&raw.refresh_query, &key) {
            (Some(query), Some(key)) => {
                let (sql, params, problems) = refresh_query(query, key);
                for message in problems {
                    problem(self, Some("refresh_query"), message);
                }
                (sql, params)
            }
            _ => (None, Vec::new()),
        };

        if raw.fill_on_miss == Some(true) && raw.refresh_query.is_none() {
            problem(
                self,
                Some("fill_on_miss"),
                "needs a refresh_query: a missed key is loaded by reading its one row".into(),
            );
        }

        if self.problems.len() > before {
            return None;
        }
        Some(WarmJob {
            name: Arc::from(name?),
            schedule: schedule?,
            query: query?,
            key: key?,
            ttl: ttl?,
            jitter: jitter?,
            run_on_start: raw.run_on_start.unwrap_or(false),
            enabled: raw.enabled.unwrap_or(true),
            timeout: timeout?,
            shape: shape?,
            json_columns: raw.json_columns.unwrap_or_default(),
            allow_sensitive: raw.allow_sensitive.unwrap_or_default(),
            max_value_bytes: max_value_bytes?,
            refresh_query,
            refresh_params,
            encoding: encoding?,
            encrypt_columns,
            derive_rules: raw.derive_rules.unwrap_or(false),
            fill_on_miss: raw.fill_on_miss.unwrap_or(false),
            keyring: keyring?,
        })
    }
}

/// A `refresh_query` for `key`: the SQL with `?` for its `:name` parameters, the parameters in order, and what is
/// wrong with it (each a message for the field).
fn refresh_query(query: &str, key: &KeyTemplate) -> (Option<String>, Vec<String>, Vec<String>) {
    let (sql, params) = match crate::model::named_params(query) {
        Ok(parsed) => parsed,
        Err(message) => return (None, Vec::new(), vec![message]),
    };
    let mut problems = Vec::new();
    if key.is_single_key() {
        problems.push(format!(
            "\"{key}\" has no placeholders: a refresh of it runs the whole job; remove this"
        ));
    } else if key.has_adjacent_placeholders() {
        problems.push(format!(
            "\"{key}\" has placeholders side by side, so a key cannot be read back into values"
        ));
    }
    if params.is_empty() {
        problems.push("has no :name parameter to select the one row".into());
    }
    let placeholders: Vec<&str> = key.placeholders().collect();
    for param in params.iter().filter(|p| !placeholders.contains(&p.as_str())) {
        problems.push(format!(":{param} is not a placeholder of the key template \"{key}\""));
    }
    (Some(sql), params, problems)
}

/// `compress` and `compress_over` over what is inherited; the error names the field.
pub(super) fn encoding(
    compress: Option<String>,
    compress_over: Option<IntOrString>,
    inherited: crate::codec::Encoding,
) -> Result<crate::codec::Encoding, (&'static str, String)> {
    let compress = match compress {
        None => inherited.compress,
        Some(text) => crate::codec::Compression::parse(&text).ok_or_else(|| {
            (
                "compress",
                format!("\"{text}\" is not a codec: use \"zstd\", \"gzip\" or \"none\""),
            )
        })?,
    };
    let compress_over = match compress_over {
        None => inherited.compress_over,
        Some(size) => parse_size(&size).map_err(|message| ("compress_over", message))?,
    };
    Ok(crate::codec::Encoding {
        compress,
        compress_over,
        structure: inherited.structure,
    })
}

pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
