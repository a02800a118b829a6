//! The vocabulary every other module speaks: warm jobs, key templates, TTLs, triggers, key operations, and the
//! change rules and row changes of change data capture.
//!
//! Plain data with small pure methods. Nothing here does I/O; parsing of the TOML words into these types lives in
//! `config`, and executing them lives in `warm` and `cache`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod change;
mod members;
mod partitions;

pub(crate) use change::{
    ChangeRule, MemberRule, Projection, ReverseLookup, RowChange, RowEvents, RowFilter, RowImage, SOURCE_DATABASE,
    SOURCE_TABLE, SeenRow,
};
pub use members::{MemberKind, Members, Top};
pub use partitions::{Board, MAX_PARTITIONS, Partitions, PieceFigures, PieceState};

/// A Redis key template such as `product:{id}`: literal text and `{column}` placeholders filled from a result row.
///
/// `{{` and `}}` stand for literal braces. A template without placeholders names one key that stores the whole result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    source: String,
    parts: Vec<KeyPart>,
}

/// One piece of a [`KeyTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// Text copied into the key as it is.
    Literal(String),
    /// The value of the named result column.
    Column(String),
}

impl KeyTemplate {
    /// Parses a template, refusing empty templates, empty or unclosed placeholders and stray braces.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.is_empty() {
            return Err("the key template is empty".into());
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &source[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!("placeholder opened at byte {at} is never closed"));
                    };
                    let name = rest[..end].trim();
                    if name.is_empty() {
                        return Err(format!("empty placeholder `{{}}` at byte {at}"));
                    }
                    if name.contains('{') {
                        return Err(format!("placeholder opened at byte {at} is never closed"));
                    }
                    if !literal.is_empty() {
                        parts.push(KeyPart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(KeyPart::Column(name.to_string()));
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` at byte {at} (write `}}}}` for a literal brace)"
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(KeyPart::Literal(literal));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    /// The template as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[KeyPart] {
        &self.parts
    }

    /// The column names the template reads, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            KeyPart::Column(name) => Some(name.as_str()),
            KeyPart::Literal(_) => None,
        })
    }

    /// A template without placeholders names exactly one key, which stores the whole result of its query.
    pub(crate) fn is_single_key(&self) -> bool {
        self.placeholders().next().is_none()
    }

    /// The one key a template without placeholders names; `None` for per-row templates.
    pub(crate) fn single_key(&self) -> Option<String> {
        self.parts
            .iter()
            .map(|part| match part {
                KeyPart::Literal(text) => Some(text.as_str()),
                KeyPart::Column(_) => None,
            })
            .collect()
    }

    /// The placeholder values that render `key` through this template, or `None` when the key does not fit it.
    /// Each placeholder takes the shortest text up to the literal that follows it (the last one takes the rest), so
    /// templates with two placeholders side by side cannot be reversed.
    pub(crate) fn capture<'k>(&self, key: &'k str) -> Option<Vec<(&str, &'k str)>> {
        let mut values = Vec::new();
        let mut rest = key;
        let mut parts = self.parts.iter().peekable();
        while let Some(part) = parts.next() {
            match part {
                KeyPart::Literal(text) => rest = rest.strip_prefix(text.as_str())?,
                KeyPart::Column(name) => {
                    let end = match parts.peek() {
                        None => rest.len(),
                        Some(KeyPart::Literal(next)) => rest.find(next.as_str())?,
                        Some(KeyPart::Column(_)) => return None,
                    };
                    if end == 0 {
                        return None;
                    }
                    values.push((name.as_str(), &rest[..end]));
                    rest = &rest[end..];
                }
            }
        }
        rest.is_empty().then_some(values)
    }

    /// Whether two placeholders touch (`{a}{b}`), which makes keys impossible to read back into values.
    pub(crate) fn has_adjacent_placeholders(&self) -> bool {
        self.parts
            .windows(2)
            .any(|pair| matches!(pair, [KeyPart::Column(_), KeyPart::Column(_)]))
    }
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// How long a written key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key expires after this long (before jitter).
    Expires(Duration),
    /// `ttl = "none"`: the key never expires. Only ever set on explicit request.
    Never,
}

/// Randomness added to each key's TTL so that keys written together do not all expire together.
///
/// Jitter only ever shortens a TTL: the configured `ttl` stays an upper bound on how stale a key can get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Every key gets exactly the configured TTL.
    None,
    /// Up to this fraction (0 ≤ f < 1) of the TTL is taken off, drawn independently per key.
    Fraction(f64),
    /// Up to this long is taken off, drawn independently per key (always less than the TTL).
    Fixed(Duration),
}

impl Ttl {
    /// The TTL for one key: `None` for keys that never expire, else the TTL less a uniformly drawn share of the
    /// jitter. `unit` is a number in `[0, 1)`, passed in so that this stays pure and testable.
    pub fn pick(self, jitter: Jitter, unit: f64) -> Option<Duration> {
        let Ttl::Expires(ttl) = self else {
            return None;
        };
        let cut = match jitter {
            Jitter::None => Duration::ZERO,
            Jitter::Fraction(fraction) => ttl.mul_f64(fraction * unit),
            Jitter::Fixed(max) => max.mul_f64(unit),
        };
        // Redis refuses an expiry of zero; one millisecond is the shortest TTL there is.
        Some(ttl.saturating_sub(cut).max(Duration::from_millis(1)))
    }
}

/// What to store when a key template has no placeholders and the query's whole result goes into one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One row → a JSON object; any other number of rows → a JSON array of objects.
    Auto,
    /// Exactly one row, stored as a JSON object; any other row count fails the run.
    Object,
    /// Always a JSON array of objects, even for one row or none.
    Array,
}

/// When a warm job fires: a cron schedule (6 fields with seconds, all times UTC).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As the operator wrote it (`"every 5m"`, `"0 */5 * * * *"`).
    pub written: String,
    /// The 6-field cron expression the scheduler runs.
    pub cron: String,
    /// The parsed expression, for computing fire times.
    pub parsed: croner::Cron,
}

impl Schedule {
    /// The next `count` fire times after `after`.
    pub(crate) fn upcoming(
        &self,
        after: chrono::DateTime<chrono::Utc>,
        count: usize,
    ) -> Vec<chrono::DateTime<chrono::Utc>> {
        self.parsed.iter_after(after).take(count).collect()
    }
}

/// A cache-warming job: a query whose rows become Redis keys.
#[derive(Debug, Clone)]
pub struct WarmJob {
    /// Unique name, used in logs, metrics, `--job` and triggers.
    pub name: Arc<str>,
    /// When the scheduler fires it.
    pub schedule: Schedule,
    /// The SQL query, run as a prepared statement.
    pub query: String,
    /// How each row (or the whole result) maps to a key.
    pub key: KeyTemplate,
    /// Lifetime of written keys.
    pub ttl: Ttl,
    /// Per-key TTL randomisation.
    pub jitter: Jitter,
    /// Fire once as soon as the daemon starts.
    pub run_on_start: bool,
    /// Disabled jobs are validated but never scheduled or run by `--once` without `--job`.
    pub enabled: bool,
    /// The longest one run may take, query and writes together; the server also aborts the statement after it.
    pub timeout: Duration,
    /// Result shape for single-key templates.
    pub shape: Shape,
    /// Text columns holding JSON documents, embedded as JSON rather than as strings (MariaDB's JSON is LONGTEXT).
    pub json_columns: Vec<String>,
    /// Columns whose names look sensitive but which the operator has decided may be cached.
    pub allow_sensitive: Vec<String>,
    /// Values larger than this are skipped and counted, never truncated.
    pub max_value_bytes: usize,
    /// A per-key query for refreshing one key: `?` placeholders bound, in order, to the key's values of
    /// `refresh_params` (written `:name` in the configuration, never spliced into the SQL).
    pub refresh_query: Option<String>,
    /// The template placeholders bound to `refresh_query`'s `?`s, in order.
    pub refresh_params: Vec<String>,
    /// How values are stored: compressed over a size, or plain. Refreshes write the same.
    pub encoding: crate::pure::codec::Encoding,
    /// Columns whose values are encrypted inside the JSON; they satisfy the sensitive-column guard.
    pub encrypt_columns: Vec<String>,
    /// The keys `encrypt_columns` are sealed with; present whenever `encrypt_columns` is not empty.
    pub keyring: Option<Arc<crate::pure::crypto::Keyring>>,
    /// Follow the invalidation rules derived from `query` (see `derive`) besides the explicit ones.
    pub derive_rules: bool,
    /// The `[[binlog]]` source its tables' changes arrive from: where its derived rules follow them. `None`: the
    /// only source (with several, a job that derives rules names one).
    pub source: Option<Arc<str>>,
    /// A key of this job that Redis reports missing is loaded through `refresh_query` (`[misses]`).
    pub fill_on_miss: bool,
    /// `type = "set"` or `"zset"`: each row is a member of the key it renders.
    pub members: Option<std::sync::Arc<Members>>,
    /// `partitions = K`: a run is split into pieces that instances claim and run in parallel.
    pub partitions: Option<Partitions>,
}

impl WarmJob {
    /// The query a run reads: a top-N sorted set's reads its buffer too.
    pub(crate) fn run_query(&self) -> &str {
        match self.members.as_deref().and_then(|members| members.top.as_ref()) {
            Some(top) => &top.query,
            None => &self.query,
        }
    }
}

/// Rewrites `:name` parameters in `sql` to `?` and returns the names in order. Text inside quotes, backticks and
/// comments is left alone; `::` is not a parameter.
pub(crate) fn named_params(sql: &str) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(sql.len());
    let mut names = Vec::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' | '`' => {
                let end = (i + 1..chars.len()).find(|&j| chars[j] == c && chars[j - 1] != '\\');
                let Some(end) = end else {
                    return Err(format!("unterminated {c} quote"));
                };
                out.extend(&chars[i..=end]);
                i = end + 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                let end = (i..chars.len()).find(|&j| chars[j] == '\n').unwrap_or(chars.len());
                out.extend(&chars[i..end]);
                i = end;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                out.push_str("::");
                i += 2;
            }
            ':' if chars.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic() || *n == '_') => {
                let end = (i + 1..chars.len())
                    .find(|&j| !(chars[j].is_ascii_alphanumeric() || chars[j] == '_'))
                    .unwrap_or(chars.len());
                names.push(chars[i + 1..end].iter().collect());
                out.push('?');
                i = end;
            }
            '?' => return Err("use :name parameters, not ?".into()),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok((out, names))
}

