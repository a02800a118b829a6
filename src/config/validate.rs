//! Turns the TOML text (plus environment overrides) into a typed [`Config`], collecting every problem on the way.
//!
//! Three passes: parse the TOML (a syntax error stops here, with its line); apply `CACHEWARDEN_<SECTION>__<FIELD>`
//! overrides; then deserialize each section and each `[[warm]]` job on its own, so that one bad job never hides the
//! problems of another. Unknown fields are problems too.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::error::{ConfigError, Problem};
use super::raw::{
    BoolOrString, IntOrString, RawAdmin, RawBinlog, RawChannel, RawCrypto, RawDaemon, RawDefaults, RawHa, RawMysql,
    RawOnChange, RawRedis, RawWarmJob,
};
use super::{
    AdminSettings, BinlogSettings, BinlogStart, ChangeRule, ChannelSettings, CheckpointStore, Config, DaemonSettings,
    HaSettings, LogFormat, MysqlSettings, OnGap, RedisSettings, SecretUrl, SslMode, StreamSettings,
};
use crate::model::{Jitter, KeyTemplate, Schedule, Shape, Ttl, WarmJob};

/// The sections a configuration may have, and the fields of each; used to name valid fields in messages.
const SECTIONS: &[(&str, &[&str])] = &[
    ("mysql", &["url", "pool_size", "connect_timeout", "ssl_mode", "ssl_ca"]),
    ("redis", &["url", "connect_timeout", "ca_file", "stale_set_protection"]),
    (
        "defaults",
        &[
            "ttl",
            "jitter",
            "max_value_bytes",
            "timeout",
            "compress",
            "compress_over",
        ],
    ),
    (
        "daemon",
        &[
            "max_concurrent_jobs",
            "shutdown_grace",
            "log_level",
            "log_format",
            "audit_interval",
            "audit_sample",
        ],
    ),
    ("crypto", &["key_file", "write_key"]),
    ("ha", &["enabled", "lease_ttl", "key", "instance"]),
    ("admin", &["enabled", "listen"]),
    (
        "binlog",
        &[
            "enabled",
            "server_id",
            "url",
            "start",
            "checkpoint",
            "checkpoint_key",
            "checkpoint_file",
            "heartbeat",
            "on_gap",
        ],
    ),
    (
        "channel",
        &[
            "enabled",
            "name",
            "stream",
            "group",
            "consumer",
            "claim_idle",
            "allow",
            "on_gap",
            "max_keys_per_message",
            "max_keys_per_pattern",
            "max_message_bytes",
        ],
    ),
];

/// The fields of a `[[warm]]` job.
const WARM_FIELDS: &[&str] = &[
    "name",
    "schedule",
    "query",
    "key",
    "ttl",
    "jitter",
    "run_on_start",
    "enabled",
    "timeout",
    "shape",
    "json_columns",
    "allow_sensitive",
    "max_value_bytes",
    "refresh_query",
    "compress",
    "compress_over",
    "encrypt_columns",
];

/// The fields of an `[[on_change]]` rule.
const ON_CHANGE_FIELDS: &[&str] = &[
    "table",
    "delete",
    "refresh",
    "warm",
    "debounce",
    "when_changed",
    "project",
];

/// Sections that environment variables may set.
const ENV_SECTIONS: &[&str] = &["mysql", "redis", "defaults", "daemon", "admin", "binlog", "ha"];

/// systemd credentials (`LoadCredential=`) read from `$CREDENTIALS_DIRECTORY`, and the field each one sets.
const CREDENTIALS: &[(&str, &str, &str)] = &[("mysql-url", "mysql", "url"), ("redis-url", "redis", "url")];

/// The credential that holds the key file for encrypted columns (it overrides `[crypto] key_file`).
const KEY_CREDENTIAL: &str = "cache-key";
/// Values up to this size are stored plain even when a job compresses: below it compression saves little.
const DEFAULT_COMPRESS_OVER: usize = 1024;

