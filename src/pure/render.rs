//! From a result row to a Redis key and value: pure functions over decoded cells.
//!
//! A [`RowRenderer`] is planned once per query from the result's columns (placeholders resolved to column indices,
//! sensitive column names refused, JSON object keys escaped ahead of time) and then renders every row without
//! looking anything up. It owns no I/O; `warm` feeds it rows and sends what it renders to `cache`.

use crate::pure::model::{KeyPart, WarmJob};
use crate::pure::value::{Cell, ColumnKind, write_json_string};

/// Word fragments that mark a column as holding a secret (the seed: "never cache sensitive data"). Matched against
/// the column name lowercased with `_`, `-` and spaces removed.
const SENSITIVE_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "creditcard",
    "cardnumber",
    "cardno",
    "iban",
    "socialsecurity",
];

/// Short markers that count only as a whole `_`-separated word (`ssn`, but not `lessnumber`).
const SENSITIVE_WORDS: &[&str] = &["ssn", "cvv", "cvc", "pin", "otp", "pwd", "salt"];

/// Where a result column was read from: `("database.table", "column")`.
pub(crate) type ColumnSource = (String, String);

/// A result column as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The column's name (or alias) in the result.
    pub name: String,
    /// sqlx's type name (`BIGINT UNSIGNED`, `VARCHAR`, ...).
    pub type_name: String,
    /// Character data rather than binary (BLOB and TEXT share a wire type).
    pub is_text: bool,
    /// The table column it was read from, as `("database.table", "column")`; `None` for an expression (or when the
    /// server did not say).
    pub source: Option<ColumnSource>,
}

/// Why a job's query result cannot be rendered at all. The run fails before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    #[error("key template \"{template}\" uses {{{placeholder}}}, which is not a result column (columns: {columns})")]
    MissingColumn {
        template: String,
        placeholder: String,
        columns: String,
    },
    #[error(
        "result column(s) {} look sensitive and would be cached; remove them from the query, or list them in \
         encrypt_columns (stored encrypted) or allow_sensitive (stored as they are)", .columns.join(", ")
    )]
    Sensitive { columns: Vec<String> },
    #[error("column `{column}` {message}")]
    Unmappable { column: String, message: String },
    #[error("json_columns names `{column}`, which is not a result column")]
    UnknownJsonColumn { column: String },
    #[error("encrypt_columns names `{column}`, which is not a result column")]
    UnknownEncryptedColumn { column: String },
    #[error("the result has two columns named `{column}`; give one an alias")]
    DuplicateColumn { column: String },
    #[error(
        "score = \"{column}\" is a {type_name} column, not a number: a sorted set scores its members by a numeric \
         column (for a date or time, select UNIX_TIMESTAMP({column}) AS {column})"
    )]
    NonNumericScore { column: String, type_name: String },
}

/// Why one row was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RowError {
    #[error("key column `{column}` is NULL")]
    NullKeyColumn { column: String },
}

enum KeyPiece {
    Literal(String),
    Column(usize),
}

/// Renders rows of one query result for one job.
pub(crate) struct RowRenderer {
    /// `"name":` per column, escaped once.
    field_prefixes: Vec<Vec<u8>>,
    kinds: Vec<ColumnKind>,
    key: Vec<KeyPiece>,
    /// A set's member template, and a sorted set's score column.
    member: Vec<KeyPiece>,
    score: Option<usize>,
    names: Vec<String>,
    /// Per column, whether its value is sealed; with the keys to seal it.
    encrypted: Vec<bool>,
    keyring: Option<std::sync::Arc<crate::pure::crypto::Keyring>>,
}

