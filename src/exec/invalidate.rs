//! Applying invalidation [`Action`]s: deletes (coalesced, in batches), pattern deletes (SCAN + UNLINK), refreshes of
//! keys from the database (batched per job), projections, set and sorted-set members, join lookups (`reverse`), and
//! on-demand warm runs.
//!
//! The executor behind every invalidating source — the channel and streams, the binlog, filled misses. It writes only
//! through `cache::Cache` and reads rows only through `database::Database`; what a message or a row change may ask
//! for was settled by `plan` before anything reaches here.
//!
//! # Refresh
//! A key is refreshed through the first job (in file order) whose key template it fits, by `refresh` (many keys of a
//! job in one read, checked against the change that asked for them). A job without `refresh_query` cannot render one
//! key, so the key is deleted (the application's cache-aside read repopulates it). A key of a single-key job
//! (`dashboard:stats`) runs that job. A key no job fits is deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::exec::backend::BackendError;
use crate::exec::cache::{Cache, CacheError};
use crate::exec::database::Database;
use crate::exec::refresh::{self, Origins};
use crate::pure::backoff::Backoff;
use crate::pure::model::{KeyOp, MemberKind, SeenRow, Trigger, TriggerReason, WarmJob};
use crate::pure::plan::{Action, MemberChange};
use crate::telemetry::health::Health;
use crate::telemetry::metrics;

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Keys unlinked by plain deletes.
    pub deleted: u64,
    /// Keys unlinked by pattern deletes.
    pub pattern_deleted: u64,
    /// Keys rewritten from the database.
    pub refreshed: u64,
    /// Refreshed keys whose row is gone, or that no job can render, hence deleted.
    pub refresh_deleted: u64,
    /// Warm runs requested.
    pub warms: u64,
    /// Keys written from binlog row images.
    pub projected: u64,
    /// Members of sets and sorted sets changed from binlog row images.
    pub members: u64,
    /// Refreshed keys left deleted because the read did not show the change that asked for them (see `refresh`).
    pub unverified: Vec<String>,
    /// Refreshed keys no row renders (counted in `refresh_deleted` too).
    pub absent: Vec<String>,
    /// Jobs a set of came out short (a top N below N, an add to a missing key): the caller asks for their runs as
    /// for the runs its changes ask for, the checkpoint held, but not debounced (a short set is wrong until its run).
    pub short: Vec<Arc<str>>,
}

impl Applied {
    /// The keys per action, as the metrics label them (warm runs are not keys: see [`Applied::warms`]).
    pub(crate) fn counts(&self) -> [(&'static str, u64); 6] {
        let [delete, pattern_delete, refresh, refresh_delete, project, member] = metrics::INVALIDATION_ACTIONS;
        [
            (delete, self.deleted),
            (pattern_delete, self.pattern_deleted),
            (refresh, self.refreshed),
            (refresh_delete, self.refresh_deleted),
            (project, self.projected),
            (member, self.members),
        ]
    }
}

/// How long applying may keep failing before the daemon reports the task stuck (a blip is not worth a page).
const STALL_AFTER: Duration = Duration::from_secs(5);
/// A definite failure (a Redis ACL refusal, say) is tried again after this, doubling up to [`DEFINITE_RETRY_MAX`]:
/// an operator may fix it meanwhile, and nothing may be skipped.
const DEFINITE_RETRY_MIN: Duration = Duration::from_secs(1);
const DEFINITE_RETRY_MAX: Duration = Duration::from_secs(60);

/// Applies actions.
pub(crate) struct Invalidator {
    cache: Cache,
    db: Database,
    jobs: watch::Receiver<Arc<[WarmJob]>>,
    triggers: mpsc::Sender<Trigger>,
    max_keys_per_pattern: u64,
    health: Health,
    origins: Origins,
    /// Whose runs' ends the binlog's checkpoint waits for.
    warmer: Option<Arc<crate::exec::warm::Warmer>>,
}

impl Invalidator {
    /// An executor writing to `cache`, reading refreshes from `db` through the current `jobs`, asking for warm runs on
    /// `triggers`, and reporting a stuck apply to `health`.
    pub(crate) fn new(
        cache: Cache,
        db: Database,
        jobs: watch::Receiver<Arc<[WarmJob]>>,
        triggers: mpsc::Sender<Trigger>,
        max_keys_per_pattern: u64,
        health: Health,
    ) -> Self {
        Self {
            cache,
            db,
            jobs,
            triggers,
            max_keys_per_pattern,
            health,
            origins: Origins::default(),
            warmer: None,
        }
    }