/// A lease lasts this long unless renewed (renewed every third of it).
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// The shortest lease: renewals every third of it must survive a slow Redis reply.
const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// The seed's advice: keep values under 100 KiB.
const DEFAULT_MAX_VALUE_BYTES: usize = 100 * 1024;
/// Small on purpose: warming must never flood the primary.
const DEFAULT_MAX_CONCURRENT_JOBS: usize = 2;
/// In-flight writes get this long to finish after SIGTERM; systemd's TimeoutStopSec must be longer.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Loopback only: the admin endpoint has no authentication, so it must not face a network by default.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9187";
/// The continuous audit: a light sample every few minutes.
const DEFAULT_AUDIT_INTERVAL: Duration = Duration::from_secs(600);
const DEFAULT_AUDIT_SAMPLE: usize = 100;
/// Generous for real messages (a few keys), small enough that a runaway publisher cannot exhaust memory.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
const DEFAULT_MAX_KEYS_PER_MESSAGE: usize = 1000;
/// A pattern delete larger than this is almost certainly a mistake; it stops and says so.
const DEFAULT_MAX_KEYS_PER_PATTERN: u64 = 1_000_000;
/// A consumer silent this long is taken for dead and its pending stream entries are claimed.
const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(60);
/// MySQL's own default replica heartbeat is half the replica net timeout; 5 s notices a dead link quickly.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Aggregates warmed from the binlog are rebuilt at most this often by default.
const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(30);
/// Enough for a catalog-sized query; long jobs say so explicitly.
const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);
/// A small pool: warm jobs are few and the concurrency limit is small.
const DEFAULT_POOL_SIZE: u32 = 4;
/// Long enough for a TLS handshake across an AZ, short enough that `--once` fails fast.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses and validates `source`, the text of `path`. `env` replaces the process environment when given (tests);
/// `credentials` is systemd's `$CREDENTIALS_DIRECTORY`, if any.
pub fn validate(
    path: &Path,
    source: &str,
    env: Option<std::collections::HashMap<String, String>>,
    credentials: Option<&Path>,
) -> Result<Config, ConfigError> {
    let mut ctx = Context {
        lines: LineIndex::new(source),
        problems: Vec::new(),
        env_fields: BTreeMap::new(),
        credentials: credentials.map(Path::to_path_buf),
    };
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };

    let mut doc: toml::Table = match toml::from_str(source) {
        Ok(doc) => doc,
        Err(error) => {
            let line = error.span().map(|span| ctx.lines.line_at(span.start));
            return Err(invalid(vec![Problem {
                line,
                location: "file".into(),
                message: format!("not valid TOML: {}", error.message()),
            }]));
        }
    };
    if let Some(directory) = credentials {
        ctx.apply_credentials(&mut doc, directory);
    }
    ctx.apply_env(&mut doc, env);

    for key in doc.keys() {
        if key != "warm" && key != "on_change" && !SECTIONS.iter().any(|(name, _)| name == key) {
            ctx.problem(
                ctx.lines.key_line(None, key),
                key.clone(),
                format!(
                    "unknown section or field `{key}` (valid: {}, warm, on_change)",
                    SECTIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }

    let mysql: RawMysql = ctx.section(&doc, "mysql");
    let redis: RawRedis = ctx.section(&doc, "redis");
    let defaults: RawDefaults = ctx.section(&doc, "defaults");
    let crypto: RawCrypto = ctx.section(&doc, "crypto");
    let daemon: RawDaemon = ctx.section(&doc, "daemon");
    let admin: RawAdmin = ctx.section(&doc, "admin");
    let channel: RawChannel = ctx.section(&doc, "channel");
    let ha: RawHa = ctx.section(&doc, "ha");

    let mysql = ctx.mysql(mysql);
    let redis = ctx.redis(redis);
    let keyring = ctx.keyring(crypto, credentials);
    let defaults = ctx.defaults(defaults, keyring);
    let daemon = ctx.daemon(daemon);
    let admin = ctx.admin(admin);

    // (name, key template) of jobs refused above, so that a rule naming one says so rather than that none exists.
    let mut invalid_jobs: Vec<(String, String)> = Vec::new();
    let jobs = match doc.get("warm") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => {
            let mut jobs = Vec::new();
            let mut names = HashSet::new();
            for (index, item) in items.iter().enumerate() {
                let Some(job) = ctx.warm_job(index, item, &defaults) else {
                    let field = |name| item.get(name).and_then(toml::Value::as_str).map(str::to_string);
                    if let (Some(name), Some(key)) = (field("name"), field("key")) {
                        invalid_jobs.push((name, key));
                    }
                    continue;
                };
                if names.insert(job.name.clone()) {
                    jobs.push(job);
                } else {
                    ctx.problem(
                        ctx.lines.job_field_line(index, Some("name")),
                        format!("warm[{index}] \"{}\".name", job.name),
                        format!("another [[warm]] job is already named \"{}\"", job.name),
                    );
                }
            }
            jobs
        }
        Some(_) => {
            ctx.problem(
                ctx.lines.key_line(None, "warm"),
                "warm".into(),
                "must be an array of tables, written `[[warm]]`".into(),
            );
            Vec::new()
        }
    };

    let channel = ctx.channel(channel, &jobs);
    let raw_binlog: Option<RawBinlog> = doc.contains_key("binlog").then(|| ctx.section(&doc, "binlog"));
    let binlog = raw_binlog.and_then(|raw| ctx.binlog(raw, mysql.as_ref()));
    let rules = match doc.get("on_change") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| ctx.change_rule(index, item, &jobs, &invalid_jobs, mysql.as_ref(), &defaults))
            .collect(),
        Some(_) => {
            ctx.problem(
                ctx.lines.key_line(None, "on_change"),
                "on_change".into(),
                "must be an array of tables, written `[[on_change]]`".into(),
            );
            Vec::new()
        }
    };
    let ha = ctx.ha(ha, binlog.as_ref());
    if !rules.is_empty() && binlog.is_none() {
        ctx.problem(
            ctx.lines.key_line(None, "on_change"),
            "on_change".into(),
            "[[on_change]] rules need an enabled [binlog] section".into(),
        );
    }

    if !ctx.problems.is_empty() {
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
        binlog,
        rules,
        ha,
    })
}

/// Values `[[warm]]` jobs inherit.
struct Defaults {
    ttl: Option<Ttl>,
    jitter: Option<String>,
    max_value_bytes: usize,
    timeout: Duration,
    encoding: crate::codec::Encoding,
    /// The keys for encrypted columns: `Err` holds why there are none (named when a job encrypts).
    keyring: Result<Arc<crate::crypto::Keyring>, String>,
}

struct Context {
    lines: LineIndex,
    problems: Vec<Problem>,
    /// `section.field` → the environment variable that set it.
    env_fields: BTreeMap<String, String>,
    /// The credentials directory read, if any (named when a URL is missing).
    credentials: Option<std::path::PathBuf>,
}

impl Context {
    fn problem(&mut self, line: Option<usize>, location: String, message: String) {
        self.problems.push(Problem {
            line,
            location,
            message,
        });
    }

    /// A problem with `[section] field`, located in the file or in the environment variable that set it.
    fn field_problem(&mut self, section: &str, field: &str, message: String) {
        let path = format!("{section}.{field}");
        match self.env_fields.get(&path) {
            Some(var) => self.problem(None, format!("{path} (from environment variable {var})"), message),
            None => {
                let line = self.lines.key_line(Some(section), field);
                self.problem(line, path, message);
            }
        }
    }