/// One change to make in Redis. Every write cachewarden performs is one of these, applied by `cache::Cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOp {
    /// `SET key value [PX ttl]`.
    Set {
        key: String,
        value: Vec<u8>,
        ttl: Option<Duration>,
        /// The read the value's data came from (see `cache`): an invalidation of the key at a later version, or the
        /// read's lease having ended, refuses the write. `None` writes unconditionally.
        read: Option<ReadStamp>,
    },
    /// `UNLINK key`.
    Delete { key: String },
}

impl KeyOp {
    /// The key the op writes or deletes.
    pub fn key(&self) -> &str {
        match self {
            KeyOp::Set { key, .. } | KeyOp::Delete { key } => key,
        }
    }
}

/// Which read a value came from, for stale-set protection: the cache version current before the read, and the read
/// lease that must still be live when the value is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStamp {
    pub version: u64,
    pub lease: std::sync::Arc<str>,
}

/// Why a warm job run was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerReason {
    /// Its cron schedule fired.
    Schedule,
    /// `run_on_start` at daemon start.
    Startup,
    /// An operator asked (signal, CLI, admin endpoint).
    Manual,
    /// An invalidation message asked (`warm`, or a refresh of a single-key job's key).
    Message,
    /// A row change under an `[[on_change]]` rule with `warm` (debounced).
    Change,
    /// The invalidation channel lost messages; the job re-warms what they might have touched.
    Resync,
}

