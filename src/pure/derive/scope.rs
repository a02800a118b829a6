//! The FROM clause of a query as the analysis reads it: its tables resolved through aliases, `db.table` and the
//! default database, its join conditions, the table and column an identifier names; and what makes a query change
//! without any row changing (volatile functions, subqueries, variables).
//!
//! Pure, shared by `analyze` (the query's shape) and `filter` (its `WHERE` as a predicate).

use std::ops::ControlFlow;

use sqlparser::ast::{self, Expr, JoinConstraint, JoinOperator, ObjectName, TableFactor};

/// A table the query reads, as the query names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableRead {
    pub database: String,
    pub table: String,
    /// The name the query refers to it by: its alias, else its name.
    pub alias: String,
    /// Equalities of its ON condition and the `WHERE` with the driving table's columns: (its column, driving column).
    pub links: Vec<(String, String)>,
    /// Joined with `LEFT`/`RIGHT JOIN`.
    pub outer: bool,
    /// Every column of it the query reads; `None` when that cannot be told (`*`, an unqualified column in a join).
    pub columns_read: Option<Vec<String>>,
}

impl TableRead {
    /// `database.table`.
    pub(crate) fn qualified(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }
}

/// What a TTL-only reason says when no rule can cover the query: its result changes with no row changing.
pub(super) const CHANGES_WITHOUT_ROWS: &str = "changes without any row changing";

/// Functions whose value changes without any row changing: a query using them is TTL only.
const VOLATILE: &[&str] = &[
    "NOW",
    "CURRENT_TIMESTAMP",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURDATE",
    "CURTIME",
    "SYSDATE",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "UNIX_TIMESTAMP",
    "RAND",
    "UUID",
    "UUID_SHORT",
    "CONNECTION_ID",
    "LAST_INSERT_ID",
    "FOUND_ROWS",
    "ROW_COUNT",
    "USER",
    "CURRENT_USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "SLEEP",
    "GET_LOCK",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "NEXTVAL",
    "LASTVAL",
];

/// Why the query is TTL only for reasons anywhere in it: a subquery, a window function, a volatile function, a user
/// variable.
pub(super) fn volatile(query: &ast::Query) -> Option<String> {
    let flow = ast::visit_expressions(query, |expr: &Expr| {
        let why = match expr {
            Expr::Subquery(_) | Expr::Exists { .. } => Some("it has a subquery".to_string()),
            Expr::In {
                target: ast::InTarget::Subquery(_),
                ..
            } => Some("it has a subquery".to_string()),
            Expr::Function(function) if function.over.is_some() => Some(format!(
                "it uses a window function ({})",
                function.name.to_string().to_uppercase()
            )),
            Expr::Function(function) => {
                let name = function.name.to_string().to_uppercase();
                VOLATILE
                    .contains(&name.as_str())
                    .then(|| format!("{name}() {CHANGES_WITHOUT_ROWS}"))
            }
            Expr::Identifier(ident) if ident.value.starts_with('@') => Some(format!(
                "it reads the variable {}, which {CHANGES_WITHOUT_ROWS}",
                ident.value
            )),
            _ => None,
        };
        match why {
            Some(why) => ControlFlow::Break(why),
            None => ControlFlow::Continue(()),
        }
    });
    match flow {
        ControlFlow::Break(why) => Some(why),
        ControlFlow::Continue(()) => None,
    }
}

/// The tables of the FROM clause, with the joins' ON conditions.
pub(super) struct Scope<'q> {
    pub(super) tables: Vec<TableRead>,
    /// Inner joins' ON conditions: they filter like the `WHERE`.
    pub(super) inner_ons: Vec<&'q Expr>,
    /// Every join's ON condition (an outer join's links tables but does not filter).
    pub(super) ons: Vec<&'q Expr>,
}

impl<'q> Scope<'q> {
    pub(super) fn of(select: &'q ast::Select, database: &str) -> Result<Self, String> {
        let mut scope = Scope {
            tables: Vec::new(),
            inner_ons: Vec::new(),
            ons: Vec::new(),
        };
        for from in &select.from {
            scope.add(&from.relation, database, false)?;
            for join in &from.joins {
                let (constraint, outer) = match &join.join_operator {
                    JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::StraightJoin(c) => (c, false),
                    JoinOperator::CrossJoin(c) => (c, false),
                    JoinOperator::Left(c)
                    | JoinOperator::LeftOuter(c)
                    | JoinOperator::Right(c)
                    | JoinOperator::RightOuter(c) => (c, true),
                    other => return Err(format!("it uses a join the analysis does not know ({other:?})")),
                };
                scope.add(&join.relation, database, outer)?;
                match constraint {
                    JoinConstraint::On(on) if !outer => scope.inner_ons.push(on),
                    JoinConstraint::On(_) | JoinConstraint::None => {}
                    JoinConstraint::Using(_) | JoinConstraint::UsingAlias(..) | JoinConstraint::Natural => {
                        return Err("it joins with USING or NATURAL: write the join as ON a.x = b.y".into());
                    }
                }
                if let JoinConstraint::On(on) = constraint {
                    scope.ons.push(on);
                }
            }
        }
        if scope.tables.is_empty() {
            return Err("it reads no table".into());
        }
        Ok(scope)
    }

    fn add(&mut self, factor: &TableFactor, database: &str, outer: bool) -> Result<(), String> {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let (db, table) =
                    split_name(name, database).ok_or_else(|| format!("the table name {name} cannot be read"))?;
                self.tables.push(TableRead {
                    alias: alias
                        .as_ref()
                        .map_or_else(|| table.clone(), |alias| alias.name.value.clone()),
                    database: db,
                    table,
                    links: Vec::new(),
                    outer,
                    columns_read: Some(Vec::new()),
                });
                Ok(())
            }
            TableFactor::Derived { .. } => Err("it reads a derived table (a subquery in FROM)".into()),
            other => Err(format!("it reads from {other}, which is not a table")),
        }
    }

    /// The table (index) and column an identifier names; `None` when it cannot be told without the schema.
    pub(super) fn column(&self, expr: &Expr) -> Option<(usize, String)> {
        match expr {
            Expr::Identifier(ident) if self.tables.len() == 1 && !ident.value.starts_with('@') => {
                Some((0, ident.value.clone()))
            }
            Expr::CompoundIdentifier(parts) => {
                let names: Vec<&str> = parts.iter().map(|part| part.value.as_str()).collect();
                let (qualifier, column) = match names.as_slice() {
                    [table, column] => ((None, *table), *column),
                    [db, table, column] => ((Some(*db), *table), *column),
                    _ => return None,
                };
                let index = self.tables.iter().position(|read| match qualifier {
                    (None, alias) => read.alias == alias,
                    (Some(db), table) => read.database == db && read.table == table,
                })?;
                Some((index, column.to_string()))
            }
            Expr::Nested(inner) => self.column(inner),
            _ => None,
        }
    }
}

/// `db.table` or `table` (in `database`).
pub(crate) fn split_name(name: &ObjectName, database: &str) -> Option<(String, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| part.as_ident().map(|ident| ident.value.clone()))
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [table] => Some((database.to_string(), table.clone())),
        [db, table] => Some((db.clone(), table.clone())),
        _ => None,
    }
}
