//! Turns the TOML text (plus environment overrides) into a typed [`Config`], collecting every problem on the way.
//!
//! Three passes: parse the TOML (a syntax error stops here, with its line); apply `CACHEWARDEN_<SECTION>__<FIELD>`
//! overrides; then deserialize each section and each `[[warm]]` job on its own, so that one bad job never hides the
//! problems of another. Unknown fields are problems too.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::error::{ConfigError, Problem};
use super::lines::LineIndex;
use super::parse::*;
use super::raw::{
    BoolOrString, IntOrString, RawAdmin, RawBinlog, RawChannel, RawCrypto, RawDaemon, RawDefaults, RawHa, RawMisses,
    RawMysql, RawOnChange, RawRedis, RawWarmJob, fields_of,
};
use super::{
    AdminSettings, AdminTls, AdminToken, BinlogSettings, BinlogStart, ChangeRule, ChannelSettings, CheckpointStore,
    Config, DaemonSettings, HaSettings, LogFormat, MissesSettings, MysqlSettings, OnGap, RedisSettings, SecretUrl,
    SslMode, StreamSettings,
};
use crate::pure::model::{Jitter, KeyTemplate, Shape, Ttl, WarmJob};

mod changes;
mod connections;
mod document;
mod entry;
mod jobs;
mod members;
mod operation;
mod rules;
mod sources;

use connections::*;
use document::CREDENTIALS;
pub(crate) use operation::{DEFAULT_ADMIN_LISTEN, this_process};
pub(crate) use sources::server_address;
use sources::{Source, Sources};

/// Parses and validates `source`, the text of `path`. `env` replaces the process environment when given (tests);
/// `credentials` is systemd's `$CREDENTIALS_DIRECTORY`, if any. The passes in order, each section handed to its own
/// function.
pub(super) fn validate(
    path: &Path,
    source: &str,
    env: Option<std::collections::HashMap<String, String>>,
    credentials: Option<&Path>,
) -> Result<Config, ConfigError> {
    let mut ctx = Context::new(source, credentials);
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };

    let doc = ctx.overridden_document(source, env, credentials).map_err(invalid)?;

    let mysql: RawMysql = ctx.section(&doc, "mysql");
    let redis: RawRedis = ctx.section(&doc, "redis");
    let defaults: RawDefaults = ctx.section(&doc, "defaults");
    let crypto: RawCrypto = ctx.section(&doc, "crypto");
    let daemon: RawDaemon = ctx.section(&doc, "daemon");
    let admin: RawAdmin = ctx.section(&doc, "admin");
    let channel: RawChannel = ctx.section(&doc, "channel");
    let ha: RawHa = ctx.section(&doc, "ha");
    let misses: RawMisses = ctx.section(&doc, "misses");

    let mysql = ctx.mysql(mysql);
    let redis = ctx.redis(redis);
    let keyring = ctx.keyring(crypto, credentials);
    let defaults = ctx.defaults(defaults, keyring);
    let daemon = ctx.daemon(daemon);
    let admin = ctx.admin(admin, credentials);

    let ha = ctx.ha(ha);
    let sources = ctx.binlogs(&doc, mysql.as_ref(), ha.is_some());
    let (jobs, invalid_jobs) = ctx.warm_jobs(doc.get("warm"), &defaults, &sources);
    let channel = ctx.channel(channel, &jobs);
    let known = rules::Known {
        jobs: &jobs,
        invalid_jobs: &invalid_jobs,
        mysql: mysql.as_ref(),
        defaults: &defaults,
        sources: &sources,
    };
    let mut rules = ctx.change_rules(doc.get("on_change"), &known);
    let mut jobs = jobs;
    if let Some(mysql) = &mysql
        && !sources.followed.is_empty()
    {
        rules = sources::follow_binlog(&mut ctx, &doc, &sources, mysql, &mut jobs, rules);
    }
    let binlogs: Vec<BinlogSettings> = (sources.followed.into_iter())
        .map(|binlog| changes::with_server_id(binlog, ha.as_ref(), path, sources.array))
        .collect();
    let misses = ctx.misses(misses, doc.get("warm"));
    if !rules.is_empty() && binlogs.is_empty() {
        ctx.rules_without_binlog();
    }

    if !ctx.problems.is_empty() {
        // In file order, whatever pass found them (those of environment variables, without a line, first).
        ctx.problems.sort_by_key(|problem| problem.line);
        return Err(invalid(ctx.problems));
    }
    let (Some(mysql), Some(redis)) = (mysql, redis) else {
        unreachable!("a missing connection setting is always recorded as a problem");
    };
    Ok(Config {
        path: path.to_path_buf(),
        credentials: credentials.map(Path::to_path_buf),
        mysql,
        redis,
        daemon,
        admin,
        channel,
        jobs,
        binlogs,
        rules,
        ha,
        misses,
        schema: Default::default(),
    })
}

