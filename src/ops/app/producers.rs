//! The producers a leader runs: what turns time, the channel, the binlog and Redis's misses into work for the
//! executors, each a task of the daemon's supervisor until its term ends.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Supervisor;
use crate::config::{self, BinlogSettings, Config};
use crate::exec::cache::Cache;
use crate::exec::database::Database;
use crate::exec::dead_letter::DeadLetters;
use crate::exec::invalidate::Invalidator;
use crate::exec::warm::{Pieces, WarmRunner, Warmer};
use crate::ops::share::StartSource;
use crate::pure::model::WarmJob;
use crate::source::binlog::checkpoint::Checkpoints;
use crate::source::binlog::{BinlogListener, ReplicationUrl};
use crate::source::channel::{ChannelListener, StreamListener};
use crate::source::misses::MissListener;
use crate::source::schedule::Scheduler;
use crate::telemetry::health::Health;

/// What the producers send to and read from.
pub(super) struct Producers {
    /// Each binlog source's URL (in `config.binlogs`' order), which a SIGHUP may replace.
    pub binlog_urls: Vec<Arc<ReplicationUrl>>,
    pub jobs: watch::Receiver<Arc<[WarmJob]>>,
    pub triggers: mpsc::Sender<crate::pure::model::Trigger>,
    pub policy: watch::Receiver<Arc<crate::pure::plan::Policy>>,
    pub invalidator: Arc<Invalidator>,
    pub health: Health,
    /// The pool the executors share (a source held under work sharing builds its own executors on it).
    pub db: Database,
    /// Where partitioned runs' pieces are coordinated (a held source's warm runs split their jobs there too).
    pub pieces: Arc<Pieces>,
}

impl Producers {
    /// Starts the scheduler, the binlog listener, the miss listener and the channel (or stream) listener until
    /// `term` ends. A term that `took_over` from another leader continues its work: no `run_on_start` runs, and the
    /// pub/sub channel resyncs per `on_gap` (messages published while no instance listened are lost).
    pub(super) fn start(&self, tracker: &Supervisor, config: &Config, term: CancellationToken, took_over: bool) {
        let scheduler = Scheduler::new(self.jobs.clone(), self.triggers.clone()).run_on_start(!took_over);
        let scheduler_term = term.clone();
        tracker.spawn("scheduler", async move {
            if let Err(error) = scheduler.run(scheduler_term.clone()).await {
                error!(%error, "Scheduler failed; shutting down.");
                scheduler_term.cancel();
            }
        });
        let dead_letters = dead_letters(tracker, config, self.invalidator.cache(), "dead letters");
        // One listener per source, each on its own: one that cannot connect or apply holds back none of the others.
        // (Under work sharing each source is leased on its own instead: `ops::share`.)
        let followed = if config.shares_sources() {
            &[][..]
        } else {
            &config.binlogs[..]
        };
        for (binlog, url) in followed.iter().zip(&self.binlog_urls) {
            let listener = listener(
                config,
                binlog,
                url.clone(),
                self.invalidator.clone(),
                &self.health,
                dead_letters.clone(),
            );
            tracker.spawn(binlog.label.clone(), listener.run(term.clone()));
        }
        if let Some(misses) = &config.misses {
            let listener = MissListener {
                redis: config.redis.clone(),
                settings: misses.clone(),
                invalidator: self.invalidator.clone(),
                policy: self.policy.clone(),
                // (With several sources, the fills have no writer to fall back to: which one holds a job's rows is
                // not known.)
                writer: match config.binlogs.as_slice() {
                    [only] => fallback_writer(config, only, 2, "fills"),
                    _ => None,
                },
            };
            tracker.spawn("misses", listener.run(term.clone()));
        }
        if config.channel.enabled {
            self.channel(tracker, config, term, took_over, dead_letters);
        }
    }

