//! `[channel]` and each binlog source's fields (`[binlog]`, or an entry of `[[binlog]]`, named by `sources`): the
//! invalidation channel and the change-data-capture sources (their rules are `rules`).

use super::*;

/// Generous for real messages (a few keys), small enough that a runaway publisher cannot exhaust memory.
pub(super) const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub(super) const DEFAULT_MAX_KEYS_PER_MESSAGE: usize = 1000;

/// A pattern delete larger than this is almost certainly a mistake; it stops and says so.
pub(super) const DEFAULT_MAX_KEYS_PER_PATTERN: u64 = 1_000_000;

/// A consumer silent this long is taken for dead and its pending stream entries are claimed.
pub(super) const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(60);

/// MySQL's own default replica heartbeat is half the replica net timeout; 5 s notices a dead link quickly.
pub(super) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Aggregates warmed from the binlog are rebuilt at most this often by default.
pub(super) const DEFAULT_DEBOUNCE: Duration = crate::config::DEFAULT_DERIVE_DEBOUNCE;

/// `[binlog] refresh_wait` by default: a commit is visible within a millisecond or two of its binlog event.
pub(super) const DEFAULT_REFRESH_WAIT: Duration = Duration::from_millis(250);
/// The longest `[binlog] refresh_wait`: its keys stay missing meanwhile.
const MAX_REFRESH_WAIT: Duration = Duration::from_secs(60);
/// The longest `[binlog] heartbeat`: the server's own limit is about 50 days, but a dead link must be noticed.
pub(super) const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

