//! The replication URL the listener connects with, replaceable while it runs: a SIGHUP hands in a new one, and an
//! access denied reads the configuration again for a rotated password.

use tokio::sync::watch;

use crate::config::SecretUrl;

/// The replication URL, replaceable while the listener runs.
pub(crate) struct ReplicationUrl {
    url: watch::Sender<SecretUrl>,
    /// Reads `[binlog] url` again from where it came (the file, the credentials directory).
    reread: Option<Box<dyn Fn() -> Option<SecretUrl> + Send + Sync>>,
}

impl ReplicationUrl {
    pub(crate) fn new(url: SecretUrl, reread: Option<Box<dyn Fn() -> Option<SecretUrl> + Send + Sync>>) -> Self {
        Self {
            url: watch::Sender::new(url),
            reread,
        }
    }

    pub(crate) fn current(&self) -> SecretUrl {
        self.url.borrow().clone()
    }

    /// Replaces the URL; a running session reconnects with it. Whether it changed.
    pub(crate) fn replace(&self, url: SecretUrl) -> bool {
        self.url.send_if_modified(|current| {
            let changed = *current != url;
            *current = url;
            changed
        })
    }

    /// Reads the URL again and applies it; whether it changed.
    pub(super) fn reread(&self) -> bool {
        self.reread
            .as_ref()
            .and_then(|reread| reread())
            .is_some_and(|url| self.replace(url))
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<SecretUrl> {
        self.url.subscribe()
    }
}