    /// Sets `[section] field` to `value`, remembering `origin` (a variable or credential) for problem messages.
    fn override_field(&mut self, doc: &mut toml::Table, section: &str, field: &str, value: String, origin: String) {
        let table = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(table) = table {
            table.insert(field.to_string(), toml::Value::String(value));
            self.env_fields.insert(format!("{section}.{field}"), origin);
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

    fn daemon(&mut self, raw: RawDaemon) -> DaemonSettings {
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.field_problem(
                    "daemon",
                    "log_format",
                    format!("\"{other}\" is not a log format: use \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        if let Some(level) = &raw.log_level
            && let Err(error) = check_log_level(level)
        {
            self.field_problem("daemon", "log_level", error);
        }
        DaemonSettings {
            max_concurrent_jobs: self
                .count("daemon", "max_concurrent_jobs", raw.max_concurrent_jobs)
                .unwrap_or(DEFAULT_MAX_CONCURRENT_JOBS),
            shutdown_grace: self
                .duration("daemon", "shutdown_grace", raw.shutdown_grace)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            log_level: raw.log_level,
            log_format,
            audit_interval: match raw.audit_interval.as_deref() {
                Some("off") => None,
                other => Some(
                    self.duration("daemon", "audit_interval", other.map(str::to_string))
                        .unwrap_or(DEFAULT_AUDIT_INTERVAL),
                ),
            },
            audit_sample: self
                .count("daemon", "audit_sample", raw.audit_sample)
                .unwrap_or(DEFAULT_AUDIT_SAMPLE),
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

    fn on_gap(&mut self, section: &str, raw: Option<&str>) -> OnGap {
        match raw {
            None | Some("warm") => OnGap::Warm,
            Some("flush") => OnGap::Flush,
            Some("none") => OnGap::None,
            Some(other) => {
                self.field_problem(
                    section,
                    "on_gap",
                    format!("\"{other}\" is not an on_gap action: use \"warm\", \"flush\" or \"none\""),
                );
                OnGap::Warm
            }
        }
    }

    fn channel(&mut self, raw: RawChannel, jobs: &[WarmJob]) -> ChannelSettings {
        let enabled = self.flag("channel", "enabled", raw.enabled, true);
        let allow = match raw.allow.map(super::raw::OneOrList::into_vec) {
            Some(allow) => {
                for pattern in &allow {
                    if pattern.is_empty() || !crate::plan::is_simple_glob(pattern) {
                        self.field_problem(
                            "channel",
                            "allow",
                            format!("\"{pattern}\" is not an allow pattern: only `*` may be a wildcard (`\\` escapes)"),
                        );
                    }
                }
                allow
            }
            None => jobs.iter().map(|job| crate::plan::allow_pattern(&job.key)).collect(),
        };
        let on_gap = self.on_gap("channel", raw.on_gap.as_deref());
        let stream = raw.stream.map(|name| StreamSettings {
            name,
            group: raw.group.clone().unwrap_or_else(|| "cachewarden".into()),
            consumer: raw.consumer.clone().unwrap_or_else(default_consumer),
            claim_idle: self
                .duration("channel", "claim_idle", raw.claim_idle.clone())
                .unwrap_or(DEFAULT_CLAIM_IDLE),
        });
        if stream.is_none() && (raw.group.is_some() || raw.consumer.is_some() || raw.claim_idle.is_some()) {
            self.field_problem(
                "channel",
                "group",
                "group, consumer and claim_idle only apply with `stream`".into(),
            );
        }
        let max_message_bytes = raw.max_message_bytes.and_then(|size| match parse_size(&size) {
            Ok(size) => Some(size),
            Err(message) => {
                self.field_problem("channel", "max_message_bytes", message);
                None
            }
        });
        ChannelSettings {
            enabled,
            name: raw.name.unwrap_or_else(|| "cache_invalidation".into()),
            stream,
            allow,
            on_gap,
            max_keys_per_message: self
                .count("channel", "max_keys_per_message", raw.max_keys_per_message)
                .unwrap_or(DEFAULT_MAX_KEYS_PER_MESSAGE),
            max_keys_per_pattern: self
                .count("channel", "max_keys_per_pattern", raw.max_keys_per_pattern)
                .map_or(DEFAULT_MAX_KEYS_PER_PATTERN, |n| n as u64),
            max_message_bytes: max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
        }
    }

    fn binlog(&mut self, raw: RawBinlog, mysql: Option<&MysqlSettings>) -> Option<BinlogSettings> {
        if !self.flag("binlog", "enabled", raw.enabled, true) {
            return None;
        }
        let server_id = match raw.server_id {
            None => {
                self.problem(
                    self.lines.key_line(None, "binlog"),
                    "binlog.server_id".into(),
                    "is required: a replica id unique among the server's replicas (e.g. 4242)".into(),
                );
                None
            }
            Some(raw) => match self.count("binlog", "server_id", Some(raw)) {
                Some(id) if id <= u32::MAX as usize => Some(id as u32),
                Some(id) => {
                    self.field_problem("binlog", "server_id", format!("{id} is larger than 4294967295"));
                    None
                }
                None => None,
            },
        };
        let url = match raw.url {
            Some(url) => match check_mysql_url(&url) {
                Ok(()) => Some(SecretUrl::new(url)),
                Err(message) => {
                    self.field_problem("binlog", "url", message);
                    None
                }
            },
            None => mysql.map(|m| m.url.clone()),
        };
        let start = match raw.start.as_deref() {
            None | Some("current") => Some(BinlogStart::Current),
            Some(text) => match text.rsplit_once(':').map(|(file, pos)| (file, pos.parse::<u64>())) {
                Some((file, Ok(pos))) if !file.is_empty() => Some(BinlogStart::At {
                    file: file.to_string(),
                    pos,
                }),
                _ => {
                    self.field_problem(
                        "binlog",
                        "start",
                        format!("\"{text}\" is not a start position: use \"current\" or \"binlog.000042:1234\""),
                    );
                    None
                }
            },
        };
        let checkpoint = match raw.checkpoint.as_deref() {
            None | Some("redis") => Some(CheckpointStore::Redis(
                raw.checkpoint_key
                    .unwrap_or_else(|| "cachewarden:binlog:checkpoint".into()),
            )),
            Some("file") => {
                let path = raw.checkpoint_file.map(std::path::PathBuf::from).unwrap_or_else(|| {
                    std::env::var_os("STATE_DIRECTORY")
                        .map(std::path::PathBuf::from)
                        .unwrap_or_else(|| "/var/lib/cachewarden".into())
                        .join("binlog.checkpoint")
                });
                Some(CheckpointStore::File(path))
            }
            Some(other) => {
                self.field_problem(
                    "binlog",
                    "checkpoint",
                    format!("\"{other}\" is not a checkpoint store: use \"redis\" or \"file\""),
                );
                None
            }
        };
        let heartbeat = match self.duration("binlog", "heartbeat", raw.heartbeat) {
            Some(heartbeat) if heartbeat > MAX_HEARTBEAT => {
                self.field_problem(
                    "binlog",
                    "heartbeat",
                    format!("{heartbeat:?} is longer than an hour: a dead replication link would go unnoticed"),
                );
                DEFAULT_HEARTBEAT
            }
            heartbeat => heartbeat.unwrap_or(DEFAULT_HEARTBEAT),
        };
        let on_gap = self.on_gap("binlog", raw.on_gap.as_deref());
        Some(BinlogSettings {
            server_id: server_id?,
            url: url?,
            start: start?,
            checkpoint: checkpoint?,
            heartbeat,
            on_gap,
        })
    }

    fn change_rule(
        &mut self,
        index: usize,
        item: &toml::Value,
        jobs: &[WarmJob],
        invalid_jobs: &[(String, String)],
        mysql: Option<&MysqlSettings>,
        defaults: &Defaults,
    ) -> Option<ChangeRule> {
        let at = match item.get("table").and_then(|v| v.as_str()) {
            Some(table) => format!("on_change[{index}] \"{table}\""),
            None => format!("on_change[{index}]"),
        };
        let line = |ctx: &Self, field: Option<&str>| ctx.lines.table_field_line("on_change", index, field);
        let before = self.problems.len();
        let raw: RawOnChange = match deserialize(item.clone(), ON_CHANGE_FIELDS) {
            Ok((raw, unknown)) => {
                for (field, message) in unknown {
                    self.problem(line(self, Some(&field)), format!("{at}.{field}"), message);
                }
                raw
            }
            Err((field, message)) => {
                let location = field.as_ref().map_or(at.clone(), |f| format!("{at}.{f}"));
                self.problem(line(self, field.as_deref()), location, message);
                return None;
            }
        };
        let default_database = mysql.and_then(|m| {
            m.url
                .expose()
                .parse::<sqlx::mysql::MySqlConnectOptions>()
                .ok()?
                .get_database()
                .map(str::to_string)
        });
        let (database, table) = match raw.table.as_deref() {
            Some(text) => match text.split_once('.') {
                Some((db, table)) if !db.is_empty() && !table.is_empty() => (db.to_string(), table.to_string()),
                None if !text.is_empty() && default_database.is_some() => {
                    (default_database.clone().unwrap_or_default(), text.to_string())
                }
                _ => {
                    self.problem(
                        line(self, Some("table")),
                        format!("{at}.table"),
                        format!("\"{text}\" is not a table: write \"database.table\""),
                    );
                    (String::new(), String::new())
                }
            },
            None => {
                self.problem(
                    line(self, None),
                    at.clone(),
                    "`table` is required (\"database.table\")".into(),
                );
                (String::new(), String::new())
            }
        };
        let templates = |ctx: &mut Self, field: &str, list: Option<Vec<String>>| -> Vec<KeyTemplate> {
            list.unwrap_or_default()
                .iter()
                .filter_map(|text| match KeyTemplate::parse(text) {
                    Ok(template) => Some(template),
                    Err(message) => {
                        ctx.problem(
                            line(ctx, Some(field)),
                            format!("{at}.{field}"),
                            format!("\"{text}\": {message}"),
                        );
                        None
                    }
                })
                .collect()
        };
        let delete = templates(self, "delete", raw.delete);
        let refresh = templates(self, "refresh", raw.refresh);
        for template in &refresh {
            let usable = jobs
                .iter()
                .any(|job| job.key == *template && job.refresh_query.is_some());
            let invalid = invalid_jobs.iter().find(|(_, key)| key == template.as_str());
            if !usable {
                let message = match invalid {
                    Some((name, _)) => format!(
                        "\"{template}\" is the key of [[warm]] job \"{name}\", which is invalid (see its problems)"
                    ),
                    None => format!("\"{template}\" needs a [[warm]] job with that key template and a refresh_query"),
                };
                self.problem(line(self, Some("refresh")), format!("{at}.refresh"), message);
            }
            if template.as_str().contains('*') {
                self.problem(
                    line(self, Some("refresh")),
                    format!("{at}.refresh"),
                    format!("\"{template}\" is a pattern; patterns can only be deleted"),
                );
            }
        }
        let warm = raw.warm.unwrap_or_default();
        for name in &warm {
            if !jobs.iter().any(|job| &*job.name == name) {
                self.problem(
                    line(self, Some("warm")),
                    format!("{at}.warm"),
                    format!("no [[warm]] job named \"{name}\""),
                );
            }
        }
        let project = raw.project.and_then(|raw| {
            let fail = |ctx: &mut Self, message: String| {
                ctx.problem(line(ctx, Some("project")), format!("{at}.project"), message);
            };
            let key = match raw.key.as_deref().map(KeyTemplate::parse) {
                Some(Ok(key)) if !key.is_single_key() => Some(key),
                Some(Ok(key)) => {
                    fail(
                        self,
                        format!("key \"{key}\" has no placeholders: a projection writes one key per row"),
                    );
                    None
                }
                Some(Err(message)) => {
                    fail(self, format!("key: {message}"));
                    None
                }
                None => {
                    fail(self, "needs `key` (a template such as \"price:{id}\")".into());
                    None
                }
            };
            let columns = match raw.columns {
                Some(columns) if !columns.is_empty() => Some(columns),
                _ => {
                    fail(self, "needs `columns`, the row's columns to store".into());
                    None
                }
            };
            let ttl = match raw.ttl.as_deref().map(parse_ttl) {
                Some(Ok(ttl)) => Some(ttl),
                Some(Err(message)) => {
                    fail(self, format!("ttl: {message}"));
                    None
                }
                None => {
                    fail(self, "needs `ttl` (or \"none\")".into());
                    None
                }
            };
            if let Some(columns) = &columns {
                let sensitive = crate::render::sensitive_columns(columns.iter().map(String::as_str), &[]);
                if !sensitive.is_empty() {
                    fail(
                        self,
                        format!("columns {} look sensitive and would be cached", sensitive.join(", ")),
                    );
                }
            }
            Some(crate::config::Projection {
                key: key?,
                columns: columns?,
                ttl: ttl?,
                encoding: defaults.encoding,
            })
        });
        if delete.is_empty()
            && refresh.is_empty()
            && warm.is_empty()
            && project.is_none()
            && self.problems.len() == before
        {
            self.problem(
                line(self, None),
                at.clone(),
                "does nothing: give it `delete`, `refresh`, `project` or `warm`".into(),
            );
        }
        let debounce = match raw.debounce {
            Some(text) => parse_duration(&text)
                .map_err(|m| self.problem(line(self, Some("debounce")), format!("{at}.debounce"), m))
                .ok(),
            None => Some(DEFAULT_DEBOUNCE),
        };
        if self.problems.len() > before {
            return None;
        }
        Some(ChangeRule {
            database,
            table,
            delete,
            refresh,
            warm,
            debounce: debounce?,
            when_changed: raw.when_changed.unwrap_or_default(),
            project,
        })
    }

    fn ha(&mut self, raw: RawHa, binlog: Option<&BinlogSettings>) -> Option<HaSettings> {
        if !self.flag("ha", "enabled", raw.enabled, false) {
            return None;
        }
        let lease_ttl = self
            .duration("ha", "lease_ttl", raw.lease_ttl)
            .unwrap_or(DEFAULT_LEASE_TTL);
        if lease_ttl < MIN_LEASE_TTL {
            self.field_problem(
                "ha",
                "lease_ttl",
                format!("must be at least {}", crate::words::duration(MIN_LEASE_TTL)),
            );
        }
        if let Some(BinlogSettings {
            checkpoint: CheckpointStore::File(_),
            ..
        }) = binlog
        {
            self.field_problem(
                "binlog",
                "checkpoint",
                "must be \"redis\" with [ha]: every instance resumes from the same checkpoint".into(),
            );
        }
        let instance = raw.instance.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", std::process::id())
        });
        Some(HaSettings {
            lease_ttl,
            key: raw.key.unwrap_or_else(|| "cachewarden:leader".into()),
            instance,
        })
    }

    fn admin(&mut self, raw: RawAdmin) -> AdminSettings {
        let enabled = self.flag("admin", "enabled", raw.enabled, true);
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.into());
        let listen = match listen_text.parse::<std::net::SocketAddr>() {
            Ok(listen) => listen,
            Err(_) => {
                self.field_problem(
                    "admin",
                    "listen",
                    format!("\"{listen_text}\" is not an address and port such as \"127.0.0.1:9187\""),
                );
                DEFAULT_ADMIN_LISTEN.parse().expect("the default admin address parses")
            }
        };
        AdminSettings { enabled, listen }
    }

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

    /// Deserializes one `[section]`, recording unknown fields and type errors; a broken section yields defaults.
    fn section<T: DeserializeOwned + Default>(&mut self, doc: &toml::Table, name: &str) -> T {
        let Some(value) = doc.get(name) else {
            return T::default();
        };
        let fields = SECTIONS.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, f)| *f);
        match deserialize::<T>(value.clone(), fields) {
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

    fn mysql(&mut self, raw: RawMysql) -> Option<MysqlSettings> {
        let url = self.url("mysql", raw.url, check_mysql_url);
        let pool_size = self.count("mysql", "pool_size", raw.pool_size);
        let connect_timeout = self.duration("mysql", "connect_timeout", raw.connect_timeout);
        // As MySQL's clients and AWS write them too: `VERIFY_IDENTITY`, `Verify-CA`.
        let ssl_mode = match raw
            .ssl_mode
            .as_deref()
            .map(|mode| mode.to_ascii_lowercase().replace('_', "-"))
        {
            None => None,
            Some(mode) => match mode.as_str() {
                "disabled" => Some(SslMode::Disabled),
                "preferred" => Some(SslMode::Preferred),
                "required" => Some(SslMode::Required),
                "verify-ca" => Some(SslMode::VerifyCa),
                "verify-identity" => Some(SslMode::VerifyIdentity),
                _ => {
                    let written = raw.ssl_mode.as_deref().unwrap_or_default();
                    self.field_problem(
                    "mysql",
                    "ssl_mode",
                    format!(
                        "\"{written}\" is not an ssl_mode: use \"disabled\", \"preferred\", \"required\", \"verify-ca\" \
                         or \"verify-identity\" (any case, - or _)"
                    ),
                );
                    None
                }
            },
        };
        let ssl_ca = raw.ssl_ca.map(std::path::PathBuf::from);
        if let Some(ca) = &ssl_ca {
            self.check_readable("mysql", "ssl_ca", ca);
        }
        if matches!(ssl_mode, Some(SslMode::VerifyCa | SslMode::VerifyIdentity)) && ssl_ca.is_none() {
            // Not an error: the system roots may do. RDS's CA is not among them, hence the hint.
            tracing::debug!("mysql.ssl_mode verifies certificates against the system roots; set ssl_ca for RDS");
        }
        Some(MysqlSettings {
            url: url?,
            pool_size: pool_size.map_or(DEFAULT_POOL_SIZE, |n| n as u32),
            connect_timeout: connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ssl_mode,
            ssl_ca,
        })
    }

    fn redis(&mut self, raw: RawRedis) -> Option<RedisSettings> {
        let url = self.url("redis", raw.url, check_redis_url);
        let connect_timeout = self.duration("redis", "connect_timeout", raw.connect_timeout);
        let ca_file = raw.ca_file.map(std::path::PathBuf::from);
        if let Some(ca) = &ca_file {
            self.check_readable("redis", "ca_file", ca);
            if url.as_ref().is_some_and(|u| !u.expose().starts_with("rediss://")) {
                self.field_problem(
                    "redis",
                    "ca_file",
                    "only applies to TLS connections: use a rediss:// URL".into(),
                );
            }
        }
        let stale_set_protection = self.flag("redis", "stale_set_protection", raw.stale_set_protection, true);
        Some(RedisSettings {
            url: url?,
            connect_timeout: connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ca_file,
            stale_set_protection,
        })
    }

    /// The keyring from `[crypto]` (or the credential `cache-key`); `Err` says why there is none. A key file that is
    /// named but unreadable or malformed is a problem even if no job encrypts yet.
    fn keyring(&mut self, raw: RawCrypto, credentials: Option<&Path>) -> Result<Arc<crate::crypto::Keyring>, String> {
        let credential = credentials
            .map(|directory| directory.join(KEY_CREDENTIAL))
            .filter(|path| path.exists());
        let (path, field) = match (credential, raw.key_file) {
            (Some(path), _) => (path, format!("credential {KEY_CREDENTIAL}")),
            (None, Some(file)) => (std::path::PathBuf::from(file), "key_file".to_string()),
            (None, None) => {
                if raw.write_key.is_some() {
                    self.field_problem("crypto", "write_key", "needs a key file: set key_file".into());
                }
                return Err(format!(
                    "needs a key: set [crypto] key_file, or the credential {KEY_CREDENTIAL} (for the service, \
                     LoadCredential={KEY_CREDENTIAL}:/etc/cachewarden/credentials/{KEY_CREDENTIAL})"
                ));
            }
        };
        let parsed = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read the key file {}: {error}", path.display()))
            .and_then(|text| {
                crate::crypto::Keyring::parse(&text, raw.write_key.as_deref())
                    .map_err(|message| format!("the key file {} {message}", path.display()))
            });
        match parsed {
            Ok(keyring) => Ok(Arc::new(keyring)),
            Err(message) => {
                let field = if field == "key_file" { "key_file" } else { "write_key" };
                self.field_problem("crypto", field, message.clone());
                Err(message)
            }
        }
    }

    fn defaults(&mut self, raw: RawDefaults, keyring: Result<Arc<crate::crypto::Keyring>, String>) -> Defaults {
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

    fn warm_job(&mut self, index: usize, item: &toml::Value, defaults: &Defaults) -> Option<WarmJob> {
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

        let raw: RawWarmJob = match deserialize(item.clone(), WARM_FIELDS) {
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
        let encoding = encoding(raw.compress, raw.compress_over, defaults.encoding)
            .map_err(|(field, message)| problem(self, Some(field), message))
            .ok();
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
            (None, _) => (None, Vec::new()),
            (Some(query), Some(key)) => match crate::model::named_params(query) {
                Err(message) => {
                    problem(self, Some("refresh_query"), message);
                    (None, Vec::new())
                }
                Ok((sql, params)) => {
                    let placeholders: Vec<&str> = key.placeholders().collect();
                    if key.is_single_key() {
                        problem(
                            self,
                            Some("refresh_query"),
                            format!("\"{key}\" has no placeholders: a refresh of it runs the whole job; remove this"),
                        );
                    } else if key.has_adjacent_placeholders() {
                        problem(
                            self,
                            Some("refresh_query"),
                            format!(
                                "\"{key}\" has placeholders side by side, so a key cannot be read back into values"
                            ),
                        );
                    }
                    if params.is_empty() {
                        problem(
                            self,
                            Some("refresh_query"),
                            "has no :name parameter to select the one row".into(),
                        );
                    }
                    for param in params.iter().filter(|p| !placeholders.contains(&p.as_str())) {
                        problem(
                            self,
                            Some("refresh_query"),
                            format!(":{param} is not a placeholder of the key template \"{key}\""),
                        );
                    }
                    (Some(sql), params)
                }
            },
            (Some(_), None) => (None, Vec::new()),
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
            keyring: keyring?,
        })
    }
}

/// `compress` and `compress_over` over what is inherited; the error names the field.
fn encoding(
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
    })
}

/// Deserializes `value` into `T`, returning the unknown fields it saw (each with a message) or the first type error
/// (with the field it concerns, when known).
#[allow(clippy::type_complexity)]
fn deserialize<T: DeserializeOwned>(
    value: toml::Value,
    valid: &[&str],
) -> Result<(T, Vec<(String, String)>), (Option<String>, String)> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignored = serde_ignored::Deserializer::new(value, &mut record);
    match serde_path_to_error::deserialize::<_, T>(ignored) {
        Ok(parsed) => {
            let unknown = unknown
                .into_iter()
                .map(|path| {
                    let message = format!("unknown field `{path}` (valid fields: {})", valid.join(", "));
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

/// This host's name, as a stable stream consumer name.
fn default_consumer() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "cachewarden".into())
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn check_mysql_url(url: &str) -> Result<(), String> {
    let valid = url
        .strip_prefix("mysql://")
        .or_else(|| url.strip_prefix("mariadb://"))
        .is_some_and(|rest| !rest.is_empty())
        && url.parse::<sqlx::mysql::MySqlConnectOptions>().is_ok();
    if valid {
        Ok(())
    } else {
        // The URL itself is never echoed: it may hold a password.
        Err("is not a valid MySQL URL (expected mysql://user:password@host:3306/database)".into())
    }
}

fn check_redis_url(url: &str) -> Result<(), String> {
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        // The URL itself is never echoed: it may hold a password.
        Err(_) => Err("is not a valid Redis URL (expected redis://host:6379/0 or rediss://...)".into()),
    }
}

/// `"24h"`, `"90s"`, `"1h 30m"` (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|error| format!("\"{text}\" is not a duration ({error}); write e.g. \"30s\", \"5m\", \"24h\""))?;
    if duration.is_zero() {
        return Err(format!("\"{text}\" is zero; a duration must be positive"));
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "\"{text}\" is longer than 10 years, the longest duration accepted"
        ));
    }
    Ok(duration)
}

