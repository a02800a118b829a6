//! The configuration's secrets: connection URLs that may carry passwords, the admin token and the admin endpoint's
//! TLS key. Each hides its secret from `Debug` (and a URL from `Display`); only the code that connects reads it.

use std::fmt;
use std::path::PathBuf;

/// The admin endpoint's certificate and key (`[admin] tls_cert`, `tls_key`), read and checked at load. `Debug` hides
/// the key.
#[derive(Clone)]
pub struct AdminTls {
    /// The certificate file, for messages.
    pub cert_file: PathBuf,
    /// The certificate chain, the endpoint's own first.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The server configuration built from the chain and the key.
    pub server: std::sync::Arc<rustls::ServerConfig>,
    /// The key, kept to tell whether a reload changed it.
    key: std::sync::Arc<[u8]>,
}

impl AdminTls {
    pub(crate) fn new(
        cert_file: PathBuf,
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: &rustls::pki_types::PrivateKeyDer<'static>,
        server: rustls::ServerConfig,
    ) -> Self {
        Self {
            cert_file,
            chain,
            server: std::sync::Arc::new(server),
            key: key.secret_der().into(),
        }
    }
}

impl PartialEq for AdminTls {
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file && self.chain == other.chain && self.key == other.key
    }
}

impl Eq for AdminTls {}

impl fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminTls({}, key ***)", self.cert_file.display())
    }
}

/// The admin endpoint's bearer token (`[admin] token_file`, or the credential `admin-token`). `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(std::sync::Arc<str>);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        Self(token.into())
    }

    /// The token itself, for the endpoint's check and the CLI's requests only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
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
    pub(crate) fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://") else {
            return url.clone();
        };
        let scheme = &url[..scheme_end];
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = match userinfo.find(':') {
                    Some(colon) => format!("{}:***", &userinfo[..colon]),
                    // Redis has no user names before ACLs: `redis://TOKEN@host` (a common ElastiCache AUTH form)
                    // carries the password there.
                    None if scheme.starts_with("redis") && !userinfo.is_empty() => "***".into(),
                    // A lone MySQL user name (`mysql://root@host`) is no secret; its password follows a colon.
                    None => userinfo.to_string(),
                };
                format!("{user}@{}", &authority[at + 1..])
            }
            None => authority.to_string(),
        };
        format!("{scheme}://{authority}{}", redact_query(tail))
    }
}

/// `tail` (path and query) with the values of secret-looking query parameters (`password=…`) replaced by `***`.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if looks_secret(name) => format!("{name}=***"),
            _ => param.to_string(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "pass", "passwd", "pwd", "secret", "token", "auth"]
        .iter()
        .any(|secret| name == *secret || name.ends_with(&format!("_{secret}")) || name.ends_with(&format!("-{secret}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            ("mysql://app:s3cret@db:3306/shop", "mysql://app:***@db:3306/shop"),
            ("redis://:tok@cache:6379/0", "redis://:***@cache:6379/0"),
            ("rediss://user:pw@cache:6379", "rediss://user:***@cache:6379"),
            ("mysql://root@db/shop", "mysql://root@db/shop"),
            ("redis://cache:6379/0", "redis://cache:6379/0"),
            ("mysql://app:p@ss@db/shop", "mysql://app:***@db/shop"),
            (
                "mysql://cw@host/shop?password=s3cret",
                "mysql://cw@host/shop?password=***",
            ),
            (
                "mysql://cw@host/shop?ssl-mode=required&password=s3cret",
                "mysql://cw@host/shop?ssl-mode=required&password=***",
            ),
            ("redis://s3cret@cache:6379/0", "redis://***@cache:6379/0"),
            ("rediss://s3cret@cache:6379", "rediss://***@cache:6379"),
            (
                "redis://cache:6379/0?protocol=resp3",
                "redis://cache:6379/0?protocol=resp3",
            ),
        ];
        for (url, shown) in cases {
            let secret = SecretUrl::new(url.into());
            assert_eq!(secret.to_string(), shown);
            assert!(!format!("{secret:?}").contains("s3cret"));
        }
    }
}