/// The result's columns against the job: no name twice, every JSON and encrypted column present, no sensitive column
/// the job does not allow or encrypt.
fn check_columns(job: &WarmJob, columns: &[ColumnInfo]) -> Result<(), ColumnError> {
    for (i, column) in columns.iter().enumerate() {
        if columns[..i].iter().any(|c| c.name == column.name) {
            return Err(ColumnError::DuplicateColumn {
                column: column.name.clone(),
            });
        }
    }
    if let Some(column) = job.json_columns.iter().find(|j| !columns.iter().any(|c| &c.name == *j)) {
        return Err(ColumnError::UnknownJsonColumn { column: column.clone() });
    }
    if let Some(column) = job
        .encrypt_columns
        .iter()
        .find(|e| !columns.iter().any(|c| &c.name == *e))
    {
        return Err(ColumnError::UnknownEncryptedColumn { column: column.clone() });
    }
    // An encrypted column is cached only sealed: that satisfies the guard as an explicit allowance does.
    let allowed: Vec<String> = job
        .allow_sensitive
        .iter()
        .chain(&job.encrypt_columns)
        .cloned()
        .collect();
    let sensitive = sensitive_columns(columns.iter().map(|c| c.name.as_str()), &allowed);
    if !sensitive.is_empty() {
        return Err(ColumnError::Sensitive { columns: sensitive });
    }
    Ok(())
}

