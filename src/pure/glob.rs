//! Key patterns: a key template's allow pattern (`product:{id}` → `product:*`), and the matching of Redis glob
//! patterns in which only `*` is special, which answers both "may this key be touched?" and "does this allow
//! pattern cover that pattern?". Pure.

use crate::pure::model::{KeyPart, KeyTemplate};

/// The allow pattern for a key template: each placeholder becomes `*`, literal glob characters are escaped.
pub(crate) fn allow_pattern(template: &KeyTemplate) -> String {
    pattern_of(template, escape_glob)
}

/// Every key a rule's template can name, as a Redis pattern: each placeholder `*`, the template's own `*` kept (it
/// is a wildcard there, `category:{id}:*`), every other glob character escaped. What a TRUNCATE or a gap deletes.
pub(crate) fn template_pattern(template: &KeyTemplate) -> String {
    pattern_of(template, escape_glob_but_star)
}

fn pattern_of(template: &KeyTemplate, literal: fn(&str) -> String) -> String {
    let mut pattern = String::new();
    for part in template.parts() {
        match part {
            KeyPart::Literal(text) => pattern.push_str(&literal(text)),
            KeyPart::Column(_) => pattern.push('*'),
        }
    }
    pattern
}

/// Whether a rule's `database`/`table`, either of which may be a pattern (`shop_*`, `orders_*`; only `*` is
/// special), names `database.table`.
pub(crate) fn table_matches(rule_database: &str, rule_table: &str, database: &str, table: &str) -> bool {
    let part = |pattern: &str, name: &str| {
        if pattern.contains('*') {
            glob_match(pattern, name)
        } else {
            pattern == name
        }
    };
    part(rule_database, database) && part(rule_table, table)
}

/// `text` with Redis glob characters escaped, so that it matches only itself.
pub(crate) fn escape_glob(text: &str) -> String {
    escape(text, &['*', '?', '[', ']', '\\'])
}

/// `text` with every Redis glob character but `*` escaped: a template's own text, where only `*` is a wildcard.
pub(crate) fn escape_glob_but_star(text: &str) -> String {
    escape(text, &['?', '[', ']', '\\'])
}

fn escape(text: &str, special: &[char]) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if special.contains(&c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Whether an allow pattern is one this module can reason about: only `*` is special (and `\` escapes).
pub(crate) fn is_simple_glob(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '?' | '[' | ']' => return false,
            _ => {}
        }
    }
    true
}

/// Matches `text` against a pattern in which `*` is any run of characters and `\` escapes the next one.
///
/// Applied to a Redis pattern as `text`, it answers "does the allow pattern cover this pattern?": the pattern's own
/// wildcards can only be absorbed by the allow pattern's `*`, so every key the pattern matches is allowed too.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<Token> = tokens(pattern);
    let text: Vec<char> = text.chars().collect();
    // Classic two-pointer wildcard matching with backtracking to the last star.
    let (mut p, mut t) = (0, 0);
    let (mut star, mut star_t) = (None, 0);
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            Some(Token::Star) => {
                star = Some(p);
                star_t = t;
                p += 1;
            }
            _ => match star {
                Some(s) => {
                    p = s + 1;
                    star_t += 1;
                    t = star_t;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|token| *token == Token::Star)
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    Star,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => tokens.push(Token::Star),
            '\\' => tokens.push(Token::Char(chars.next().unwrap_or('\\'))),
            c => tokens.push(Token::Char(c)),
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_table_pattern_names_the_tables_it_matches() {
        assert!(table_matches("shop_*", "orders", "shop_eu", "orders"));
        assert!(table_matches("shop", "orders_*", "shop", "orders_2026"));
        assert!(!table_matches("shop_*", "orders", "shop_eu", "orders_archive"));
        assert!(!table_matches("shop", "orders", "shop", "Orders"));
        assert!(table_matches("shop", "orders", "shop", "orders"));
        // Without a `*` a name is itself, whatever else it holds.
        assert!(!table_matches("shop", "ord?rs", "shop", "orders"));
    }

    #[test]
    fn globs_match_like_redis_for_stars() {
        assert!(glob_match("product:*", "product:42"));
        assert!(glob_match("product:*", "product:"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match(r"lit\*:*", "lit*:1"));
        assert!(!glob_match(r"lit\*:*", "litx:1"));
        // Covering patterns: the allow pattern's star absorbs the pattern's wildcards.
        assert!(glob_match("user:*", "user:1000:*"));
        assert!(!glob_match("product:*:en", "product:*"));
    }

    #[test]
    fn templates_become_allow_patterns() {
        let template = KeyTemplate::parse("catalog:{category}:page:{n}").unwrap();
        assert_eq!(allow_pattern(&template), "catalog:*:page:*");
        assert_eq!(allow_pattern(&KeyTemplate::parse("odd*key").unwrap()), r"odd\*key");
        assert!(is_simple_glob("user:*"));
        assert!(!is_simple_glob("user:?"));
    }

    #[test]
    fn a_rule_template_keeps_its_own_star_as_a_wildcard_and_escapes_the_rest() {
        let template = KeyTemplate::parse("category:{category_id}:*").unwrap();
        assert_eq!(template_pattern(&template), "category:*:*");
        let text = KeyTemplate::parse("x:{id}:[v2]?").unwrap();
        assert_eq!(template_pattern(&text), r"x:*:\[v2\]\?");
        assert!(glob_match(&template_pattern(&template), "category:7:page:1"));
    }
}
