//! A sorted set's query read for its members: `ORDER BY <score> DESC … LIMIT N` makes it a top N, read with a
//! buffer (`LIMIT N + buffer`), and the same query without its order and limit is what says whether a changed row
//! belongs to the set at all (its filter, its table).

use sqlparser::ast::{self, Expr, OrderByKind, SetExpr, Statement, Value};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

/// A sorted set's query, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopQuery {
    /// `LIMIT N`, when the query has one.
    pub n: Option<u64>,
    /// The query without ORDER BY and LIMIT: which rows are members.
    pub unordered: String,
    query: ast::Query,
}

impl TopQuery {
    /// The query reading `cap` rows instead of N.
    pub(crate) fn with_limit(&self, cap: u64) -> String {
        let mut query = self.query.clone();
        query.limit_clause = Some(ast::LimitClause::LimitOffset {
            limit: Some(Expr::value(Value::Number(cap.to_string(), false))),
            offset: None,
            limit_by: Vec::new(),
        });
        query.to_string()
    }
}

/// Reads a set's or sorted set's `sql`; `score` is a sorted set's score column. A LIMIT needs an ORDER BY whose first
/// term is the score, descending (what else would decide which rows are the top?), and no OFFSET.
pub(crate) fn top_query(sql: &str, score: Option<&str>) -> Result<TopQuery, String> {
    let statements = Parser::parse_sql(&MySqlDialect {}, sql).map_err(|error| format!("cannot be read ({error})"))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err("is not one SELECT".into());
    };
    let mut unordered = (**query).clone();
    unordered.order_by = None;
    unordered.limit_clause = None;
    let n = match &query.limit_clause {
        None => None,
        Some(ast::LimitClause::LimitOffset {
            limit: Some(limit),
            offset: None,
            limit_by,
        }) if limit_by.is_empty() => Some(number(limit)?),
        Some(_) => return Err("a top N is read with LIMIT N alone (no OFFSET)".into()),
    };
    if n.is_some() {
        let Some(score) = score else {
            return Err("has a LIMIT: only a sorted set (type = \"zset\") keeps a top N".into());
        };
        check_order(query, score)?;
    }
    if !matches!(query.body.as_ref(), SetExpr::Select(_)) {
        return Err("is not a plain SELECT".into());
    }
    Ok(TopQuery {
        n,
        unordered: unordered.to_string(),
        query: (**query).clone(),
    })
}

/// The LIMIT's number.
fn number(limit: &Expr) -> Result<u64, String> {
    match limit {
        Expr::Value(value) => match &value.value {
            Value::Number(text, _) => text
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("LIMIT {text} is not a count of rows")),
            other => Err(format!("LIMIT {other} is not a number")),
        },
        other => Err(format!("LIMIT {other} is not a number")),
    }
}

/// That the query's order starts with `score`, descending.
fn check_order(query: &ast::Query, score: &str) -> Result<(), String> {
    let first = match query.order_by.as_ref().map(|order| &order.kind) {
        Some(OrderByKind::Expressions(exprs)) => exprs.first(),
        _ => None,
    };
    let Some(first) = first else {
        return Err(format!(
            "has a LIMIT without ORDER BY: write ORDER BY {score} DESC so that the top N is the N highest scores"
        ));
    };
    let names_score = match &first.expr {
        Expr::Identifier(ident) => ident.value.eq_ignore_ascii_case(score),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .is_some_and(|ident| ident.value.eq_ignore_ascii_case(score)),
        _ => false,
    };
    let descending = matches!(first.options.sort, Some(ast::OrderBySort::Desc));
    if !names_score || !descending {
        return Err(format!(
            "orders by {first} first: a top N sorted set needs ORDER BY {score} DESC first (the score column, \
             highest first; further terms only break ties)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_n_is_read_with_its_buffer_and_judged_without_its_order() {
        let top = top_query(
            "SELECT id, views FROM products WHERE active = 1 ORDER BY views DESC, id DESC LIMIT 100",
            Some("views"),
        )
        .unwrap();
        assert_eq!(top.n, Some(100));
        assert_eq!(top.unordered, "SELECT id, views FROM products WHERE active = 1");
        assert_eq!(
            top.with_limit(150),
            "SELECT id, views FROM products WHERE active = 1 ORDER BY views DESC, id DESC LIMIT 150"
        );
        let qualified = top_query(
            "SELECT p.id, p.views FROM products p ORDER BY p.views DESC LIMIT 5",
            Some("views"),
        );
        assert_eq!(qualified.unwrap().n, Some(5));
    }

    #[test]
    fn a_limit_needs_the_score_first_descending() {
        let refused = |sql: &str, score: Option<&str>| top_query(sql, score).unwrap_err();
        assert!(refused("SELECT id, views FROM p ORDER BY views LIMIT 3", Some("views")).contains("views DESC"));
        assert!(refused("SELECT id, views FROM p ORDER BY id DESC LIMIT 3", Some("views")).contains("orders by id"));
        assert!(refused("SELECT id, views FROM p LIMIT 3", Some("views")).contains("without ORDER BY"));
        assert!(refused("SELECT id FROM p ORDER BY id LIMIT 3", None).contains("only a sorted set"));
        assert!(refused("SELECT id, v FROM p ORDER BY v DESC LIMIT 3 OFFSET 2", Some("v")).contains("OFFSET"));
        assert!(refused("SELECT 1; SELECT 2", None).contains("one SELECT"));
        let plain = top_query("SELECT id, category_id FROM p ORDER BY id", None).unwrap();
        assert_eq!(plain.n, None);
        assert_eq!(plain.unordered, "SELECT id, category_id FROM p");
    }
}
