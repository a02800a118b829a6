//! Loading `jobs.toml`: where the file is, what it may contain, and the typed [`Config`] the rest of the daemon uses.
//!
//! `raw` mirrors the TOML, `validate` turns it into types and collects every problem at once, `error` renders them.
//! Nothing here connects anywhere; `cachewarden check --connect` does that in `cli::check`.
//!
//! # Environment overrides
//! `CACHEWARDEN_<SECTION>__<FIELD>` (two underscores between section and field) sets `<field>` in `[<section>]`,
//! for the sections `[mysql]`, `[redis]`, `[defaults]` and `[daemon]`, and wins over the file. Names are
//! case-insensitive; values are taken as strings (numbers are parsed from them). `CACHEWARDEN_MYSQL__URL` and
//! `CACHEWARDEN_REDIS__URL` keep secrets out of the file.

mod error;
mod lines;
pub(crate) mod parse;
mod raw;
mod secrets;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use crate::pure::model::{ChangeRule, OnGap, Projection};
pub use error::{ConfigError, Problem};
pub(crate) use lines::LineIndex;
pub use secrets::{AdminTls, AdminToken, SecretUrl};
pub(crate) use validate::{DEFAULT_ADMIN_LISTEN, server_address, this_process};

use crate::pure::model::WarmJob;

/// Derived rules re-run an aggregate job at most this often by default: as `[[on_change]] debounce`.
pub(crate) const DEFAULT_DERIVE_DEBOUNCE: Duration = Duration::from_secs(30);

/// A join lookup finding more keys than this re-runs the job: past ten thousand keys, one streamed warm run costs
/// the database less than refreshing them key by key.
pub(crate) const DEFAULT_MAX_FANOUT: usize = 10_000;

/// What derived rules are made with when no binlog source says.
pub(crate) fn default_derive_settings() -> crate::pure::derive::Settings {
    crate::pure::derive::Settings {
        debounce: DEFAULT_DERIVE_DEBOUNCE,
        max_fanout: DEFAULT_MAX_FANOUT,
    }
}

/// The source of `sources` named `name` (`None`: the only one).
pub(crate) fn source_named<'s>(sources: &'s [BinlogSettings], name: Option<&str>) -> Option<&'s BinlogSettings> {
    match name {
        Some(name) => sources.iter().find(|source| &*source.name == name),
        None if sources.len() == 1 => sources.first(),
        None => None,
    }
}

/// What `job`'s derived rules are made with: its source's settings (of `sources`), else the defaults.
pub(crate) fn derive_settings_of(sources: &[BinlogSettings], job: &WarmJob) -> crate::pure::derive::Settings {
    source_named(sources, job.source.as_deref()).map_or_else(default_derive_settings, BinlogSettings::derive_settings)
}

/// The settings `job` reads with: its source's `read_url` (of `sources`) with `mysql`'s other settings, else `mysql`.
pub(crate) fn read_settings_of(mysql: &MysqlSettings, sources: &[BinlogSettings], job: &WarmJob) -> MysqlSettings {
    let source = job.source.as_deref().and_then(|name| source_named(sources, Some(name)));
    source
        .and_then(|source| source.reads(mysql))
        .unwrap_or_else(|| mysql.clone())
}

/// The database `job`'s unqualified tables are in: the one the URL it reads names (see [`read_settings_of`]).
pub(crate) fn home_database_of(mysql: &MysqlSettings, sources: &[BinlogSettings], job: &WarmJob) -> String {
    read_settings_of(mysql, sources, job).database().unwrap_or_default()
}

