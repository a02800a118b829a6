//! A `WHERE` filter as data — comparisons, `IN`, `BETWEEN`, `LIKE`, `IS NULL`, `AND`/`OR`/`NOT` over one table's
//! columns and constants — and its evaluation on a binlog row image with MySQL's semantics.
//!
//! Pure. `derive` builds predicates from a warm query's `WHERE` (or an `[[on_change]]` rule's `where`); `plan` asks
//! whether a row image is in or out. Row images hold key text (see `value`), not typed values, so an answer is
//! given only when it holds whatever the column's type and collation: a number compared with a number literal is
//! compared as a number; text is compared both byte for byte and as the usual case-insensitive, PAD SPACE collations
//! do, and when the two disagree (`'Active' = 'active'`), or accents could matter, the answer is [`Truth::Unknown`].
//! Unknown is always safe for a caller: it refreshes the key through the database (which applies the real filter)
//! or deletes it, never keeps it.

use std::collections::HashMap;

mod compare;

use compare::{Decimal, compare_with, like};

/// A row image: column name → the value as key text (`None` for NULL); `model::RowImage`, named here so that this
/// module stands on its own.
type RowImage = HashMap<String, Option<String>>;

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// A column of the row.
    Column(String),
    /// A number literal (`10`, `-2.5`, `TRUE` as 1).
    Number(String),
    /// A string literal.
    Text(String),
    /// `NULL`.
    Null,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    /// `<=>`: equal, with NULL equal to NULL (never NULL itself).
    NullSafeEq,
}

/// A filter over the columns of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    Not(Box<Predicate>),
    Compare(Operand, CompareOp, Operand),
    In {
        operand: Operand,
        list: Vec<Operand>,
        negated: bool,
    },
    Between {
        operand: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    IsNull {
        operand: Operand,
        negated: bool,
    },
    Like {
        operand: Operand,
        pattern: String,
        escape: char,
        negated: bool,
    },
    /// A bare operand used as a condition (`WHERE active`): true when it is a non-zero number.
    Truth(Operand),
    /// A part the evaluator cannot decide (a function, arithmetic, another table's column), with what it was.
    Unknown(String),
}

/// The outcome of a filter on one row: SQL's three values, and *unknown* where the image cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Truth {
    True,
    False,
    Null,
    Unknown,
}

impl Truth {
    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            other => other,
        }
    }

    fn from_bool(value: bool) -> Truth {
        if value { Truth::True } else { Truth::False }
    }

    /// SQL `AND`: false wins, then unknown, then NULL.
    fn and(parts: impl IntoIterator<Item = Truth>) -> Truth {
        let (mut unknown, mut null) = (false, false);
        for part in parts {
            match part {
                Truth::False => return Truth::False,
                Truth::Unknown => unknown = true,
                Truth::Null => null = true,
                Truth::True => {}
            }
        }
        if unknown {
            Truth::Unknown
        } else if null {
            Truth::Null
        } else {
            Truth::True
        }
    }

    /// SQL `OR`: true wins, then unknown, then NULL.
    fn or(parts: impl IntoIterator<Item = Truth>) -> Truth {
        Truth::and(parts.into_iter().map(Truth::not)).not()
    }
}

