//! One batch of binlog changes: the actions of many row events, across transactions, coalesced so that every key is
//! touched once, with the position to save once the batch has been applied; the refreshes to read again; and the
//! debounce of warm runs.
//!
//! Pure: the listener adds planned actions and takes the batch when it is full, old or the stream is idle.
//!
//! # Coalescing
//! A key's last action wins: a refresh reads the row as it is when the batch is applied, so refreshing once after the
//! last change is as good as once per change; a key deleted and then refreshed is refreshed, refreshed and then
//! deleted is deleted; of several projections the last row image is written. Pattern deletes are deduplicated and
//! applied first: a key action from the same batch then still lands, and a key they match that a later change
//! refreshed is read again after them.
//!
//! # Reading again
//! A refresh whose read did not show its change (see `refresh`) read either an older row (the commit not visible
//! yet, a lagging replica) or a newer one (a later change, whose own event is still ahead in the binlog). A recent
//! change is *deferred*: it joins a later batch after 2, 4, 8, … ms (at most 100 ms apart), unless a newer change of
//! the same key arrives first (which replaces it), and is given up once it has waited `[binlog] refresh_wait` (250 ms
//! by default: a commit is visible within a millisecond or two of its event; longer waits are for a lagging reader
//! endpoint). A change more than a second old at its first read (catching up on a backlog) is not read again: its
//! row has almost surely moved on, and the later event refreshes it. Either way the key stays deleted meanwhile, so
//! a crash or a give-up leaves a miss, never a stale value; with `refresh_fallback` the listener reads those keys
//! once more from the writer.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::checkpoint::Position;
use crate::pure::model::SeenRow;
use crate::pure::plan::Action;

/// A change at most this many seconds old (by its event's whole-second timestamp) is recent: a read not showing it
/// may be early, and is tried again.
const RECENT_SECONDS: u64 = 1;
/// The first wait before reading a deferred refresh again; it doubles with each attempt, up to the next.
const VERIFY_FIRST_DELAY: Duration = Duration::from_millis(2);
/// The longest wait between two reads of a deferred refresh: once a lagging reader shows the change, its key is
/// right within this long (doubling alone would wait up to the lag again: 2.1 s for a reader 1 s behind).
const VERIFY_MAX_DELAY: Duration = Duration::from_millis(100);

/// A refresh waiting to be read again.
struct Deferred {
    seen: SeenRow,
    /// Reads so far.
    attempts: u32,
    /// When the first read happened.
    since: Instant,
    /// When to read again.
    due: Instant,
}

/// Everything gathered since the last apply.
#[derive(Default)]
pub(super) struct Batch {
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
    deferred: HashMap<String, Deferred>,
    /// Deferred refreshes taken into this batch: their reads so far, and the first one's time.
    retries: HashMap<String, (u32, Instant)>,
}

/// A batch ready to apply: actions in the order to apply them, and what each refresh must see.
pub(super) struct Ready {
    pub actions: Vec<Action>,
    pub seen: HashMap<String, SeenRow>,
    retries: HashMap<String, (u32, Instant)>,
}

impl Ready {
    /// Defers the refreshes of recent changes whose read did not show them into `batch`. Returns the keys given up
    /// on after reading again, and those of older changes, not read again. `unix_now` is the time in seconds.
    pub(super) fn defer_unverified(
        mut self,
        unverified: &[String],
        batch: &mut Batch,
        now: Instant,
        unix_now: u64,
        wait: Duration,
    ) -> Unverified {
        let mut outcome = Unverified::default();
        for key in unverified {
            let Some(seen) = self.seen.remove(key) else { continue };
            let retry = self.retries.get(key).copied();
            // (Only a first read: a change read again has aged while it waited.)
            if retry.is_none() && unix_now.saturating_sub(u64::from(seen.committed_at)) > RECENT_SECONDS {
                outcome.outdated.push(key.clone());
                outcome.seen.insert(key.clone(), seen);
                continue;
            }
            let (attempts, since) = retry.unwrap_or((0, now));
            let attempts = attempts + 1;
            let delay = (VERIFY_FIRST_DELAY * 2u32.pow((attempts - 1).min(16))).min(VERIFY_MAX_DELAY);
            if now.duration_since(since) + delay > wait {
                outcome.given_up.push(key.clone());
                outcome.seen.insert(key.clone(), seen);
            } else if !batch.keyed.contains_key(key) {
                let due = now + delay;
                batch.deferred.insert(
                    key.clone(),
                    Deferred {
                        seen,
                        attempts,
                        since,
                        due,
                    },
                );
            }
        }
        outcome
    }
}

