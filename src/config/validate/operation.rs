//! `[daemon]`, `[admin]`, `[ha]` and `[misses]`: how the process runs, where its admin endpoint listens, the HA lease,
//! and what it does with the keys Redis reports missing.

use super::*;

/// A lease lasts this long unless renewed (renewed every third of it).
pub(super) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The shortest lease: renewals every third of it must survive a slow Redis reply.
pub(super) const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// Small on purpose: warming must never flood the primary.
pub(super) const DEFAULT_MAX_CONCURRENT_JOBS: usize = 2;

/// In-flight writes get this long to finish after SIGTERM; systemd's TimeoutStopSec must be longer.
pub(super) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Loopback only: the admin endpoint has no authentication, so it must not face a network by default.
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9187";
/// The credential that holds the admin token (it overrides `[admin] token_file`).
const TOKEN_CREDENTIAL: &str = "admin-token";
/// An admin token shorter than this is refused as guessable.
const MIN_TOKEN_LENGTH: usize = 16;

/// The continuous audit: every key of every job once an hour.
pub(super) const DEFAULT_AUDIT_PERIOD: Duration = Duration::from_secs(3600);
/// Keys per slice of the continuous audit: a short indexed range read, its read view gone when it ends.
pub(super) const DEFAULT_AUDIT_SLICE: usize = 10_000;
/// `[daemon] dead_letter` by default: under the daemon's own key prefix, which the documented ACL grants.
const DEFAULT_DEAD_LETTER: &str = "cachewarden:dead";
/// `[daemon] dead_letter_length` by default.
const DEFAULT_DEAD_LETTER_LENGTH: usize = 10_000;

/// `[misses] max_fills_per_second` by default: a burst of misses costs the database at most this many single-key reads
/// a second (read many keys a statement).
const DEFAULT_MAX_FILLS_PER_SECOND: usize = 1_000;
/// `[misses] negative_ttl` by default: a key whose row does not exist is not read again for this long.
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);

impl Context {
    /// `[misses]` (`None` unless enabled), and each job's `fill_on_miss` held against it (`warm`: the `[[warm]]`
    /// array as written).
    pub(super) fn misses(&mut self, raw: RawMisses, warm: Option<&toml::Value>) -> Option<MissesSettings> {
        let enabled = self.flag("misses", "enabled", raw.enabled, false);
        let max_fills_per_second = self
            .count("misses", "max_fills_per_second", raw.max_fills_per_second)
            .unwrap_or(DEFAULT_MAX_FILLS_PER_SECOND);
        if max_fills_per_second == 0 {
            self.field_problem(
                "misses",
                "max_fills_per_second",
                "must be at least 1 (leave fill_on_miss off to fill nothing)".into(),
            );
        }
        let negative_ttl = self
            .duration("misses", "negative_ttl", raw.negative_ttl)
            .unwrap_or(DEFAULT_NEGATIVE_TTL);
        if !enabled {
            let items = match warm {
                Some(toml::Value::Array(items)) => items.as_slice(),
                _ => &[],
            };
            for (index, item) in items.iter().enumerate() {
                if item.get("fill_on_miss").and_then(toml::Value::as_bool) == Some(true) {
                    let name = item.get("name").and_then(toml::Value::as_str).unwrap_or_default();
                    self.problem(
                        self.lines.job_field_line(index, Some("fill_on_miss")),
                        format!("warm[{index}] \"{name}\".fill_on_miss"),
                        "needs [misses] enabled = true: misses are what Redis reports, and only [misses] listens"
                            .into(),
                    );
                }
            }
            return None;
        }
        Some(MissesSettings {
            max_fills_per_second: max_fills_per_second.max(1),
            negative_ttl,
        })
    }

