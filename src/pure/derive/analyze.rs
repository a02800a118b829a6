//! A warm query read with a real SQL parser (`sqlparser`, MySQL dialect): every table it reads, resolved through
//! aliases, `db.table` and the default database, and its shape — one row per key from one table, a result computed
//! over many rows, or something the binlog cannot follow.
//!
//! Pure: no server is asked. Unqualified columns are resolved only when the query reads one table (which column
//! belongs to which table is the server's knowledge); views are taken as tables here (`views` expands them first
//! when the schema is known).

use std::ops::ControlFlow;

use sqlparser::ast::{
    self, Expr, FunctionArguments, GroupByExpr, ObjectName, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    Statement,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

pub(crate) use super::filter::parse_condition;
use super::filter::{bound, conjuncts, links, mentions, predicate};
pub(crate) use super::scope::TableRead;
pub(crate) use super::scope::split_name;
use super::scope::{Scope, volatile};
use crate::pure::model::KeyTemplate;
use crate::pure::predicate::Predicate;

/// How a query's keys relate to its rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// One result row per key; every key placeholder is a plain column of `tables[driving]`.
    Rows {
        driving: usize,
        /// (placeholder, column of the driving table).
        key_columns: Vec<(String, String)>,
        /// The `WHERE` (and inner joins' `ON`) as a filter over the driving table's columns; other tables' parts are
        /// unknown leaves.
        filter: Option<Predicate>,
    },
    /// A result computed over many rows (aggregates, `GROUP BY`, `DISTINCT`, `LIMIT`) or stored whole in one key.
    Whole {
        why: String,
        /// Where every key placeholder is a plain column of one table: that table and (placeholder, column).
        keyed_by: Option<(usize, Vec<(String, String)>)>,
        /// Each key is one group of its own rows: `GROUP BY` exactly the key's columns, no `LIMIT`. Reading one key
        /// (a `refresh_query` for that group) then reads what a run would write for it.
        per_key: bool,
    },
    /// What following the binlog cannot keep right, and why.
    TtlOnly(String),
}

/// What a query reads and its shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Analysis {
    pub tables: Vec<TableRead>,
    pub shape: Shape,
}

/// Aggregate functions: a query using one computes over many rows.
const AGGREGATES: &[&str] = &[
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "GROUP_CONCAT",
    "BIT_AND",
    "BIT_OR",
    "BIT_XOR",
    "STD",
    "STDDEV",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "VARIANCE",
    "VAR_POP",
    "VAR_SAMP",
    "JSON_ARRAYAGG",
    "JSON_OBJECTAGG",
];

/// Reads `sql` (a warm query; `:name` parameters allowed) whose rows fill `key`, with `database` as the default.
pub(crate) fn analyze(sql: &str, database: &str, key: &KeyTemplate) -> Analysis {
    let ttl_only = |tables: Vec<TableRead>, why: String| Analysis {
        tables,
        shape: Shape::TtlOnly(why),
    };
    // A configured refresh query is kept with `?` for its parameters (which the parser reads as they are).
    let sql = crate::pure::model::named_params(sql).map_or_else(|_| sql.to_string(), |(sql, _)| sql);
    let statements = match Parser::parse_sql(&MySqlDialect {}, &sql) {
        Ok(statements) => statements,
        Err(error) => return ttl_only(Vec::new(), format!("the SQL parser cannot read the query ({error})")),
    };
    let [Statement::Query(query)] = statements.as_slice() else {
        return ttl_only(Vec::new(), "the query is not one SELECT".into());
    };
    let tables = all_tables(query, database);
    if query.with.is_some() {
        return ttl_only(tables, "it uses WITH (a common table expression)".into());
    }
    let select = match query.body.as_ref() {
        SetExpr::Select(select) => select,
        SetExpr::SetOperation { op, .. } => {
            return ttl_only(tables, format!("it combines queries with {op}"));
        }
        _ => return ttl_only(tables, "its body is not a plain SELECT".into()),
    };
    if let Some(why) = volatile(query) {
        return ttl_only(tables, why);
    }
    let scope = match Scope::of(select, database) {
        Ok(scope) => scope,
        Err(why) => return ttl_only(tables, why),
    };
    let mut tables = scope.tables.clone();
    columns_read(query, select, &scope, &mut tables);

    let key_columns = key_columns(select, &scope, key);
    if let Some(why) = why_whole(query, select, key) {
        let keyed_by = key_columns.ok().filter(|_| !key.is_single_key());
        let per_key =
            query.limit_clause.is_none() && keyed_by.as_ref().is_some_and(|(_, columns)| groups_by(select, columns));
        return Analysis {
            tables,
            shape: Shape::Whole { why, keyed_by, per_key },
        };
    }
    let (driving, key_columns) = match key_columns {
        Ok(found) => found,
        Err(why) => return ttl_only(tables, why),
    };
    for condition in select.selection.iter().chain(scope.ons.iter().copied()) {
        for (table, column, driving_column) in links(condition, &scope, driving) {
            let link = (column, driving_column);
            if !tables[table].links.contains(&link) {
                tables[table].links.push(link);
            }
        }
    }
    let filter = driving_filter(select, &scope, driving);
    Analysis {
        tables,
        shape: Shape::Rows {
            driving,
            key_columns,
            filter,
        },
    }
}

