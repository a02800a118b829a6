//! Views expanded into the queries that read them, so that the analysis sees the base tables the binlog shows. A
//! view of one table with plain columns and an optional `WHERE` (`CREATE VIEW active_products AS SELECT id, name
//! FROM products WHERE status = 'active'`) is merged: the query reads the base table under the view's name or alias,
//! its columns renamed to the base table's and the view's condition added to the `WHERE` (or to the join's `ON`).
//! Any other view (joins, aggregates, `DISTINCT`, `LIMIT`, computed columns, a view of a view) cannot be merged; its
//! base tables are named, so that a change there can at least re-run the job.
//!
//! Pure: the views' definitions come from `schema`.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    self, Expr, GroupByExpr, Ident, JoinConstraint, JoinOperator, ObjectName, SelectItem, SetExpr, Statement,
    TableAlias, TableFactor,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::schema::Schema;
use super::scope::split_name;

/// What reading the views of a query gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expansion {
    /// The query reads no view (or the schema is unknown).
    NoViews,
    /// Every view merged: the query over base tables, and the views merged (`db.view`).
    Merged { sql: String, views: Vec<String> },
    /// A view that cannot be merged, why, and the base tables of every view the query reads (`(db, table)`).
    Opaque { why: String, bases: Vec<(String, String)> },
}

/// Where a joined view sits: (the FROM item, the join) indexes.
type JoinAt = (usize, usize);

/// A view merged into the query: its base table and each of its columns' base column.
struct Mergeable {
    database: String,
    table: String,
    columns: HashMap<String, String>,
    condition: Option<Expr>,
}

/// Expands the views `sql` reads (`database` the default), as the module docs say.
pub(crate) fn expand(sql: &str, database: &str, schema: &Schema) -> Expansion {
    if !schema.read || schema.views.is_empty() {
        return Expansion::NoViews;
    }
    let sql = crate::pure::model::named_params(sql).map_or_else(|_| sql.to_string(), |(sql, _)| sql);
    let Ok(mut statements) = Parser::parse_sql(&MySqlDialect {}, &sql) else {
        return Expansion::NoViews;
    };
    let [Statement::Query(query)] = statements.as_mut_slice() else {
        return Expansion::NoViews;
    };
    let views = views_read(query, database, schema);
    if views.is_empty() {
        return Expansion::NoViews;
    }
    let opaque = |why: String| Expansion::Opaque {
        why,
        bases: views
            .iter()
            .flat_map(|(db, view)| base_tables(schema, db, view, 0))
            .collect(),
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return opaque("it reads a view in a query that is not one plain SELECT".into());
    };
    // First every view's relation replaced by its base table (under the view's name or alias)…
    let merges = match replace_views(select, database, schema) {
        Ok(merges) => merges,
        Err(why) => return opaque(why),
    };
    if select
        .projection
        .iter()
        .any(|item| matches!(item, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)))
    {
        return opaque("it selects * from a view".into());
    }
    // …then the output names kept while columns are renamed to the base table's…
    keep_output_names(select);
    rename_columns(query, &merges);
    // …and last the views' conditions, over base columns, added where each view was read.
    let SetExpr::Select(select) = query.body.as_mut() else {
        unreachable!("checked above");
    };
    if let Err(why) = add_conditions(select, merges) {
        return opaque(why);
    }
    Expansion::Merged {
        sql: query.to_string(),
        views: views.iter().map(|(db, view)| format!("{db}.{view}")).collect(),
    }
}

/// A view read in the query, merged: the alias it is read under, its definition, and the join that reads it (`None`
/// for a `FROM` item).
type Merge = (String, Mergeable, Option<JoinAt>);

/// The views `query` reads, (database, view), each once.
fn views_read(query: &ast::Query, database: &str, schema: &Schema) -> Vec<(String, String)> {
    let mut views = Vec::new();
    let _ = ast::visit_relations(query, |name: &ObjectName| {
        if let Some((db, table)) = split_name(name, database)
            && schema.view(&db, &table).is_some()
            && !views.contains(&(db.clone(), table.clone()))
        {
            views.push((db, table));
        }
        ControlFlow::<()>::Continue(())
    });
    views
}

/// Replaces each view `select` reads by its base table, aliased by the view's name or alias; or why a view cannot
/// be merged.
fn replace_views(select: &mut ast::Select, database: &str, schema: &Schema) -> Result<Vec<Merge>, String> {
    let mut merges = Vec::new();
    for (from_index, from) in select.from.iter_mut().enumerate() {
        let relations = std::iter::once((&mut from.relation, None)).chain(
            from.joins
                .iter_mut()
                .enumerate()
                .map(|(join_index, join)| (&mut join.relation, Some((from_index, join_index)))),
        );
        for (relation, join) in relations {
            let TableFactor::Table { name, alias, .. } = relation else {
                continue;
            };
            let Some((db, table)) = split_name(name, database) else {
                continue;
            };
            let Some(definition) = schema.view(&db, &table) else {
                continue;
            };
            let view = mergeable(definition, &db, schema)
                .map_err(|why| format!("it reads the view {db}.{table}, which {why}"))?;
            let alias_name = alias
                .as_ref()
                .map_or_else(|| table.clone(), |alias| alias.name.value.clone());
            *name = ObjectName::from(vec![Ident::new(&view.database), Ident::new(&view.table)]);
            *alias = Some(TableAlias {
                explicit: true,
                name: Ident::new(&alias_name),
                columns: Vec::new(),
                at: None,
            });
            merges.push((alias_name, view, join));
        }
    }
    Ok(merges)
}