    pub(super) fn daemon(&mut self, raw: RawDaemon) -> DaemonSettings {
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
            audit_period: {
                // `audit_interval` is the older name.
                let (field, written) = match (raw.audit_period, raw.audit_interval) {
                    (Some(period), _) => ("audit_period", Some(period)),
                    (None, interval) => ("audit_interval", interval),
                };
                match written.as_deref() {
                    Some("off") => None,
                    other => Some(
                        self.duration("daemon", field, other.map(str::to_string))
                            .unwrap_or(DEFAULT_AUDIT_PERIOD),
                    ),
                }
            },
            audit_repair: self.flag("daemon", "audit_repair", raw.audit_repair, false),
            audit_slice: self
                .count("daemon", "audit_slice", raw.audit_slice)
                .unwrap_or(DEFAULT_AUDIT_SLICE),
            audit_sample_ignored: self.count("daemon", "audit_sample", raw.audit_sample).is_some(),
            dead_letter: match raw.dead_letter {
                None => Some(DEFAULT_DEAD_LETTER.to_string()),
                Some(stream) if stream.is_empty() => None,
                Some(stream) => Some(stream),
            },
            dead_letter_length: self
                .count("daemon", "dead_letter_length", raw.dead_letter_length)
                .unwrap_or(DEFAULT_DEAD_LETTER_LENGTH),
        }
    }

    pub(super) fn ha(&mut self, raw: RawHa) -> Option<HaSettings> {
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
                format!("must be at least {}", crate::pure::words::duration(MIN_LEASE_TTL)),
            );
        }
        let instance = raw.instance.unwrap_or_else(this_process);
        Some(HaSettings {
            lease_ttl,
            key: raw.key.unwrap_or_else(|| "cachewarden:leader".into()),
            instance,
        })
    }

    pub(super) fn admin(&mut self, raw: RawAdmin, credentials: Option<&std::path::Path>) -> AdminSettings {
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
        let token = self.admin_token(raw.token_file, credentials);
        let tls = self.admin_tls(raw.tls_cert, raw.tls_key);
        AdminSettings {
            enabled,
            listen,
            token,
            tls,
        }
    }

    /// `tls_cert` and `tls_key`, both or neither: PEM files, the certificate chain (the endpoint's own first) and its
    /// private key, which must belong to each other.
    fn admin_tls(&mut self, cert: Option<String>, key: Option<String>) -> Option<AdminTls> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = match (cert, key) {
            (None, None) => return None,
            (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
            (cert, _) => {
                let (missing, given) = if cert.is_some() {
                    ("tls_key", "tls_cert")
                } else {
                    ("tls_cert", "tls_key")
                };
                self.field_problem(
                    "admin",
                    missing,
                    format!("{given} is set without {missing}: HTTPS needs the certificate and its key"),
                );
                return None;
            }
        };
        let chain: Result<Vec<_>, _> = CertificateDer::pem_file_iter(&cert).and_then(Iterator::collect);
        let chain = match chain {
            Ok(chain) if !chain.is_empty() => chain,
            Ok(_) => {
                let message = format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    cert.display()
                );
                self.field_problem("admin", "tls_cert", message);
                return None;
            }
            Err(error) => {
                self.field_problem("admin", "tls_cert", format!("cannot read {}: {error}", cert.display()));
                return None;
            }
        };
        let private = match PrivateKeyDer::from_pem_file(&key) {
            Ok(private) => private,
            Err(error) => {
                let message = format!("cannot read a PEM private key from {}: {error}", key.display());
                self.field_problem("admin", "tls_key", message);
                return None;
            }
        };
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder
                    .with_no_client_auth()
                    .with_single_cert(chain.clone(), private.clone_key())
            });
        match server {
            Ok(mut server) => {
                server.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(AdminTls::new(cert, chain, &private, server))
            }
            Err(error) => {
                let message = format!(
                    "{} and {} do not make a certificate and its key: {error}",
                    cert.display(),
                    key.display()
                );
                self.field_problem("admin", "tls_key", message);
                None
            }
        }
    }

    /// The admin token: the credential `admin-token` if the service has one, else `token_file`; trimmed, at least
    /// [`MIN_TOKEN_LENGTH`] characters.
    fn admin_token(&mut self, file: Option<String>, credentials: Option<&std::path::Path>) -> Option<AdminToken> {
        let (path, field) = match super::connections::credential_or_file(credentials, TOKEN_CREDENTIAL, file)? {
            (path, true) => (path, format!("token_file (the credential {TOKEN_CREDENTIAL})")),
            (path, false) => (path, "token_file".to_string()),
        };
        let token = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().to_string(),
            Err(error) => {
                self.field_problem("admin", &field, format!("cannot read {}: {error}", path.display()));
                return None;
            }
        };
        if token.chars().count() < MIN_TOKEN_LENGTH || token.chars().any(char::is_whitespace) {
            self.field_problem(
                "admin",
                &field,
                format!(
                    "{} holds no usable token: write one line of at least {MIN_TOKEN_LENGTH} characters without \
                     spaces (e.g. `openssl rand -hex 32 > {}`)",
                    path.display(),
                    path.display()
                ),
            );
            return None;
        }
        Some(AdminToken::new(&token))
    }
}

/// This machine's host name (`localhost` when it cannot be read).
/// This process among others: `host:pid` (the default `[ha] instance`, and the name of an instance without one).
pub(crate) fn this_process() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