/// Values `[[warm]]` jobs inherit.
struct Defaults {
    ttl: Option<Ttl>,
    jitter: Option<String>,
    max_value_bytes: usize,
    timeout: Duration,
    encoding: crate::pure::codec::Encoding,
    /// The keys for encrypted columns: `Err` holds why there are none (named when a job encrypts).
    keyring: Result<Arc<crate::pure::crypto::Keyring>, String>,
}

struct Context {
    lines: LineIndex,
    problems: Vec<Problem>,
    /// `section.field` → the environment variable that set it.
    env_fields: BTreeMap<String, String>,
    /// The credentials directory read, if any (named when a URL is missing).
    credentials: Option<std::path::PathBuf>,
    /// Sections that are entries of an array of tables (`binlog[1]`), located through their entry.
    entries: std::collections::HashMap<String, entry::Entry>,
}

impl Context {
    /// Nothing found yet in `source`, the text of a file read with systemd's `credentials` directory, if any.
    fn new(source: &str, credentials: Option<&Path>) -> Self {
        Context {
            lines: LineIndex::new(source),
            problems: Vec::new(),
            env_fields: BTreeMap::new(),
            credentials: credentials.map(Path::to_path_buf),
            entries: std::collections::HashMap::new(),
        }
    }

    /// `[[on_change]]` rules with no enabled binlog source to follow.
    fn rules_without_binlog(&mut self) {
        let message = "[[on_change]] rules need an enabled [binlog] section";
        self.problem(
            self.lines.key_line(None, "on_change"),
            "on_change".into(),
            message.into(),
        );
    }
}

impl Context {
    /// Every `[[warm]]` job, each on its own; and the (name, key template) of the jobs refused, so that a rule naming
    /// one says so rather than that none exists.
    fn warm_jobs(
        &mut self,
        item: Option<&toml::Value>,
        defaults: &Defaults,
        sources: &Sources,
    ) -> (Vec<WarmJob>, Vec<(String, String)>) {
        let mut invalid_jobs: Vec<(String, String)> = Vec::new();
        let items = match item {
            None => return (Vec::new(), invalid_jobs),
            Some(toml::Value::Array(items)) => items,
            Some(_) => {
                self.problem(
                    self.lines.key_line(None, "warm"),
                    "warm".into(),
                    "must be an array of tables, written `[[warm]]`".into(),
                );
                return (Vec::new(), invalid_jobs);
            }
        };
        let mut jobs = Vec::new();
        let mut names = HashSet::new();
        for (index, item) in items.iter().enumerate() {
            let Some(mut job) = self.warm_job(index, item, defaults) else {
                let field = |name| item.get(name).and_then(toml::Value::as_str).map(str::to_string);
                if let (Some(name), Some(key)) = (field("name"), field("key")) {
                    invalid_jobs.push((name, key));
                }
                continue;
            };
            let entry = entry::Entry::new("warm", index, item, "name");
            let source = job.source.take().map(|source| source.to_string());
            job.source = self.source_ref(&entry, source, sources, false);
            if names.insert(job.name.clone()) {
                self.same_keys_other_type(&entry, &job, &jobs);
                jobs.push(job);
            } else {
                let message = format!("another [[warm]] job is already named \"{}\"", job.name);
                entry.problem(self, Some("name"), message);
            }
        }
        (jobs, invalid_jobs)
    }