/// Why the query's result is computed over many rows or stored whole (so no row maps to one key), if it is.
fn why_whole(query: &ast::Query, select: &ast::Select, key: &KeyTemplate) -> Option<String> {
    let why = if key.is_single_key() {
        "the whole result is one key"
    } else if has_aggregate(select) {
        "it aggregates rows"
    } else if !matches!(&select.group_by, GroupByExpr::Expressions(exprs, _) if exprs.is_empty()) {
        "it groups rows (GROUP BY)"
    } else if select.having.is_some() {
        "it filters groups (HAVING)"
    } else if select.distinct.is_some() {
        "it removes duplicate rows (DISTINCT)"
    } else if query.limit_clause.is_some() {
        "which rows it returns depends on other rows (LIMIT)"
    } else {
        return None;
    };
    Some(why.to_string())
}

/// Whether `select` groups by exactly the key's columns (`(placeholder, column)`), so each key is one group.
fn groups_by(select: &ast::Select, columns: &[(String, String)]) -> bool {
    let mut grouped: Vec<String> = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => exprs
            .iter()
            .filter_map(|expr| match expr {
                Expr::Identifier(ident) => Some(ident.value.to_lowercase()),
                Expr::CompoundIdentifier(parts) => parts.last().map(|part| part.value.to_lowercase()),
                _ => None,
            })
            .collect(),
        GroupByExpr::All(_) => Vec::new(),
    };
    let mut keyed: Vec<String> = columns.iter().map(|(_, column)| column.to_lowercase()).collect();
    grouped.sort();
    grouped.dedup();
    keyed.sort();
    keyed.dedup();
    !keyed.is_empty() && grouped == keyed
}

/// The `WHERE` and the inner joins' `ON` as a filter over the driving table's columns.
fn driving_filter(select: &ast::Select, scope: &Scope<'_>, driving: usize) -> Option<Predicate> {
    let conditions = select.selection.iter().chain(scope.inner_ons.iter().copied());
    // Conjuncts about other tables only (a join's link, `c.visible = 1`) are left to those tables' rules: dropping
    // them widens the filter, so a row it keeps is refreshed and the refresh query decides.
    let mut parts: Vec<Predicate> = conditions
        .flat_map(|condition| conjuncts(condition))
        .filter(|conjunct| {
            mentions(conjunct, scope, driving) && links(conjunct, scope, driving).is_empty() && !bound(conjunct)
        })
        .map(|conjunct| predicate(conjunct, scope, driving))
        .collect();
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Predicate::And(parts)),
    }
}

