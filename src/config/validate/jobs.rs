//! `[defaults]` and `[[warm]]`: each job on its own, inheriting the defaults, so one bad job never hides another's
//! problems.

use super::entry::Entry;
use super::*;
use crate::pure::codec::{Compression, Structure};
use crate::pure::model::{MAX_PARTITIONS, Partitions};

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
        keyring: Result<Arc<crate::pure::crypto::Keyring>, String>,
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
        let plain = crate::pure::codec::Encoding {
            compress: crate::pure::codec::Compression::None,
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

    /// One `[[warm]]` job, every problem of it reported (each field on its own, so that all of a job's problems are
    /// found at once).
    pub(super) fn warm_job(&mut self, index: usize, item: &toml::Value, defaults: &Defaults) -> Option<WarmJob> {
        let entry = Entry::new("warm", index, item, "name");
        let before = self.problems.len();
        let raw: RawWarmJob = entry.read(self, item)?;
        let name = self.job_name(&entry, raw.name.as_deref());
        let schedule = self.required(&entry, raw.schedule.as_deref(), "schedule", parse_schedule);
        let query = self.required(&entry, raw.query.as_deref(), "query", |query| {
            match query.trim().is_empty() {
                true => Err("is empty".into()),
                false => Ok(query.to_string()),
            }
        });
        let key = self.required(&entry, raw.key.as_deref(), "key", KeyTemplate::parse);
        let ttl = match raw.ttl.as_deref() {
            None if defaults.ttl.is_some() => defaults.ttl,
            ttl => self.required(&entry, ttl, "ttl", parse_ttl),
        };
        let jitter = self.jitter(&entry, raw.jitter.as_deref(), defaults, ttl);
        let timeout = self.or_default(
            &entry,
            raw.timeout.clone(),
            "timeout",
            |t| parse_duration(t),
            defaults.timeout,
        );
        let shape = self.shape(&entry, raw.shape.as_deref(), key.as_ref());
        let max_value_bytes = self.or_default(
            &entry,
            raw.max_value_bytes.clone(),
            "max_value_bytes",
            parse_size,
            defaults.max_value_bytes,
        );
        let encoding = self.job_encoding(&entry, &raw, key.as_ref(), defaults);
        let encrypt_columns = raw.encrypt_columns.clone().unwrap_or_default();
        let keyring = self.job_columns(&entry, &raw, &encrypt_columns, defaults);
        let members = self.job_members(&entry, &raw, key.as_ref());
        let partitions = self.job_partitions(&entry, &raw, key.as_ref());
        // A set's refresh_query and fill_on_miss are problems `job_members` reports.
        let (refresh_query, refresh_params) = match raw.structure.as_deref() {
            Some("set" | "zset") => (None, Vec::new()),
            _ => self.job_refresh(&entry, &raw, key.as_ref()),
        };
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
            // (As written: checked against the sources by `warm_jobs`.)
            source: raw.source.map(Arc::from),
            fill_on_miss: raw.fill_on_miss.unwrap_or(false),
            keyring: keyring?,
            members: members?,
            partitions: partitions?,
        })
    }

    /// `partitions = K` (with `partition_by`, by default the key's one placeholder): only a job whose every row is a
    /// key of its own (string, hash or JSON), so that each piece writes whole keys.
    fn job_partitions(
        &mut self,
        entry: &Entry,
        raw: &RawWarmJob,
        key: Option<&KeyTemplate>,
    ) -> Option<Option<Partitions>> {
        let count = match (raw.partitions, &raw.partition_by) {
            (None | Some(1), None) => return Some(None),
            (None, Some(_)) => {
                entry.problem(
                    self,
                    Some("partition_by"),
                    "is set but partitions is not (set partitions = K)".into(),
                );
                return None;
            }
            (Some(count), _) => count,
        };
        if !(1..=MAX_PARTITIONS).contains(&count) {
            entry.problem(
                self,
                Some("partitions"),
                format!("must be between 1 and {MAX_PARTITIONS}"),
            );
            return None;
        }
        if let Some(structure @ ("set" | "zset")) = raw.structure.as_deref() {
            let message = format!(
                "cannot split a {structure} job: a piece would replace each key with only its members (partition \
                 string, hash or json jobs)"
            );
            entry.problem(self, Some("partitions"), message);
            return None;
        }
        let key = key?;
        if key.placeholders().next().is_none() {
            let message = "cannot split a job whose one key holds the whole result (its key has no placeholder)";
            entry.problem(self, Some("partitions"), message.into());
            return None;
        }
        let column = match &raw.partition_by {
            Some(column) if column.trim().is_empty() => {
                entry.problem(self, Some("partition_by"), "is empty".into());
                return None;
            }
            Some(column) => column.clone(),
            None => {
                let mut placeholders: Vec<&str> = key.placeholders().collect();
                placeholders.sort_unstable();
                placeholders.dedup();
                match placeholders[..] {
                    [one] => one.to_string(),
                    _ => {
                        let message = format!(
                            "the key \"{key}\" has several placeholders: name the numeric column to split by \
                             (partition_by = \"…\")"
                        );
                        entry.problem(self, Some("partition_by"), message);
                        return None;
                    }
                }
            }
        };
        Some((count > 1).then_some(Partitions { count, column }))
    }

    /// The job's column lists: each without empty names, and the keyring `encrypt_columns` needs (`Some(None)` when
    /// it encrypts nothing; `None` when it needs one there is not).
    /// Refuses `job` when an earlier job of another `type` has keys of the same shape (`product:{id}` and
    /// `product:{product_id}`): each would write the other's keys over as its own type at every run.
    pub(super) fn same_keys_other_type(&mut self, entry: &Entry, job: &WarmJob, earlier: &[WarmJob]) {
        let shape = crate::pure::glob::allow_pattern(&job.key);
        let other = earlier.iter().find(|other| {
            other.encoding.structure != job.encoding.structure && crate::pure::glob::allow_pattern(&other.key) == shape
        });
        let plural = |structure| match structure {
            Structure::String => "strings",
            Structure::Hash => "hashes",
            Structure::Json => "JSON documents",
            Structure::Set => "sets",
            Structure::Zset => "sorted sets",
        };
        if let Some(other) = other {
            let message = format!(
                "\"{}\" writes {} into keys of the shape of [[warm]] job \"{}\"'s \"{}\", which are {}: each job \
                 would write the other's keys over at every run; give one of them a distinct key prefix",
                job.key,
                plural(job.encoding.structure),
                other.name,
                other.key,
                plural(other.encoding.structure)
            );
            entry.problem(self, Some("type"), message);
        }
    }

    fn job_columns(
        &mut self,
        entry: &Entry,
        raw: &RawWarmJob,
        encrypt_columns: &[String],
        defaults: &Defaults,
    ) -> Option<Option<Arc<crate::pure::crypto::Keyring>>> {
        for (field, list) in [
            ("json_columns", &raw.json_columns),
            ("allow_sensitive", &raw.allow_sensitive),
        ] {
            if list.iter().flatten().any(|c| c.trim().is_empty()) {
                entry.problem(self, Some(field), "contains an empty column name".into());
            }
        }
        match (&defaults.keyring, encrypt_columns.is_empty()) {
            (_, true) => Some(None),
            (Ok(keyring), false) => Some(Some(keyring.clone())),
            (Err(why), false) => {
                entry.problem(self, Some("encrypt_columns"), why.clone());
                None
            }
        }
    }

    /// The job's `refresh_query` with `?` for its parameters, and their names; `fill_on_miss` needs one.
    fn job_refresh(
        &mut self,
        entry: &Entry,
        raw: &RawWarmJob,
        key: Option<&KeyTemplate>,
    ) -> (Option<String>, Vec<String>) {
        let refresh = match (&raw.refresh_query, key) {
            (Some(query), Some(key)) => {
                let (sql, params, problems) = refresh_query(query, key);
                for message in problems {
                    entry.problem(self, Some("refresh_query"), message);
                }
                (sql, params)
            }
            _ => (None, Vec::new()),
        };
        if raw.fill_on_miss == Some(true) && raw.refresh_query.is_none() {
            let message = "needs a refresh_query: a missed key is loaded by reading its one row";
            entry.problem(self, Some("fill_on_miss"), message.into());
        }
        refresh
    }

    /// A required field of a job, parsed; its absence is a problem that says what to write.
    fn required<T>(
        &mut self,
        entry: &Entry,
        text: Option<&str>,
        field: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let Some(text) = text else {
            let example = match field {
                "schedule" => " (a 6-field cron such as \"0 */5 * * * *\", or \"every 5m\")",
                "key" => " (a template such as \"product:{id}\")",
                "ttl" => " (here or in [defaults]); every key gets a TTL unless you write ttl = \"none\"",
                _ => "",
            };
            entry.problem(self, None, format!("`{field}` is required{example}"));
            return None;
        };
        parse(text).map_err(|m| entry.problem(self, Some(field), m)).ok()
    }

    /// An optional field of a job, parsed, or the default.
    fn or_default<S, T>(
        &mut self,
        entry: &Entry,
        value: Option<S>,
        field: &str,
        parse: impl FnOnce(&S) -> Result<T, String>,
        default: T,
    ) -> Option<T> {
        match value {
            Some(value) => parse(&value).map_err(|m| entry.problem(self, Some(field), m)).ok(),
            None => Some(default),
        }
    }

    fn job_name(&mut self, entry: &Entry, name: Option<&str>) -> Option<String> {
        self.required(entry, name, "name", |name| match is_valid_name(name) {
            true => Ok(name.to_string()),
            false => Err(format!(
                "\"{name}\" is not a valid job name: use letters, digits, `_`, `-` and `.`"
            )),
        })
    }

    /// The job's jitter, or the one of `[defaults]`, checked against its TTL.
    fn jitter(&mut self, entry: &Entry, jitter: Option<&str>, defaults: &Defaults, ttl: Option<Ttl>) -> Option<Jitter> {
        let (text, field) = match (jitter, &defaults.jitter) {
            (Some(text), _) => (Some(text), "jitter"),
            (None, Some(text)) => (Some(text.as_str()), "jitter (from [defaults])"),
            (None, None) => (None, "jitter"),
        };
        match (text, ttl) {
            (None, _) => Some(Jitter::None),
            (Some(text), Some(ttl)) => parse_jitter(text, ttl)
                .map_err(|m| entry.problem(self, Some(field), m))
                .ok(),
            (Some(_), None) => None,
        }
    }

    /// `shape`, which applies to a key without placeholders only.
    fn shape(&mut self, entry: &Entry, shape: Option<&str>, key: Option<&KeyTemplate>) -> Option<Shape> {
        let parsed = match shape {
            None | Some("auto") => Some(Shape::Auto),
            Some("object") => Some(Shape::Object),
            Some("array") => Some(Shape::Array),
            Some(other) => {
                let message = format!("\"{other}\" is not a shape: use \"auto\", \"object\" or \"array\"");
                entry.problem(self, Some("shape"), message);
                None
            }
        };
        if shape.is_some()
            && let Some(key) = key
            && !key.is_single_key()
        {
            let message = format!("only applies to a key without placeholders; \"{key}\" writes one key per row");
            entry.problem(self, Some("shape"), message);
        }
        parsed
    }

    /// How the job's values are stored: `type`, and compression (strings only).
    fn job_encoding(
        &mut self,
        entry: &Entry,
        raw: &RawWarmJob,
        key: Option<&KeyTemplate>,
        defaults: &Defaults,
    ) -> Option<crate::pure::codec::Encoding> {
        let encoding = encoding(raw.compress.clone(), raw.compress_over.clone(), defaults.encoding)
            .map_err(|(field, message)| entry.problem(self, Some(field), message))
            .ok();
        let structure = match raw.structure.as_deref() {
            None | Some("string") => return encoding,
            Some("hash") => Structure::Hash,
            Some("json") => Structure::Json,
            // Their other fields are judged by `job_members`.
            Some("set") => Structure::Set,
            Some("zset") => Structure::Zset,
            Some(other) => {
                let message = format!(
                    "\"{other}\" is not a type: use \"string\" (a JSON value), \"hash\" (a field per column), \"json\" \
                     (a RedisJSON document), \"set\" or \"zset\" (a member per row)"
                );
                entry.problem(self, Some("type"), message);
                return encoding;
            }
        };
        let compressed = raw.compress.is_some() && encoding.is_some_and(|e| e.compress != Compression::None);
        match structure {
            Structure::Hash => {
                if let Some(key) = key.filter(|key| key.is_single_key()) {
                    let message = format!(
                        "\"hash\" holds one row per key, and \"{key}\" has no placeholder: give the key the row's \
                         columns (\"product:{{id}}\")"
                    );
                    entry.problem(self, Some("type"), message);
                }
                if compressed {
                    let message =
                        "a hash's fields are written as they are: compression applies to type = \"string\" only";
                    entry.problem(self, Some("compress"), message.into());
                }
                if raw.encrypt_columns.as_ref().is_some_and(|columns| !columns.is_empty()) {
                    let message =
                        "encrypted columns are written as JSON envelopes: they apply to type = \"string\" only";
                    entry.problem(self, Some("encrypt_columns"), message.into());
                }
            }
            Structure::Json if compressed => {
                let message =
                    "a JSON document is stored parsed by the server: compression applies to type = \"string\" only";
                entry.problem(self, Some("compress"), message.into());
            }
            _ => {}
        }
        // An inherited [defaults] compress applies to strings only.
        encoding.map(|encoding| crate::pure::codec::Encoding {
            compress: Compression::None,
            structure,
            ..encoding
        })
    }
}

/// A `refresh_query` for `key`: the SQL with `?` for its `:name` parameters, the parameters in order, and what is
/// wrong with it (each a message for the field).
fn refresh_query(query: &str, key: &KeyTemplate) -> (Option<String>, Vec<String>, Vec<String>) {
    let (sql, params) = match crate::pure::model::named_params(query) {
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
    inherited: crate::pure::codec::Encoding,
) -> Result<crate::pure::codec::Encoding, (&'static str, String)> {
    let compress = match compress {
        None => inherited.compress,
        Some(text) => crate::pure::codec::Compression::parse(&text).ok_or_else(|| {
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
    Ok(crate::pure::codec::Encoding {
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