/// A value as the evaluator sees it: text from the image or a literal, or NULL.
enum Value<'a> {
    Null,
    Column(&'a str),
    Number(&'a str),
    Text(&'a str),
}

impl Predicate {
    /// Whether `image` satisfies the filter: [`Truth::True`] in, `False`/`Null` out, `Unknown` cannot tell.
    pub(crate) fn eval(&self, image: &RowImage) -> Truth {
        match self {
            Predicate::And(parts) => Truth::and(parts.iter().map(|part| part.eval(image))),
            Predicate::Or(parts) => Truth::or(parts.iter().map(|part| part.eval(image))),
            Predicate::Not(inner) => inner.eval(image).not(),
            Predicate::Compare(left, op, right) => {
                let (Some(left), Some(right)) = (resolve(left, image), resolve(right, image)) else {
                    return Truth::Unknown;
                };
                compare_with(&left, *op, &right)
            }
            Predicate::In { operand, list, negated } => {
                let Some(value) = resolve(operand, image) else {
                    return Truth::Unknown;
                };
                let outcome = Truth::or(list.iter().map(|item| match resolve(item, image) {
                    Some(item) => compare_with(&value, CompareOp::Eq, &item),
                    None => Truth::Unknown,
                }));
                if *negated { outcome.not() } else { outcome }
            }
            Predicate::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let (Some(value), Some(low), Some(high)) =
                    (resolve(operand, image), resolve(low, image), resolve(high, image))
                else {
                    return Truth::Unknown;
                };
                let outcome = Truth::and([
                    compare_with(&value, CompareOp::GtEq, &low),
                    compare_with(&value, CompareOp::LtEq, &high),
                ]);
                if *negated { outcome.not() } else { outcome }
            }
            Predicate::IsNull { operand, negated } => match resolve(operand, image) {
                None => Truth::Unknown,
                Some(value) => Truth::from_bool(matches!(value, Value::Null) != *negated),
            },
            Predicate::Like {
                operand,
                pattern,
                escape,
                negated,
            } => {
                let outcome = match resolve(operand, image) {
                    None => Truth::Unknown,
                    Some(Value::Null) => Truth::Null,
                    Some(Value::Column(text) | Value::Number(text) | Value::Text(text)) => like(text, pattern, *escape),
                };
                if *negated { outcome.not() } else { outcome }
            }
            Predicate::Truth(operand) => match resolve(operand, image) {
                None => Truth::Unknown,
                Some(Value::Null) => Truth::Null,
                Some(Value::Column(text) | Value::Number(text) | Value::Text(text)) => match Decimal::parse(text) {
                    Some(number) => Truth::from_bool(!number.is_zero()),
                    None => Truth::Unknown,
                },
            },
            Predicate::Unknown(_) => Truth::Unknown,
        }
    }

    /// The columns the filter reads.
    pub fn columns(&self) -> Vec<&str> {
        let mut columns = Vec::new();
        self.each_operand(&mut |operand| {
            if let Operand::Column(name) = operand
                && !columns.contains(&name.as_str())
            {
                columns.push(name.as_str());
            }
        });
        columns
    }

    /// Whether some part cannot be evaluated (so the filter may only ever answer unknown there). (Tests only.)
    #[cfg(test)]
    pub(crate) fn has_unknown(&self) -> bool {
        match self {
            Predicate::And(parts) | Predicate::Or(parts) => parts.iter().any(Predicate::has_unknown),
            Predicate::Not(inner) => inner.has_unknown(),
            Predicate::Unknown(_) => true,
            _ => false,
        }
    }

    fn each_operand<'s>(&'s self, f: &mut impl FnMut(&'s Operand)) {
        match self {
            Predicate::And(parts) | Predicate::Or(parts) => parts.iter().for_each(|part| part.each_operand(f)),
            Predicate::Not(inner) => inner.each_operand(f),
            Predicate::Compare(left, _, right) => {
                f(left);
                f(right);
            }
            Predicate::In { operand, list, .. } => {
                f(operand);
                list.iter().for_each(&mut *f);
            }
            Predicate::Between { operand, low, high, .. } => {
                f(operand);
                f(low);
                f(high);
            }
            Predicate::IsNull { operand, .. } | Predicate::Like { operand, .. } | Predicate::Truth(operand) => {
                f(operand)
            }
            Predicate::Unknown(_) => {}
        }
    }
}

impl std::fmt::Display for Operand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operand::Column(name) => write!(f, "`{}`", name.replace('`', "``")),
            Operand::Number(number) => f.write_str(number),
            Operand::Text(text) => write!(f, "'{}'", text.replace('\\', "\\\\").replace('\'', "''")),
            Operand::Null => f.write_str("NULL"),
        }
    }
}