    /// Reports warm runs' ends from `warmer` (see [`Invalidator::last_finished`]).
    pub(crate) fn with_warmer(mut self, warmer: Arc<crate::exec::warm::Warmer>) -> Self {
        self.warmer = Some(warmer);
        self
    }

    /// When the last run of `job` ended (succeeded or failed), if one has since this process started.
    pub(crate) fn last_finished(&self, job: &str) -> Option<std::time::SystemTime> {
        self.warmer.as_ref()?.stats(job).last.map(|last| last.finished_at)
    }

    /// The cache it writes to.
    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The jobs as currently configured.
    pub(crate) fn jobs(&self) -> Arc<[WarmJob]> {
        self.jobs.borrow().clone()
    }

    /// Asks for a run of `job` (dropped, with a warning, when the queue is full).
    pub(crate) fn warm(&self, job: &str, reason: TriggerReason) {
        crate::pure::trigger::send(&self.triggers, Arc::from(job), reason);
    }

    /// Carries out a gap's recovery (`plan::gap_actions`): the deletes applied until they succeed, then the warm runs
    /// asked for (as a resync), so that no run's writes are deleted after it. `false` when `shutdown` interrupted it.
    pub(crate) async fn recover(
        &self,
        task: &str,
        series: Option<&metrics::BinlogSeries>,
        actions: Vec<Action>,
        shutdown: &CancellationToken,
    ) -> bool {
        let (warms, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|action| matches!(action, Action::Warm(_)));
        if !rest.is_empty()
            && self
                .apply_with_retry(task, series, &rest, &HashMap::new(), shutdown)
                .await
                .is_none()
        {
            return false;
        }
        for action in warms {
            if let Action::Warm(job) = action {
                self.warm(&job, TriggerReason::Resync);
            }
        }
        true
    }

