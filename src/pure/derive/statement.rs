//! What a statement logged as text in a row-format binlog does to the tables it names: `TRUNCATE` and `DROP TABLE`
//! empty them; `RENAME TABLE`, partition operations and DML logged as a statement (a session's `binlog_format =
//! STATEMENT` or `MIXED`) change rows the binlog shows no image of — a gap for those tables.
//!
//! Pure: the binlog listener hands in the query event's text and default database. Column DDL (`ALTER TABLE … ADD
//! COLUMN`) changes no row and is nothing here.

use std::ops::ControlFlow;

use sqlparser::ast::{self, ObjectName, ObjectType, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

/// A table as `(database, table)`; the table `*` is every table of the database (`DROP DATABASE`).
pub(crate) type Table = (String, String);

/// What a logged statement did to the rows of the tables it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing for the cache (`BEGIN`, `COMMIT`, column DDL, grants, other objects).
    None,
    /// Every row is gone (`TRUNCATE`, `DROP TABLE`): `kind` is the statement's.
    Emptied { kind: &'static str, tables: Vec<Table> },
    /// Rows changed with no row images (`RENAME TABLE`, partitions, statement-logged DML): a gap for these tables.
    Gap { kind: &'static str, tables: Vec<Table> },
    /// A statement that may change rows but that the parser cannot read: a gap for every table.
    Unreadable { kind: &'static str },
}

/// Statements that may change rows, by their first word and, where the first is not enough, the second (`DROP
/// TABLE`, not `DROP USER`): what an unreadable one is taken for.
const ROW_CHANGING: &[(&str, Option<&[&str]>, &str)] = &[
    ("TRUNCATE", None, "truncate"),
    ("DROP", Some(&["TABLE", "TABLES", "DATABASE", "SCHEMA"]), "drop"),
    ("RENAME", Some(&["TABLE", "TABLES"]), "rename"),
    ("INSERT", None, "statement_dml"),
    ("REPLACE", None, "statement_dml"),
    ("UPDATE", None, "statement_dml"),
    ("DELETE", None, "statement_dml"),
    ("LOAD", None, "statement_dml"),
];

/// The effect of `sql` run with `database` as its default database.
pub(crate) fn effect(sql: &str, database: &str) -> Effect {
    let (might_change_rows, is_partition_ddl) = screen(sql);
    if might_change_rows.is_none() && !is_partition_ddl {
        return Effect::None;
    }
    let statements = match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(statements) => statements,
        Err(_) => {
            return Effect::Unreadable {
                kind: might_change_rows.unwrap_or("partition"),
            };
        }
    };
    let mut found = Found::default();
    for statement in &statements {
        found.add(statement, database, is_partition_ddl);
    }
    found.effect()
}

/// From the statement's first words alone, without parsing: the kind of row change it might make, and whether it is
/// partition DDL (an `ALTER` naming `PARTITION`).
fn screen(sql: &str) -> (Option<&'static str>, bool) {
    let mut words = sql
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_uppercase);
    let (first, second) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let might_change_rows = ROW_CHANGING
        .iter()
        .find(|(word, then, _)| *word == first && then.is_none_or(|then| then.contains(&second.as_str())))
        .map(|(_, _, kind)| *kind);
    let is_partition_ddl = first == "ALTER" && sql.to_ascii_uppercase().contains("PARTITION");
    (might_change_rows, is_partition_ddl)
}

/// The tables a statement's parts empty, and those whose rows change in ways the binlog does not show, by kind.
#[derive(Default)]
struct Found {
    emptied: Vec<(&'static str, Table)>,
    gap: Vec<(&'static str, Table)>,
}

impl Found {
    fn add(&mut self, statement: &Statement, database: &str, is_partition_ddl: bool) {
        let name = |object: &ObjectName| super::scope::split_name(object, database);
        let (emptied, gap) = (&mut self.emptied, &mut self.gap);
        match statement {
            Statement::Truncate(truncate) => {
                let tables = truncate.table_names.iter().filter_map(|target| name(&target.name));
                if truncate.partitions.is_some() {
                    gap.extend(tables.map(|table| ("partition", table)));
                } else {
                    emptied.extend(tables.map(|table| ("truncate", table)));
                }
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                ..
            } => emptied.extend(names.iter().filter_map(name).map(|table| ("drop", table))),
            // Every table of the database: `*` stands for them.
            Statement::Drop {
                object_type: ObjectType::Database | ObjectType::Schema,
                names,
                ..
            } => emptied.extend(
                names
                    .iter()
                    .map(|db| ("drop", (db.to_string().replace('`', ""), "*".to_string()))),
            ),
            Statement::RenameTable(renames) => {
                for rename in renames {
                    gap.extend(
                        [&rename.old_name, &rename.new_name]
                            .into_iter()
                            .filter_map(name)
                            .map(|t| ("rename", t)),
                    );
                }
            }
            Statement::AlterTable(alter) => {
                let partitions = alter
                    .operations
                    .iter()
                    .any(|operation| format!("{operation:?}").contains("Partition"));
                if partitions || is_partition_ddl {
                    gap.extend(name(&alter.name).map(|table| ("partition", table)));
                }
            }
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Merge(_) => {
                let _ = ast::visit_relations(statement, |relation: &ObjectName| {
                    if let Some(table) = name(relation) {
                        gap.push(("statement_dml", table));
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
            _ => {}
        }
    }

    /// Emptied tables first (their kind is the first one's); else the gap; else nothing (a statement the parser read
    /// that names no table's rows, `DROP VIEW`, `DROP INDEX`).
    fn effect(self) -> Effect {
        if let Some((kind, _)) = self.emptied.first() {
            let kind = *kind;
            return Effect::Emptied {
                kind,
                tables: dedup(self.emptied.into_iter().map(|(_, table)| table)),
            };
        }
        match self.gap.first() {
            Some((kind, _)) => Effect::Gap {
                kind,
                tables: dedup(self.gap.into_iter().map(|(_, table)| table)),
            },
            None => Effect::None,
        }
    }
}

fn dedup(tables: impl Iterator<Item = Table>) -> Vec<Table> {
    let mut unique = Vec::new();
    for table in tables {
        if !unique.contains(&table) {
            unique.push(table);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(db: &str, table: &str) -> Table {
        (db.to_string(), table.to_string())
    }

    #[test]
    fn truncate_and_drop_empty_their_tables() {
        assert_eq!(
            effect("TRUNCATE TABLE products", "shop"),
            Effect::Emptied {
                kind: "truncate",
                tables: vec![t("shop", "products")]
            }
        );
        assert_eq!(
            effect(
                "DROP TABLE IF EXISTS `products`, other.t /* generated by server */",
                "shop"
            ),
            Effect::Emptied {
                kind: "drop",
                tables: vec![t("shop", "products"), t("other", "t")]
            }
        );
    }

    #[test]
    fn renames_partitions_and_statement_dml_are_gaps_for_their_tables() {
        assert_eq!(
            effect("RENAME TABLE products TO old_products", "shop"),
            Effect::Gap {
                kind: "rename",
                tables: vec![t("shop", "products"), t("shop", "old_products")]
            }
        );
        assert_eq!(
            effect("UPDATE products SET price = 1 WHERE id = 2", "shop"),
            Effect::Gap {
                kind: "statement_dml",
                tables: vec![t("shop", "products")]
            }
        );
        assert!(matches!(
            effect("DELETE p FROM shop.products p JOIN shop.c ON c.id = p.category_id", "x"),
            Effect::Gap { tables, .. } if tables.contains(&t("shop", "products"))
        ));
        assert!(matches!(
            effect("ALTER TABLE products EXCHANGE PARTITION p0 WITH TABLE archive", "shop"),
            Effect::Gap { kind: "partition", .. } | Effect::Unreadable { kind: "partition" }
        ));
    }

    #[test]
    fn transactions_and_column_ddl_change_no_row() {
        for sql in [
            "BEGIN",
            "COMMIT",
            "ALTER TABLE products ADD COLUMN x INT",
            "CREATE TABLE t (id INT)",
            "GRANT ALL ON *.* TO x",
        ] {
            assert_eq!(effect(sql, "shop"), Effect::None, "{sql}");
        }
        assert_eq!(
            effect("UPDATE products SET weird syntax (", "shop"),
            Effect::Unreadable { kind: "statement_dml" }
        );
        assert_eq!(effect("DROP VIEW v", "shop"), Effect::None);
        // Other objects' statements, read or not, change no table's rows.
        for sql in ["DROP USER 'cw'@'%'", "DROP EVENT e", "RENAME USER a TO b"] {
            assert_eq!(effect(sql, "shop"), Effect::None, "{sql}");
        }
        assert_eq!(
            effect("DROP DATABASE IF EXISTS `other`", "shop"),
            Effect::Emptied {
                kind: "drop",
                tables: vec![t("other", "*")]
            }
        );
    }
}
