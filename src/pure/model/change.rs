//! The change data capture part of the vocabulary: `[[on_change]]` rules (explicit or derived) and what they act on,
//! the row changes the binlog delivers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{KeyTemplate, Ttl};

/// An `[[on_change]]` rule: what a changed row of a table does to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRule {
    /// `database.table`.
    pub database: String,
    pub table: String,
    /// Key templates (a trailing or inner `*` makes a pattern) deleted for the row's before and after images.
    pub delete: Vec<KeyTemplate>,
    /// Key templates refreshed from the database (through the job with that template and its `refresh_query`).
    pub refresh: Vec<KeyTemplate>,
    /// Warm jobs run when the table changes, at most once per `debounce`.
    pub warm: Vec<String>,
    pub debounce: Duration,
    /// When non-empty, an UPDATE that changes none of these columns is ignored.
    pub when_changed: Vec<String>,
    /// A key written straight from the row image (no query): the chosen columns as a JSON object.
    pub project: Option<Projection>,
    /// Which rows the keys exist for (`where`, or a derived rule's query filter): a row whose after image is not in
    /// it has its `refresh` keys deleted instead of refreshed.
    pub filter: Option<Arc<RowFilter>>,
    /// The `[[binlog]]` source whose changes it follows: `None` for the only one (with several, every rule names
    /// one; a derived rule, its job's).
    pub source: Option<Arc<str>>,
    /// The `[[warm]]` job this rule was derived from; `None` for an `[[on_change]]` rule.
    pub derived_from: Option<Arc<str>>,
    /// A derived join rule's way from a changed row of this (joined) table to the job's keys.
    pub lookup: Option<Arc<ReverseLookup>>,
    /// Which row events the rule acts on (`events`; all by default).
    pub events: RowEvents,
    /// A derived rule of a set or sorted set job: the members a changed row adds, moves or removes.
    pub members: Option<Arc<MemberRule>>,
}

/// How a changed row of a set's (or sorted set's) own table changes its members: the job's key, member and score
/// over the table's columns, written from the row images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRule {
    pub job: Arc<str>,
    pub members: Arc<super::Members>,
    pub key: KeyTemplate,
    pub member: KeyTemplate,
    /// The table column a sorted set's score is.
    pub score: Option<String>,
}

/// The pseudo-column naming the database a changed row came from, for templates of a table pattern.
pub(crate) const SOURCE_DATABASE: &str = "_database";
/// The pseudo-column naming the table a changed row came from.
pub(crate) const SOURCE_TABLE: &str = "_table";

impl ChangeRule {
    /// Whether its `database` or `table` is a pattern (`shop_*.orders`).
    pub(crate) fn is_table_pattern(&self) -> bool {
        self.database.contains('*') || self.table.contains('*')
    }

    /// Whether a template of it names [`SOURCE_DATABASE`] or [`SOURCE_TABLE`].
    pub(crate) fn names_source(&self) -> bool {
        self.delete
            .iter()
            .chain(&self.refresh)
            .chain(self.project.as_ref().map(|projection| &projection.key))
            .flat_map(KeyTemplate::placeholders)
            .any(|name| name == SOURCE_DATABASE || name == SOURCE_TABLE)
    }
}

/// Which kinds of row change a rule acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowEvents {
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
}

impl RowEvents {
    pub const ALL: RowEvents = RowEvents {
        insert: true,
        update: true,
        delete: true,
    };

    /// The names `events` takes, of the kinds this holds, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("insert", self.insert),
            ("update", self.update),
            ("delete", self.delete),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

impl Default for RowEvents {
    fn default() -> Self {
        Self::ALL
    }
}

/// How a changed row of a joined table reaches a job's keys: the rows of the job's own (driving) table that join it,
/// found by a query on the join's columns, and their keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseLookup {
    pub job: Arc<str>,
    /// The driving table.
    pub database: String,
    pub table: String,
    /// The join's equalities: (the changed table's column, the driving table's column).
    pub links: Vec<(String, String)>,
    /// The job's key template over the driving table's columns.
    pub key: KeyTemplate,
    /// Refresh the keys found (the read decides), or delete them (no refresh path, or a filter the read does not
    /// apply).
    pub refresh: bool,
    /// More keys than this for one batch re-run the job instead.
    pub max_fanout: usize,
}

/// The rows a rule's keys exist for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    pub predicate: crate::pure::predicate::Predicate,
    /// The refresh query applies the same filter (a derived rule found it there): a row the image cannot decide
    /// (`'Active' = 'active'` under an unknown collation) is refreshed and the read decides; otherwise it is deleted.
    pub read_decides: bool,
}

/// A key whose value is a projection of one row, written from the binlog's row image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub key: KeyTemplate,
    /// Columns of the value, in this order.
    pub columns: Vec<String>,
    pub ttl: Ttl,
    /// How the value is stored (`[defaults]`' compression).
    pub encoding: crate::pure::codec::Encoding,
}

/// A row image as the change planner sees it: column name → the value as key text (`None` for NULL).
pub(crate) type RowImage = HashMap<String, Option<String>>;

/// One changed row from the binlog.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowChange {
    /// The row before the change (UPDATE, DELETE).
    pub before: Option<Arc<RowImage>>,
    /// The row after the change (INSERT, UPDATE); shared with the refreshes that must see it.
    pub after: Option<Arc<RowImage>>,
    /// For an UPDATE, the columns whose value differs between the images.
    pub changed: Vec<String>,
    /// The after image as JSON per column, for projections (only when a rule projects).
    pub after_json: Option<HashMap<String, Vec<u8>>>,
}

/// What a refresh must see: the changed row as its binlog event wrote it. A refresh whose read returns other values
/// for the columns it takes from `table` read the row before the event's commit (or from a lagging replica), and
/// reads again rather than cache it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenRow {
    /// `database.table` of the changed row.
    pub table: Arc<str>,
    /// The row after the change.
    pub image: Arc<RowImage>,
    /// When the change was committed (the binlog event's timestamp, seconds since the epoch, server clock).
    pub committed_at: u32,
}