impl fmt::Display for TriggerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TriggerReason::Schedule => "schedule",
            TriggerReason::Startup => "startup",
            TriggerReason::Manual => "manual",
            TriggerReason::Message => "message",
            TriggerReason::Change => "change",
            TriggerReason::Resync => "resync",
        })
    }
}

/// A request for work, sent to the warm runner by the scheduler, the invalidation executor (for the channel and the
/// binlog), the admin endpoint and SIGUSR1 (all through `trigger::send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Run the named warm job now.
    Warm { job: Arc<str>, reason: TriggerReason },
}

#[cfg(test)]
impl WarmJob {
    /// A job for tests: `name` writing `key` every minute, every other field at its plainest.
    pub fn example(name: &str, key: &str) -> Self {
        Self {
            name: name.into(),
            schedule: crate::config::parse::parse_schedule("every 1m").expect("a valid schedule"),
            query: "SELECT 1".into(),
            key: KeyTemplate::parse(key).expect("a valid key template"),
            ttl: Ttl::Expires(Duration::from_secs(60)),
            jitter: Jitter::None,
            run_on_start: false,
            enabled: true,
            timeout: Duration::from_secs(1),
            shape: Shape::Auto,
            json_columns: vec![],
            allow_sensitive: vec![],
            max_value_bytes: 1024,
            refresh_query: None,
            refresh_params: vec![],
            encoding: crate::pure::codec::Encoding::PLAIN,
            encrypt_columns: vec![],
            keyring: None,
            derive_rules: false,
            source: None,
            fill_on_miss: false,
            members: None,
            partitions: None,
        }
    }
}