/// SQL text that parses back into the same filter (`rules` prints it as an `[[on_change]]` rule's `where`).
impl std::fmt::Display for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let not = |negated: bool| if negated { "NOT " } else { "" };
        match self {
            Predicate::And(parts) | Predicate::Or(parts) => {
                let joiner = if matches!(self, Predicate::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = parts.iter().map(|part| format!("({part})")).collect();
                f.write_str(&parts.join(joiner))
            }
            Predicate::Not(inner) => write!(f, "NOT ({inner})"),
            Predicate::Compare(left, op, right) => {
                let op = match op {
                    CompareOp::Eq => "=",
                    CompareOp::NotEq => "<>",
                    CompareOp::Lt => "<",
                    CompareOp::LtEq => "<=",
                    CompareOp::Gt => ">",
                    CompareOp::GtEq => ">=",
                    CompareOp::NullSafeEq => "<=>",
                };
                write!(f, "{left} {op} {right}")
            }
            Predicate::In { operand, list, negated } => {
                let list: Vec<String> = list.iter().map(ToString::to_string).collect();
                write!(f, "{operand} {}IN ({})", not(*negated), list.join(", "))
            }
            Predicate::Between {
                operand,
                low,
                high,
                negated,
            } => write!(f, "{operand} {}BETWEEN {low} AND {high}", not(*negated)),
            Predicate::IsNull { operand, negated } => write!(f, "{operand} IS {}NULL", not(*negated)),
            Predicate::Like {
                operand,
                pattern,
                escape,
                negated,
            } => write!(
                f,
                "{operand} {}LIKE {} ESCAPE {}",
                not(*negated),
                Operand::Text(pattern.clone()),
                Operand::Text(escape.to_string())
            ),
            Predicate::Truth(operand) => write!(f, "{operand}"),
            Predicate::Unknown(text) => f.write_str(text),
        }
    }
}

