//! A `[[warm]]` job's `type = "set"` or `"zset"`: its `member` template, a sorted set's `score` column, and a top N's
//! `buffer` — every field checked on its own, each problem naming the field.

use super::entry::Entry;
use super::*;
use crate::pure::model::{MemberKind, Members, Top};

impl Context {
    /// The job's members when `type` is `"set"` or `"zset"` (`Some(None)` for other types; `None` after a problem).
    pub(super) fn job_members(
        &mut self,
        entry: &Entry,
        raw: &RawWarmJob,
        key: Option<&KeyTemplate>,
    ) -> Option<Option<Arc<Members>>> {
        let kind = match raw.structure.as_deref() {
            Some("set") => MemberKind::Set,
            Some("zset") => MemberKind::Zset,
            _ => {
                for (field, given) in [
                    ("member", raw.member.is_some()),
                    ("score", raw.score.is_some()),
                    ("buffer", raw.buffer.is_some()),
                ] {
                    if given {
                        let message = "applies to type = \"set\" or \"zset\" only".to_string();
                        entry.problem(self, Some(field), message);
                    }
                }
                return Some(None);
            }
        };
        let before = self.problems.len();
        let name = kind.as_str();
        let member = self.members_member(entry, raw, name);
        let score = self.members_score(entry, raw, kind);
        self.members_refuse(entry, raw, name, key);
        let top = self.members_top(entry, raw, score.as_deref())?;
        if let (Some(_), Some(key)) = (&top, key.filter(|key| !key.is_single_key())) {
            let message = format!(
                "\"{key}\" has placeholders, but a top N (LIMIT) ranks the whole query, not each key: write one key \
                 (\"top:products\") or leave the LIMIT out"
            );
            entry.problem(self, Some("key"), message);
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Some(Arc::new(Members {
            kind,
            member: member?,
            score,
            top,
        })))
    }

    /// A set's `member` template: given, and with a placeholder.
    fn members_member(&mut self, entry: &Entry, raw: &RawWarmJob, name: &str) -> Option<KeyTemplate> {
        match raw.member.as_deref() {
            None => {
                let message =
                    format!("type = \"{name}\" needs `member`: the template of the member each row adds (\"{{id}}\")");
                entry.problem(self, None, message);
                None
            }
            Some(text) => match KeyTemplate::parse(text) {
                Ok(member) if member.is_single_key() => {
                    let message = format!(
                        "\"{text}\" has no placeholder, so every row would add the same member: name the row's \
                     columns (\"{{id}}\")"
                    );
                    entry.problem(self, Some("member"), message);
                    None
                }
                Ok(member) => Some(member),
                Err(message) => {
                    entry.problem(self, Some("member"), message);
                    None
                }
            },
        }
    }

    /// A sorted set's `score` column; a plain set has none.
    fn members_score(&mut self, entry: &Entry, raw: &RawWarmJob, kind: MemberKind) -> Option<String> {
        match (kind, raw.score.as_deref().map(str::trim)) {
            (MemberKind::Zset, None) => {
                let message = "type = \"zset\" needs `score`: the numeric column each member is scored by".into();
                entry.problem(self, None, message);
                None
            }
            (MemberKind::Zset, Some("")) => {
                entry.problem(
                    self,
                    Some("score"),
                    "is empty: name a numeric column of the query".into(),
                );
                None
            }
            (MemberKind::Set, Some(_)) => {
                let message = "a set's members have no score: use type = \"zset\" for a sorted set".into();
                entry.problem(self, Some("score"), message);
                None
            }
            (_, score) => score.map(str::to_string),
        }
    }

    /// The fields a set or sorted set has no use for.
    fn members_refuse(&mut self, entry: &Entry, raw: &RawWarmJob, name: &str, key: Option<&KeyTemplate>) {
        let whole = "a key holds the members of every row that renders it";
        let refused = [
            (
                "shape",
                raw.shape.is_some(),
                format!("{whole}: shape applies to type = \"string\" only"),
            ),
            (
                "compress",
                raw.compress.is_some(),
                format!("a {name}'s members are written as they are: compression applies to type = \"string\" only"),
            ),
            (
                "encrypt_columns",
                raw.encrypt_columns.as_ref().is_some_and(|columns| !columns.is_empty()),
                format!("a {name}'s members are written as they are: encryption applies to type = \"string\" only"),
            ),
            (
                "refresh_query",
                raw.refresh_query.is_some(),
                format!("{whole}: a changed row adds or removes its member, and a refresh of the key runs the job"),
            ),
            (
                "fill_on_miss",
                raw.fill_on_miss == Some(true),
                format!("{whole}: a missing key is written by the next run, never from one row"),
            ),
        ];
        for (field, given, message) in refused {
            if given {
                entry.problem(self, Some(field), message);
            }
        }
        if let Some(key) = key.filter(|key| key.has_adjacent_placeholders()) {
            let message = format!("\"{key}\" has placeholders side by side, so a key cannot be read back into values");
            entry.problem(self, Some("key"), message);
        }
    }

    /// A sorted set's top N, from `ORDER BY score DESC LIMIT N`, and its `buffer`.
    fn members_top(&mut self, entry: &Entry, raw: &RawWarmJob, score: Option<&str>) -> Option<Option<Top>> {
        let query = raw.query.as_deref()?;
        let parsed = match crate::pure::derive::top::top_query(query, score) {
            Ok(parsed) => parsed,
            Err(message) => {
                entry.problem(self, Some("query"), message);
                return None;
            }
        };
        let Some(n) = parsed.n else {
            if raw.buffer.is_some() {
                let message = "applies to a top N (a query with ORDER BY score DESC LIMIT N) only".into();
                entry.problem(self, Some("buffer"), message);
            }
            return Some(None);
        };
        let buffer = raw.buffer.unwrap_or(n);
        Some(Some(Top {
            n,
            buffer,
            // One row past the cap: the rename sees whether the cut splits rows of one score.
            query: parsed.with_limit(n + buffer + 1),
        }))
    }
}
