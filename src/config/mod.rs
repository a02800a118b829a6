//! Loading `jobs.toml`: where the file is, what it may contain, and the typed [`Config`] the rest of the daemon uses.
//!
//! `raw` mirrors the TOML, `validate` turns it into types and collects every problem at once, `error` renders them.
//! Nothing here connects anywhere; `cachewarden check --connect` does that in `app`.
//!
//! # Environment overrides
//! `CACHEWARDEN_<SECTION>__<FIELD>` (two underscores between section and field) sets `<field>` in `[<section>]`,
//! for the sections `[mysql]`, `[redis]`, `[defaults]` and `[daemon]`, and wins over the file. Names are
//! case-insensitive; values are taken as strings (numbers are parsed from them). `CACHEWARDEN_MYSQL__URL` and
//! `CACHEWARDEN_REDIS__URL` keep secrets out of the file.

mod error;
mod raw;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, Problem};
pub use validate::{parse_duration, parse_schedule};

use crate::model::WarmJob;

/// Where the configuration lives when neither `--config` nor `$CACHEWARDEN_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/cachewarden/jobs.toml";

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[mysql]`
    pub mysql: MysqlSettings,
    /// `[redis]`
    pub redis: RedisSettings,
    /// `[daemon]`
    pub daemon: DaemonSettings,
    /// `[[warm]]` jobs, in file order.
    pub jobs: Vec<WarmJob>,
}

impl Config {
    /// The job named `name`, if any.
    pub fn job(&self, name: &str) -> Option<&WarmJob> {
        self.jobs.iter().find(|job| &*job.name == name)
    }
}

/// `[mysql]`: the database warm queries read.
#[derive(Debug, Clone)]
pub struct MysqlSettings {
    pub url: SecretUrl,
    pub pool_size: u32,
    pub connect_timeout: Duration,
}

/// `[redis]`: the cache.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: SecretUrl,
    pub connect_timeout: Duration,
}

/// `[daemon]`: process-wide limits.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// At most this many warm jobs query the database at once.
    pub max_concurrent_jobs: usize,
}

/// A connection URL that may carry a password. `Display` and `Debug` hide the password; only `expose` reveals it,
/// and only connection code calls that.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: String) -> Self {
        Self(url)
    }

    /// The URL with its password, for handing to a client library. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://") else {
            return url.clone();
        };
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@') else {
            return url.clone();
        };
        let userinfo = &rest[..at];
        let user = match userinfo.find(':') {
            Some(colon) => format!("{}:***", &userinfo[..colon]),
            // A lone user name (`mysql://root@host`) is no secret; a password always follows a colon.
            None => userinfo.to_string(),
        };
        format!("{}{}@{}", &url[..scheme_end + 3], user, &rest[at + 1..])
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

/// The configuration path: `--config`, else `$CACHEWARDEN_CONFIG`, else [`DEFAULT_PATH`].
pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("CACHEWARDEN_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Reads and validates the file at `path`, with overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    validate::validate(path, &source, None)
}

/// Validates `source` as if read from `path`, with `env` standing in for the process environment.
pub fn load_str(
    path: &Path,
    source: &str,
    env: HashMap<String, String>,
) -> Result<Config, ConfigError> {
    validate::validate(path, source, Some(env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            (
                "mysql://app:s3cret@db:3306/shop",
                "mysql://app:***@db:3306/shop",
            ),
            ("redis://:tok@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "rediss://user:pw@cache:6379",
                "rediss://user:***@cache:6379",
            ),
            ("mysql://root@db/shop", "mysql://root@db/shop"),
            ("redis://cache:6379/0", "redis://cache:6379/0"),
            ("mysql://app:p@ss@db/shop", "mysql://app:***@db/shop"),
        ];
        for (url, shown) in cases {
            let secret = SecretUrl::new(url.into());
            assert_eq!(secret.to_string(), shown);
            assert!(!format!("{secret:?}").contains("s3cret"));
        }
    }
}