/// Where the configuration lives when neither `--config` nor `$CACHEWARDEN_CONFIG` says otherwise.
pub(crate) const DEFAULT_PATH: &str = "/etc/cachewarden/jobs.toml";

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The systemd credentials directory its URLs may have come from ([`find_credentials`]); a reload reads it again.
    pub credentials: Option<PathBuf>,
    /// `[mysql]`
    pub mysql: MysqlSettings,
    /// `[redis]`
    pub redis: RedisSettings,
    /// `[daemon]`
    pub daemon: DaemonSettings,
    /// `[admin]`
    pub admin: AdminSettings,
    /// `[channel]`
    pub channel: ChannelSettings,
    /// `[[warm]]` jobs, in file order.
    pub jobs: Vec<WarmJob>,
    /// The binlog sources followed: `[binlog]` (when present and enabled) or each enabled `[[binlog]]`.
    pub binlogs: Vec<BinlogSettings>,
    /// `[[on_change]]` rules, in file order, then the rules derived for jobs with `derive_rules` (see `derive`).
    pub rules: Vec<ChangeRule>,
    /// `[ha]`, when enabled.
    pub ha: Option<HaSettings>,
    /// `[misses]`, when enabled.
    pub misses: Option<MissesSettings>,
    /// The server's foreign keys, once read ([`Config::learn_schema`]); empty from the file alone.
    pub schema: std::sync::Arc<crate::pure::derive::schema::Schema>,
}

impl Config {
    /// Takes in what the server says of its tables (their foreign keys) and derives the rules again with it, so
    /// that changes a foreign key cascades below the binlog reach the jobs that follow their SQL.
    pub(crate) fn learn_schema(&mut self, schema: std::sync::Arc<crate::pure::derive::schema::Schema>) {
        self.schema = schema;
        if !self.binlogs.is_empty() {
            self.rules = crate::pure::derive::effective_rules(&self.explicit_rules(), &self.coverage(), &self.jobs);
        }
    }

    /// The databases the queries of the jobs that read the server of `source` read (`None`: `[mysql]`'s), each once
    /// (what the schema is read for).
    pub fn databases_read(&self, source: Option<&str>) -> Vec<String> {
        let server = (source.and_then(|name| self.source_of(Some(name))))
            .and_then(|reader| reader.reads(&self.mysql))
            .unwrap_or_else(|| self.mysql.clone());
        let mut databases: Vec<String> = server.database().into_iter().collect();
        let reads_there = |job: &WarmJob| self.reader_of(job).map(|reader| &*reader.name) == source;
        for coverage in self.coverage() {
            if !self.jobs.iter().any(|job| job.name == coverage.job && reads_there(job)) {
                continue;
            }
            for table in &coverage.tables {
                if let Some((database, _)) = table.table.split_once('.')
                    && !databases.iter().any(|known| known == database)
                {
                    databases.push(database.to_string());
                }
            }
        }
        databases
    }

    /// The `[[on_change]]` rules of the file (the derived ones left out).
    fn explicit_rules(&self) -> Vec<ChangeRule> {
        self.rules
            .iter()
            .filter(|rule| rule.derived_from.is_none())
            .cloned()
            .collect()
    }

    /// Every job's tables and how their changes reach its keys (explicit rules, derived ones, or none).
    pub(crate) fn coverage(&self) -> Vec<crate::pure::derive::JobCoverage> {
        let explicit = self.explicit_rules();
        crate::pure::derive::cover(
            &self.jobs,
            &explicit,
            &|job: &WarmJob| home_database_of(&self.mysql, &self.binlogs, job),
            &|job: &WarmJob| derive_settings_of(&self.binlogs, job),
            &self.schema,
        )
    }

    /// The rules that follow the binlog source `binlog`'s changes (those naming it, and with one source, all).
    pub(crate) fn rules_of(&self, binlog: &BinlogSettings) -> Arc<[ChangeRule]> {
        (self.rules.iter())
            .filter(|rule| rule.source.as_ref().is_none_or(|source| *source == binlog.name))
            .cloned()
            .collect()
    }

    /// The source whose server holds an `[[on_change]]` rule's table when it is not `[mysql]`'s (a rule of another
    /// source: `check --connect` holds it against that server). Derived rules are held where their jobs read
    /// (their source's `read_url`, else `[mysql]`).
    pub(crate) fn elsewhere(&self, rule: &ChangeRule) -> Option<&BinlogSettings> {
        let source = self
            .source_of(rule.source.as_deref())
            .filter(|_| rule.derived_from.is_none())?;
        (server_address(&source.url) != server_address(&self.mysql.url)).then_some(source)
    }

    /// Each source whose jobs read a server of their own (`read_url`), with the settings they read it with.
    pub fn readers(&self) -> Vec<(Arc<str>, MysqlSettings)> {
        (self.binlogs.iter())
            .filter_map(|source| Some((source.name.clone(), source.reads(&self.mysql)?)))
            .collect()
    }