/// The longest duration any field accepts: longer than any sensible TTL or timeout, and far from the overflow of
/// clock arithmetic and of Redis' expiry times.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The largest value each count accepts: beyond any sensible setting, inside what the runtime can allocate or the
/// server can take.
const COUNT_LIMITS: &[(&str, usize)] = &[
    ("pool_size", 1_000),
    ("max_concurrent_jobs", 1_000),
    ("audit_sample", 10_000_000),
    ("max_keys_per_message", 1_000_000),
    ("max_keys_per_pattern", 1_000_000_000),
];

/// The longest `[binlog] heartbeat`: the server's own limit is about 50 days, but a dead link must be noticed.
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

/// A log filter: levels (`trace`, `debug`, `info`, `warn`, `error`, `off`) and `target=level` directives. A bare word
/// that is not a level (`inf`, `warning`) would silently filter everything out, so it is refused.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if let Err(error) = level.parse::<tracing_subscriber::EnvFilter>() {
        return Err(format!("\"{level}\" is not a log filter: {error}"));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!(
                "\"{directive}\" is not a level: use trace, debug, info, warn, error or off (or target=level)"
            ));
        }
    }
    Ok(())
}

/// A duration, or `"none"` for keys that never expire.
pub fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Ttl::Never);
    }
    parse_duration(text).map(Ttl::Expires)
}