impl Context {
    pub(super) fn on_gap(&mut self, section: &str, raw: Option<&str>) -> OnGap {
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

    pub(super) fn channel(&mut self, raw: RawChannel, jobs: &[WarmJob]) -> ChannelSettings {
        let enabled = self.flag("channel", "enabled", raw.enabled, true);
        let allow = match raw.allow.map(crate::config::raw::OneOrList::into_vec) {
            Some(allow) => {
                for pattern in &allow {
                    if pattern.is_empty() || !crate::pure::glob::is_simple_glob(pattern) {
                        self.field_problem(
                            "channel",
                            "allow",
                            format!("\"{pattern}\" is not an allow pattern: only `*` may be a wildcard (`\\` escapes)"),
                        );
                    }
                }
                allow
            }
            None => jobs
                .iter()
                .map(|job| crate::pure::glob::allow_pattern(&job.key))
                .collect(),
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

    /// One binlog source, `source` (its settings, its problems reported at `source.section`). (Long on purpose: one
    /// block per field, each reporting its own problem.)
    pub(super) fn binlog(
        &mut self,
        source: &Source,
        mut raw: RawBinlog,
        mysql: Option<&MysqlSettings>,
    ) -> Option<BinlogSettings> {
        let section = source.section.as_str();
        let server_id = self.binlog_server_id(section, raw.server_id.take());
        let url = match raw.url.take() {
            Some(url) => self.mysql_url(section, "url", &url, ""),
            None => mysql.map(|m| m.url.clone()),
        };
        let start = self.binlog_start(section, raw.start.as_deref());
        let checkpoint = self.checkpoint_store(source, &mut raw);
        let heartbeat = self.capped(
            section,
            "heartbeat",
            raw.heartbeat.take(),
            MAX_HEARTBEAT,
            DEFAULT_HEARTBEAT,
            |heartbeat| format!("{heartbeat:?} is longer than an hour: a dead replication link would go unnoticed"),
        );
        let on_gap = self.on_gap(section, raw.on_gap.as_deref());
        let derive_rules = self.flag(section, "derive_rules", raw.derive_rules.take(), false);
        let derive_debounce = self
            .duration(section, "derive_debounce", raw.derive_debounce.take())
            .unwrap_or(crate::config::DEFAULT_DERIVE_DEBOUNCE);
        let max_fanout = self
            .count(section, "max_fanout", raw.max_fanout.take())
            .unwrap_or(crate::config::DEFAULT_MAX_FANOUT);
        let refresh_wait = self.capped(
            section,
            "refresh_wait",
            raw.refresh_wait.take(),
            MAX_REFRESH_WAIT,
            DEFAULT_REFRESH_WAIT,
            |wait| {
                format!(
                    "{} is longer than a minute: the keys stay missing that long; set refresh_fallback to read them \
                 from the writer instead",
                    crate::pure::words::duration(wait)
                )
            },
        );
        let refresh_fallback = match raw.refresh_fallback.as_deref() {
            None | Some("") => None,
            // The binlog follows the writer: its connection is the one a lagging reader falls back to.
            Some("binlog") => url.clone(),
            Some(fallback) => self.mysql_url(section, "refresh_fallback", fallback, " (or \"binlog\")"),
        };
        // (With one source it is refused where the sources are known: see `binlogs`.)
        let read_url = (raw.read_url.take()).and_then(|read_url| self.mysql_url(section, "read_url", &read_url, ""));
        Some(BinlogSettings {
            read_url,
            name: source.name.clone(),
            label: source.label(),
            max_fanout,
            refresh_wait,
            refresh_fallback,
            server_id: server_id?,
            server_id_from: None,
            url: url?,
            start: start?,
            checkpoint: checkpoint?,
            heartbeat,
            on_gap,
            derive_rules,
            derive_debounce,
        })
    }

    /// `[binlog] server_id`: a replica id from 1 that fits 32 bits; `Some(0)` when it is not set (the automatic id is
    /// given once the instance is known, see [`automatic_server_id`]).
    fn binlog_server_id(&mut self, section: &str, raw: Option<IntOrString>) -> Option<u32> {
        if raw.is_none() {
            return Some(0);
        }
        match self.count(section, "server_id", raw)? {
            id if id <= u32::MAX as usize => Some(id as u32),
            id => {
                self.field_problem(section, "server_id", format!("{id} is larger than 4294967295"));
                None
            }
        }
    }

    /// A MySQL URL in `[binlog] field`; `hint` ends its problem.
    fn mysql_url(&mut self, section: &str, field: &str, url: &str, hint: &str) -> Option<SecretUrl> {
        match check_mysql_url(url) {
            Ok(()) => Some(SecretUrl::new(url.to_string())),
            Err(message) => {
                self.field_problem(section, field, format!("{message}{hint}"));
                None
            }
        }
    }

    /// `[binlog] start`: `current` (the default) or `file:pos`.
    fn binlog_start(&mut self, section: &str, text: Option<&str>) -> Option<BinlogStart> {
        let text = match text {
            None | Some("current") => return Some(BinlogStart::Current),
            Some(text) => text,
        };
        match text.rsplit_once(':').map(|(file, pos)| (file, pos.parse::<u64>())) {
            Some((file, Ok(pos))) if !file.is_empty() => Some(BinlogStart::At {
                file: file.to_string(),
                pos,
            }),
            _ => {
                let message = format!("\"{text}\" is not a start position: use \"current\" or \"binlog.000042:1234\"");
                self.field_problem(section, "start", message);
                None
            }
        }
    }

    /// Where the checkpoint is kept: `checkpoint = "redis"` (the default, at `checkpoint_key`) or `"file"` (at
    /// `checkpoint_file`, which alone also means the file store). A source of `[[binlog]]` has its name in both
    /// defaults.
    fn checkpoint_store(&mut self, source: &Source, raw: &mut RawBinlog) -> Option<CheckpointStore> {
        let section = source.section.as_str();
        // Beside `checkpoint = "redis"`, a `checkpoint_file` would be ignored.
        let store = match (raw.checkpoint.as_deref(), &raw.checkpoint_file) {
            (None, Some(_)) => Some("file"),
            (Some("redis"), Some(_)) => {
                let message = "is set, but checkpoint = \"redis\" keeps the checkpoint in Redis: remove one of the two";
                self.field_problem(section, "checkpoint_file", message.into());
                Some("redis")
            }
            (store, _) => store,
        };
        match store {
            None | Some("redis") => {
                Some(CheckpointStore::Redis(raw.checkpoint_key.take().unwrap_or_else(
                    || match source.array {
                        false => "cachewarden:binlog:checkpoint".into(),
                        true => format!("cachewarden:binlog:checkpoint:{}", source.name),
                    },
                )))
            }
            Some("file") => {
                let path = raw
                    .checkpoint_file
                    .take()
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| {
                        std::env::var_os("STATE_DIRECTORY")
                            .map(std::path::PathBuf::from)
                            .unwrap_or_else(|| "/var/lib/cachewarden".into())
                            .join(match source.array {
                                false => "binlog.checkpoint".into(),
                                true => format!("binlog-{}.checkpoint", source.name),
                            })
                    });
                Some(CheckpointStore::File(path))
            }
            Some(other) => {
                let message = format!("\"{other}\" is not a checkpoint store: use \"redis\" or \"file\"");
                self.field_problem(section, "checkpoint", message);
                None
            }
        }
    }

    /// A `[binlog]` duration that may not exceed `max` (a problem that says why, and the default, when it does).
    fn capped(
        &mut self,
        section: &str,
        field: &str,
        raw: Option<String>,
        max: Duration,
        default: Duration,
        too_long: impl FnOnce(Duration) -> String,
    ) -> Duration {
        match self.duration(section, field, raw) {
            Some(duration) if duration > max => {
                self.field_problem(section, field, too_long(duration));
                default
            }
            duration => duration.unwrap_or(default),
        }
    }
}

/// This host's name, as a stable stream consumer name.
pub(super) fn default_consumer() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "cachewarden".into())
}