    /// The source whose `read_url` `job` reads (`None`: it reads `[mysql]`).
    pub(crate) fn reader_of(&self, job: &WarmJob) -> Option<&BinlogSettings> {
        self.source_of(Some(job.source.as_deref()?))
            .filter(|source| source.read_url.is_some())
    }

    /// The settings `job` reads with: its source's `read_url`, else `[mysql]`.
    pub fn read_settings(&self, job: &WarmJob) -> MysqlSettings {
        read_settings_of(&self.mysql, &self.binlogs, job)
    }

    /// The binlog source named `name` (`None`: the only one).
    pub(crate) fn source_of(&self, name: Option<&str>) -> Option<&BinlogSettings> {
        source_named(&self.binlogs, name)
    }

    /// Whether the instances under `[ha]` share the binlog sources, each leased on its own (`ops::share`): with
    /// several sources. With one, the leader follows it.
    pub(crate) fn shares_sources(&self) -> bool {
        self.ha.is_some() && self.binlogs.len() > 1
    }

    /// Where the instances coordinate the pieces of partitioned warm runs: under `[ha]` beside its lease (`<[ha]
    /// key>:pieces:{<job>}`), else `cachewarden:pieces:{<job>}`.
    pub(crate) fn pieces_prefix(&self) -> &str {
        self.ha.as_ref().map_or("cachewarden", |ha| ha.key.as_str())
    }

    /// This instance's name among those sharing the Redis: `[ha] instance`, else host:pid.
    pub(crate) fn instance_name(&self) -> String {
        self.ha.as_ref().map_or_else(this_process, |ha| ha.instance.clone())
    }

    /// What invalidation messages may do: the daemon applies it to each message, and `cachewarden invalidate`
    /// checks with it before publishing.
    pub(crate) fn channel_policy(&self) -> crate::pure::plan::Policy {
        crate::pure::plan::Policy {
            allow: self.channel.allow.clone(),
            max_keys_per_message: self.channel.max_keys_per_message,
            max_message_bytes: self.channel.max_message_bytes,
            jobs: self.jobs.iter().map(|job| job.name.to_string()).collect(),
        }
    }

    /// The job named `name`, if any.
    pub fn job(&self, name: &str) -> Option<&WarmJob> {
        self.jobs.iter().find(|job| &*job.name == name)
    }
}

/// `[mysql]`: the database warm queries read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    pub url: SecretUrl,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    /// TLS mode; `None` leaves it to the URL's `ssl-mode` parameter (default: preferred).
    pub ssl_mode: Option<SslMode>,
    /// CA bundle to verify the server with (the RDS bundle is not among the system roots).
    pub ssl_ca: Option<PathBuf>,
}

impl MysqlSettings {
    /// The database the URL names, where unqualified tables live.
    pub fn database(&self) -> Option<String> {
        self.url
            .expose()
            .parse::<sqlx::mysql::MySqlConnectOptions>()
            .ok()?
            .get_database()
            .map(str::to_string)
    }
}

/// MySQL TLS modes, as the MySQL client names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// `[redis]`: the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: SecretUrl,
    pub connect_timeout: Duration,
    /// PEM CA to verify a `rediss://` server with, instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Versioned writes that refuse to install data older than a later invalidation (see `cache`).
    pub stale_set_protection: bool,
    /// `cluster = true`: the server is a Redis Cluster (ElastiCache cluster mode enabled); `url` is a seed node.
    pub cluster: bool,
    /// More seed nodes for a cluster (`urls`), tried after `url`.
    pub seeds: Vec<SecretUrl>,
}

/// `[daemon]`: process-wide limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// At most this many warm jobs query the database at once.
    pub max_concurrent_jobs: usize,
    /// How long in-flight work may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// A tracing filter (`info`, `cachewarden=debug`); `RUST_LOG` wins.
    pub log_level: Option<String>,
    /// How log lines are written; `--log-format` wins.
    pub log_format: LogFormat,
    /// The continuous audit checks every key of every job once per this period (`None`: off).
    pub audit_period: Option<Duration>,
    /// Whether the continuous audit repairs what it finds (refresh or delete, as a binlog change would).
    pub audit_repair: bool,
    /// Keys per slice of the continuous audit's reads (a one-row-per-key job is read in slices spread over its share
    /// of the period).
    pub audit_slice: usize,
    /// `audit_sample` was set: it is no longer used (said at start).
    pub audit_sample_ignored: bool,
    /// The Redis stream refused messages and rule errors are kept in (`None`: off).
    pub dead_letter: Option<String>,
    /// About how many dead letters the stream keeps.
    pub dead_letter_length: usize,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for journald and CloudWatch.
    Json,
}

