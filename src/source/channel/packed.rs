//! A batch of actions packed into one buffer while it waits in the pub/sub queue: what a message asks for is a kind
//! and a key (or pattern, or job), so a queued action costs its text and five bytes, where an [`Action`] in a `Vec`
//! costs about a hundred (the enum and its own allocation). A burst of a million single-key messages then waits in
//! about 20 MB instead of 110.

use crate::pure::plan::Action;

/// Which of the text-only actions an entry is.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(super) enum Kind {
    Delete,
    DeletePattern,
    Refresh,
    Warm,
}

/// A queued batch: text-only actions packed, in order; any other kind (never asked for by a message today) keeps the
/// whole batch as it was.
pub(super) enum Packed {
    Text {
        /// Per action, its kind and where its text ends in `text`.
        kinds: Vec<Kind>,
        ends: Vec<u32>,
        text: String,
    },
    Whole(Vec<Action>),
}

impl Packed {
    pub(super) fn new(actions: Vec<Action>) -> Self {
        let text_len: usize = actions
            .iter()
            .map(|action| text_of(action).map_or(0, |(_, text)| text.len()))
            .sum();
        if text_len > u32::MAX as usize || actions.iter().any(|action| text_of(action).is_none()) {
            return Packed::Whole(actions);
        }
        let mut kinds = Vec::with_capacity(actions.len());
        let mut ends = Vec::with_capacity(actions.len());
        let mut text = String::with_capacity(text_len);
        for (kind, part) in actions.iter().filter_map(text_of) {
            kinds.push(kind);
            text.push_str(part);
            ends.push(text.len() as u32);
        }
        Packed::Text { kinds, ends, text }
    }

    /// The bytes this batch holds (what it is charged against the queue's bound).
    pub(super) fn bytes(&self) -> usize {
        match self {
            Packed::Text { kinds, ends, text } => kinds.capacity() + ends.capacity() * 4 + text.capacity(),
            Packed::Whole(actions) => {
                actions.capacity() * size_of::<Action>()
                    + actions
                        .iter()
                        .map(|action| text_of(action).map_or(64, |(_, text)| text.len()))
                        .sum::<usize>()
            }
        }
    }

    /// The actions, in the order they were packed.
    pub(super) fn unpack(self) -> Vec<Action> {
        let (kinds, ends, text) = match self {
            Packed::Whole(actions) => return actions,
            Packed::Text { kinds, ends, text } => (kinds, ends, text),
        };
        let mut start = 0;
        kinds
            .into_iter()
            .zip(ends)
            .map(|(kind, end)| {
                let part = text[start..end as usize].to_string();
                start = end as usize;
                match kind {
                    Kind::Delete => Action::Delete(part),
                    Kind::DeletePattern => Action::DeletePattern(part),
                    Kind::Refresh => Action::Refresh(part),
                    Kind::Warm => Action::Warm(part),
                }
            })
            .collect()
    }
}

fn text_of(action: &Action) -> Option<(Kind, &str)> {
    match action {
        Action::Delete(key) => Some((Kind::Delete, key)),
        Action::DeletePattern(pattern) => Some((Kind::DeletePattern, pattern)),
        Action::Refresh(key) => Some((Kind::Refresh, key)),
        Action::Warm(job) => Some((Kind::Warm, job)),
        Action::Set { .. } | Action::Lookup(_) | Action::Member(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_actions_come_back_in_order_and_cost_their_text_and_five_bytes() {
        let actions = vec![
            Action::Delete("product:1".into()),
            Action::Refresh("product:2".into()),
            Action::DeletePattern("user:*".into()),
            Action::Warm("products".into()),
            Action::Delete(String::new()),
            Action::Delete("é:1".into()),
        ];
        let packed = Packed::new(actions.clone());
        let text: usize = [9, 9, 6, 8, 0, 4].iter().sum();
        assert_eq!(packed.bytes(), text + 5 * actions.len());
        assert_eq!(packed.unpack(), actions);
    }

    #[test]
    fn a_batch_with_another_kind_is_kept_whole() {
        let actions = vec![
            Action::Delete("a".into()),
            Action::Set {
                key: "b".into(),
                value: b"1".to_vec(),
                ttl: None,
            },
        ];
        let packed = Packed::new(actions.clone());
        assert!(matches!(packed, Packed::Whole(_)));
        assert!(packed.bytes() >= 2 * size_of::<Action>());
        assert_eq!(packed.unpack(), actions);
    }
}