/// `"10%"` of the TTL, or a duration shorter than the TTL.
pub fn parse_jitter(text: &str, ttl: Ttl) -> Result<Jitter, String> {
    let text = text.trim();
    if matches!(text, "0" | "0%" | "none") {
        return Ok(Jitter::None);
    }
    let Ttl::Expires(ttl) = ttl else {
        return Err("has no effect with ttl = \"none\"; remove it".into());
    };
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent
            .trim()
            .parse()
            .map_err(|_| format!("\"{text}\" is not a percentage such as \"10%\""))?;
        if !(0.0..100.0).contains(&percent) {
            return Err(format!("\"{text}\" must be at least 0% and less than 100%"));
        }
        return Ok(Jitter::Fraction(percent / 100.0));
    }
    let jitter = parse_duration(text)?;
    if jitter >= ttl {
        return Err(format!(
            "\"{text}\" must be shorter than the TTL ({})",
            crate::words::duration(ttl)
        ));
    }
    Ok(Jitter::Fixed(jitter))
}

/// Bytes: an integer, or a string such as `"100KiB"`, `"1MiB"`, `"64kB"`.
pub fn parse_size(raw: &IntOrString) -> Result<usize, String> {
    let text = match raw {
        IntOrString::Int(n) if *n > 0 => return Ok(*n as usize),
        IntOrString::Int(n) => return Err(format!("{n} must be a positive number of bytes")),
        IntOrString::String(text) => text.trim(),
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        _ => {
            return Err(format!(
                "\"{text}\" is not a size; write e.g. 102400, \"100KiB\" or \"1MiB\""
            ));
        }
    };
    match digits.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n * multiplier),
        _ => Err(format!(
            "\"{text}\" is not a size; write e.g. 102400, \"100KiB\" or \"1MiB\""
        )),
    }
}