/// The unverified refreshes not deferred.
#[derive(Debug, Default)]
pub(super) struct Unverified {
    /// Recent changes read again until the wait ran out.
    pub given_up: Vec<String>,
    /// Changes more than a second old at their first read: not read again (a later event refreshes the key).
    pub outdated: Vec<String>,
    /// The row each of those keys had to show: what a last read from the writer is checked against.
    pub seen: HashMap<String, SeenRow>,
}

impl Batch {
    /// Adds one planned action (not `Warm`: those are debounced apart). `seen` is the changed row, for refreshes.
    pub(super) fn add(&mut self, action: Action, seen: Option<&SeenRow>, now: Instant) {
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
            Action::Member(change) => {
                // A member's latest change is its state: one per member and key.
                self.keyed.insert(change.batch_key(), (self.arrivals, action.clone()));
                return;
            }
            Action::Lookup(lookup) => {
                // One lookup per changed row's join values; the latest change's row is the one to show.
                let mut lookup = lookup.clone();
                lookup.seen = seen.cloned();
                self.keyed
                    .insert(lookup.batch_key(), (self.arrivals, Action::Lookup(lookup)));
                return;
            }
        };
        // A projection into a hash changes some of its fields only: a refresh or delete of the key in the batch (or a
        // deferred re-read) covers it and is kept, and two such updates of a key merge.
        if let Action::Set { value, .. } = &action
            && value.starts_with(crate::pure::codec::HASH_UPDATE_TAG)
        {
            match self.keyed.get_mut(&key) {
                Some((_, Action::Delete(_) | Action::Refresh(_))) => return,
                Some((at, Action::Set { value: older, .. }))
                    if older.starts_with(crate::pure::codec::HASH_UPDATE_TAG) =>
                {
                    *older = crate::pure::codec::merged_hash_updates(older, value);
                    *at = self.arrivals;
                    return;
                }
                _ if self.deferred.contains_key(&key) => return,
                _ => {}
            }
        }
        // A newer change of the key supersedes a deferred re-read of it. (The maps are usually empty: skip hashing
        // the key for them then, it is the hot path of a write storm.)
        if !self.deferred.is_empty() {
            self.deferred.remove(&key);
        }
        if !self.retries.is_empty() {
            self.retries.remove(&key);
        }
        match (&action, seen) {
            (Action::Refresh(_), Some(seen)) => {
                self.seen.insert(key.clone(), seen.clone());
            }
            _ if !self.seen.is_empty() => {
                self.seen.remove(&key);
            }
            _ => {}
        }
        self.keyed.insert(key, (self.arrivals, action));
    }

    /// When the next deferred refresh is due, if any waits.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.deferred.values().map(|deferred| deferred.due).min()
    }

    /// Moves the deferred refreshes due by `now` into the batch.
    pub(super) fn take_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .deferred
            .iter()
            .filter(|(_, deferred)| deferred.due <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let Some(deferred) = self.deferred.remove(&key) else {
                continue;
            };
            self.started.get_or_insert(now);
            self.arrivals += 1;
            self.seen.insert(key.clone(), deferred.seen);
            self.retries.insert(key.clone(), (deferred.attempts, deferred.since));
            self.keyed.insert(key.clone(), (self.arrivals, Action::Refresh(key)));
        }
    }

    /// Keys and patterns waiting.
    pub(super) fn len(&self) -> usize {
        self.keyed.len() + self.patterns.len()
    }

    /// Whether nothing waits to be applied or saved now (deferred refreshes wait apart, see [`Batch::next_due`]).
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0 && self.rows == 0 && self.checkpoint.is_none()
    }

    /// Whether the oldest change has waited `limit`.
    pub(super) fn is_older_than(&self, limit: Duration, now: Instant) -> bool {
        self.started.is_some_and(|at| now.duration_since(at) >= limit)
    }

    /// The actions to apply, leaving the counters and checkpoint for the caller to read and [`Batch::reset`], and
    /// the deferred refreshes in place.
    pub(super) fn take_actions(&mut self) -> Ready {
        let mut keyed: Vec<(u64, Action)> = self.keyed.drain().map(|(_, entry)| entry).collect();
        // Same kinds together (the executor pipelines runs of one kind), each in arrival order.
        keyed.sort_by_key(|(arrival, action)| (kind_order(action), *arrival));
        let mut actions: Vec<Action> = self.patterns.drain(..).map(Action::DeletePattern).collect();
        actions.extend(keyed.into_iter().map(|(_, action)| action));
        self.pattern_set.clear();
        Ready {
            actions,
            seen: std::mem::take(&mut self.seen),
            retries: std::mem::take(&mut self.retries),
        }
    }

    /// Empties the batch after an apply, keeping the deferred refreshes.
    pub(super) fn reset(&mut self) {
        let deferred = std::mem::take(&mut self.deferred);
        *self = Batch {
            deferred,
            ..Batch::default()
        };
    }
}

