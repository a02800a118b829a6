//! A query's conditions as data: the top-level conjuncts, the join links between a joined table and the driving
//! one, and the `WHERE` (or an `[[on_change]]` rule's `where`) as a [`Predicate`] over the driving table's columns.

use std::ops::ControlFlow;

use sqlparser::ast::{self, BinaryOperator, Expr, SetExpr, Statement, UnaryOperator, Value};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::scope::{Scope, volatile};
use crate::pure::predicate::{CompareOp, Operand, Predicate};

/// Equalities `joined.column = driving.column` in the top-level conjuncts of `condition`: (table, its column,
/// driving column).
pub(super) fn links(condition: &Expr, scope: &Scope<'_>, driving: usize) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    for conjunct in conjuncts(condition) {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = conjunct
            && let (Some(left), Some(right)) = (scope.column(left), scope.column(right))
        {
            match (left, right) {
                ((table, column), (d, driving_column)) | ((d, driving_column), (table, column))
                    if d == driving && table != driving =>
                {
                    found.push((table, column, driving_column));
                }
                _ => {}
            }
        }
    }
    found
}

/// Whether `expr` holds a parameter (`:id` of a refresh query): a key's own condition, not a filter.
pub(super) fn bound(expr: &Expr) -> bool {
    ast::visit_expressions(expr, |part: &Expr| match part {
        Expr::Value(value) if matches!(value.value, Value::Placeholder(_)) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Whether `expr` may read a column of the driving table (an unqualified column in a join may).
pub(super) fn mentions(expr: &Expr, scope: &Scope<'_>, driving: usize) -> bool {
    ast::visit_expressions(expr, |part: &Expr| match part {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match scope.column(part) {
            Some((table, _)) if table != driving => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        },
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

pub(super) fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

/// `expr` as a filter over the driving table's columns.
pub(super) fn predicate(expr: &Expr, scope: &Scope<'_>, driving: usize) -> Predicate {
    known(expr, scope, driving).unwrap_or_else(|| Predicate::Unknown(expr.to_string()))
}

/// `expr` as a filter, or `None` when it is not one this module reads (it is then an unknown leaf).
fn known(expr: &Expr, scope: &Scope<'_>, driving: usize) -> Option<Predicate> {
    let operand = |expr: &Expr| operand(expr, scope, driving);
    Some(match expr {
        Expr::Nested(inner) => predicate(inner, scope, driving),
        Expr::BinaryOp { left, op, right } => binary(expr, left, op, right, scope, driving)?,
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: inner,
        } => Predicate::Not(Box::new(predicate(inner, scope, driving))),
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => Predicate::IsNull {
            operand: operand(inner)?,
            negated: matches!(expr, Expr::IsNotNull(_)),
        },
        Expr::In {
            expr: inner,
            target: ast::InTarget::List(list),
            negated,
            ..
        } => Predicate::In {
            operand: operand(inner)?,
            list: list.iter().map(operand).collect::<Option<Vec<Operand>>>()?,
            negated: *negated,
        },
        Expr::Between {
            expr: inner,
            negated,
            low,
            high,
        } => Predicate::Between {
            operand: operand(inner)?,
            low: operand(low)?,
            high: operand(high)?,
            negated: *negated,
        },
        Expr::Like {
            negated,
            any: false,
            expr: inner,
            pattern,
            escape_char,
        } => like(inner, pattern, escape_char.as_deref(), *negated, scope, driving)?,
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Value(_) => Predicate::Truth(operand(expr)?),
        _ => return None,
    })
}

/// A comparison, `AND` or `OR` as a filter (`expr` is the whole `left op right`).
fn binary(
    expr: &Expr,
    left: &Expr,
    op: &BinaryOperator,
    right: &Expr,
    scope: &Scope<'_>,
    driving: usize,
) -> Option<Predicate> {
    let compare = match op {
        BinaryOperator::And => {
            return Some(Predicate::And(
                conjuncts(expr)
                    .into_iter()
                    .map(|part| predicate(part, scope, driving))
                    .collect(),
            ));
        }
        BinaryOperator::Or => {
            return Some(Predicate::Or(vec![
                predicate(left, scope, driving),
                predicate(right, scope, driving),
            ]));
        }
        BinaryOperator::Eq => CompareOp::Eq,
        BinaryOperator::NotEq => CompareOp::NotEq,
        BinaryOperator::Lt => CompareOp::Lt,
        BinaryOperator::LtEq => CompareOp::LtEq,
        BinaryOperator::Gt => CompareOp::Gt,
        BinaryOperator::GtEq => CompareOp::GtEq,
        BinaryOperator::Spaceship => CompareOp::NullSafeEq,
        _ => return None,
    };
    Some(Predicate::Compare(
        operand(left, scope, driving)?,
        compare,
        operand(right, scope, driving)?,
    ))
}

/// `inner [NOT] LIKE pattern [ESCAPE escape]` as a filter, when the pattern and escape are literals.
fn like(
    inner: &Expr,
    pattern: &Expr,
    escape: Option<&Expr>,
    negated: bool,
    scope: &Scope<'_>,
    driving: usize,
) -> Option<Predicate> {
    let escape = match escape {
        None => '\\',
        Some(escape) => match operand(escape, scope, driving)? {
            Operand::Text(text) if text.chars().count() == 1 => text.chars().next()?,
            _ => return None,
        },
    };
    let Operand::Text(pattern) = operand(pattern, scope, driving)? else {
        return None;
    };
    Some(Predicate::Like {
        operand: operand(inner, scope, driving)?,
        pattern,
        escape,
        negated,
    })
}

/// A column of the driving table or a literal; `None` for anything else (another table's column, a function).
fn operand(expr: &Expr, scope: &Scope<'_>, driving: usize) -> Option<Operand> {
    match expr {
        Expr::Nested(inner) => operand(inner, scope, driving),
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => match scope.column(expr)? {
            (table, column) if table == driving => Some(Operand::Column(column)),
            _ => None,
        },
        Expr::Value(value) => match &value.value {
            Value::Number(number, _) => Some(Operand::Number(number.clone())),
            Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => Some(Operand::Text(text.clone())),
            Value::Boolean(true) => Some(Operand::Number("1".into())),
            Value::Boolean(false) => Some(Operand::Number("0".into())),
            Value::Null => Some(Operand::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: inner,
        } => match operand(inner, scope, driving)? {
            Operand::Number(number) => Some(Operand::Number(format!("-{number}"))),
            _ => None,
        },
        _ => None,
    }
}

/// Parses a `where` condition of an `[[on_change]]` rule (over the rule's table) into a filter. Parts that cannot be
/// evaluated on a row image (functions, arithmetic, other tables' columns) are unknown there: the row's keys are
/// deleted rather than refreshed.
pub(crate) fn parse_condition(condition: &str, database: &str, table: &str) -> Result<Predicate, String> {
    let sql = format!("SELECT 1 FROM `{database}`.`{table}` WHERE {condition}");
    let statements = Parser::parse_sql(&MySqlDialect {}, &sql).map_err(|error| error.to_string())?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err("not one condition".into());
    };
    if let Some(why) = volatile(query) {
        return Err(why);
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err("not one condition".into());
    };
    let scope = Scope::of(select, database)?;
    let selection = select.selection.as_ref().ok_or("empty condition")?;
    Ok(predicate(selection, &scope, 0))
}