fn parse_count(raw: &IntOrString) -> Result<usize, String> {
    let n = match raw {
        IntOrString::Int(n) => *n,
        IntOrString::String(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("\"{text}\" is not a whole number"))?,
    };
    if n < 1 {
        return Err(format!("{n} must be at least 1"));
    }
    Ok(n as usize)
}

/// A 6-field cron (`sec min hour day-of-month month day-of-week`, UTC), a 5-field crontab line (seconds = 0), a
/// croner nickname (`@hourly`), or `every <duration>` where the duration divides a minute, an hour or a day evenly.
///
/// Parsed exactly as tokio-cron-scheduler parses it (seconds required, day-of-month AND day-of-week), so the fire
/// times `cachewarden jobs` prints are the ones the daemon uses.
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let trimmed = text.trim();
    let cron = if let Some(every) = trimmed.strip_prefix("every ") {
        every_to_cron(every.trim())?
    } else if let Some(alias) = trimmed.strip_prefix('@') {
        // crontab's nicknames, with the seconds field our schedules carry.
        match alias.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 0 1 1 *".to_string(),
            "monthly" => "0 0 0 1 * *".to_string(),
            "weekly" => "0 0 0 * * 0".to_string(),
            "daily" | "midnight" => "0 0 0 * * *".to_string(),
            "hourly" => "0 0 * * * *".to_string(),
            _ => {
                return Err(format!(
                    "\"{text}\" is not a cron nickname: use @yearly, @annually, @monthly, @weekly, @daily, @midnight \
                     or @hourly"
                ));
            }
        }
    } else {
        match trimmed.split_whitespace().count() {
            5 => format!("0 {trimmed}"),
            6 => trimmed.to_string(),
            n => {
                return Err(format!(
                    "\"{text}\" has {n} fields; a cron schedule has 6 (sec min hour day month weekday) or 5 (crontab)"
                ));
            }
        }
    };
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&cron)
        .map_err(|error| format!("\"{text}\" is not a valid cron schedule: {error}"))?;
    if let Err(error) = parsed.find_next_occurrence(&chrono::Utc::now(), false) {
        return Err(format!("\"{text}\" never fires: {error}"));
    }
    Ok(Schedule {
        written: text.to_string(),
        cron,
        parsed,
    })
}