/// `[channel]`: the invalidation channel applications publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSettings {
    /// Listen at all.
    pub enabled: bool,
    /// The pub/sub channel (the seed's `cache_invalidation`).
    pub name: String,
    /// Lossless mode: read this stream with a consumer group instead of the pub/sub channel.
    pub stream: Option<StreamSettings>,
    /// Glob patterns (`*` only) that messages may touch; by default the key templates of the jobs.
    pub allow: Vec<String>,
    /// What to do after pub/sub lost messages (a reconnect).
    pub on_gap: OnGap,
    /// Keys, patterns, refreshes and warms in one message.
    pub max_keys_per_message: usize,
    /// A pattern delete stops after this many keys.
    pub max_keys_per_pattern: u64,
    /// Larger payloads are refused.
    pub max_message_bytes: usize,
}

/// Streams mode settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// The stream key.
    pub name: String,
    /// The consumer group (created at the stream's end if missing).
    pub group: String,
    /// This instance's consumer name: stable across restarts, so its own pending entries are found again.
    pub consumer: String,
    /// Entries pending this long at another (dead) consumer are claimed.
    pub claim_idle: Duration,
}

/// `[binlog]`: following the MySQL binlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogSettings {
    /// The source's name (`main` for a `[binlog]` table without one): rules and jobs name it in `source`, metrics
    /// carry it as the `source` label.
    pub name: Arc<str>,
    /// How logs, readiness and the daemon's tasks name it: `binlog` for a `[binlog]` table, `binlog orders` for a
    /// source of `[[binlog]]`.
    pub label: Arc<str>,
    /// This replica's server id; unique among the server's replicas.
    pub server_id: u32,
    /// When `server_id` is not set: the instance identity it was derived from.
    pub server_id_from: Option<String>,
    /// The replication connection (a user with REPLICATION SLAVE, REPLICATION CLIENT); `[mysql] url` by default.
    pub url: SecretUrl,
    /// Where to start when there is no checkpoint.
    pub start: BinlogStart,
    /// Where the checkpoint lives.
    pub checkpoint: CheckpointStore,
    /// The server sends a heartbeat this often when idle; silence for twice as long means a dead connection.
    pub heartbeat: Duration,
    /// Recovery after a gap (purged position, lost checkpoint).
    pub on_gap: OnGap,
    /// The default of `[[warm]] derive_rules`: follow the rules derived from each job's query.
    pub derive_rules: bool,
    /// How often a derived rule re-runs a job at most (aggregates, whole results).
    pub derive_debounce: Duration,
    /// A derived join rule finding more keys than this in one batch re-runs the job instead.
    pub max_fanout: usize,
    /// How long a refresh whose read does not show its change (a lagging reader endpoint) is read again.
    pub refresh_wait: Duration,
    /// Where such a refresh is read once more after `refresh_wait` (the writer), instead of leaving its key missing.
    pub refresh_fallback: Option<SecretUrl>,
    /// Where the jobs naming this source read (warm runs, refreshes, audits, fills), with `[mysql]`'s other settings;
    /// `None`: `[mysql] url`. Only with several sources.
    pub read_url: Option<SecretUrl>,
}

impl BinlogSettings {
    /// The settings its jobs read with: its `read_url` with `mysql`'s other settings (`None`: they read `mysql`).
    pub(crate) fn reads(&self, mysql: &MysqlSettings) -> Option<MysqlSettings> {
        let url = self.read_url.clone()?;
        Some(MysqlSettings { url, ..mysql.clone() })
    }

    /// What derived rules are made with.
    pub(crate) fn derive_settings(&self) -> crate::pure::derive::Settings {
        crate::pure::derive::Settings {
            debounce: self.derive_debounce,
            max_fanout: self.max_fanout,
        }
    }
}