/// `binlog` with its replica id: the one set, else one of this instance's own. Under `[ha]` each instance differs by
/// its name; without, by host and configuration file (two services on one host, following one server for two
/// databases, differ too). A source of `[[binlog]]` (`named`) adds its name: one instance following two sources of
/// one topology differs on each.
pub(super) fn with_server_id(
    mut binlog: BinlogSettings,
    ha: Option<&crate::config::HaSettings>,
    path: &std::path::Path,
    named: bool,
) -> BinlogSettings {
    if binlog.server_id == 0 {
        let mut identity = ha.map_or_else(
            || format!("{}:{}", super::operation::hostname(), path.display()),
            |ha| ha.instance.clone(),
        );
        if named {
            identity = format!("{identity}/{}", binlog.name);
        }
        binlog.server_id = automatic_server_id(&identity);
        binlog.server_id_from = Some(identity);
    }
    binlog
}

/// The replica id of an instance that sets no `[binlog] server_id`: from its identity (`[ha] instance`, else the host
/// name and the configuration file), in the upper half of the id range, where servers' own ids (small numbers, by habit) are not; so two
/// instances never share one, and one instance keeps its own across restarts when its identity is stable.
pub(crate) fn automatic_server_id(identity: &str) -> u32 {
    // FNV-1a: stable across builds and platforms (a std hasher is not).
    let hash = identity.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    0x8000_0000 | (hash & 0x7fff_ffff)
}

#[cfg(test)]
mod server_id_tests {
    use super::automatic_server_id;

    #[test]
    fn automatic_server_ids_are_stable_distinct_and_above_the_usual_ones() {
        let a = automatic_server_id("ip-10-0-1-17:4242");
        assert_eq!(a, automatic_server_id("ip-10-0-1-17:4242"));
        assert_ne!(a, automatic_server_id("ip-10-0-1-17:4243"));
        assert_ne!(a, automatic_server_id("ip-10-0-1-18:4242"));
        for identity in ["a", "ip-10-0-1-17", "host:1"] {
            assert!(automatic_server_id(identity) >= 0x8000_0000);
        }
    }
}
