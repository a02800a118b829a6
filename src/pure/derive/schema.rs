//! What only the server knows about the tables a query reads: the foreign keys whose `ON DELETE`/`ON UPDATE` actions
//! change rows the binlog never shows (InnoDB applies them inside the engine, below replication: a parent's `DELETE`
//! logs the parent's row and nothing of the children it removed or set to NULL), which column sets are unique (a key
//! over columns that are not names several rows with one key), which tables are views, and each table's columns
//! (which table an unqualified column of a join belongs to). The daemon reads them
//! from information_schema at start and `check --connect` / `rules --connect` do too; offline they are unknown.
//!
//! Pure: the rows come from `database`; this module walks them.

use std::collections::HashSet;

/// The server's foreign keys (empty when not read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub foreign_keys: Vec<ForeignKey>,
    /// Primary and unique keys of the databases the jobs read: `(database, table, columns)`.
    pub unique_keys: Vec<(String, String, Vec<String>)>,
    /// Views of those databases: `(database, view, definition)` (the definition as the server prints it).
    pub views: Vec<(String, String, String)>,
    /// The columns of those databases' tables and views: `(database, table, columns)`.
    pub columns: Vec<(String, String, Vec<String>)>,
    /// Whether it was read from a server (`false`: offline, nothing known).
    pub read: bool,
}

impl Schema {
    /// Takes in what another server says of its tables (a binlog source whose jobs read a server of their own); what
    /// both say (one server reached twice) is kept once.
    pub(crate) fn merge(&mut self, other: Schema) {
        fn extend<T: PartialEq>(mine: &mut Vec<T>, theirs: Vec<T>) {
            for item in theirs {
                if !mine.contains(&item) {
                    mine.push(item);
                }
            }
        }
        extend(&mut self.foreign_keys, other.foreign_keys);
        extend(&mut self.unique_keys, other.unique_keys);
        extend(&mut self.views, other.views);
        extend(&mut self.columns, other.columns);
        self.read &= other.read;
    }
}

/// One foreign key: `database.table (columns)` references `parent_database.parent_table (parent_columns)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    pub database: String,
    pub table: String,
    pub columns: Vec<String>,
    pub parent_database: String,
    pub parent_table: String,
    pub parent_columns: Vec<String>,
    pub on_delete: Action,
    pub on_update: Action,
}

/// A referential action, as information_schema names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cascade,
    SetNull,
    SetDefault,
    /// `RESTRICT` or `NO ACTION`: the parent's change is refused while children exist, so none change.
    Restrict,
}

impl Action {
    /// `CASCADE`, `SET NULL`, `SET DEFAULT`; anything else restricts.
    pub fn parse(rule: &str) -> Self {
        match rule.trim().to_ascii_uppercase().as_str() {
            "CASCADE" => Action::Cascade,
            "SET NULL" => Action::SetNull,
            "SET DEFAULT" => Action::SetDefault,
            _ => Action::Restrict,
        }
    }

    /// Whether the parent's change changes child rows.
    pub(crate) fn changes_children(self) -> bool {
        self != Action::Restrict
    }

    fn sql(self) -> &'static str {
        match self {
            Action::Cascade => "CASCADE",
            Action::SetNull => "SET NULL",
            Action::SetDefault => "SET DEFAULT",
            Action::Restrict => "RESTRICT",
        }
    }
}

/// A table whose changes reach another table's rows below the binlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cascade {
    pub parent_database: String,
    pub parent_table: String,
    /// A deleted parent row changes children.
    pub on_delete: bool,
    /// An update of `columns` changes children.
    pub on_update: bool,
    /// The parent's referenced columns.
    pub columns: Vec<String>,
    /// How it gets there, for people: `shop.products.fk_category ON DELETE CASCADE`, then each key further down.
    pub path: String,
}

impl Schema {
    /// Whether `columns` of `database.table` name at most one row: a primary or unique key lies within them. `true`
    /// when unknown (offline, or a view).
    pub(crate) fn is_unique(&self, database: &str, table: &str, columns: &[&str]) -> bool {
        if !self.read || self.view(database, table).is_some() {
            return true;
        }
        self.unique_keys
            .iter()
            .filter(|(db, name, _)| db == database && name == table)
            .any(|(_, _, key)| key.iter().all(|column| columns.contains(&column.as_str())))
    }

    /// The columns of `database.table` (a table or a view); `None` when not read.
    pub(crate) fn columns_of(&self, database: &str, table: &str) -> Option<&[String]> {
        self.columns
            .iter()
            .find(|(db, name, _)| db == database && name == table)
            .map(|(_, _, columns)| columns.as_slice())
    }

