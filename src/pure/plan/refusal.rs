//! Why an invalidation message was refused ([`Refusal`]): each kind a metric label, listed once for the metrics to
//! start at zero.

/// Why a message was refused. Each variant is a metric label (see [`Refusal::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("message of {bytes} bytes exceeds the {limit}-byte limit")]
    TooLarge { bytes: usize, limit: usize },
    #[error("message is not UTF-8")]
    NotUtf8,
    #[error("message asks for nothing")]
    Empty,
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("empty key")]
    EmptyKey,
    #[error("key {0:?} contains a wildcard; use \"patterns\" for pattern deletes")]
    WildcardInDelete(String),
    #[error("key {0:?} is outside the allow-list")]
    KeyNotAllowed(String),
    #[error("pattern {0:?} is outside the allow-list")]
    PatternNotAllowed(String),
    #[error("message names {count} keys, more than the limit of {limit}")]
    TooManyKeys { count: usize, limit: usize },
    #[error("no warm job named {0:?}")]
    UnknownJob(String),
}

impl Refusal {
    /// Every [`Refusal::reason`].
    pub(crate) const REASONS: [&'static str; 10] = [
        "too_large",
        "not_utf8",
        "empty",
        "malformed",
        "empty_key",
        "wildcard_in_delete",
        "key_not_allowed",
        "pattern_not_allowed",
        "too_many_keys",
        "unknown_job",
    ];

    /// A short label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::TooLarge { .. } => "too_large",
            Refusal::NotUtf8 => "not_utf8",
            Refusal::Empty => "empty",
            Refusal::MalformedJson(_) => "malformed",
            Refusal::EmptyKey => "empty_key",
            Refusal::WildcardInDelete(_) => "wildcard_in_delete",
            Refusal::KeyNotAllowed(_) => "key_not_allowed",
            Refusal::PatternNotAllowed(_) => "pattern_not_allowed",
            Refusal::TooManyKeys { .. } => "too_many_keys",
            Refusal::UnknownJob(_) => "unknown_job",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_reason_is_listed_once() {
        let text = || String::new();
        let all = [
            Refusal::TooLarge { bytes: 1, limit: 0 },
            Refusal::NotUtf8,
            Refusal::Empty,
            Refusal::MalformedJson(text()),
            Refusal::EmptyKey,
            Refusal::WildcardInDelete(text()),
            Refusal::KeyNotAllowed(text()),
            Refusal::PatternNotAllowed(text()),
            Refusal::TooManyKeys { count: 1, limit: 0 },
            Refusal::UnknownJob(text()),
        ];
        let reasons: Vec<&str> = all.iter().map(Refusal::reason).collect();
        assert_eq!(reasons, Refusal::REASONS);
    }
}
