//! How two values compare under MySQL's rules, as far as key text can tell: numbers as exact decimals, dates as
//! datetimes, text under every collation that could apply (an answer only where they agree), and `LIKE`.

use std::cmp::Ordering;

use super::{CompareOp, Truth, Value};

pub(super) fn compare_with(left: &Value<'_>, op: CompareOp, right: &Value<'_>) -> Truth {
    let ordering = match (left, right) {
        (Value::Null, Value::Null) if op == CompareOp::NullSafeEq => return Truth::True,
        (Value::Null, _) | (_, Value::Null) if op == CompareOp::NullSafeEq => return Truth::False,
        (Value::Null, _) | (_, Value::Null) => return Truth::Null,
        (Value::Number(a), Value::Number(b)) => numeric(a, b),
        // A number literal compares the other side as a number.
        (Value::Number(number), Value::Column(text) | Value::Text(text)) => {
            numeric(text, number).map(Ordering::reverse)
        }
        (Value::Column(text) | Value::Text(text), Value::Number(number)) => numeric(text, number),
        (Value::Column(a) | Value::Text(a), Value::Column(b) | Value::Text(b)) => textual(a, b),
    };
    let Some(ordering) = ordering else {
        return Truth::Unknown;
    };
    Truth::from_bool(match op {
        CompareOp::Eq | CompareOp::NullSafeEq => ordering == Ordering::Equal,
        CompareOp::NotEq => ordering != Ordering::Equal,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::LtEq => ordering != Ordering::Greater,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::GtEq => ordering != Ordering::Less,
    })
}

fn numeric(a: &str, b: &str) -> Option<Ordering> {
    Some(Decimal::parse(a)?.cmp(&Decimal::parse(b)?))
}

/// Two texts whose types are not known: a date or datetime against a date compares as a datetime; otherwise every
/// reading that could apply (numbers when both are numbers, bytes, a case-insensitive PAD SPACE collation) must
/// agree.
fn textual(a: &str, b: &str) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (datetime(a), datetime(b)) {
        return Some(a.cmp(&b));
    }
    let bytes = a.trim_end_matches(' ').cmp(b.trim_end_matches(' '));
    let mut readings = vec![a.cmp(b), bytes];
    if a.is_ascii() && b.is_ascii() {
        readings.push(
            a.trim_end_matches(' ')
                .to_ascii_lowercase()
                .cmp(&b.trim_end_matches(' ').to_ascii_lowercase()),
        );
    } else if a != b {
        // Accent- and case-insensitive collations may equate different non-ASCII texts.
        return None;
    }
    if let Some(number) = numeric(a, b) {
        readings.push(number);
    }
    readings
        .windows(2)
        .all(|pair| pair[0] == pair[1])
        .then_some(readings[0])
}

/// A date or datetime (`2026-11-26`, `2026-11-26 08:30:00`, key text's `2026-11-26T08:30:00[.ffffff][Z]`) as
/// comparable text `YYYY-MM-DD HH:MM:SS.ffffff`.
fn datetime(text: &str) -> Option<String> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, time),
        None => (text, "00:00:00"),
    };
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, c)| match i {
            4 | 7 => c == b'-',
            _ => c.is_ascii_digit(),
        });
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let time_ok = clock.len() == 8
        && clock.bytes().enumerate().all(|(i, c)| match i {
            2 | 5 => c == b':',
            _ => c.is_ascii_digit(),
        })
        && fraction.len() <= 6
        && fraction.bytes().all(|c| c.is_ascii_digit());
    (date_ok && time_ok).then(|| format!("{date} {clock}.{fraction:0<6}"))
}

/// SQL `LIKE` with `%` and `_`, answered only when byte-wise and case-insensitive matching agree.
pub(super) fn like(text: &str, pattern: &str, escape: char) -> Truth {
    let exact = like_match(text, pattern, escape, false);
    if !text.is_ascii() || !pattern.is_ascii() {
        return if exact { Truth::True } else { Truth::Unknown };
    }
    if exact == like_match(text, pattern, escape, true) {
        Truth::from_bool(exact)
    } else {
        Truth::Unknown
    }
}

fn like_match(text: &str, pattern: &str, escape: char, fold: bool) -> bool {
    /// One piece of a `LIKE` pattern.
    enum Token {
        /// `%`: any run of characters.
        Any,
        /// `_`: any one character.
        One,
        Char(char),
    }
    let text: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            c if c == escape => Token::Char(chars.next().unwrap_or(escape)),
            '%' => Token::Any,
            '_' => Token::One,
            c => Token::Char(c),
        });
    }
    let same = |a: char, b: char| if fold { a.eq_ignore_ascii_case(&b) } else { a == b };
    // Two-pointer wildcard matching, backtracking to the last `%`.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Char(c)) if same(*c, text[t]) => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|token| matches!(token, Token::Any))
}

/// An exact decimal number: sign, integer digits, fraction digits (no exponent: `1e5` is not one).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Decimal {
    negative: bool,
    integer: String,
    fraction: String,
}

impl Decimal {
    pub(super) fn parse(text: &str) -> Option<Decimal> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (integer, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if (integer.is_empty() && fraction.is_empty())
            || !integer.bytes().all(|c| c.is_ascii_digit())
            || !fraction.bytes().all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let integer = integer.trim_start_matches('0').to_string();
        let fraction = fraction.trim_end_matches('0').to_string();
        let zero = integer.is_empty() && fraction.is_empty();
        Some(Decimal {
            negative: negative && !zero,
            integer,
            fraction,
        })
    }

    pub(super) fn is_zero(&self) -> bool {
        self.integer.is_empty() && self.fraction.is_empty()
    }

    fn magnitude(&self, other: &Decimal) -> Ordering {
        self.integer
            .len()
            .cmp(&other.integer.len())
            .then_with(|| self.integer.cmp(&other.integer))
            .then_with(|| self.fraction.cmp(&other.fraction))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.magnitude(other),
            (true, true) => other.magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