    /// The definition of `database.table` when it is a view.
    pub fn view(&self, database: &str, table: &str) -> Option<&str> {
        self.views
            .iter()
            .find(|(db, name, _)| db == database && name == table)
            .map(|(_, _, definition)| definition.as_str())
    }

    /// The tables whose changes reach `database.table`'s rows through foreign keys that change children, directly
    /// or through a chain of them (a grandparent's delete cascading into the parent, and from there into the
    /// table); nearest first.
    pub(crate) fn cascades_into(&self, database: &str, table: &str) -> Vec<Cascade> {
        let mut found = Vec::new();
        let mut visited: HashSet<(String, String)> = HashSet::from([(database.to_string(), table.to_string())]);
        // (table reached, how it was reached)
        let mut frontier = vec![(database.to_string(), table.to_string(), String::new())];
        while let Some((database, table, below)) = frontier.pop() {
            for key in self.foreign_keys.iter().filter(|key| {
                key.database == database
                    && key.table == table
                    && (key.on_delete.changes_children() || key.on_update.changes_children())
            }) {
                let mut path = format!("{}.{}.{}", key.database, key.table, key.name);
                for (event, action) in [("DELETE", key.on_delete), ("UPDATE", key.on_update)] {
                    if action.changes_children() {
                        path.push_str(&format!(" ON {event} {}", action.sql()));
                    }
                }
                if !below.is_empty() {
                    path.push_str(&format!(", then {below}"));
                }
                found.push(Cascade {
                    parent_database: key.parent_database.clone(),
                    parent_table: key.parent_table.clone(),
                    on_delete: key.on_delete.changes_children(),
                    on_update: key.on_update.changes_children(),
                    columns: key.parent_columns.clone(),
                    path: path.clone(),
                });
                if visited.insert((key.parent_database.clone(), key.parent_table.clone())) {
                    frontier.insert(0, (key.parent_database.clone(), key.parent_table.clone(), path));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, table: &str, parent: &str, on_delete: &str, on_update: &str) -> ForeignKey {
        ForeignKey {
            name: name.into(),
            database: "shop".into(),
            table: table.into(),
            columns: vec![format!("{parent}_id")],
            parent_database: "shop".into(),
            parent_table: parent.into(),
            parent_columns: vec!["id".into()],
            on_delete: Action::parse(on_delete),
            on_update: Action::parse(on_update),
        }
    }

    #[test]
    fn key_columns_are_unique_when_a_unique_key_lies_within_them() {
        let schema = Schema {
            unique_keys: vec![
                ("shop".into(), "products".into(), vec!["id".into()]),
                (
                    "shop".into(),
                    "prices".into(),
                    vec!["product_id".into(), "currency".into()],
                ),
            ],
            read: true,
            ..Default::default()
        };
        assert!(schema.is_unique("shop", "products", &["id"]));
        assert!(schema.is_unique("shop", "products", &["name", "id"]));
        assert!(!schema.is_unique("shop", "products", &["name"]));
        assert!(!schema.is_unique("shop", "prices", &["product_id"]));
        assert!(schema.is_unique("shop", "prices", &["currency", "product_id"]));
        assert!(!schema.is_unique("shop", "no_keys", &["id"]));
        assert!(
            Schema::default().is_unique("shop", "products", &["name"]),
            "unknown offline"
        );
    }

    #[test]
    fn cascades_are_found_through_chains_and_restrict_stops_them() {
        let schema = Schema {
            foreign_keys: vec![
                key("fk_cat", "products", "categories", "CASCADE", "RESTRICT"),
                key("fk_sec", "categories", "sections", "SET NULL", "CASCADE"),
                key("fk_shop", "sections", "shops", "NO ACTION", "RESTRICT"),
                key("fk_brand", "products", "brands", "RESTRICT", "NO ACTION"),
                // A cycle ends: products' own deletes come back into products through sections and categories.
                key("fk_loop", "sections", "products", "CASCADE", "CASCADE"),
            ],
            read: true,
            ..Default::default()
        };
        let found = schema.cascades_into("shop", "products");
        let parents: Vec<&str> = found.iter().map(|c| c.parent_table.as_str()).collect();
        assert_eq!(parents, ["categories", "sections", "products"]);
        assert!(found[0].on_delete && !found[0].on_update);
        assert_eq!(found[0].path, "shop.products.fk_cat ON DELETE CASCADE");
        assert!(found[1].on_delete && found[1].on_update);
        assert_eq!(
            found[1].path,
            "shop.categories.fk_sec ON DELETE SET NULL ON UPDATE CASCADE, then shop.products.fk_cat ON DELETE CASCADE"
        );
        assert!(schema.cascades_into("shop", "shops").is_empty());
        assert_eq!(Action::parse("set null"), Action::SetNull);
    }
}
