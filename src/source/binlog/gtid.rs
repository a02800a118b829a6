//! GTID positions in both servers' forms: MariaDB's `domain-server-seq` per replication domain, MySQL's
//! `uuid[:tag]:intervals` set of every transaction executed. Either means the same point on every server of a
//! replication topology, which a file offset does not.

use std::collections::BTreeMap;
use std::fmt;

/// One transaction's GTID, as its GTID event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gtid {
    /// MariaDB: the transaction `seq` of `domain`, by `server`.
    MariaDb { domain: u32, server: u32, seq: u64 },
    /// MySQL: transaction number `gno` of the source `uuid` (lowercase, hyphenated), under `tag` ("" when untagged).
    MySql { uuid: String, tag: String, gno: u64 },
}

/// A GTID position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gtids {
    /// The last transaction (server, seq) of each domain: MariaDB's `@@gtid_binlog_pos` form, `0-1-977,1-2-5`.
    MariaDb(BTreeMap<u32, (u32, u64)>),
    /// Every transaction executed, as inclusive ranges per (uuid, tag): MySQL's `@@gtid_executed` form,
    /// `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,…`.
    MySql(GtidSet),
}

/// MySQL's set: per (source uuid, tag), the transactions as sorted, disjoint, inclusive ranges.
pub(super) type GtidSet = BTreeMap<(String, String), Vec<(u64, u64)>>;

impl Default for Gtids {
    fn default() -> Self {
        Gtids::MariaDb(BTreeMap::new())
    }
}

impl Gtids {
    /// Reads either form; a text with a `:` is MySQL's. Empty text (no transaction yet) is an empty position.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        if text.contains(':') {
            parse_mysql(text).map(Gtids::MySql)
        } else {
            parse_mariadb(text).map(Gtids::MariaDb)
        }
    }

    /// Whether every transaction of this position is in `other` too (MariaDB: each domain's sequence reached there;
    /// MySQL: each range covered). Positions of different forms are never within each other, unless this one is
    /// empty.
    pub(crate) fn within(&self, other: &Gtids) -> bool {
        match (self, other) {
            (mine, _) if mine.is_empty() => true,
            (Gtids::MariaDb(mine), Gtids::MariaDb(theirs)) => mine
                .iter()
                .all(|(domain, (_, seq))| theirs.get(domain).is_some_and(|(_, reached)| reached >= seq)),
            (Gtids::MySql(mine), Gtids::MySql(theirs)) => mine.iter().all(|(source, ranges)| {
                let covered = theirs.get(source).map(Vec::as_slice).unwrap_or_default();
                ranges
                    .iter()
                    .all(|(start, end)| covered.iter().any(|(from, to)| from <= start && end <= to))
            }),
            _ => false,
        }
    }

    /// MySQL's form (a set), not MariaDB's.
    pub(crate) fn is_mysql(&self) -> bool {
        matches!(self, Gtids::MySql(_))
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Gtids::MariaDb(domains) => domains.is_empty(),
            Gtids::MySql(sets) => sets.is_empty(),
        }
    }

    /// `gtid`'s transaction has been applied. An empty position takes the form of the first GTID it records.
    /// `false` (and the position unchanged) when `gtid` is of the other server's form.
    pub(crate) fn record(&mut self, gtid: Gtid) -> bool {
        if self.is_empty() {
            *self = match gtid {
                Gtid::MariaDb { .. } => Gtids::default(),
                Gtid::MySql { .. } => Gtids::MySql(GtidSet::new()),
            };
        }
        match (self, gtid) {
            (Gtids::MariaDb(domains), Gtid::MariaDb { domain, server, seq }) => {
                domains.insert(domain, (server, seq));
                true
            }
            (Gtids::MySql(sets), Gtid::MySql { uuid, tag, gno }) => {
                add_range(sets.entry((uuid, tag)).or_default(), gno, gno);
                true
            }
            _ => false,
        }
    }

    /// MySQL: the set as the blocks `COM_BINLOG_DUMP_GTID` sends (intervals end-exclusive). Empty for MariaDB's form.
    pub(crate) fn mysql_sids(&self) -> Vec<mysql_async::Sid<'static>> {
        let Gtids::MySql(sets) = self else { return Vec::new() };
        sets.iter()
            .filter_map(|((uuid, tag), ranges)| {
                let prefix = if tag.is_empty() {
                    uuid.clone()
                } else {
                    format!("{uuid}:{tag}")
                };
                let text = format!("{prefix}:{}", format_ranges(ranges));
                text.parse().ok()
            })
            .collect()
    }
}