fn kind_order(action: &Action) -> u8 {
    match action {
        Action::DeletePattern(_) => 0,
        Action::Delete(_) => 1,
        Action::Set { .. } | Action::Member(_) => 2,
        Action::Refresh(_) => 3,
        // After the batch's own key actions: what it finds is read as it is now.
        Action::Lookup(_) => 4,
        Action::Warm(_) => 5,
    }
}

/// At most one warm run per job and window; a change inside the window schedules one run at its end, so the last
/// change is never left unwarmed.
#[derive(Default)]
pub(super) struct Debounce {
    last: HashMap<String, Instant>,
    trailing: HashMap<String, Instant>,
}

impl Debounce {
    /// Whether a run of `job` may start now; if not, one is scheduled for the end of the window.
    pub(super) fn admit(&mut self, job: &str, window: Duration, now: Instant) -> bool {
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

    /// When the next trailing run is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.trailing.values().min().copied()
    }

    /// The jobs whose trailing run is due.
    pub(super) fn due(&mut self, now: Instant) -> Vec<String> {
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
            committed_at: u32::MAX,
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
    fn a_hash_field_update_never_displaces_a_refresh_or_delete_and_two_of_them_merge() {
        let update = |json: &str| Action::Set {
            key: "h".into(),
            value: crate::pure::codec::hash_update(json.as_bytes()).unwrap(),
            ttl: None,
        };
        let now = Instant::now();
        for first in [Action::Refresh("h".into()), Action::Delete("h".into())] {
            let mut batch = Batch::default();
            batch.add(first.clone(), Some(&seen("x")), now);
            batch.add(update(r#"{"price":"1"}"#), None, now);
            assert_eq!(batch.take_actions().actions, [first]);
        }
        let mut batch = Batch::default();
        batch.add(update(r#"{"price":"1","note":"a"}"#), None, now);
        batch.add(update(r#"{"note":null,"name":"b"}"#), None, now);
        assert_eq!(
            batch.take_actions().actions,
            [update(r#"{"price":"1","name":"b","note":null}"#)]
        );
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

    const WAIT: Duration = Duration::from_millis(250);

    #[test]
    fn an_unverified_refresh_is_read_again_later_until_a_newer_change_or_the_wait_runs_out() {
        let mut batch = Batch::default();
        let start = Instant::now();
        batch.add(Action::Refresh("a".into()), Some(&seen("new")), start);
        batch.add(Action::Refresh("b".into()), Some(&seen("new")), start);
        let ready = batch.take_actions();
        batch.reset();
        let unverified = ready.defer_unverified(&["a".into(), "b".into()], &mut batch, start, 0, WAIT);
        assert!(unverified.given_up.is_empty() && unverified.outdated.is_empty());
        assert!(batch.is_empty(), "deferred reads wait apart from the batch");
        let due = batch.next_due().unwrap();
        assert_eq!(due, start + VERIFY_FIRST_DELAY);
        // A newer change of b replaces its re-read.
        batch.add(Action::Refresh("b".into()), Some(&seen("newer")), start);
        batch.take_due(due);
        let ready = batch.take_actions();
        batch.reset();
        assert_eq!(ready.actions.len(), 2);
        assert_eq!(ready.seen["b"], seen("newer"));
        // a keeps failing: each wait doubles, and it is given up once the total would pass the wait.
        let mut ready = ready;
        let mut now = due;
        let mut reads = 2;
        loop {
            let unverified = ready.defer_unverified(&["a".into()], &mut batch, now, 0, WAIT);
            if !unverified.given_up.is_empty() {
                assert_eq!(unverified.given_up, ["a"]);
                assert_eq!(
                    unverified.seen["a"],
                    seen("new"),
                    "the row a last read must show goes with it"
                );
                break;
            }
            now = batch.next_due().unwrap();
            batch.take_due(now);
            ready = batch.take_actions();
            batch.reset();
            reads += 1;
        }
        assert!(now.duration_since(start) <= WAIT);
        assert!((5..=9).contains(&reads), "{reads} reads");
        assert!(batch.next_due().is_none());
    }

    #[test]
    fn a_long_wait_reads_again_at_most_a_tenth_of_a_second_apart_until_its_end() {
        let mut batch = Batch::default();
        let (start, wait) = (Instant::now(), Duration::from_secs(5));
        batch.add(Action::Refresh("a".into()), Some(&seen("new")), start);
        let mut ready = batch.take_actions();
        batch.reset();
        let (mut now, mut gaps) = (start, Vec::new());
        loop {
            let unverified = ready.defer_unverified(&["a".into()], &mut batch, now, 0, wait);
            if !unverified.given_up.is_empty() {
                break;
            }
            let due = batch.next_due().unwrap();
            gaps.push(due.duration_since(now));
            now = due;
            batch.take_due(now);
            ready = batch.take_actions();
            batch.reset();
        }
        assert_eq!(
            gaps[..3],
            [VERIFY_FIRST_DELAY, VERIFY_FIRST_DELAY * 2, VERIFY_FIRST_DELAY * 4]
        );
        assert!(gaps.iter().all(|gap| *gap <= VERIFY_MAX_DELAY), "{gaps:?}");
        // Read again until the last tenth of a second of the wait, not given up a doubling early.
        let waited = now.duration_since(start);
        assert!(waited <= wait && waited > wait - VERIFY_MAX_DELAY, "{waited:?}");
    }

    #[test]
    fn an_old_change_is_not_read_again() {
        let mut batch = Batch::default();
        let now = Instant::now();
        let old = SeenRow {
            committed_at: 1_000,
            ..seen("x")
        };
        batch.add(Action::Refresh("a".into()), Some(&old), now);
        let ready = batch.take_actions();
        batch.reset();
        let unverified = ready.defer_unverified(&["a".into()], &mut batch, now, 1_005, WAIT);
        assert_eq!(unverified.outdated, ["a"]);
        assert!(batch.next_due().is_none());
    }

    #[test]
    fn a_change_read_again_for_a_lagging_replica_is_not_outdated_by_its_own_wait() {
        let mut batch = Batch::default();
        let now = Instant::now();
        let change = SeenRow {
            committed_at: 1_000,
            ..seen("x")
        };
        batch.add(Action::Refresh("a".into()), Some(&change), now);
        let ready = batch.take_actions();
        batch.reset();
        let wait = Duration::from_secs(30);
        let unverified = ready.defer_unverified(&["a".into()], &mut batch, now, 1_000, wait);
        assert!(unverified.outdated.is_empty() && unverified.given_up.is_empty());
        // Five seconds later (the replica still behind), read again, and deferred again: within the wait.
        let later = now + Duration::from_secs(5);
        batch.take_due(later);
        let ready = batch.take_actions();
        batch.reset();
        let unverified = ready.defer_unverified(&["a".into()], &mut batch, later, 1_005, wait);
        assert!(
            unverified.outdated.is_empty() && unverified.given_up.is_empty(),
            "{unverified:?}"
        );
        assert!(batch.next_due().is_some());
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
