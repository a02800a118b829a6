//! `[mysql]`, `[redis]` and `[crypto]`: the servers' URLs (from the file, credentials or the environment) and TLS,
//! and the keyring for encrypted columns.

use super::*;

/// The credential that holds the key file for encrypted columns (it overrides `[crypto] key_file`).
pub(super) const KEY_CREDENTIAL: &str = "cache-key";

/// A small pool: warm jobs are few and the concurrency limit is small.
pub(super) const DEFAULT_POOL_SIZE: u32 = 4;

/// Long enough for a TLS handshake across an AZ, short enough that `--once` fails fast.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Context {
    pub(super) fn mysql(&mut self, raw: RawMysql) -> Option<MysqlSettings> {
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

    pub(super) fn redis(&mut self, raw: RawRedis) -> Option<RedisSettings> {
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
        let cluster = self.flag("redis", "cluster", raw.cluster, false);
        let mut seeds = Vec::new();
        for seed in raw.urls.unwrap_or_default() {
            match check_redis_url(&seed) {
                Ok(()) => seeds.push(SecretUrl::new(seed)),
                Err(message) => self.field_problem("redis", "urls", message),
            }
        }
        if !seeds.is_empty() && !cluster {
            self.field_problem(
                "redis",
                "urls",
                "lists a Redis Cluster's seed nodes: set `cluster = true` too, or use `url` alone".into(),
            );
        }
        if cluster {
            for candidate in url.iter().chain(&seeds) {
                if let Ok(info) = redis::IntoConnectionInfo::into_connection_info(candidate.expose())
                    && info.redis_settings().db() != 0
                {
                    let field = if candidate == url.as_ref().unwrap_or(candidate) {
                        "url"
                    } else {
                        "urls"
                    };
                    self.field_problem(
                        "redis",
                        field,
                        format!(
                            "selects database {}, but a Redis Cluster has only database 0: drop the /{} from the URL",
                            info.redis_settings().db(),
                            info.redis_settings().db()
                        ),
                    );
                }
            }
        }
        Some(RedisSettings {
            url: url?,
            connect_timeout: connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ca_file,
            stale_set_protection,
            cluster,
            seeds,
        })
    }

    /// The keyring from `[crypto]` (or the credential `cache-key`); `Err` says why there is none. A key file that is
    /// named but unreadable or malformed is a problem even if no job encrypts yet.
    pub(super) fn keyring(
        &mut self,
        raw: RawCrypto,
        credentials: Option<&Path>,
    ) -> Result<Arc<crate::pure::crypto::Keyring>, String> {
        let (path, field) = match credential_or_file(credentials, KEY_CREDENTIAL, raw.key_file) {
            Some((path, true)) => (path, format!("credential {KEY_CREDENTIAL}")),
            Some((path, false)) => (path, "key_file".to_string()),
            None => {
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
                crate::pure::crypto::Keyring::parse(&text, raw.write_key.as_deref())
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
}

/// The file a secret is read from: the systemd credential `credential` when the service has it (it overrides the
/// configuration), else the configured `file`; and whether it is the credential.
pub(super) fn credential_or_file(
    credentials: Option<&Path>,
    credential: &str,
    file: Option<String>,
) -> Option<(std::path::PathBuf, bool)> {
    match credentials
        .map(|directory| directory.join(credential))
        .filter(|path| path.exists())
    {
        Some(path) => Some((path, true)),
        None => file.map(|file| (std::path::PathBuf::from(file), false)),
    }
}

pub(super) fn check_mysql_url(url: &str) -> Result<(), String> {
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

pub(super) fn check_redis_url(url: &str) -> Result<(), String> {
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        // The URL itself is never echoed: it may hold a password.
        Err(_) => Err("is not a valid Redis URL (expected redis://host:6379/0 or rediss://...)".into()),
    }
}