/// What to do after a gap (changes that may have been missed: a pub/sub reconnect, a purged binlog position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGap {
    /// Re-run the warm jobs whose keys the source may touch.
    Warm,
    /// Delete every key the source may touch.
    Flush,
    /// Only log and count the gap.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_splits_literals_and_placeholders() {
        let t = KeyTemplate::parse("product:{id}:{ lang }").unwrap();
        assert_eq!(
            t.parts(),
            [
                KeyPart::Literal("product:".into()),
                KeyPart::Column("id".into()),
                KeyPart::Literal(":".into()),
                KeyPart::Column("lang".into()),
            ]
        );
        assert_eq!(t.placeholders().collect::<Vec<_>>(), ["id", "lang"]);
        assert!(!t.is_single_key());
    }

    #[test]
    fn template_without_placeholders_is_single_key() {
        let t = KeyTemplate::parse("dashboard:stats").unwrap();
        assert!(t.is_single_key());
        assert_eq!(t.parts(), [KeyPart::Literal("dashboard:stats".into())]);
    }

    #[test]
    fn doubled_braces_are_literal() {
        let t = KeyTemplate::parse("{{tag}}:{id}").unwrap();
        assert_eq!(
            t.parts(),
            [KeyPart::Literal("{tag}:".into()), KeyPart::Column("id".into())]
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in ["", "product:{id", "product:{}", "product:id}", "a:{b{c}"] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn keys_are_read_back_into_placeholder_values() {
        let t = KeyTemplate::parse("product:{id}:{lang}").unwrap();
        assert_eq!(t.capture("product:42:en"), Some(vec![("id", "42"), ("lang", "en")]));
        assert_eq!(t.capture("product:42"), None);
        assert_eq!(t.capture("product::en"), None);
        assert_eq!(t.capture("user:42:en"), None);
        let t = KeyTemplate::parse("session:{token}").unwrap();
        assert_eq!(t.capture("session:a:b"), Some(vec![("token", "a:b")]));
        assert!(KeyTemplate::parse("{a}{b}").unwrap().has_adjacent_placeholders());
        assert_eq!(KeyTemplate::parse("{a}{b}").unwrap().capture("xy"), None);
    }

    #[test]
    fn named_parameters_become_placeholders() {
        let (sql, names) = named_params("SELECT * FROM p WHERE id = :id AND lang = :lang").unwrap();
        assert_eq!(sql, "SELECT * FROM p WHERE id = ? AND lang = ?");
        assert_eq!(names, ["id", "lang"]);
        let (sql, names) = named_params("SELECT ':not', `a:b`, x::int FROM t WHERE id = :id -- :no").unwrap();
        assert_eq!(sql, "SELECT ':not', `a:b`, x::int FROM t WHERE id = ? -- :no");
        assert_eq!(names, ["id"]);
        assert!(named_params("SELECT * FROM t WHERE id = ?").is_err());
    }

    #[test]
    fn jitter_only_shortens_the_ttl() {
        let ttl = Ttl::Expires(Duration::from_secs(100));
        assert_eq!(ttl.pick(Jitter::None, 0.7), Some(Duration::from_secs(100)));
        assert_eq!(ttl.pick(Jitter::Fraction(0.1), 0.0), Some(Duration::from_secs(100)));
        assert_eq!(ttl.pick(Jitter::Fraction(0.1), 0.5), Some(Duration::from_secs(95)));
        assert_eq!(
            ttl.pick(Jitter::Fixed(Duration::from_secs(20)), 0.5),
            Some(Duration::from_secs(90))
        );
        assert_eq!(Ttl::Never.pick(Jitter::Fraction(0.5), 0.5), None);
    }

    #[test]
    fn ttl_never_reaches_zero() {
        let ttl = Ttl::Expires(Duration::from_millis(1));
        assert_eq!(ttl.pick(Jitter::Fraction(0.99), 0.99), Some(Duration::from_millis(1)));
    }
}