impl fmt::Display for Gtids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtids::MariaDb(domains) => {
                let parts: Vec<String> = domains
                    .iter()
                    .map(|(domain, (server, seq))| format!("{domain}-{server}-{seq}"))
                    .collect();
                f.write_str(&parts.join(","))
            }
            Gtids::MySql(sets) => {
                // One entry per uuid: its untagged ranges first (the empty tag sorts first), then `:tag:ranges`.
                let mut entries: Vec<String> = Vec::new();
                let mut last_uuid: Option<&str> = None;
                for ((uuid, tag), ranges) in sets {
                    if last_uuid != Some(uuid.as_str()) {
                        entries.push(uuid.clone());
                        last_uuid = Some(uuid);
                    }
                    let entry = entries.last_mut().expect("pushed above");
                    if !tag.is_empty() {
                        entry.push(':');
                        entry.push_str(tag);
                    }
                    entry.push(':');
                    entry.push_str(&format_ranges(ranges));
                }
                f.write_str(&entries.join(","))
            }
        }
    }
}

fn parse_mariadb(text: &str) -> Option<BTreeMap<u32, (u32, u64)>> {
    let mut domains = BTreeMap::new();
    for gtid in text.split(',').map(str::trim).filter(|gtid| !gtid.is_empty()) {
        let mut parts = gtid.splitn(3, '-');
        let (domain, server, seq) = (parts.next()?, parts.next()?, parts.next()?);
        domains.insert(domain.parse().ok()?, (server.parse().ok()?, seq.parse().ok()?));
    }
    Some(domains)
}

/// `uuid:1-5:7:tag:1-3,uuid2:1-9` (whitespace, as `@@gtid_executed` puts after commas, is ignored).
fn parse_mysql(text: &str) -> Option<GtidSet> {
    let mut sets = GtidSet::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let mut parts = entry.split(':');
        let uuid = uuid::Uuid::parse_str(parts.next()?).ok()?.hyphenated().to_string();
        let mut tag = String::new();
        for part in parts {
            if part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                tag = part.to_string();
                continue;
            }
            let (start, end) = match part.split_once('-') {
                Some((start, end)) => (start.parse().ok()?, end.parse().ok()?),
                None => (part.parse().ok()?, part.parse().ok()?),
            };
            if start == 0 || start > end {
                return None;
            }
            add_range(sets.entry((uuid.clone(), tag.clone())).or_default(), start, end);
        }
    }
    Some(sets)
}

/// Adds the inclusive range, keeping `ranges` sorted, disjoint and merged where they touch.
fn add_range(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    // The common case: the next transaction of the newest range.
    if let Some(last) = ranges.last_mut()
        && last.0 <= start
        && start <= last.1.saturating_add(1)
    {
        last.1 = last.1.max(end);
        return;
    }
    ranges.push((start, end));
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    *ranges = merged;
}

fn format_ranges(ranges: &[(u64, u64)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(start, end)| match start == end {
            true => start.to_string(),
            false => format!("{start}-{end}"),
        })
        .collect();
    parts.join(":")
}

/// The GTID a MariaDB GTID event (type 162) opens its transaction with. Its body starts with the sequence number
/// (8 bytes) and the domain id (4 bytes), little-endian; the server id is the event header's.
pub(super) fn mariadb_gtid(data: &[u8], server: u32) -> Option<Gtid> {
    let seq = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    Some(Gtid::MariaDb { domain, server, seq })
}

/// MariaDB's GTID event type.
pub(super) const MARIADB_GTID_EVENT: u8 = 162;

/// A MySQL GTID as text: `uuid:gno` or `uuid:tag:gno` (as `SHOW BINLOG EVENTS` shows `GTID_NEXT`).
pub(super) fn parse_mysql_gtid(text: &str) -> Option<Gtid> {
    let (head, gno) = text.rsplit_once(':')?;
    let (uuid, tag) = head.split_once(':').unwrap_or((head, ""));
    Some(Gtid::MySql {
        uuid: uuid::Uuid::parse_str(uuid).ok()?.hyphenated().to_string(),
        tag: tag.to_string(),
        gno: gno.parse().ok()?,
    })
}

