//! Unqualified columns of a join given their table, from the columns the server lists for each table: `SELECT id,
//! name, title FROM products p JOIN categories c ON category_id = c.id` is analyzed as `p.id, p.name, c.title … ON
//! p.category_id = c.id` when only `products` has `id`, `name` and `category_id` and only `categories` has `title`.
//!
//! Pure: the columns come from `schema`. Only what the server itself would resolve the same way is qualified: a name
//! exactly one table of the `FROM` has, in the select list, the `WHERE`, the `ON` conditions, `GROUP BY` (where a
//! table's column wins over a select alias) and `ORDER BY` (unless a select alias has that name: there the alias
//! wins). A query with a table whose columns are unknown (another database, no schema read) is left as it is, and the
//! analysis says which column it could not place.

use std::ops::ControlFlow;

use sqlparser::ast::{self, Expr, GroupByExpr, Ident, JoinConstraint, JoinOperator, SelectItem, SetExpr, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::schema::Schema;
use super::scope::split_name;

/// `sql` with the unqualified columns of its joins qualified by their table's alias; `None` when nothing was
/// (one table, no schema, a table whose columns are unknown, nothing to place, or SQL the parser cannot read).
pub(super) fn qualify(sql: &str, database: &str, schema: &Schema) -> Option<String> {
    if !schema.read || schema.columns.is_empty() {
        return None;
    }
    let sql = crate::pure::model::named_params(sql).map_or_else(|_| sql.to_string(), |(sql, _)| sql);
    let mut statements = Parser::parse_sql(&MySqlDialect {}, &sql).ok()?;
    let [Statement::Query(query)] = statements.as_mut_slice() else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let tables = tables_read(select, database, schema)?;
    if tables.len() < 2 {
        return None;
    }
    let mut changed = false;
    let mut place = |expr: &mut Expr| {
        if let Expr::Identifier(ident) = expr
            && matches!(ident.quote_style, None | Some('`'))
            && !ident.value.starts_with('@')
        {
            let mut owners = tables
                .iter()
                .filter(|(_, columns)| columns.iter().any(|column| column.eq_ignore_ascii_case(&ident.value)));
            if let (Some((alias, _)), None) = (owners.next(), owners.next()) {
                *expr = Expr::CompoundIdentifier(vec![Ident::new(alias), ident.clone()]);
                changed = true;
            }
        }
        ControlFlow::<()>::Continue(())
    };
    let aliases: Vec<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    visit_select(select, &mut place);
    if let Some(order_by) = &mut query.order_by
        && let ast::OrderByKind::Expressions(exprs) = &mut order_by.kind
    {
        for order in exprs {
            let aliased = matches!(&order.expr, Expr::Identifier(ident)
                if aliases.contains(&ident.value.to_ascii_lowercase()));
            if !aliased {
                let _ = ast::visit_expressions_mut(&mut order.expr, &mut place);
            }
        }
    }
    changed.then(|| statements[0].to_string())
}

/// Each table `select` reads, by its alias (or name), with its columns; `None` when one is not a table whose
/// columns are known.
fn tables_read<'a>(select: &ast::Select, database: &str, schema: &'a Schema) -> Option<Vec<(String, &'a [String])>> {
    let mut tables = Vec::new();
    for from in &select.from {
        for relation in std::iter::once(&from.relation).chain(from.joins.iter().map(|join| &join.relation)) {
            let ast::TableFactor::Table { name, alias, .. } = relation else {
                return None;
            };
            let (db, table) = split_name(name, database)?;
            let columns = schema.columns_of(&db, &table)?;
            let alias = alias.as_ref().map_or(table, |alias| alias.name.value.clone());
            tables.push((alias, columns));
        }
    }
    Some(tables)
}

/// Visits the expressions of `select`'s columns, `WHERE`, joins' `ON` and `GROUP BY` with `visit`.
fn visit_select(select: &mut ast::Select, visit: &mut impl FnMut(&mut Expr) -> ControlFlow<()>) {
    for item in &mut select.projection {
        if let SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } = item {
            let _ = ast::visit_expressions_mut(expr, &mut *visit);
        }
    }
    if let Some(selection) = &mut select.selection {
        let _ = ast::visit_expressions_mut(selection, &mut *visit);
    }
    for from in &mut select.from {
        for join in &mut from.joins {
            if let JoinOperator::Join(JoinConstraint::On(on))
            | JoinOperator::Inner(JoinConstraint::On(on))
            | JoinOperator::StraightJoin(JoinConstraint::On(on))
            | JoinOperator::Left(JoinConstraint::On(on))
            | JoinOperator::LeftOuter(JoinConstraint::On(on))
            | JoinOperator::Right(JoinConstraint::On(on))
            | JoinOperator::RightOuter(JoinConstraint::On(on)) = &mut join.join_operator
            {
                let _ = ast::visit_expressions_mut(on, &mut *visit);
            }
        }
    }
    if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
        for expr in exprs {
            let _ = ast::visit_expressions_mut(expr, &mut *visit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        let table = |name: &str, columns: &[&str]| {
            (
                "shop".to_string(),
                name.to_string(),
                columns.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            )
        };
        Schema {
            columns: vec![
                table("products", &["id", "category_id", "name", "price"]),
                table("categories", &["cid", "name", "title"]),
            ],
            read: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_column_only_one_joined_table_has_is_qualified_with_its_alias() {
        let sql = "SELECT id, title, price AS cost FROM products p JOIN categories ON category_id = cid \
                   WHERE price > 3 AND p.name <> 'x' GROUP BY id ORDER BY cost, `title`";
        assert_eq!(
            qualify(sql, "shop", &schema()).unwrap(),
            "SELECT p.id, categories.title, p.price AS cost FROM products p JOIN categories \
             ON p.category_id = categories.cid WHERE p.price > 3 AND p.name <> 'x' GROUP BY p.id \
             ORDER BY cost, categories.`title`"
        );
    }

    #[test]
    fn what_the_server_could_not_place_either_is_left_alone() {
        // `name` is in both tables (MySQL says ambiguous); `nope` in neither.
        let sql = "SELECT p.id, name, nope FROM products p JOIN categories c ON p.category_id = c.cid";
        assert_eq!(qualify(sql, "shop", &schema()), None);
        // One table: the analysis places its columns itself.
        assert_eq!(qualify("SELECT id FROM products", "shop", &schema()), None);
        // A table of another database, whose columns were not read: nothing is placed.
        let other = "SELECT id, title FROM products JOIN other.tags t ON t.product_id = id";
        assert_eq!(qualify(other, "shop", &schema()), None);
        // Offline.
        let sql = "SELECT id, title FROM products JOIN categories ON category_id = cid";
        assert_eq!(qualify(sql, "shop", &Schema::default()), None);
        // Named parameters are read as the analysis reads them.
        assert_eq!(
            qualify(&format!("{sql} WHERE id = :id"), "shop", &schema()).unwrap(),
            "SELECT products.id, categories.title FROM products JOIN categories \
             ON products.category_id = categories.cid WHERE products.id = ?"
        );
    }
}