fn every_to_cron(every: &str) -> Result<String, String> {
    let period = parse_duration(every)?;
    let secs = period.as_secs();
    let uneven = || {
        format!(
            "\"every {every}\" cannot fire at even wall-clock times: use a period that divides a minute, an hour or a \
             day (30s, 5m, 2h, 1d), or a cron expression"
        )
    };
    if period.subsec_nanos() != 0 {
        return Err(uneven());
    }
    Ok(match secs {
        1 => "* * * * * *".into(),
        s if s < 60 && 60 % s == 0 => format!("*/{s} * * * * *"),
        60 => "0 * * * * *".into(),
        s if s % 60 == 0 && s < 3600 && 3600 % s == 0 => format!("0 */{} * * * *", s / 60),
        3600 => "0 0 * * * *".into(),
        s if s % 3600 == 0 && s < 86_400 && 86_400 % s == 0 => format!("0 0 */{} * * *", s / 3600),
        86_400 => "0 0 0 * * *".into(),
        _ => return Err(uneven()),
    })
}

/// Finds lines for problems: TOML keeps spans only while parsing, so fields are located by a light scan of the text.
/// Built once per file, so that locating each of many problems costs only its own table's text.
pub struct LineIndex {
    source: String,
    /// Byte offset of every newline, in order.
    newlines: Vec<usize>,
    /// Byte ranges of each `[[name]]` table by name, header included.
    tables: std::collections::HashMap<String, Vec<Range<usize>>>,
}

