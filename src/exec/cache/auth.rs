//! The Redis user and password as they are now: every connection authenticates with the latest, and connections
//! already open authenticate again when a reload (or a re-read after a refused password) changes them.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use futures_util::Stream;
use redis::IntoConnectionInfo as _;
use redis::auth::{BasicAuth, StreamingCredentialsProvider};
use tokio::sync::watch;

use crate::config::SecretUrl;

/// Reads `[redis] url` again from where it came (the file, the credentials directory).
pub(super) type RereadUrl = Box<dyn Fn() -> Option<SecretUrl> + Send + Sync>;

/// The current credentials, shared by every connection of one [`super::Cache`].
pub(super) struct RedisAuth {
    current: watch::Sender<Credentials>,
    reread: OnceLock<RereadUrl>,
}

/// A user and password (`default` when the URL names only a password).
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    username: String,
    password: String,
}

impl RedisAuth {
    /// The credentials in `url`; `None` when it has no password (nothing to rotate).
    pub(super) fn new(url: &SecretUrl) -> Option<Arc<Self>> {
        Some(Arc::new(Self {
            current: watch::Sender::new(credentials(url)?),
            reread: OnceLock::new(),
        }))
    }

    /// Takes the credentials of `url`; connections open now authenticate again with them. Whether they changed.
    pub(super) fn replace(&self, url: &SecretUrl) -> bool {
        let Some(new) = credentials(url) else {
            return false;
        };
        self.current.send_if_modified(|current| {
            let changed = *current != new;
            *current = new;
            changed
        })
    }

    /// Sets how to read the URL again after a refused password.
    pub(super) fn rereading(&self, reread: RereadUrl) {
        let _ = self.reread.set(reread);
    }

    /// Reads the URL again and takes its credentials; whether they changed.
    pub(super) fn reread(&self) -> bool {
        self.reread
            .get()
            .and_then(|reread| reread())
            .is_some_and(|url| self.replace(&url))
    }

    /// `url` with the current credentials in place of its own, for connections made without the provider (pub/sub).
    pub(super) fn apply(&self, url: &SecretUrl) -> redis::RedisResult<redis::ConnectionInfo> {
        let info = url.expose().into_connection_info()?;
        let current = self.current.borrow().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_username(current.username)
            .set_password(current.password);
        Ok(info.set_redis_settings(settings))
    }

    /// The provider connections subscribe to.
    pub(super) fn provider(&self) -> Provider {
        Provider(self.current.subscribe())
    }
}

/// Whether two URLs name the same server, database and options, whatever their credentials: a change a reload can
/// apply by authenticating again.
pub(crate) fn only_credentials_differ(a: &SecretUrl, b: &SecretUrl) -> bool {
    without_credentials(a.expose()) == without_credentials(b.expose())
}

/// `url` without its `user:password@`.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host_start = rest[..authority_end].rfind('@').map_or(0, |at| at + 1);
    format!("{scheme}://{}", &rest[host_start..])
}

/// The credentials in `url`, when it has a password.
fn credentials(url: &SecretUrl) -> Option<Credentials> {
    let info = url.expose().into_connection_info().ok()?;
    let settings = info.redis_settings();
    Some(Credentials {
        username: settings.username().unwrap_or("default").to_string(),
        password: settings.password()?.to_string(),
    })
}

/// Hands a connection the current credentials at once, then each change.
#[derive(Clone)]
pub(super) struct Provider(watch::Receiver<Credentials>);

impl StreamingCredentialsProvider for Provider {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = redis::RedisResult<BasicAuth>> + Send + 'static>> {
        let mut receiver = self.0.clone();
        receiver.mark_changed();
        Box::pin(futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.changed().await.ok()?;
            let current = receiver.borrow_and_update().clone();
            Some((Ok(BasicAuth::new(current.username, current.password)), receiver))
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn a_subscriber_gets_the_current_credentials_then_each_change() {
        let auth = RedisAuth::new(&SecretUrl::new("redis://app:first@127.0.0.1:6379/0".into())).unwrap();
        let mut stream = auth.provider().subscribe();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!((first.username(), first.password()), ("app", "first"));
        assert!(!auth.replace(&SecretUrl::new("redis://app:first@127.0.0.1:6379/0".into())));
        assert!(auth.replace(&SecretUrl::new("redis://app:second@127.0.0.1:6379/0".into())));
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(second.password(), "second");
        let info = auth
            .apply(&SecretUrl::new("redis://app:first@127.0.0.1:6379/0".into()))
            .unwrap();
        assert_eq!(info.redis_settings().password(), Some("second"));
        assert!(RedisAuth::new(&SecretUrl::new("redis://127.0.0.1:6379".into())).is_none());
        let url = |text: &str| SecretUrl::new(text.into());
        assert!(only_credentials_differ(
            &url("rediss://a:b@h:1/0"),
            &url("rediss://a:c@h:1/0")
        ));
        assert!(!only_credentials_differ(
            &url("rediss://a:b@h:1/0"),
            &url("rediss://a:b@h:1/1")
        ));
        assert!(!only_credentials_differ(
            &url("redis://a:b@h:1"),
            &url("redis://a:b@g:1")
        ));
        let only_password = RedisAuth::new(&SecretUrl::new("redis://:pw@127.0.0.1:6379".into())).unwrap();
        assert_eq!(
            only_password
                .provider()
                .subscribe()
                .next()
                .await
                .unwrap()
                .unwrap()
                .username(),
            "default"
        );
    }
}
