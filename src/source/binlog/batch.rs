//! One batch of binlog changes: the actions of many row events, across transactions, coalesced so that every key is
//! touched once, with the position to save once the batch has been applied. And the debounce of warm runs.
//!
//! Pure: the listener adds planned actions and takes the batch when it is full, old or the stream is idle.
//!
//! # Coalescing
//! A key's last action wins: a refresh reads the row as it is when the batch is applied, so refreshing once after the
//! last change is as good as once per change; a key deleted and then refreshed is refreshed, refreshed and then
//! deleted is deleted; of several projections the last row image is written. Pattern deletes are deduplicated and
//! applied first: a key action from the same batch then still lands, and a key they match that a later change
//! refreshed is read again after them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::checkpoint::Position;
use crate::model::SeenRow;
use crate::plan::Action;

/// Everything gathered since the last apply.
#[derive(Default)]
pub struct Batch {
    /// Per key: when its action arrived (to keep arrival order) and the action.
    keyed: HashMap<String, (u64, Action)>,
    patterns: Vec<String>,
    pattern_set: HashSet<String>,
    /// The row each refresh must see (the latest change of that key's row).
    seen: HashMap<String, SeenRow>,
    arrivals: u64,
    /// Row events in the batch.
    pub rows: u64,
    /// Transactions completed in the batch.
    pub transactions: u64,
    /// The position after the last complete transaction of the batch: where to resume once it is applied.
    pub checkpoint: Option<Position>,
    /// When the first row of the batch arrived.
    pub started: Option<Instant>,
}

/// A batch ready to apply: actions in the order to apply them, and what each refresh must see.
pub struct Ready {
    pub actions: Vec<Action>,
    pub seen: HashMap<String, SeenRow>,
}

impl Batch {
    /// Adds one planned action (not `Warm`: those are debounced apart). `seen` is the changed row, for refreshes.
    pub fn add(&mut self, action: Action, seen: Option<&SeenRow>, now: Instant) {
        self.started.get_or_insert(now);
        self.arrivals += 1;
        let key = match &action {
            Action::DeletePattern(pattern) => {
                if self.pattern_set.insert(pattern.clone()) {
                    self.patterns.push(pattern.clone());
                }
                return;
            }
            Action::Warm(_) => return,
            Action::Delete(key) | Action::Refresh(key) | Action::Set { key, .. } => key.clone(),
        };
        match (&action, seen) {
            (Action::Refresh(_), Some(seen)) => {
                self.seen.insert(key.clone(), seen.clone());
            }
            _ => {
                self.seen.remove(&key);
            }
        }
        self.keyed.insert(key, (self.arrivals, action));
    }

    /// Keys and patterns waiting.
    pub fn len(&self) -> usize {
        self.keyed.len() + self.patterns.len()
    }

    /// Whether nothing waits to be applied or saved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.rows == 0 && self.checkpoint.is_none()
    }

    /// Whether the oldest change has waited `limit`.
    pub fn is_older_than(&self, limit: Duration, now: Instant) -> bool {
        self.started.is_some_and(|at| now.duration_since(at) >= limit)
    }

    /// The actions to apply, leaving the counters and checkpoint for the caller to read and reset.
    pub fn take_actions(&mut self) -> Ready {
        let mut keyed: Vec<(u64, Action)> = self.keyed.drain().map(|(_, entry)| entry).collect();
        // Same kinds together (the executor pipelines runs of one kind), each in arrival order.
        keyed.sort_by_key(|(arrival, action)| (kind_order(action), *arrival));
        let mut actions: Vec<Action> = self.patterns.drain(..).map(Action::DeletePattern).collect();
        actions.extend(keyed.into_iter().map(|(_, action)| action));
        self.pattern_set.clear();
        Ready {
            actions,
            seen: std::mem::take(&mut self.seen),
        }
    }
}

fn kind_order(action: &Action) -> u8 {
    match action {
        Action::DeletePattern(_) => 0,
        Action::Delete(_) => 1,
        Action::Set { .. } => 2,
        Action::Refresh(_) => 3,
        Action::Warm(_) => 4,
    }
}

/// At most one warm run per job and window; a change inside the window schedules one run at its end, so the last
/// change is never left unwarmed.
#[derive(Default)]
pub struct Debounce {
    last: HashMap<String, Instant>,
    trailing: HashMap<String, Instant>,
}

impl Debounce {
    /// Whether a run of `job` may start now; if not, one is scheduled for the end of the window.
    pub fn admit(&mut self, job: &str, window: Duration, now: Instant) -> bool {
        match self.last.get(job) {
            Some(&at) if now.duration_since(at) < window => {
                self.trailing.insert(job.to_string(), at + window);
                false
            }
            _ => {
                self.last.insert(job.to_string(), now);
                self.trailing.remove(job);
                true
            }
        }
    }

    /// The jobs whose trailing run is due.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .trailing
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(job, _)| job.clone())
            .collect();
        for job in &due {
            self.trailing.remove(job);
            self.last.insert(job.clone(), now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn seen(name: &str) -> SeenRow {
        SeenRow {
            table: Arc::from("shop.products"),
            image: Arc::new([("name".to_string(), Some(name.to_string()))].into_iter().collect()),
        }
    }

    #[test]
    fn a_hot_key_is_refreshed_once_against_its_latest_row() {
        let mut batch = Batch::default();
        let now = Instant::now();
        for i in 0..1000 {
            batch.add(Action::Refresh("product:1".into()), Some(&seen(&i.to_string())), now);
            batch.add(Action::Refresh(format!("product:{}", 2 + i % 3)), None, now);
        }
        let ready = batch.take_actions();
        assert_eq!(ready.actions.len(), 4);
        assert!(ready.actions.contains(&Action::Refresh("product:1".into())));
        assert_eq!(ready.seen["product:1"], seen("999"));
        assert!(!ready.seen.contains_key("product:2"));
    }

    #[test]
    fn the_later_of_delete_and_refresh_wins() {
        let mut batch = Batch::default();
        let now = Instant::now();
        batch.add(Action::Delete("a".into()), None, now);
        batch.add(Action::Refresh("a".into()), Some(&seen("x")), now);
        batch.add(Action::Refresh("b".into()), Some(&seen("y")), now);
        batch.add(Action::Delete("b".into()), None, now);
        batch.add(Action::DeletePattern("c:*".into()), None, now);
        batch.add(Action::DeletePattern("c:*".into()), None, now);
        let ready = batch.take_actions();
        assert_eq!(
            ready.actions,
            [
                Action::DeletePattern("c:*".into()),
                Action::Delete("b".into()),
                Action::Refresh("a".into()),
            ]
        );
        assert!(ready.seen.contains_key("a") && !ready.seen.contains_key("b"));
        assert_eq!(batch.len(), 0);
    }

    #[test]
    fn debounce_runs_once_per_window_and_once_after_it() {
        let mut debounce = Debounce::default();
        let start = Instant::now();
        let window = Duration::from_secs(10);
        assert!(debounce.admit("stats", window, start));
        assert!(!debounce.admit("stats", window, start + Duration::from_secs(1)));
        assert!(debounce.due(start + Duration::from_secs(5)).is_empty());
        assert_eq!(debounce.due(start + Duration::from_secs(10)), ["stats"]);
        assert!(debounce.due(start + Duration::from_secs(11)).is_empty());
    }
}
