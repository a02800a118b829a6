//! Work sharing under `[ha]` with several binlog sources: each source is a lease of its own
//! (`<[ha] key>:source:<name>`), and the instances alive spread the sources evenly.
//!
//! Every instance counts the instances alive (a sorted set, `<[ha] key>:instances`, each member scored by when it
//! runs out, by Redis' clock) every time it looks (every 200 ms), and with N alive and M sources holds at most
//! ceil(M / N):
//! it takes free sources while it holds fewer, and when an instance joins and it holds more, it gives the last one
//! back the way a stop does (its work stopped, then the lease deleted), so another takes it within a poll. An
//! instance killed outright stops renewing: its leases run out and its member with them, and the others take its
//! sources within `lease_ttl` and a renewal interval, from each source's checkpoint (nothing is lost: a batch in
//! flight is applied again). A source's writes carry its own lease's fence, so a paused or cut-off holder's late
//! writes are refused once another holds it. The schedule and the channel stay with the leader (`ha`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{BinlogSettings, HaSettings};
use crate::exec::cache::{Cache, Fence, LeaseAttempt};

/// How often an instance looks for free sources (and for a lease that ran out by its clock).
const POLL: Duration = Duration::from_millis(200);

/// Starts the work of a source this instance holds — its listener and the warm runs its changes ask for, writing
/// through the cache it is given (fenced by the source's lease) — until the token ends; the future ends when that
/// work has stopped.
pub(crate) type StartSource =
    Box<dyn Fn(&BinlogSettings, Cache, CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>;

/// The sources' leases of one instance.
pub(crate) struct Share {
    /// Redis, not fenced (each source's work gets a cache fenced by its own lease).
    pub cache: Cache,
    pub ha: HaSettings,
    pub sources: Vec<BinlogSettings>,
    pub start: StartSource,
    /// The names of the sources this instance holds, for `/ha`.
    pub held: watch::Sender<BTreeSet<Arc<str>>>,
}

/// A source this instance holds.
struct Held {
    name: Arc<str>,
    key: String,
    token: Arc<str>,
    epoch: u64,
    fence: Arc<Fence>,
    renewed: Instant,
    term: CancellationToken,
    work: tokio::task::JoinHandle<()>,
}

impl Share {
    /// Holds this instance's share of the sources until `shutdown`, then gives every one back and leaves.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let members = members_key(&self.ha.key);
        let interval = self.ha.lease_ttl / 3;
        let mut held: Vec<Held> = Vec::new();
        let mut alive = 1;
        let mut complained = false;
        loop {
            // Counted at every look (one short script): an instance that stops leaves the set before it gives its
            // sources back, so the others' shares grow by the time the sources are free.
            match self.cache.beat(&members, &self.ha.instance, self.ha.lease_ttl).await {
                Ok(count) => {
                    alive = count.max(1);
                    complained = false;
                }
                Err(error) if !complained => {
                    warn!(%error, "Cannot reach Redis to count the instances sharing the binlog sources.");
                    complained = true;
                }
                Err(_) => {}
            }
            self.renew(&mut held, interval).await;
            let share = self.sources.len().div_ceil(alive);
            if held.len() > share {
                // An instance joined: one source goes to it, handed over as a stop hands it.
                if let Some(last) = held.pop() {
                    info!(source = %last.name, instances = alive, share, "Giving a binlog source to another instance.");
                    self.give_back(last).await;
                }
            } else if held.len() < share {
                self.take_free(&mut held, share, &shutdown).await;
            }
            self.held
                .send_if_modified(|names| replace(names, held.iter().map(|h| h.name.clone()).collect()));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        if let Err(error) = self.cache.leave(&members, &self.ha.instance).await {
            warn!(%error, "Cannot leave the instances sharing the binlog sources; they notice when it runs out.");
        }
        for source in held {
            self.give_back(source).await;
        }
    }

    /// Tries the free sources in order until this instance holds `share`.
    async fn take_free(&self, held: &mut Vec<Held>, share: usize, shutdown: &CancellationToken) {
        for source in &self.sources {
            if held.len() >= share {
                return;
            }
            if held.iter().any(|h| h.name == source.name) {
                continue;
            }
            let key = lease_key(&self.ha.key, &source.name);
            let token = crate::ops::ha::new_token(&self.ha.instance);
            let sent = Instant::now();
            let epoch = match self.cache.take_lease(&key, &token, self.ha.lease_ttl).await {
                Ok(LeaseAttempt::Taken { epoch }) => epoch,
                Ok(LeaseAttempt::HeldBy(_)) => continue,
                Err(error) => {
                    warn!(%error, source = %source.name, "Cannot take a free binlog source's lease.");
                    return;
                }
            };
            let fence = Fence::new(&key);
            fence.hold(token.clone(), epoch, self.deadline(sent));
            let term = shutdown.child_token();
            let work = tokio::spawn((self.start)(
                source,
                self.cache.clone().fenced(fence.clone()),
                term.clone(),
            ));
            info!(source = %source.name, "Took a binlog source: following it.");
            held.push(Held {
                name: source.name.clone(),
                key,
                token,
                epoch,
                fence,
                renewed: sent,
                term,
                work,
            });
        }
    }

    /// Renews the leases due (every `interval`); a source whose lease another instance took, or that ran out by
    /// this process's clock before a renewal came back (a pause), stops at once.
    async fn renew(&self, held: &mut Vec<Held>, interval: Duration) {
        let mut lost = Vec::new();
        for (index, source) in held.iter_mut().enumerate() {
            if source.work.is_finished() {
                // Only a panic ends a source's work before its term: the daemon's, as in any task (see `stop`).
                lost.push(index);
                continue;
            }
            if source.fence.token().is_none() {
                warn!(source = %source.name, "A binlog source's lease ran out before it could be renewed; stopped it.");
                lost.push(index);
                continue;
            }
            if source.renewed.elapsed() < interval {
                continue;
            }
            let sent = Instant::now();
            match self
                .cache
                .renew_lease(&source.key, &source.token, self.ha.lease_ttl)
                .await
            {
                Ok(true) => {
                    source
                        .fence
                        .hold(source.token.clone(), source.epoch, self.deadline(sent));
                    source.renewed = sent;
                }
                Ok(false) => {
                    warn!(source = %source.name, "Another instance holds this binlog source now; stopped it.");
                    lost.push(index);
                }
                Err(error) => {
                    warn!(%error, source = %source.name, "Cannot renew a binlog source's lease; following it until it runs out.")
                }
            }
        }
        for index in lost.into_iter().rev() {
            let source = held.remove(index);
            source.fence.release();
            self.stop(source.term, source.work, &source.name).await;
        }
    }

    /// Stops a source's work, then deletes its lease, so that another instance takes it over at once.
    async fn give_back(&self, source: Held) {
        self.stop(source.term, source.work, &source.name).await;
        source.fence.release();
        if let Err(error) = self.cache.release_lease(&source.key, &source.token).await {
            warn!(%error, source = %source.name, "Cannot release a binlog source's lease; another instance takes it when it runs out.");
        }
    }

    /// Ends a source's work and waits for it (a panic in it is the daemon's, as in any task).
    async fn stop(&self, term: CancellationToken, work: tokio::task::JoinHandle<()>, name: &str) {
        term.cancel();
        match tokio::time::timeout(self.ha.lease_ttl, work).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Ok(Err(_)) => {}
            Err(_) => {
                warn!(source = %name, "A binlog source's work did not stop within lease_ttl; its writes are fenced.")
            }
        }
    }

    fn deadline(&self, sent: Instant) -> Instant {
        crate::ops::ha::deadline(self.ha.lease_ttl, sent)
    }
}

/// The lease of the source `name` under the `[ha]` key `ha_key`.
pub(crate) fn lease_key(ha_key: &str, name: &str) -> String {
    format!("{ha_key}:source:{name}")
}

/// The instances alive (a sorted set) under the `[ha]` key `ha_key`.
pub(crate) fn members_key(ha_key: &str) -> String {
    format!("{ha_key}:instances")
}

/// Sets `names` to `new`; whether that changed it.
fn replace(names: &mut BTreeSet<Arc<str>>, new: BTreeSet<Arc<str>>) -> bool {
    let changed = *names != new;
    *names = new;
    changed
}