impl LineIndex {
    pub fn new(source: &str) -> Self {
        // (offset, name of an array-of-tables header `[[name]]`, if it is one)
        let mut headers: Vec<(usize, Option<String>)> = Vec::new();
        let mut offset = 0;
        for line in source.split_inclusive('\n') {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                let name = trimmed
                    .strip_prefix("[[")
                    .and_then(|rest| rest.split_once("]]"))
                    .map(|(name, _)| name.trim().to_string());
                headers.push((offset, name));
            }
            offset += line.len();
        }
        let mut tables: std::collections::HashMap<String, Vec<Range<usize>>> = std::collections::HashMap::new();
        for (i, (start, name)) in headers.iter().enumerate() {
            if let Some(name) = name {
                let end = headers.get(i + 1).map_or(source.len(), |(next, _)| *next);
                tables.entry(name.clone()).or_default().push(*start..end);
            }
        }
        Self {
            source: source.to_string(),
            newlines: source.match_indices('\n').map(|(at, _)| at).collect(),
            tables,
        }
    }

    fn line_at(&self, byte: usize) -> usize {
        self.newlines.partition_point(|&newline| newline < byte) + 1
    }

    /// The line of `field = ...` inside `range`, or of the range's first line when `field` is `None`.
    fn field_in(&self, range: Range<usize>, field: Option<&str>) -> Option<usize> {
        let Some(field) = field else {
            return Some(self.line_at(range.start));
        };
        let mut offset = range.start;
        for line in self.source[range.clone()].split_inclusive('\n') {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(field)
                && rest.trim_start().starts_with('=')
            {
                return Some(self.line_at(offset));
            }
            offset += line.len();
        }
        None
    }

    fn job_field_line(&self, index: usize, field: Option<&str>) -> Option<usize> {
        self.table_field_line("warm", index, field)
    }

    /// The line of `field` in the `index`th `[[name]]` table (of its header when `field` is `None` or absent).
    pub fn table_field_line(&self, name: &str, index: usize, field: Option<&str>) -> Option<usize> {
        let range = self.tables.get(name)?.get(index)?.clone();
        self.field_in(range.clone(), field)
            .or_else(|| self.field_in(range, None))
    }

    /// The line of `key` in `[section]` (or at the top level when `section` is `None`).
    pub fn key_line(&self, section: Option<&str>, key: &str) -> Option<usize> {
        let Some(section) = section else {
            let header = format!("[{key}]");
            let top_end = self.source.find("\n[").map_or(self.source.len(), |i| i + 1);
            return self
                .source
                .lines()
                .position(|line| line.trim() == header)
                .map(|i| i + 1)
                .or_else(|| self.field_in(0..top_end, Some(key)));
        };
        let header = format!("[{section}]");
        let mut offset = 0;
        let mut start = None;
        for line in self.source.split_inclusive('\n') {
            let trimmed = line.trim();
            if let Some(begin) = start {
                if trimmed.starts_with('[') {
                    return self.field_in(begin..offset, Some(key)).or(Some(self.line_at(begin)));
                }
            } else if trimmed == header {
                start = Some(offset);
            }
            offset += line.len();
        }
        start.and_then(|begin| {
            self.field_in(begin..self.source.len(), Some(key))
                .or(Some(self.line_at(begin)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forms_become_even_cron() {
        assert_eq!(every_to_cron("30s").unwrap(), "*/30 * * * * *");
        assert_eq!(every_to_cron("5m").unwrap(), "0 */5 * * * *");
        assert_eq!(every_to_cron("1m").unwrap(), "0 * * * * *");
        assert_eq!(every_to_cron("1h").unwrap(), "0 0 * * * *");
        assert_eq!(every_to_cron("6h").unwrap(), "0 0 */6 * * *");
        assert_eq!(every_to_cron("1d").unwrap(), "0 0 0 * * *");
        for uneven in ["7m", "45s", "5h", "2d", "1500ms"] {
            assert!(every_to_cron(uneven).is_err(), "{uneven} should be refused");
        }
    }

    #[test]
    fn crontab_lines_gain_a_seconds_field() {
        let schedule = parse_schedule("*/15 * * * *").unwrap();
        assert_eq!(schedule.cron, "0 */15 * * * *");
        let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:07:00Z")
            .unwrap()
            .to_utc();
        let next: Vec<String> = schedule.upcoming(start, 3).iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            next,
            [
                "2026-01-01T00:15:00+00:00",
                "2026-01-01T00:30:00+00:00",
                "2026-01-01T00:45:00+00:00"
            ]
        );
    }

    #[test]
    fn bad_cron_carries_croners_message() {
        let error = parse_schedule("0 61 * * * *").unwrap_err();
        assert!(error.contains("is not a valid cron schedule: "), "{error}");
        assert!(parse_schedule("1 2 3").unwrap_err().contains("has 3 fields"));
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!(parse_size(&IntOrString::Int(512)).unwrap(), 512);
        assert_eq!(parse_size(&IntOrString::String("100KiB".into())).unwrap(), 102_400);
        assert_eq!(parse_size(&IntOrString::String("2MB".into())).unwrap(), 2_000_000);
        assert!(parse_size(&IntOrString::String("lots".into())).is_err());
        assert!(parse_size(&IntOrString::Int(0)).is_err());
    }

    #[test]
    fn jitter_is_a_percentage_or_a_shorter_duration() {
        let ttl = Ttl::Expires(Duration::from_secs(3600));
        assert_eq!(parse_jitter("10%", ttl).unwrap(), Jitter::Fraction(0.1));
        assert_eq!(
            parse_jitter("5m", ttl).unwrap(),
            Jitter::Fixed(Duration::from_secs(300))
        );
        assert!(parse_jitter("2h", ttl).is_err());
        assert!(parse_jitter("150%", ttl).is_err());
        assert!(parse_jitter("10%", Ttl::Never).is_err());
    }

    #[test]
    fn line_index_finds_job_fields() {
        let source = "[mysql]\nurl = \"x\"\n\n[[warm]]\nname = \"a\"\n\n[[warm]]\nname = \"b\"\nschedule = \"x\"\n";
        let lines = LineIndex::new(source);
        assert_eq!(lines.job_field_line(1, Some("schedule")), Some(9));
        assert_eq!(lines.job_field_line(0, Some("schedule")), Some(4));
        assert_eq!(lines.key_line(Some("mysql"), "url"), Some(2));
    }
}
