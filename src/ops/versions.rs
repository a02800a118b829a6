//! Which versions of cachewarden share this Redis, and whether this one may join them (rolling upgrades).
//!
//! The state instances share through Redis — the HA lease and its fence, the binlog checkpoints, the stale-set
//! protection's counter, leases and scripts, the pieces' boards — has a protocol number, [`PROTOCOL`], raised by any
//! change an older instance would misread. Every instance registers `protocol oldest expiry version` under its name
//! in the hash [`KEY`] (renewed every [`RENEW`], for [`TTL`], by Redis' clock; removed at a stop). At start, an
//! instance refuses to run beside a live instance whose protocol is older than the oldest it works with
//! ([`OLDEST_COMPATIBLE`]), or whose oldest is newer than its own protocol: the message names the instance, its
//! version and what to do. Instances of releases before this register (protocol 1) do not register; protocol 2 works
//! with them (`scripts/upgrade-check` tries that for real).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::exec::cache::Cache;

/// This build's protocol of the state it shares through Redis.
pub(crate) const PROTOCOL: u32 = 2;
/// The oldest protocol this build works beside.
pub(crate) const OLDEST_COMPATIBLE: u32 = 1;
/// The register.
pub(crate) const KEY: &str = "cachewarden:versions";
/// How long an entry lasts unless renewed.
const TTL: Duration = Duration::from_secs(15);
/// How often an instance renews its entry.
const RENEW: Duration = Duration::from_secs(5);

/// One instance's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub protocol: u32,
    pub oldest: u32,
    /// Redis milliseconds.
    pub expires: u64,
    pub version: String,
}

impl Entry {
    fn ours(expires: u64) -> Self {
        Self {
            protocol: PROTOCOL,
            oldest: OLDEST_COMPATIBLE,
            expires,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn encode(&self) -> String {
        format!("{} {} {} {}", self.protocol, self.oldest, self.expires, self.version)
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(4, ' ');
        Some(Self {
            protocol: parts.next()?.parse().ok()?,
            oldest: parts.next()?.parse().ok()?,
            expires: parts.next()?.parse().ok()?,
            version: parts.next().unwrap_or("").to_string(),
        })
    }
}

/// Why this build may not run beside the live entries of `entries` (other than `instance`'s own) at `now`.
pub(crate) fn refusal(
    entries: &std::collections::HashMap<String, String>,
    instance: &str,
    now: u64,
    (protocol, oldest): (u32, u32),
) -> Option<String> {
    let mut names: Vec<&String> = entries.keys().filter(|name| *name != instance).collect();
    names.sort();
    for name in names {
        let Some(entry) = Entry::decode(&entries[name]) else {
            continue;
        };
        if entry.expires < now {
            continue;
        }
        if entry.protocol < oldest {
            return Some(format!(
                "instance \"{name}\" runs cachewarden {} (shared-state protocol {}), which this version ({}, \
                 protocol {protocol}) cannot run beside: it would misread what this one writes to Redis. Stop every \
                 older instance first, then start the new version (docs/operations.md, Rolling an upgrade)",
                entry.version,
                entry.protocol,
                env!("CARGO_PKG_VERSION")
            ));
        }
        if entry.oldest > protocol {
            return Some(format!(
                "instance \"{name}\" runs cachewarden {} (shared-state protocol {}), which works only beside protocol \
                 {} or newer; this version ({}) has protocol {protocol}. Run the newer version here too \
                 (docs/operations.md, Rolling an upgrade)",
                entry.version,
                entry.protocol,
                entry.oldest,
                env!("CARGO_PKG_VERSION")
            ));
        }
    }
    None
}

/// Whether this instance may join the instances registered in Redis: `Err` with the reason when it may not; a
/// register Redis does not answer now is not a reason (logged).
pub(crate) async fn check(cache: &Cache, instance: &str) -> Result<(), String> {
    match cache.versions(KEY).await {
        Ok((entries, now)) => match refusal(&entries, instance, now, (PROTOCOL, OLDEST_COMPATIBLE)) {
            Some(why) => Err(why),
            None => Ok(()),
        },
        Err(error) => {
            warn!(%error, "Could not read which versions share this Redis; starting.");
            Ok(())
        }
    }
}

/// Keeps this instance's entry in the register until `shutdown`, then removes it.
pub(crate) async fn keep_registered(cache: Cache, instance: String, shutdown: CancellationToken) {
    info!(protocol = PROTOCOL, "Registered this version in {KEY}.");
    loop {
        match cache.versions(KEY).await {
            Ok((entries, now)) => {
                let entry = Entry::ours(now + TTL.as_millis() as u64).encode();
                if let Err(error) = cache.register_version(KEY, &instance, &entry).await {
                    debug!(%error, "Could not renew this version's entry.");
                }
                // The entries of instances that ended without removing theirs (kill -9) go once they ran out.
                for (name, text) in &entries {
                    if Entry::decode(text).is_some_and(|entry| entry.expires < now)
                        && let Err(error) = cache.unregister_version(KEY, name).await
                    {
                        debug!(%error, "Could not remove an entry that ran out.");
                    }
                }
            }
            Err(error) => debug!(%error, "Could not renew this version's entry."),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(RENEW) => {}
        }
    }
    if let Err(error) = cache.unregister_version(KEY, &instance).await {
        debug!(%error, "Could not remove this version's entry; it runs out by itself.");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entries(list: &[(&str, &str)]) -> HashMap<String, String> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn an_older_or_a_newer_incompatible_live_instance_is_a_refusal_naming_it() {
        let now = 1_000_000;
        // Live, too old for protocol 3 that works beside 2 and newer.
        let old = entries(&[("a", "1 1 1000500 0.9.0")]);
        let why = refusal(&old, "me", now, (3, 2)).unwrap();
        assert!(
            why.contains("instance \"a\" runs cachewarden 0.9.0 (shared-state protocol 1)"),
            "{why}"
        );
        assert!(why.contains("Stop every older instance first"), "{why}");
        // A newer instance that needs protocol 3 at least.
        let new = entries(&[("b", "4 3 1000500 2.0.0")]);
        let why = refusal(&new, "me", now, (2, 1)).unwrap();
        assert!(why.contains("works only beside protocol 3 or newer"), "{why}");
        // Compatible, expired, our own entry, or unreadable: no refusal.
        assert_eq!(refusal(&entries(&[("a", "2 1 1000500 x")]), "me", now, (2, 1)), None);
        assert_eq!(refusal(&entries(&[("a", "1 1 999999 0.9.0")]), "me", now, (3, 2)), None);
        assert_eq!(
            refusal(&entries(&[("me", "1 1 1000500 0.9.0")]), "me", now, (3, 2)),
            None
        );
        assert_eq!(refusal(&entries(&[("a", "garbage")]), "me", now, (3, 2)), None);
    }

    #[test]
    fn entries_round_trip() {
        let entry = Entry::ours(42);
        assert_eq!(Entry::decode(&entry.encode()), Some(entry));
    }
}