/// The column a sorted set's members are scored by: present, and numeric.
fn score_column(score: &str, columns: &[ColumnInfo], kinds: &[ColumnKind]) -> Result<usize, ColumnError> {
    let index = columns
        .iter()
        .position(|c| c.name == score)
        .ok_or_else(|| ColumnError::MissingColumn {
            template: format!("score = \"{score}\""),
            placeholder: score.to_string(),
            columns: columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
    if !kinds[index].is_number() {
        return Err(ColumnError::NonNumericScore {
            column: score.to_string(),
            type_name: columns[index].type_name.clone(),
        });
    }
    Ok(index)
}

impl RowRenderer {
    /// Plans rendering for `job` over a result with these columns.
    pub(crate) fn new(job: &WarmJob, columns: &[ColumnInfo]) -> Result<Self, ColumnError> {
        check_columns(job, columns)?;
        let kinds = columns
            .iter()
            .map(|c| {
                let declared_json = job.json_columns.contains(&c.name);
                ColumnKind::from_type(&c.type_name, c.is_text, declared_json).map_err(|message| {
                    ColumnError::Unmappable {
                        column: c.name.clone(),
                        message,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key = pieces(&job.key, columns)?;
        let members = job.members.as_deref();
        let member = members.map_or(Ok(Vec::new()), |members| pieces(&members.member, columns))?;
        let score = members
            .and_then(|members| members.score.as_deref())
            .map(|score| score_column(score, columns, &kinds))
            .transpose()?;
        let field_prefixes = columns
            .iter()
            .map(|c| {
                let mut prefix = Vec::with_capacity(c.name.len() + 3);
                write_json_string(&mut prefix, &c.name);
                prefix.push(b':');
                prefix
            })
            .collect();
        Ok(Self {
            field_prefixes,
            kinds,
            key,
            member,
            score,
            encrypted: columns.iter().map(|c| job.encrypt_columns.contains(&c.name)).collect(),
            keyring: job.keyring.clone().filter(|_| !job.encrypt_columns.is_empty()),
            names: columns.iter().map(|c| c.name.clone()).collect(),
        })
    }

    /// How to decode each column, in result order.
    pub(crate) fn kinds(&self) -> &[ColumnKind] {
        &self.kinds
    }

    /// Decodes a row's raw values (in result order) into cells; the error names the column.
    pub(crate) fn decode<'r>(&self, raw: &[Option<&'r [u8]>]) -> Result<Vec<Cell<'r>>, String> {
        // One allocation of the right size per row (collecting a `Result` iterator cannot know the length).
        let mut cells = Vec::with_capacity(self.kinds.len());
        for ((kind, bytes), name) in self.kinds.iter().zip(raw).zip(&self.names) {
            cells.push(crate::pure::value::decode(*kind, *bytes).map_err(|e| format!("column `{name}` {e}"))?);
        }
        Ok(cells)
    }

    /// Appends the key for this row to `out`.
    pub(crate) fn render_key(&self, cells: &[Cell<'_>], out: &mut String) -> Result<(), RowError> {
        self.render(&self.key, cells, out)
    }

    /// A set's member for this row, and a sorted set's score (a finite number); the error says why the row has none.
    pub(crate) fn render_member(&self, cells: &[Cell<'_>]) -> Result<(String, Option<String>), String> {
        let mut member = String::new();
        self.render(&self.member, cells, &mut member)
            .map_err(|error| error.to_string())?;
        let Some(index) = self.score else {
            return Ok((member, None));
        };
        let mut text = String::new();
        let name = &self.names[index];
        cells[index]
            .write_key(&mut text)
            .ok_or_else(|| format!("score column `{name}` is NULL"))?;
        match crate::pure::members::score(&text) {
            Some(score) => Ok((member, Some(score.to_string()))),
            None => Err(format!("score column `{name}` is not a number ({text:?})")),
        }
    }

    /// Appends `pieces` rendered from the row to `out`.
    fn render(&self, pieces: &[KeyPiece], cells: &[Cell<'_>], out: &mut String) -> Result<(), RowError> {
        for piece in pieces {
            match piece {
                KeyPiece::Literal(text) => out.push_str(text),
                KeyPiece::Column(index) => cells[*index].write_key(out).ok_or_else(|| RowError::NullKeyColumn {
                    column: self.names[*index].clone(),
                })?,
            }
        }
        Ok(())
    }

    /// Appends the row as a JSON object, columns in result order; an encrypted column's value is its envelope.
    pub(crate) fn render_object(&self, cells: &[Cell<'_>], out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (prefix, cell)) in self.field_prefixes.iter().zip(cells).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(prefix);
            match &self.keyring {
                Some(keyring) if self.encrypted[i] => {
                    let mut plain = Vec::new();
                    cell.write_json(&mut plain);
                    keyring.seal(&self.names[i], &plain, out);
                }
                _ => cell.write_json(out),
            }
        }
        out.push(b'}');
    }
}

/// `template`'s pieces over a result with these columns.
fn pieces(template: &crate::pure::model::KeyTemplate, columns: &[ColumnInfo]) -> Result<Vec<KeyPiece>, ColumnError> {
    template
        .parts()
        .iter()
        .map(|part| match part {
            KeyPart::Literal(text) => Ok(KeyPiece::Literal(text.clone())),
            KeyPart::Column(name) => columns
                .iter()
                .position(|c| &c.name == name)
                .map(KeyPiece::Column)
                .ok_or_else(|| ColumnError::MissingColumn {
                    template: template.to_string(),
                    placeholder: name.clone(),
                    columns: columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                }),
        })
        .collect()
}

/// The column names that look like secrets and are not explicitly allowed.
pub(crate) fn sensitive_columns<'a>(names: impl IntoIterator<Item = &'a str>, allowed: &[String]) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)))
        .filter(|name| looks_sensitive(name))
        .map(str::to_string)
        .collect()
}

fn looks_sensitive(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let squashed: String = lower.chars().filter(|c| !matches!(c, '_' | '-' | ' ')).collect();
    SENSITIVE_FRAGMENTS.iter().any(|f| squashed.contains(f))
        || lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| SENSITIVE_WORDS.contains(&word))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn job(key: &str) -> WarmJob {
        WarmJob::example("t", key)
    }

    fn col(name: &str, type_name: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            type_name: type_name.into(),
            is_text: true,
            source: None,
        }
    }

    #[test]
    fn renders_key_and_object_in_column_order() {
        let renderer = RowRenderer::new(
            &job("product:{id}:{lang}"),
            &[col("id", "BIGINT"), col("lang", "VARCHAR")],
        )
        .unwrap();
        let cells = [Cell::Int(42), Cell::Text(Cow::Borrowed("en"))];
        let mut key = String::new();
        renderer.render_key(&cells, &mut key).unwrap();
        assert_eq!(key, "product:42:en");
        let mut value = Vec::new();
        renderer.render_object(&cells, &mut value);
        assert_eq!(String::from_utf8(value).unwrap(), r#"{"id":42,"lang":"en"}"#);
    }

    #[test]
    fn null_key_column_skips_the_row() {
        let renderer = RowRenderer::new(&job("product:{id}"), &[col("id", "BIGINT")]).unwrap();
        let mut key = String::new();
        assert_eq!(
            renderer.render_key(&[Cell::Null], &mut key),
            Err(RowError::NullKeyColumn { column: "id".into() })
        );
    }

    #[test]
    fn missing_placeholder_column_is_named() {
        let error = RowRenderer::new(&job("product:{sku}"), &[col("id", "BIGINT")])
            .err()
            .unwrap();
        assert!(error.to_string().contains("{sku}"), "{error}");
        assert!(error.to_string().contains("columns: id"), "{error}");
    }

    #[test]
    fn sensitive_columns_are_refused_unless_allowed() {
        let columns = [
            col("id", "INT"),
            col("password_hash", "VARCHAR"),
            col("session_token", "VARCHAR"),
        ];
        let error = RowRenderer::new(&job("u:{id}"), &columns).err().unwrap();
        assert_eq!(
            error,
            ColumnError::Sensitive {
                columns: vec!["password_hash".into(), "session_token".into()]
            }
        );
        let mut allowed = job("u:{id}");
        allowed.allow_sensitive = vec!["password_hash".into(), "SESSION_TOKEN".into()];
        assert!(RowRenderer::new(&allowed, &columns).is_ok());
    }

    #[test]
    fn an_encrypted_column_passes_the_guard_and_is_rendered_sealed() {
        let columns = [
            col("id", "INT"),
            col("email", "VARCHAR"),
            col("session_token", "VARCHAR"),
        ];
        let keyring =
            crate::pure::crypto::Keyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", None).unwrap();
        let mut sealed = job("u:{id}");
        sealed.encrypt_columns = vec!["email".into()];
        sealed.keyring = Some(std::sync::Arc::new(keyring));
        // The token is neither encrypted nor allowed: still refused.
        let error = RowRenderer::new(&sealed, &columns).err().unwrap();
        assert_eq!(
            error,
            ColumnError::Sensitive {
                columns: vec!["session_token".into()]
            }
        );
        sealed.encrypt_columns.push("session_token".into());
        let renderer = RowRenderer::new(&sealed, &columns).unwrap();
        let cells = [
            Cell::Int(7),
            Cell::Text(Cow::Borrowed("alice@example.com")),
            Cell::Text(Cow::Borrowed("t0k3n")),
        ];
        let mut out = Vec::new();
        renderer.render_object(&cells, &mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["id"], 7);
        assert!(
            !String::from_utf8_lossy(&out).contains("alice"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let keyring = sealed.keyring.as_ref().unwrap();
        assert_eq!(
            keyring.open("email", &value["email"]).unwrap(),
            b"\"alice@example.com\""
        );
        assert_eq!(
            keyring.open("session_token", &value["session_token"]).unwrap(),
            b"\"t0k3n\""
        );
        sealed.encrypt_columns.push("nope".into());
        assert!(matches!(
            RowRenderer::new(&sealed, &columns),
            Err(ColumnError::UnknownEncryptedColumn { .. })
        ));
    }

    #[test]
    fn sensitive_words_match_whole_words_only() {
        for name in [
            "ssn",
            "user_ssn",
            "card_cvv",
            "apiKey",
            "API_KEY",
            "CreditCardNumber",
            "pin",
        ] {
            assert!(looks_sensitive(name), "{name}");
        }
        for name in [
            "id",
            "shipping",
            "pinned_at",
            "lessons",
            "opinion",
            "sales",
            "description",
        ] {
            assert!(!looks_sensitive(name), "{name}");
        }
    }

    #[test]
    fn unmappable_types_name_the_column() {
        let error = RowRenderer::new(&job("k:{id}"), &[col("id", "INT"), col("shape", "GEOMETRY")])
            .err()
            .unwrap();
        assert!(
            error.to_string().starts_with("column `shape` has type GEOMETRY"),
            "{error}"
        );
    }
}