/// The GTID a MySQL GTID event (tagged or not) opens its transaction with.
pub(super) fn mysql_gtid(event: &mysql_async::binlog::events::GtidEvent) -> Gtid {
    Gtid::MySql {
        uuid: uuid::Uuid::from_bytes(event.sid()).hyphenated().to_string(),
        tag: event.tag().map(|tag| tag.to_string()).unwrap_or_default(),
        gno: event.gno(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "b0a5b2d4-0000-11e1-9e33-c80aa9429562";

    #[test]
    fn a_position_is_within_another_that_reached_all_of_it() {
        let within = |a: &str, b: &str| Gtids::parse(a).unwrap().within(&Gtids::parse(b).unwrap());
        assert!(within("0-1-5", "0-2-9,1-1-3"));
        assert!(!within("0-1-5,2-1-1", "0-2-9,1-1-3"));
        assert!(!within("0-1-10", "0-1-9"));
        assert!(within(&format!("{A}:3-4"), &format!("{A}:1-9,{B}:1-2")));
        assert!(!within(&format!("{A}:3-12"), &format!("{A}:1-9")));
        assert!(!within(&format!("{B}:1"), &format!("{A}:1-9")));
        assert!(!within("0-1-5", &format!("{A}:1-9")));
        assert!(within("", "0-1-1"));
    }

    #[test]
    fn mariadb_positions_round_trip_and_record_the_latest_per_domain() {
        let mut gtids = Gtids::parse("0-1-5").unwrap();
        assert!(gtids.record(Gtid::MariaDb {
            domain: 0,
            server: 2,
            seq: 6
        }));
        assert!(gtids.record(Gtid::MariaDb {
            domain: 1,
            server: 2,
            seq: 1
        }));
        assert_eq!(gtids.to_string(), "0-2-6,1-2-1");
        assert!(Gtids::parse("0-1").is_none());
        assert!(Gtids::parse("").unwrap().is_empty());
        let mut event = 977u64.to_le_bytes().to_vec();
        event.extend_from_slice(&3u32.to_le_bytes());
        event.push(0);
        assert_eq!(
            mariadb_gtid(&event, 7),
            Some(Gtid::MariaDb {
                domain: 3,
                server: 7,
                seq: 977
            })
        );
        assert_eq!(mariadb_gtid(&event[..5], 7), None);
    }

    #[test]
    fn mysql_sets_read_as_gtid_executed_prints_them_and_merge_what_they_record() {
        let text = format!("{},\n{B}:1-3:5:7-9", A.to_uppercase() + ":1-100");
        let mut gtids = Gtids::parse(&text).unwrap();
        assert_eq!(gtids.to_string(), format!("{A}:1-100,{B}:1-3:5:7-9"));
        let b = |gno| Gtid::MySql {
            uuid: B.into(),
            tag: String::new(),
            gno,
        };
        assert!(gtids.record(b(4)));
        assert_eq!(gtids.to_string(), format!("{A}:1-100,{B}:1-5:7-9"));
        assert!(gtids.record(b(6)));
        assert!(gtids.record(b(10)));
        assert_eq!(gtids.to_string(), format!("{A}:1-100,{B}:1-10"));
        assert!(gtids.record(Gtid::MySql {
            uuid: A.into(),
            tag: "cdc".into(),
            gno: 1
        }));
        assert_eq!(gtids.to_string(), format!("{A}:1-100:cdc:1,{B}:1-10"));
        assert_eq!(Gtids::parse(&gtids.to_string()), Some(gtids.clone()));
        assert!(!gtids.record(Gtid::MariaDb {
            domain: 0,
            server: 1,
            seq: 1
        }));

        let sids = gtids.mysql_sids();
        assert_eq!(sids.len(), 3);
        let first = &sids[0];
        assert_eq!(first.intervals().len(), 1);
        assert_eq!((first.intervals()[0].start(), first.intervals()[0].end()), (1, 101));
        assert!(Gtids::parse("not-a-uuid:1-5").is_none());
        assert!(Gtids::parse(&format!("{A}:5-1")).is_none());
    }

    #[test]
    fn a_mysql_gtid_reads_with_or_without_its_tag() {
        let gtid = |uuid: &str, tag: &str, gno| Gtid::MySql {
            uuid: uuid.into(),
            tag: tag.into(),
            gno,
        };
        assert_eq!(
            parse_mysql_gtid(&format!("{}:12", A.to_uppercase())),
            Some(gtid(A, "", 12))
        );
        assert_eq!(parse_mysql_gtid(&format!("{A}:cdc:3")), Some(gtid(A, "cdc", 3)));
        assert_eq!(parse_mysql_gtid("nonsense:1"), None);
        assert_eq!(parse_mysql_gtid(A), None);
    }

    #[test]
    fn an_empty_position_takes_the_form_of_its_first_gtid() {
        let mut gtids = Gtids::default();
        assert!(gtids.record(Gtid::MySql {
            uuid: A.into(),
            tag: String::new(),
            gno: 1
        }));
        assert_eq!(gtids.to_string(), format!("{A}:1"));
    }
}