    /// Applies `actions` until it succeeds (what it did) or `shutdown` comes (`None`): transient failures are retried with
    /// backoff, definite ones more slowly (nothing may be skipped: the changes would be lost). Failures
    /// that last [`STALL_AFTER`], and definite ones at once, make the daemon not ready (`task`: why) until it works,
    /// and a binlog source's `series` say so.
    pub(crate) async fn apply_with_retry(
        &self,
        task: &str,
        series: Option<&metrics::BinlogSeries>,
        actions: &[Action],
        seen: &HashMap<String, SeenRow>,
        shutdown: &CancellationToken,
    ) -> Option<Applied> {
        let mut backoff = Backoff::redis();
        let mut definite = Backoff::new(DEFINITE_RETRY_MIN, DEFINITE_RETRY_MAX);
        let mut failing_since: Option<Instant> = None;
        loop {
            let error = match self.apply(actions, seen).await {
                Ok(applied) => {
                    if failing_since.is_some() {
                        self.health.set_stalled(task, None);
                        series.inspect(|series| series.apply_failing(false));
                    }
                    return Some(applied);
                }
                Err(error) => error,
            };
            let since = *failing_since.get_or_insert_with(Instant::now);
            let delay = if error.is_transient() {
                warn!(task, %error, actions = actions.len(), "Could not apply invalidations; will retry (not reading meanwhile).");
                backoff.next_delay()
            } else {
                let delay = definite.next_delay();
                error!(task, %error, retry_in = ?delay, "Cannot apply invalidations until an operator fixes this; not reading meanwhile.");
                delay
            };
            if !error.is_transient() || since.elapsed() >= STALL_AFTER {
                self.health
                    .set_stalled(task, Some(format!("cannot apply invalidations: {error}")));
                series.inspect(|series| series.apply_failing(true));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Applies `actions` in order. Runs of consecutive actions of one kind are coalesced: a key deleted or refreshed
    /// twice in a row is deleted or refreshed once, and deletes go out in one pipeline. `seen` holds, for refreshes a
    /// row change asked for, the changed row the read must show (see `refresh`).
    pub(crate) async fn apply(
        &self,
        actions: &[Action],
        seen: &HashMap<String, SeenRow>,
    ) -> Result<Applied, BackendError> {
        let mut applied = Applied::default();
        let mut index = 0;
        while index < actions.len() {
            let kind = std::mem::discriminant(&actions[index]);
            let end = actions[index..]
                .iter()
                .position(|a| std::mem::discriminant(a) != kind)
                .map_or(actions.len(), |n| index + n);
            let mut unique = HashSet::new();
            let run: Vec<&Action> = actions[index..end].iter().filter(|a| unique.insert(*a)).collect();
            self.apply_run(&run, seen, &mut applied).await?;
            index = end;
        }
        metrics::record_invalidations(&applied.counts(), applied.warms);
        Ok(applied)
    }

    /// Applies one run of actions of one kind (the first one's), each once, in one step where the kind allows.
    async fn apply_run(
        &self,
        run: &[&Action],
        seen: &HashMap<String, SeenRow>,
        applied: &mut Applied,
    ) -> Result<(), BackendError> {
        // The payloads of the run's actions of one (tuple) variant.
        macro_rules! each {
            ($variant:path) => {
                run.iter().filter_map(|action| match action {
                    $variant(payload) => Some(payload),
                    _ => None,
                })
            };
        }
        match run[0] {
            Action::Delete(_) => {
                let keys: Vec<String> = each!(Action::Delete).cloned().collect();
                self.cache.invalidate(&keys).await?;
                applied.deleted += keys.len() as u64;
            }
            Action::Set { .. } => {
                // Row images are as fresh as their event: they supersede every read in flight.
                let ops: Vec<KeyOp> = (run.iter())
                    .filter_map(|action| match action {
                        Action::Set { key, value, ttl } => Some(KeyOp::Set {
                            key: key.clone(),
                            value: value.clone(),
                            ttl: *ttl,
                            read: None,
                        }),
                        _ => None,
                    })
                    .collect();
                self.cache.supersede(&ops).await?;
                applied.projected += ops.len() as u64;
            }
            Action::Member(_) => {
                let changes: Vec<&MemberChange> = each!(Action::Member).collect();
                self.change_members(&changes, applied).await?;
            }
            Action::DeletePattern(_) => {
                for pattern in each!(Action::DeletePattern) {
                    applied.pattern_deleted += self.delete_pattern(pattern).await?;
                }
            }
            Action::Refresh(_) => {
                let keys: Vec<&str> = each!(Action::Refresh).map(String::as_str).collect();
                self.refresh(&self.db, &keys, seen, applied).await?;
            }
            Action::Lookup(_) => {
                let lookups: Vec<&crate::pure::plan::Lookup> = each!(Action::Lookup).collect();
                self.look_up(&lookups, seen, applied).await?;
            }
            Action::Warm(_) => {
                for job in each!(Action::Warm) {
                    self.warm(job, TriggerReason::Message);
                    applied.warms += 1;
                }
            }
        }
        Ok(())
    }

    /// Changes members of sets and sorted sets (as fresh as their event, like row images: they supersede every read
    /// in flight); then a top N sorted set left with fewer than N members has its job warmed again.
    async fn change_members(&self, changes: &[&MemberChange], applied: &mut Applied) -> Result<(), BackendError> {
        let ops: Vec<KeyOp> = changes
            .iter()
            .map(|change| KeyOp::Set {
                key: change.key.clone(),
                value: change.value.clone(),
                ttl: None,
                read: None,
            })
            .collect();
        self.cache.supersede(&ops).await?;
        applied.members += ops.len() as u64;
        // The keys left short (a top N below N, an add to a missing key): their jobs run again, once each.
        let mut least: HashMap<(&str, MemberKind), (&MemberChange, u64)> = HashMap::new();
        for change in changes.iter().filter(|change| change.least > 0) {
            let at_least = least.entry((&change.key, change.kind)).or_insert((change, 0));
            at_least.1 = at_least.1.max(change.least);
        }
        for kind in [MemberKind::Set, MemberKind::Zset] {
            let keys: Vec<String> = least
                .keys()
                .filter(|(_, of)| *of == kind)
                .map(|(key, _)| key.to_string())
                .collect();
            if keys.is_empty() {
                continue;
            }
            let sizes = self.cache.sizes(&keys, kind).await?;
            for (key, held) in keys.iter().zip(sizes) {
                let (change, n) = least[&(key.as_str(), kind)];
                if held < n && !applied.short.contains(&change.job) {
                    debug!(key, held, n, job = %change.job, "A set holds fewer members than it needs: its job runs.");
                    applied.short.push(change.job.clone());
                }
            }
        }
        Ok(())
    }

    /// SCAN + UNLINK, stopping at `max_keys_per_pattern`.
    pub(crate) async fn delete_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        let (deleted, cut_short) = self.cache.delete_matching(pattern, self.max_keys_per_pattern).await?;
        if cut_short {
            warn!(
                pattern,
                deleted,
                limit = self.max_keys_per_pattern,
                "Pattern delete stopped at max_keys_per_pattern; the remaining keys were left alone."
            );
        }
        Ok(deleted)
    }

    /// Finds the keys derived join rules reach (see `reverse`) and refreshes, deletes or re-warms them.
    async fn look_up(
        &self,
        lookups: &[&crate::pure::plan::Lookup],
        seen: &HashMap<String, SeenRow>,
        applied: &mut Applied,
    ) -> Result<(), BackendError> {
        let found = crate::exec::reverse::find(&self.db, &self.jobs(), lookups).await?;
        for job in &found.rewarm {
            self.warm(job, TriggerReason::Change);
            applied.warms += 1;
        }
        if !found.delete.is_empty() {
            self.cache.invalidate(&found.delete).await?;
            applied.deleted += found.delete.len() as u64;
        }
        if !found.refresh.is_empty() {
            let mut seen = seen.clone();
            seen.extend(found.seen);
            let keys: Vec<&str> = found.refresh.iter().map(String::as_str).collect();
            self.refresh(&self.db, &keys, &seen, applied).await?;
        }
        Ok(())
    }

    /// Refreshes `keys` reading from `db` (the writer, where the usual database is a reader that lags): each checked
    /// against its row in `seen` as every refresh is. What it did, unverified keys included.
    pub(crate) async fn refresh_from(
        &self,
        db: &Database,
        keys: &[&str],
        seen: &HashMap<String, SeenRow>,
    ) -> Result<Applied, BackendError> {
        let mut applied = Applied::default();
        self.refresh(db, keys, seen, &mut applied).await?;
        Ok(applied)
    }

    /// Loads `keys` that Redis reported missing (`fill_on_miss`) the way a channel refresh does (rendering,
    /// protection, fence), reading from `writer` when given: what it did, the keys no row renders in `absent`. Keys
    /// whose job no longer fills (a reload meanwhile) are left alone, never deleted.
    pub(crate) async fn fill(&self, keys: &[&str], writer: Option<&Database>) -> Result<Applied, BackendError> {
        let jobs = self.jobs();
        let filling: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|key| {
                jobs.iter()
                    .find(|job| job.key.capture(key).is_some())
                    .is_some_and(|job| job.fill_on_miss && job.refresh_query.is_some())
            })
            .collect();
        let mut applied = Applied::default();
        self.refresh(writer.unwrap_or(&self.db), &filling, &HashMap::new(), &mut applied)
            .await?;
        Ok(applied)
    }

    /// Refreshes `keys` from `db`: each through the first job whose template it fits, many keys of a job in one read.
    async fn refresh(
        &self,
        db: &Database,
        keys: &[&str],
        seen: &HashMap<String, SeenRow>,
        applied: &mut Applied,
    ) -> Result<(), BackendError> {
        let jobs = self.jobs();
        let mut deletes: Vec<&str> = Vec::new();
        let mut by_job: Vec<(&WarmJob, Vec<String>)> = Vec::new();
        for &key in keys {
            let whole = |job: &&WarmJob| {
                job.key.single_key().as_deref() == Some(key)
                    || (job.members.is_some() && job.key.capture(key).is_some())
            };
            if let Some(job) = jobs.iter().find(whole) {
                // The whole result is one key, or the key is a set of many rows: refreshing it is running the job.
                self.warm(&job.name, TriggerReason::Message);
                applied.warms += 1;
                continue;
            }
            let Some(job) = jobs.iter().find(|job| job.key.capture(key).is_some()) else {
                debug!(key, "No job renders this key; deleting it instead of refreshing.");
                deletes.push(key);
                continue;
            };
            if job.refresh_query.is_none() {
                debug!(key, job = %job.name, "Job has no refresh_query; deleting the key instead.");
                deletes.push(key);
                continue;
            }
            match by_job.iter_mut().find(|(j, _)| std::ptr::eq(*j, job)) {
                Some((_, keys)) => keys.push(key.to_string()),
                None => by_job.push((job, vec![key.to_string()])),
            }
        }
        if !deletes.is_empty() {
            self.cache.invalidate(&deletes).await?;
            applied.refresh_deleted += deletes.len() as u64;
        }
        for (job, keys) in by_job {
            let refreshed = refresh::refresh_keys(&self.cache, db, &self.origins, job, &keys, seen).await?;
            applied.refreshed += refreshed.written;
            applied.refresh_deleted += refreshed.deleted;
            applied.unverified.extend(refreshed.unverified);
            applied.absent.extend(refreshed.absent);
        }
        Ok(())
    }
}