/// Every table named anywhere in the query, subqueries included (for the report when the shape is TTL only).
fn all_tables(query: &ast::Query, database: &str) -> Vec<TableRead> {
    let mut tables: Vec<TableRead> = Vec::new();
    let _ = ast::visit_relations(query, |name: &ObjectName| {
        if let Some((db, table)) = split_name(name, database)
            && !tables.iter().any(|read| read.database == db && read.table == table)
        {
            tables.push(TableRead {
                alias: table.clone(),
                database: db,
                table,
                links: Vec::new(),
                outer: false,
                columns_read: None,
            });
        }
        ControlFlow::<()>::Continue(())
    });
    tables
}

/// Fills each table's `columns_read` from every expression of the query.
fn columns_read(query: &ast::Query, select: &ast::Select, scope: &Scope<'_>, tables: &mut [TableRead]) {
    let mut unknown = false;
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => unknown = true,
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let alias = name.to_string();
                if let Some(read) = tables.iter_mut().find(|read| read.alias == alias) {
                    read.columns_read = None;
                }
            }
            _ => {}
        }
    }
    let mut note = |expr: &Expr| {
        if let Expr::Identifier(_) | Expr::CompoundIdentifier(_) = expr {
            match scope.column(expr) {
                Some((table, column)) => {
                    if let Some(columns) = &mut tables[table].columns_read
                        && !columns.contains(&column)
                    {
                        columns.push(column);
                    }
                }
                None => unknown = true,
            }
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = ast::visit_expressions(select, &mut note);
    let _ = ast::visit_expressions(&query.order_by, &mut note);
    if unknown {
        for read in tables.iter_mut() {
            read.columns_read = None;
        }
    }
}

fn has_aggregate(select: &ast::Select) -> bool {
    let flow = ast::visit_expressions(&select.projection, |expr: &Expr| match expr {
        Expr::Function(function)
            if AGGREGATES.contains(&function.name.to_string().to_uppercase().as_str())
                && !matches!(function.args, FunctionArguments::None) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    });
    flow.is_break()
}

/// Each key placeholder's source: a plain column of one table. `Err` says why not.
fn key_columns(
    select: &ast::Select,
    scope: &Scope<'_>,
    key: &KeyTemplate,
) -> Result<(usize, Vec<(String, String)>), String> {
    let mut table: Option<usize> = None;
    let mut columns = Vec::new();
    for placeholder in key.placeholders() {
        let (index, column) = placeholder_source(select, scope, placeholder)?;
        if table.is_some_and(|table| table != index) {
            return Err("the key's columns come from more than one table".into());
        }
        table = Some(index);
        columns.push((placeholder.to_string(), column));
    }
    table
        .map(|table| (table, columns))
        .ok_or_else(|| "the key has no placeholders".into())
}

fn placeholder_source(select: &ast::Select, scope: &Scope<'_>, placeholder: &str) -> Result<(usize, String), String> {
    for item in &select.projection {
        let (expr, name) = match item {
            SelectItem::ExprWithAlias { expr, alias } => (expr, alias.value.clone()),
            SelectItem::UnnamedExpr(expr) => match expr {
                Expr::Identifier(ident) => (expr, ident.value.clone()),
                Expr::CompoundIdentifier(parts) => (expr, parts.last().map(|p| p.value.clone()).unwrap_or_default()),
                _ => (expr, expr.to_string()),
            },
            SelectItem::Wildcard(_) if scope.tables.len() == 1 => return Ok((0, placeholder.to_string())),
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let alias = name.to_string();
                if let Some(index) = scope.tables.iter().position(|read| read.alias == alias) {
                    return Ok((index, placeholder.to_string()));
                }
                continue;
            }
            _ => continue,
        };
        if !name.eq_ignore_ascii_case(placeholder) {
            continue;
        }
        return scope.column(expr).ok_or_else(|| match expr {
            Expr::Identifier(_) => format!(
                "the key column {{{placeholder}}} is not qualified with its table (write `alias.{placeholder}`)"
            ),
            _ => format!("the key column {{{placeholder}}} is computed (`{expr}`), not a column of a table"),
        });
    }
    Err(format!(
        "the key placeholder {{{placeholder}}} is not a result column the analysis can see"
    ))
}