/// Where the binlog reader starts without a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinlogStart {
    /// The server's current position (`SHOW MASTER STATUS`).
    Current,
    /// An explicit file and position.
    At { file: String, pos: u64 },
}

/// Where the binlog position is saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStore {
    /// A Redis key.
    Redis(String),
    /// A file (written atomically).
    File(PathBuf),
}

/// `[misses]`: keys Redis reports missing (keyspace notifications, class `m`), counted per job and, for jobs with
/// `fill_on_miss`, loaded through their `refresh_query` (see `source::misses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissesSettings {
    /// Keys loaded per second at most, over every job: what a scan of absent ids can cost the database.
    pub max_fills_per_second: usize,
    /// How long a key whose row does not exist is not read again.
    pub negative_ttl: Duration,
}

/// `[ha]`: two or more instances, one active, by a lease in Redis (see `ha`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// How long a lease lasts unless renewed; a dead leader is replaced within this plus one renew interval.
    pub lease_ttl: std::time::Duration,
    /// The Redis key that holds the lease.
    pub key: String,
    /// This instance's name, as `status` and the other instances show it.
    pub instance: String,
}

/// `[admin]`: the HTTP endpoint for metrics, health and manual triggers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
    /// The bearer token POST routes (and, listening beyond loopback, every route but the probes) require.
    pub token: Option<AdminToken>,
    /// `tls_cert` and `tls_key`: the endpoint serves HTTPS only.
    pub tls: Option<AdminTls>,
}

/// The configuration path: `--config`, else `$CACHEWARDEN_CONFIG`, else [`DEFAULT_PATH`].
pub(crate) fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("CACHEWARDEN_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Reads and validates the file at `path`, with overrides from the systemd credentials in `credentials` (see
/// [`find_credentials`]) and from the process environment.
pub fn load(path: &Path, credentials: Option<&Path>) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    validate::validate(path, &source, None, credentials)
}

/// Where a command finds the systemd credentials (`mysql-url`, `redis-url`).
#[derive(Debug)]
pub(crate) enum Credentials {
    /// None: the URLs come from the file and the environment.
    None,
    /// This directory: from `--credentials`, from `$CREDENTIALS_DIRECTORY`, or beside the configuration file.
    Found { directory: PathBuf, beside_config: bool },
    /// `credentials/` beside the configuration file exists but this user cannot read it.
    Unreadable { directory: PathBuf, error: std::io::Error },
}

impl Credentials {
    pub(crate) fn directory(&self) -> Option<&Path> {
        match self {
            Credentials::Found { directory, .. } => Some(directory),
            _ => None,
        }
    }
}

/// The credentials directory: `--credentials DIR` (`flag`), else `$CREDENTIALS_DIRECTORY` (systemd sets it for the
/// service), else `credentials/` beside the configuration file when there is one (`/etc/cachewarden/credentials`
/// for `/etc/cachewarden/jobs.toml`), so a command run from a shell talks to the servers the daemon talks to rather
/// than to URLs left in the file.
pub(crate) fn find_credentials(flag: Option<PathBuf>, config: &Path) -> Credentials {
    if let Some(directory) = flag.or_else(|| std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from)) {
        return Credentials::Found {
            directory,
            beside_config: false,
        };
    }
    let directory = config.parent().unwrap_or(Path::new(".")).join("credentials");
    if !directory.is_dir() {
        return Credentials::None;
    }
    match std::fs::read_dir(&directory) {
        Ok(_) => Credentials::Found {
            directory,
            beside_config: true,
        },
        Err(error) => Credentials::Unreadable { directory, error },
    }
}

/// Validates `source` as if read from `path`, with `env` standing in for the process environment and `credentials`
/// for `$CREDENTIALS_DIRECTORY`.
pub(crate) fn load_str_with(
    path: &Path,
    source: &str,
    env: HashMap<String, String>,
    credentials: Option<&Path>,
) -> Result<Config, ConfigError> {
    validate::validate(path, source, Some(env), credentials)
}

/// Validates `source` as if read from `path`, with `env` standing in for the process environment.
pub fn load_str(path: &Path, source: &str, env: HashMap<String, String>) -> Result<Config, ConfigError> {
    load_str_with(path, source, env, None)
}