    /// Every `[[on_change]]` rule, each on its own, checked against what it may name.
    fn change_rules(&mut self, item: Option<&toml::Value>, known: &rules::Known<'_>) -> Vec<ChangeRule> {
        match item {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| self.change_rule(index, item, known))
                .collect(),
            Some(_) => {
                self.problem(
                    self.lines.key_line(None, "on_change"),
                    "on_change".into(),
                    "must be an array of tables, written `[[on_change]]`".into(),
                );
                Vec::new()
            }
        }
    }

    fn problem(&mut self, line: Option<usize>, location: String, message: String) {
        self.problems.push(Problem {
            line,
            location,
            message,
        });
    }

    /// A problem with `[section] field`, located in the file or in the environment variable that set it.
    fn field_problem(&mut self, section: &str, field: &str, message: String) {
        if let Some(entry) = self.entries.get(section) {
            let (line, location) = (entry.line(self, Some(field)), entry.location(Some(field)));
            return self.problem(line, location, message);
        }
        let path = format!("{section}.{field}");
        match self.env_fields.get(&path) {
            Some(var) => self.problem(None, format!("{path} (from environment variable {var})"), message),
            None => {
                let line = self.lines.key_line(Some(section), field);
                self.problem(line, path, message);
            }
        }
    }

    fn flag(&mut self, section: &str, field: &str, raw: Option<BoolOrString>, default: bool) -> bool {
        match raw {
            None => default,
            Some(BoolOrString::Bool(value)) => value,
            Some(BoolOrString::String(text)) => match text.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => {
                    self.field_problem(section, field, format!("\"{other}\" is not true or false"));
                    default
                }
            },
        }
    }

    /// Deserializes one `[section]`, recording unknown fields and type errors; a broken section yields defaults.
    fn section<T: DeserializeOwned + Default>(&mut self, doc: &toml::Table, name: &str) -> T {
        let Some(value) = doc.get(name) else {
            return T::default();
        };
        match deserialize::<T>(value.clone()) {
            Ok((parsed, unknown)) => {
                for (field, message) in unknown {
                    self.field_problem(name, &field, message);
                }
                parsed
            }
            Err((field, message)) => {
                match field {
                    Some(field) => self.field_problem(name, &field, message),
                    None => self.problem(self.lines.key_line(None, name), name.into(), message),
                }
                T::default()
            }
        }
    }

    fn url(&mut self, section: &str, url: Option<String>, check: fn(&str) -> Result<(), String>) -> Option<SecretUrl> {
        let Some(url) = url else {
            let variable = format!("CACHEWARDEN_{}__URL", section.to_uppercase());
            let credential = CREDENTIALS.iter().find(|(_, s, f)| *s == section && *f == "url");
            let message = match (credential, &self.credentials) {
                (None, _) => format!("is required: set `url` in [{section}] or the environment variable {variable}"),
                (Some((name, ..)), Some(directory)) => format!(
                    "is required: set `url` in [{section}], the environment variable {variable}, or the credential \
                     {name} (there is none in {})",
                    directory.display()
                ),
                (Some((name, ..)), None) => format!(
                    "is required: set `url` in [{section}], the environment variable {variable}, or the credential \
                     {name} (no credentials were read: systemd passes $CREDENTIALS_DIRECTORY to the service; from a \
                     shell, pass --credentials /etc/cachewarden/credentials)"
                ),
            };
            self.problem(self.lines.key_line(None, section), format!("{section}.url"), message);
            return None;
        };
        match check(&url) {
            Ok(()) => Some(SecretUrl::new(url)),
            Err(message) => {
                self.field_problem(section, "url", message);
                None
            }
        }
    }

    fn check_readable(&mut self, section: &str, field: &str, path: &Path) {
        if let Err(error) = std::fs::metadata(path) {
            self.field_problem(section, field, format!("cannot read {}: {error}", path.display()));
        }
    }

    fn duration(&mut self, section: &str, field: &str, raw: Option<String>) -> Option<Duration> {
        let raw = raw?;
        match parse_duration(&raw) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.field_problem(section, field, message);
                None
            }
        }
    }

    fn count(&mut self, section: &str, field: &str, raw: Option<IntOrString>) -> Option<usize> {
        let raw = raw?;
        let limit = COUNT_LIMITS
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, max)| *max);
        match parse_count(&raw) {
            Ok(count) if limit.is_some_and(|max| count > max) => {
                let max = limit.unwrap_or_default();
                self.field_problem(
                    section,
                    field,
                    format!("{count} is more than {max}, the most it accepts"),
                );
                None
            }
            Ok(count) => Some(count),
            Err(message) => {
                self.field_problem(section, field, message);
                None
            }
        }
    }
}

/// Deserializes `value` into `T`, returning the unknown fields it saw (each with a message) or the first type error
/// (with the field it concerns, when known).
#[allow(clippy::type_complexity)]
fn deserialize<T: DeserializeOwned>(
    value: toml::Value,
) -> Result<(T, Vec<(String, String)>), (Option<String>, String)> {
    let valid = fields_of::<T>();
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignored = serde_ignored::Deserializer::new(value, &mut record);
    match serde_path_to_error::deserialize::<_, T>(ignored) {
        Ok(parsed) => {
            let unknown = unknown
                .into_iter()
                .map(|path| {
                    let field = path.rsplit('.').next().unwrap_or(&path);
                    let message = format!(
                        "unknown field `{path}`{} (valid fields: {})",
                        crate::pure::words::did_you_mean(field, valid.iter().map(|name| name.as_ref())),
                        valid.join(", ")
                    );
                    (path, message)
                })
                .collect();
            Ok((parsed, unknown))
        }
        Err(error) => {
            let path = error.path().to_string();
            let field = (path != ".").then(|| path.split(['.', '[']).next().unwrap_or(&path).to_string());
            Err((field, error.into_inner().to_string()))
        }
    }
}

/// The largest value each count accepts: beyond any sensible setting, inside what the runtime can allocate or the
/// server can take.
const COUNT_LIMITS: &[(&str, usize)] = &[
    ("pool_size", 1_000),
    ("max_concurrent_jobs", 1_000),
    ("audit_sample", 10_000_000),
    ("dead_letter_length", 10_000_000),
    ("max_keys_per_message", 1_000_000),
    ("max_keys_per_pattern", 1_000_000_000),
    ("max_fills_per_second", 1_000_000),
];