/// Gives each plain column `select` returns its own name as an alias, so renaming it keeps the output name.
fn keep_output_names(select: &mut ast::Select) {
    for item in &mut select.projection {
        if let SelectItem::UnnamedExpr(expr @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_))) = item {
            let name = match &*expr {
                Expr::Identifier(ident) => ident.clone(),
                Expr::CompoundIdentifier(parts) => parts.last().cloned().unwrap_or_else(|| Ident::new("")),
                _ => unreachable!("matched above"),
            };
            *item = SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: name,
            };
        }
    }
}

/// Renames every column of a merged view in `query` to its base table's column, qualified by the view's alias.
fn rename_columns(query: &mut ast::Query, merges: &[Merge]) {
    let _ = ast::visit_expressions_mut(query, |expr: &mut Expr| {
        let renamed = match &*expr {
            Expr::Identifier(ident) => {
                let column = ident.value.to_lowercase();
                let mut owners = merges.iter().filter(|(_, view, _)| view.columns.contains_key(&column));
                match (owners.next(), owners.next()) {
                    (Some((alias, view, _)), None) => Some((alias.clone(), view.columns[&column].clone())),
                    _ => None,
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let qualifier = parts[parts.len() - 2].value.as_str();
                let column = parts[parts.len() - 1].value.to_lowercase();
                merges
                    .iter()
                    .find(|(alias, _, _)| alias == qualifier)
                    .and_then(|(alias, view, _)| view.columns.get(&column).map(|base| (alias.clone(), base.clone())))
            }
            _ => None,
        };
        if let Some((alias, column)) = renamed {
            *expr = Expr::CompoundIdentifier(vec![Ident::new(alias), Ident::new(column)]);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Adds each merged view's condition where it was read: to the `WHERE`, or to its join's `ON`.
fn add_conditions(select: &mut ast::Select, merges: Vec<Merge>) -> Result<(), String> {
    for (alias, view, join) in merges {
        let Some(condition) = view.condition.map(|condition| qualify(condition, &alias)) else {
            continue;
        };
        match join {
            None => {
                select.selection = Some(match select.selection.take() {
                    Some(selection) => and(selection, condition),
                    None => condition,
                })
            }
            Some((from_index, join_index)) => match &mut select.from[from_index].joins[join_index].join_operator {
                JoinOperator::Join(JoinConstraint::On(on))
                | JoinOperator::Inner(JoinConstraint::On(on))
                | JoinOperator::Left(JoinConstraint::On(on))
                | JoinOperator::LeftOuter(JoinConstraint::On(on))
                | JoinOperator::Right(JoinConstraint::On(on))
                | JoinOperator::RightOuter(JoinConstraint::On(on)) => *on = and(on.clone(), condition),
                _ => return Err("it joins a view without ON".into()),
            },
        }
    }
    Ok(())
}

/// `a AND b`.
fn and(a: Expr, b: Expr) -> Expr {
    Expr::BinaryOp {
        left: Box::new(Expr::Nested(Box::new(a))),
        op: ast::BinaryOperator::And,
        right: Box::new(Expr::Nested(Box::new(b))),
    }
}

/// The view's condition with its columns qualified by `alias` (the view's own qualifiers dropped).
fn qualify(mut condition: Expr, alias: &str) -> Expr {
    let _ = ast::visit_expressions_mut(&mut condition, |expr: &mut Expr| {
        let column = match expr {
            Expr::Identifier(ident) => Some(ident.clone()),
            Expr::CompoundIdentifier(parts) => parts.last().cloned(),
            _ => None,
        };
        if let Some(column) = column {
            *expr = Expr::CompoundIdentifier(vec![Ident::new(alias), column]);
        }
        ControlFlow::<()>::Continue(())
    });
    condition
}

/// A view definition as one base table, its columns and its condition; or why it cannot be merged.
fn mergeable(definition: &str, database: &str, schema: &Schema) -> Result<Mergeable, String> {
    let statements = Parser::parse_sql(&MySqlDialect {}, definition)
        .map_err(|error| format!("the SQL parser cannot read ({error})"))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err("is not one SELECT".into());
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err("combines queries".into());
    };
    if query.with.is_some() || query.limit_clause.is_some() || query.order_by.is_some() {
        return Err("uses WITH, ORDER BY or LIMIT".into());
    }
    if select.distinct.is_some()
        || select.having.is_some()
        || !matches!(&select.group_by, GroupByExpr::Expressions(exprs, _) if exprs.is_empty())
    {
        return Err("groups or removes duplicate rows".into());
    }
    let [from] = select.from.as_slice() else {
        return Err("reads more than one table".into());
    };
    if !from.joins.is_empty() {
        return Err("joins tables".into());
    }
    let TableFactor::Table { name, args: None, .. } = &from.relation else {
        return Err("reads something other than a table".into());
    };
    let (db, table) = split_name(name, database).ok_or("names a table that cannot be read")?;
    if schema.view(&db, &table).is_some() {
        return Err(format!("reads another view ({db}.{table})"));
    }
    if super::scope::volatile(query).is_some() {
        return Err("has a subquery or a value that changes without a row changing".into());
    }
    let mut columns = HashMap::new();
    for item in &select.projection {
        let (expr, name) = match item {
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::UnnamedExpr(expr) => (expr, None),
            _ => return Err("selects * (its columns are not named)".into()),
        };
        let column = match expr {
            Expr::Identifier(ident) => ident.value.clone(),
            Expr::CompoundIdentifier(parts) => parts.last().map(|part| part.value.clone()).unwrap_or_default(),
            _ => return Err(format!("computes a column ({expr})")),
        };
        columns.insert(name.unwrap_or_else(|| column.clone()).to_lowercase(), column);
    }
    Ok(Mergeable {
        database: db,
        table,
        columns,
        condition: select.selection.clone(),
    })
}

/// The base tables of a view, views of views followed (at most 8 deep).
fn base_tables(schema: &Schema, database: &str, view: &str, depth: usize) -> Vec<(String, String)> {
    let Some(definition) = schema.view(database, view) else {
        return vec![(database.to_string(), view.to_string())];
    };
    if depth > 8 {
        return Vec::new();
    }
    let Ok(statements) = Parser::parse_sql(&MySqlDialect {}, definition) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let _ = ast::visit_relations(&statements, |name: &ObjectName| {
        if let Some((db, table)) = split_name(name, database) {
            for base in base_tables(schema, &db, &table, depth + 1) {
                if !found.contains(&base) {
                    found.push(base);
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(views: &[(&str, &str)]) -> Schema {
        Schema {
            views: views
                .iter()
                .map(|(name, definition)| ("shop".to_string(), name.to_string(), definition.to_string()))
                .collect(),
            read: true,
            ..Default::default()
        }
    }

    /// MySQL prints a view's definition fully qualified and backquoted.
    const ACTIVE: &str = "select `shop`.`products`.`id` AS `id`,`shop`.`products`.`title` AS `name`,\
                          `shop`.`products`.`category_id` AS `category_id` from `shop`.`products` \
                          where (`shop`.`products`.`status` = 'active')";

    #[test]
    fn a_one_table_view_is_merged_with_its_columns_renamed_and_its_condition_added() {
        let schema = schema(&[("active_products", ACTIVE)]);
        let Expansion::Merged { sql, views } =
            expand("SELECT id, name FROM active_products WHERE id > 3", "shop", &schema)
        else {
            panic!()
        };
        assert_eq!(views, ["shop.active_products"]);
        assert_eq!(
            sql,
            "SELECT active_products.id AS id, active_products.title AS name FROM shop.products AS active_products \
             WHERE (active_products.id > 3) AND ((active_products.`status` = 'active'))"
        );
        let Expansion::Merged { sql, .. } = expand(
            "SELECT a.id, c.name AS category FROM active_products a LEFT JOIN categories c ON c.id = a.category_id",
            "shop",
            &schema,
        ) else {
            panic!()
        };
        assert!(sql.contains("FROM shop.products AS a LEFT JOIN categories"), "{sql}");
        assert!(sql.ends_with("WHERE (a.`status` = 'active')"), "{sql}");
        // Joined: its condition goes to the ON, where an outer join needs it.
        let Expansion::Merged { sql, .. } = expand(
            "SELECT c.id, a.name FROM categories c LEFT JOIN active_products a ON a.category_id = c.id",
            "shop",
            &schema,
        ) else {
            panic!()
        };
        assert!(
            sql.ends_with("ON (a.category_id = c.id) AND ((a.`status` = 'active'))"),
            "{sql}"
        );
    }

    #[test]
    fn other_views_name_their_base_tables_and_say_why() {
        let schema = schema(&[
            (
                "totals",
                "select `shop`.`orders`.`customer_id` AS `customer_id`,sum(`shop`.`orders`.`total`) AS `spent` \
                 from `shop`.`orders` group by `shop`.`orders`.`customer_id`",
            ),
            (
                "recent",
                "select `t`.`customer_id` AS `customer_id` from `shop`.`totals` `t`",
            ),
        ]);
        let Expansion::Opaque { why, bases } = expand("SELECT customer_id FROM recent", "shop", &schema) else {
            panic!()
        };
        assert!(why.contains("reads another view (shop.totals)"), "{why}");
        assert_eq!(bases, [("shop".to_string(), "orders".to_string())]);
        assert_eq!(expand("SELECT id FROM products", "shop", &schema), Expansion::NoViews);
        let active = self::schema(&[("active_products", ACTIVE)]);
        assert!(matches!(
            expand("SELECT * FROM active_products", "shop", &active),
            Expansion::Opaque { why, .. } if why.contains("selects *")
        ));
    }
}