/// An operand's value in `image`; `None` when the image lacks the column.
fn resolve<'a>(operand: &'a Operand, image: &'a RowImage) -> Option<Value<'a>> {
    Some(match operand {
        Operand::Column(name) => match image.get(name)? {
            Some(text) => Value::Column(text),
            None => Value::Null,
        },
        Operand::Number(text) => Value::Number(text),
        Operand::Text(text) => Value::Text(text),
        Operand::Null => Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(pairs: &[(&str, Option<&str>)]) -> RowImage {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    fn column(name: &str) -> Operand {
        Operand::Column(name.into())
    }

    fn eq(name: &str, value: Operand) -> Predicate {
        Predicate::Compare(column(name), CompareOp::Eq, value)
    }

    #[test]
    fn numbers_compare_as_numbers_exactly() {
        let row = image(&[("price", Some("10.50")), ("stock", Some("0"))]);
        let gt = |value: &str| Predicate::Compare(column("price"), CompareOp::Gt, Operand::Number(value.into()));
        assert_eq!(gt("9").eval(&row), Truth::True);
        assert_eq!(gt("10.5").eval(&row), Truth::False);
        assert_eq!(gt("10.499999999999999999").eval(&row), Truth::True);
        assert_eq!(gt("-11").eval(&row), Truth::True);
        assert_eq!(Predicate::Truth(column("stock")).eval(&row), Truth::False);
    }

    #[test]
    fn null_follows_three_valued_logic() {
        let row = image(&[("deleted_at", None), ("status", Some("active"))]);
        let null_eq = eq("deleted_at", Operand::Text("x".into()));
        assert_eq!(null_eq.eval(&row), Truth::Null);
        assert_eq!(Predicate::Not(Box::new(null_eq.clone())).eval(&row), Truth::Null);
        let active = eq("status", Operand::Text("active".into()));
        assert_eq!(
            Predicate::Or(vec![null_eq.clone(), active.clone()]).eval(&row),
            Truth::True
        );
        assert_eq!(Predicate::And(vec![null_eq, active]).eval(&row), Truth::Null);
        let is_null = Predicate::IsNull {
            operand: column("deleted_at"),
            negated: false,
        };
        assert_eq!(is_null.eval(&row), Truth::True);
        let not_in = Predicate::In {
            operand: column("status"),
            list: vec![Operand::Text("gone".into()), Operand::Null],
            negated: true,
        };
        // `x NOT IN ('gone', NULL)` is never true.
        assert_eq!(not_in.eval(&row), Truth::Null);
        let null_safe = Predicate::Compare(column("deleted_at"), CompareOp::NullSafeEq, Operand::Null);
        assert_eq!(null_safe.eval(&row), Truth::True);
    }

    #[test]
    fn text_that_collations_disagree_on_is_unknown() {
        let row = image(&[("status", Some("Active")), ("name", Some("café  "))]);
        assert_eq!(eq("status", Operand::Text("active".into())).eval(&row), Truth::Unknown);
        assert_eq!(eq("status", Operand::Text("Active".into())).eval(&row), Truth::True);
        assert_eq!(eq("status", Operand::Text("deleted".into())).eval(&row), Truth::False);
        assert_eq!(eq("name", Operand::Text("cafe".into())).eval(&row), Truth::Unknown);
        let padded = image(&[("status", Some("active "))]);
        // PAD SPACE collations ignore trailing spaces, binary ones do not.
        assert_eq!(
            eq("status", Operand::Text("active".into())).eval(&padded),
            Truth::Unknown
        );
    }

    #[test]
    fn dates_compare_as_datetimes() {
        let row = image(&[("created", Some("2026-11-26T08:30:00")), ("day", Some("2026-11-26"))]);
        let after = |column_name: &str, value: &str| {
            Predicate::Compare(column(column_name), CompareOp::GtEq, Operand::Text(value.into()))
        };
        assert_eq!(after("created", "2026-11-26").eval(&row), Truth::True);
        assert_eq!(after("created", "2026-11-26 08:30:01").eval(&row), Truth::False);
        assert_eq!(
            eq("day", Operand::Text("2026-11-26 00:00:00".into())).eval(&row),
            Truth::True
        );
    }

    #[test]
    fn between_in_and_like() {
        let row = image(&[("price", Some("15")), ("name", Some("Blue Widget"))]);
        let between = Predicate::Between {
            operand: column("price"),
            low: Operand::Number("10".into()),
            high: Operand::Number("15".into()),
            negated: false,
        };
        assert_eq!(between.eval(&row), Truth::True);
        let like = |pattern: &str| Predicate::Like {
            operand: column("name"),
            pattern: pattern.into(),
            escape: '\\',
            negated: false,
        };
        assert_eq!(like("Blue%").eval(&row), Truth::True);
        assert_eq!(like("%Widg_t").eval(&row), Truth::True);
        assert_eq!(like("Red%").eval(&row), Truth::False);
        assert_eq!(like("blue%").eval(&row), Truth::Unknown);
        assert_eq!(like("Blue\\%").eval(&row), Truth::False);
    }

    #[test]
    fn an_unknown_part_or_a_missing_column_cannot_decide() {
        let row = image(&[("status", Some("active"))]);
        let unknown = Predicate::Unknown("LOWER(name)".into());
        assert_eq!(
            Predicate::And(vec![eq("status", Operand::Text("gone".into())), unknown.clone()]).eval(&row),
            Truth::False
        );
        assert_eq!(
            Predicate::And(vec![eq("status", Operand::Text("active".into())), unknown]).eval(&row),
            Truth::Unknown
        );
        assert_eq!(eq("missing", Operand::Number("1".into())).eval(&row), Truth::Unknown);
    }
}