    /// Under work sharing: what a source this instance holds runs (see `ops::share`) — its listener, and a warm
    /// runner of its own for the runs its changes ask for, both writing through the cache they are given (fenced by
    /// the source's lease) — until its term ends. Rule errors go to `dead_letters`.
    pub(super) fn source_starter(&self, config: &Config, dead_letters: DeadLetters) -> StartSource {
        let (config, db, jobs, health) = (config.clone(), self.db.clone(), self.jobs.clone(), self.health.clone());
        let urls = self.binlog_urls.clone();
        let pieces = self.pieces.clone();
        Box::new(move |binlog: &BinlogSettings, cache: Cache, term: CancellationToken| {
            let index = config.binlogs.iter().position(|source| source.name == binlog.name);
            let url = index.map_or_else(
                || Arc::new(ReplicationUrl::new(binlog.url.clone(), None)),
                |index| urls[index].clone(),
            );
            let warmer = Arc::new(
                Warmer::new(db.clone(), cache.clone(), config.daemon.max_concurrent_jobs).with_pieces(pieces.clone()),
            );
            let (triggers, trigger_rx) = mpsc::channel(super::TRIGGER_QUEUE);
            let runner = WarmRunner::new(
                warmer.clone(),
                jobs.clone(),
                trigger_rx,
                config.daemon.shutdown_grace,
                Default::default(),
            );
            let invalidator = Invalidator::new(
                cache,
                db.clone(),
                jobs.clone(),
                triggers,
                config.channel.max_keys_per_pattern,
                health.clone(),
            )
            .with_warmer(warmer);
            let listener = listener(
                &config,
                binlog,
                url,
                Arc::new(invalidator),
                &health,
                dead_letters.clone(),
            );
            Box::pin(async move {
                tokio::join!(listener.run(term.clone()), runner.run(term));
            })
        })
    }

    /// The channel's listener: a Redis stream's consumer, or the pub/sub channel's subscriber.
    fn channel(
        &self,
        tracker: &Supervisor,
        config: &Config,
        term: CancellationToken,
        took_over: bool,
        dead_letters: DeadLetters,
    ) {
        match &config.channel.stream {
            Some(stream) => tracker.spawn(
                "stream",
                StreamListener {
                    redis: config.redis.clone(),
                    stream: stream.clone(),
                    on_gap: config.channel.on_gap,
                    invalidator: self.invalidator.clone(),
                    policy: self.policy.clone(),
                    dead_letters,
                }
                .run(term),
            ),
            None => tracker.spawn(
                "channel",
                ChannelListener {
                    redis: config.redis.clone(),
                    channel: config.channel.name.clone(),
                    on_gap: config.channel.on_gap,
                    invalidator: self.invalidator.clone(),
                    policy: self.policy.clone(),
                    took_over,
                    dead_letters,
                }
                .run(term),
            ),
        }
    }
}

/// Where rule errors and refused messages are kept: with `[daemon] dead_letter`, a writer to that stream through
/// `cache`, started on `tracker` as `task`; without, they are only counted.
pub(super) fn dead_letters(tracker: &Supervisor, config: &Config, cache: &Cache, task: &'static str) -> DeadLetters {
    let Some(stream) = &config.daemon.dead_letter else {
        return DeadLetters::default();
    };
    let (dead_letters, writer) =
        crate::exec::dead_letter::writer(cache.clone(), stream.clone(), config.daemon.dead_letter_length);
    tracker.spawn(task, writer);
    dead_letters
}

/// The listener of the source `binlog`, applying through `invalidator`.
fn listener(
    config: &Config,
    binlog: &BinlogSettings,
    url: Arc<ReplicationUrl>,
    invalidator: Arc<Invalidator>,
    health: &Health,
    dead_letters: DeadLetters,
) -> BinlogListener {
    let series = crate::telemetry::metrics::BinlogSeries::new(&binlog.name);
    BinlogListener {
        settings: binlog.clone(),
        checkpoints: Checkpoints::new(binlog.checkpoint.clone(), invalidator.cache().clone(), series.clone()),
        url,
        rules: config.rules_of(binlog),
        invalidator,
        health: health.clone(),
        // A few connections: it reads only what the reader could not show in time.
        fallback: fallback_writer(config, binlog, 4, "refreshes"),
        dead_letters,
        series,
    }
}

/// A source's `refresh_fallback`: the writer, with `pool_size` connections, for reads the reader could not show in
/// time (`what` names them in the warning when it is not usable).
fn fallback_writer(config: &Config, binlog: &BinlogSettings, pool_size: u32, what: &str) -> Option<Database> {
    let url = binlog.refresh_fallback.as_ref()?;
    let settings = config::MysqlSettings {
        url: url.clone(),
        pool_size,
        ..config.mysql.clone()
    };
    Database::new(&settings)
        .inspect_err(|error| warn!(%error, "{}: refresh_fallback is not usable for {what}.", binlog.label))
        .ok()
}
