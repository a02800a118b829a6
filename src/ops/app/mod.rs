//! The daemon's wiring: builds clients and tasks from a [`Config`], runs them under one supervisor until a stop
//! signal, reloads on SIGHUP. The one-shot commands live in `commands` (and `check`).
//!
//! Every long-running task is spawned here, on one `TaskTracker` with one `CancellationToken`.
//!
//! # Startup
//! A definite refusal ([`Misconfigured`]: a wrong password, an unknown database, a Redis ACL that refuses a command
//! or key the configuration needs, a binlog that cannot be followed) stops the daemon at once, and it exits 78 so
//! that systemd does not restart it in a loop; an unreachable server is retried with backoff for as long as it
//! takes, and the daemon stays up meanwhile.

mod producers;
mod reload;
mod startup;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use tokio::sync::watch;

use crate::config::{self, Config};
use crate::exec::cache::{Cache, Fence};
use crate::exec::database::Database;
use crate::exec::invalidate::Invalidator;
use crate::exec::warm::{PieceWorker, Pieces, WarmRunner, Warmer, panic_message};
use crate::ops::admin::{AdminServer, AdminState};
use crate::ops::checks::HealthChecker;
use crate::ops::ha::{LeaderLease, Role};
use crate::ops::signal::{SignalEvent, Signals};
use crate::ops::status::History;
use crate::ops::systemd::{self, Watchdog};
use crate::pure::model::{TriggerReason, WarmJob};
use crate::pure::trigger::send;
use crate::source::binlog::ReplicationUrl;
use crate::telemetry::health::{Health, Liveness};
use crate::telemetry::metrics;
use producers::Producers;
use reload::reload;
use startup::{connect_with_retry, preflight, stop_requested};

/// A start-up refusal that restarting cannot fix: the configuration, or the servers' grants for it, must change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Misconfigured(pub String);

/// Triggers waiting for the warm executor; beyond this, fires are dropped (and logged) rather than queued.
const TRIGGER_QUEUE: usize = 256;

/// Runs the daemon until SIGTERM/SIGINT. Returns an error only for a definite startup failure.
///
/// Start-up order matters to systemd: signal handlers exist before this is called; the admin port is bound first
/// (liveness, metrics, and `/readyz` 503 naming what is awaited); READY is sent only after both servers answered
/// and every task is up.
pub(crate) async fn run_daemon(
    mut config: Config,
    mut signals: Signals,
    metrics: Option<metrics::Exporter>,
) -> anyhow::Result<()> {
    info!(config = %config.path.display(), jobs = config.jobs.len(), "Starting cachewarden.");
    let jobs: Vec<&str> = config.jobs.iter().map(|job| &*job.name).collect();
    metrics::initialise(&metrics::Configured {
        jobs: &jobs,
        channel: config.channel.enabled,
        binlogs: &config.binlogs.iter().map(|source| &*source.name).collect::<Vec<_>>(),
        ha: config.ha.is_some(),
        misses: config.misses.is_some(),
    });
    let mut daemon = Daemon::new(&config);
    // The admin endpoint is up from the first second: liveness, metrics, and readiness saying what it waits for.
    if let Err(error) = daemon.start_admin(&config, metrics).await {
        daemon.stop().await;
        return Err(error);
    }
    systemd::status("Connecting to MySQL and Redis");
    // A stop while connecting or checking (a server that holds a connection open without answering) stops at once.
    let starting = async {
        let (db, cache) = connect_with_retry(&config, &daemon.health).await?;
        info!(mysql = %config.mysql.url, redis = %config.redis.url, "Connected to MySQL and Redis.");
        preflight(&config, &cache).await?;
        startup::learn_schema(&mut config, &db).await;
        anyhow::Ok((db, cache))
    };
    let started = tokio::select! {
        started = starting => started.map(Some),
        () = stop_requested(&mut signals) => Ok(None),
    };
    let (db, cache) = match started {
        Ok(Some(servers)) => servers,
        ended => {
            daemon.stop().await;
            if ended.is_ok() {
                info!("Stopped before the first connections succeeded.");
            }
            return ended.map(drop);
        }
    };
    let work = daemon.start_work(&config, &db, cache);
    daemon.health.set_stalled("startup", None);
    systemd::ready(&running_status(&config));
    info!("Ready.");
    daemon.serve(config, signals, work).await;
    systemd::stopping();
    let failed = daemon.stop().await;
    db.close().await;
    if let Some(task) = failed {
        anyhow::bail!("the {task} task panicked; exiting so that the service manager restarts the daemon");
    }
    info!("Stopped.");
    Ok(())
}

/// What the daemon's tasks share: the one shutdown token and supervisor, health, the trigger queue, the jobs as
/// reloads change them, and with `[ha]` the fence and this instance's role.
struct Daemon {
    shutdown: CancellationToken,
    tracker: Supervisor,
    liveness: Liveness,
    health: Health,
    /// The warmer, once both servers answered (the admin endpoint answers 503 until then).
    started: Arc<std::sync::OnceLock<Arc<Warmer>>>,
    triggers: mpsc::Sender<crate::pure::model::Trigger>,
    trigger_rx: Option<mpsc::Receiver<crate::pure::model::Trigger>>,
    jobs_tx: watch::Sender<Arc<[WarmJob]>>,
    jobs_rx: watch::Receiver<Arc<[WarmJob]>>,
    fence: Option<Arc<Fence>>,
    role_tx: Option<watch::Sender<crate::ops::ha::Status>>,
    role: Option<watch::Receiver<crate::ops::ha::Status>>,
    /// Under work sharing, the binlog sources this instance holds.
    held: watch::Sender<std::collections::BTreeSet<Arc<str>>>,
}

/// The running executors and producers, as the main loop needs them.
struct Work {
    warmer: Arc<Warmer>,
    producers: Producers,
    policy: watch::Sender<Arc<crate::pure::plan::Policy>>,
    /// The pool every executor shares; a SIGHUP that changed `[mysql]` replaces it.
    db: Database,
}

impl Daemon {
    fn new(config: &Config) -> Self {
        let shutdown = CancellationToken::new();
        let health = Health::default();
        // Not ready until every task is up, whatever the servers say meanwhile.
        health.set_stalled("startup", Some("starting".into()));
        let (triggers, trigger_rx) = mpsc::channel(TRIGGER_QUEUE);
        let (jobs_tx, jobs_rx) = watch::channel::<Arc<[WarmJob]>>(config.jobs.clone().into());
        let (role_tx, role) = match &config.ha {
            Some(ha) => {
                let (tx, rx) = watch::channel(LeaderLease::starting(ha));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        Self {
            tracker: Supervisor::new(shutdown.clone()),
            shutdown,
            liveness: Liveness::default(),
            health,
            started: Arc::new(std::sync::OnceLock::new()),
            triggers,
            trigger_rx: Some(trigger_rx),
            jobs_tx,
            jobs_rx,
            fence: config.ha.as_ref().map(|ha| Fence::new(&ha.key)),
            role_tx,
            role,
            held: watch::Sender::new(Default::default()),
        }
    }

    /// Binds the admin endpoint and starts it (with the status page's sampler).
    async fn start_admin(&self, config: &Config, metrics: Option<metrics::Exporter>) -> anyhow::Result<()> {
        if !config.admin.enabled {
            return Ok(());
        }
        let history = Arc::new(History::default());
        if let Some(handle) = &metrics {
            let sampler = history.clone().run(
                handle.clone(),
                self.started.clone(),
                self.jobs_rx.clone(),
                self.shutdown.clone(),
            );
            self.tracker.spawn("status-history", sampler);
        }
        let state = AdminState {
            metrics,
            health: self.health.clone(),
            warmer: self.started.clone(),
            jobs: self.jobs_rx.clone(),
            triggers: self.triggers.clone(),
            history,
            ha: self.role.clone(),
            token: config.admin.token.clone(),
            loopback: config.admin.listen.ip().is_loopback(),
            tls: config.admin.tls.as_ref().map(|tls| tls.server.clone()),
            servers: servers(config).into(),
            binlogs: config.binlogs.iter().map(|source| source.name.clone()).collect(),
            held: config.shares_sources().then(|| self.held.subscribe()),
        };
        let server = AdminServer::bind(config.admin.listen, state).await.with_context(|| {
            format!(
                "cannot listen on {} for the admin endpoint ([admin] listen)",
                config.admin.listen
            )
        })?;
        self.tracker.spawn("admin", server.run(self.shutdown.clone()));
        Ok(())
    }

    /// With both servers connected: the HA lease (its fence on the cache), the executors, the health checker,
    /// watchdog and audit, and — without `[ha]` — the producers.
    fn start_work(&mut self, config: &Config, db: &Database, unfenced: Cache) -> Work {
        let cache = self.start_lease(config, unfenced.clone());
        let pieces = Arc::new(Pieces::new(
            unfenced.clone(),
            config.pieces_prefix().to_string(),
            Arc::from(config.instance_name()),
        ));
        let warmer = Arc::new(
            Warmer::new(db.clone(), cache.clone(), config.daemon.max_concurrent_jobs).with_pieces(pieces.clone()),
        );
        let _ = self.started.set(warmer.clone());
        let register =
            crate::ops::versions::keep_registered(unfenced.clone(), config.instance_name(), self.shutdown.clone());
        self.tracker.spawn("versions", register);
        // Every instance, leader or not, runs pieces of the partitioned runs in progress.
        let worker = PieceWorker::new(warmer.clone(), self.jobs_rx.clone());
        self.tracker.spawn("warm pieces", worker.run(self.shutdown.clone()));
        let trigger_rx = self.trigger_rx.take().expect("the work starts once");
        let runner = WarmRunner::new(
            warmer.clone(),
            self.jobs_rx.clone(),
            trigger_rx,
            config.daemon.shutdown_grace,
            self.liveness.clone(),
        );
        self.tracker.spawn("warm-runner", runner.run(self.shutdown.clone()));
        self.start_checks(db, &cache);
        let (policy, policy_rx) = watch::channel(Arc::new(config.channel_policy()));
        let invalidator = Arc::new(
            Invalidator::new(
                cache,
                db.clone(),
                self.jobs_rx.clone(),
                self.triggers.clone(),
                config.channel.max_keys_per_pattern,
                self.health.clone(),
            )
            .with_warmer(warmer.clone()),
        );
        self.start_audit(config, db, &invalidator);
        let producers = Producers {
            binlog_urls: binlog_urls(config),
            jobs: self.jobs_rx.clone(),
            triggers: self.triggers.clone(),
            policy: policy_rx,
            invalidator,
            health: self.health.clone(),
            db: db.clone(),
            pieces,
        };
        if config.shares_sources() {
            self.start_share(config, &producers, unfenced);
        }
        // Without [ha] the producers run for the daemon's life; with it, for each term as leader (see `serve`).
        if self.role.is_none() {
            producers.start(&self.tracker, config, self.shutdown.clone(), false);
        }
        Work {
            warmer,
            producers,
            policy,
            db: db.clone(),
        }
    }

    /// The cache the work writes through: under `[ha]`, starts the leader lease's keeper and returns the cache
    /// fenced by that lease; without `[ha]`, `unfenced` itself.
    fn start_lease(&mut self, config: &Config, unfenced: Cache) -> Cache {
        match (&config.ha, &self.fence, self.role_tx.take()) {
            (Some(ha), Some(fence), Some(role_tx)) => {
                // A stop releases the lease at once, so that a standby takes over within a poll; writes still in
                // flight here are then refused (the new leader's work supersedes them).
                let lease = LeaderLease::new(unfenced.clone(), ha.clone(), fence.clone(), role_tx);
                self.tracker.spawn("ha-lease", lease.run(self.shutdown.clone()));
                unfenced.fenced(fence.clone())
            }
            _ => unfenced,
        }
    }

    /// Under `[ha]` with several binlog sources: this instance's share of the sources, each leased on its own (see
    /// `ops::share`), for the daemon's life.
    fn start_share(&self, config: &Config, producers: &Producers, unfenced: Cache) {
        let Some(ha) = &config.ha else { return };
        let dead_letters = producers::dead_letters(&self.tracker, config, &unfenced, "dead letters (sources)");
        let share = crate::ops::share::Share {
            cache: unfenced,
            ha: ha.clone(),
            sources: config.binlogs.clone(),
            start: producers.source_starter(config, dead_letters),
            held: self.held.clone(),
        };
        self.tracker.spawn("binlog sources", share.run(self.shutdown.clone()));
    }

    /// Starts the health checks, the keyspace sample and the systemd watchdog.
    fn start_checks(&self, db: &Database, cache: &Cache) {
        let checker = HealthChecker {
            db: db.clone(),
            cache: cache.clone(),
            health: self.health.clone(),
            liveness: self.liveness.clone(),
        };
        self.tracker.spawn("health", checker.run(self.shutdown.clone()));
        let footprint = crate::ops::footprint::Footprint {
            cache: cache.clone(),
            jobs: self.jobs_rx.clone(),
        };
        self.tracker.spawn("footprint", footprint.run(self.shutdown.clone()));
        let watchdog = Watchdog {
            liveness: self.liveness.clone(),
        };
        self.tracker.spawn("watchdog", watchdog.run(self.shutdown.clone()));
    }

    /// Starts the continuous audit, if `[daemon] audit_period` asks for it.
    fn start_audit(&self, config: &Config, db: &Database, invalidator: &Arc<Invalidator>) {
        if config.daemon.audit_sample_ignored {
            warn!(
                "[daemon] audit_sample is no longer used: the continuous audit checks every key once per audit_period."
            );
        }
        if let Some(period) = config.daemon.audit_period {
            let sweeper = crate::ops::audit::Sweeper {
                cache: invalidator.cache().clone(),
                db: db.clone(),
                jobs: self.jobs_rx.clone(),
                period,
                slice: config.daemon.audit_slice,
                repair: config.daemon.audit_repair.then(|| invalidator.clone()),
                role: self.role.clone(),
            };
            self.tracker.spawn("audit", sweeper.run(self.shutdown.clone()));
        }
    }

    /// The main loop until a stop: changes of HA role start and stop the producers; signals warm, reload or stop.
    async fn serve(&mut self, mut config: Config, mut signals: Signals, work: Work) {
        let mut term: Option<CancellationToken> = None;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                changed = role_changed(&mut self.role) => {
                    if changed.is_ok() {
                        self.follow_role(&config, &work.producers, &mut term);
                    }
                }
                event = signals.recv() => match event {
                    SignalEvent::Stop => {
                        info!("Stop requested; finishing in-flight work.");
                        return;
                    }
                    SignalEvent::WarmNow => self.warm_now(&work.warmer),
                    SignalEvent::Reload => {
                        systemd::reloading();
                        if let Some(reloaded) = reload(&config) {
                            work.reconnect(&config, &reloaded);
                            self.jobs_tx.send_replace(reloaded.jobs.clone().into());
                            work.policy.send_replace(Arc::new(reloaded.channel_policy()));
                            config = reloaded;
                        }
                        systemd::ready(&running_status(&config));
                    }
                },
            }
        }
    }

    /// A new HA role: a term as leader starts the producers, the end of one stops them.
    fn follow_role(&mut self, config: &Config, producers: &Producers, term: &mut Option<CancellationToken>) {
        let Some(status) = self.role.as_mut().map(|role| role.borrow_and_update().clone()) else {
            return;
        };
        match (status.role, &term) {
            (Role::Leader, None) => {
                let started = self.shutdown.child_token();
                producers.start(&self.tracker, config, started.clone(), status.took_over);
                *term = Some(started);
            }
            (Role::Leader, Some(_)) => {}
            (_, _) => {
                if let Some(ended) = term.take() {
                    ended.cancel();
                    info!("Stopped the schedule, the channel and the binlog: this instance is standby.");
                }
            }
        }
    }

    /// SIGUSR1: every enabled job now, unless this instance is an HA standby.
    fn warm_now(&self, warmer: &Warmer) {
        if let Some(role) = &self.role
            && role.borrow().role != Role::Leader
        {
            let status = role.borrow().describe();
            info!(role = %status, "SIGUSR1: this instance is not the leader; only the leader runs jobs.");
            return;
        }
        info!("SIGUSR1: running every enabled warm job now.");
        for job in self.jobs_rx.borrow().iter().filter(|job| job.enabled) {
            if warmer.is_running(&job.name) {
                info!(job = %job.name, "Already running; not started again.");
            } else {
                send(&self.triggers, job.name.clone(), TriggerReason::Manual);
            }
        }
    }

    /// Cancels every task and waits for them; the first that panicked, if any.
    async fn stop(self) -> Option<Arc<str>> {
        self.shutdown.cancel();
        self.tracker.wait().await
    }
}

impl Work {
    /// Applies a reload's changed connections: a new MySQL pool for a changed `[mysql]` (queries in flight finish on
    /// the old one), and a changed `[binlog] url` to the listener, which reconnects with it from the position it
    /// applied (nothing is skipped).
    fn reconnect(&self, current: &Config, new: &Config) {
        if new.mysql != current.mysql {
            match self.db.replace(&new.mysql) {
                Ok(_) => {
                    info!(mysql = %new.mysql.url, "SIGHUP: [mysql] changed; new queries use a new connection pool.")
                }
                Err(error) => error!(%error, "SIGHUP: [mysql] changed but cannot be used; keeping the old pool."),
            }
        }
        match self.db.set_readers(&new.readers()) {
            Ok(true) => info!("SIGHUP: a source's read_url or its [mysql] settings changed; its jobs use a new pool."),
            Ok(false) => {}
            Err(error) => error!(%error, "SIGHUP: a source's read_url changed but cannot be used."),
        }
        if new.redis.url != current.redis.url && self.producers.invalidator.cache().reauthenticate(&new.redis.url) {
            info!("SIGHUP: [redis] url's credentials changed; every Redis connection authenticates with them.");
        }
        for (url, binlog) in self.producers.binlog_urls.iter().zip(&current.binlogs) {
            let Some(new) = new.binlogs.iter().find(|new| new.name == binlog.name) else {
                continue;
            };
            if url.replace(new.url.clone()) {
                info!(url = %new.url, "SIGHUP: {} url changed; the binlog reconnects with it.", binlog.label);
            }
        }
    }
}

/// Every long-running task of the daemon, on one tracker: a task that panics is logged at ERROR and stops the daemon
/// (which then exits non-zero, so systemd restarts it) — never a live process whose change capture silently died.
struct Supervisor {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    failed: Arc<std::sync::Mutex<Option<Arc<str>>>>,
}

impl Supervisor {
    fn new(shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
            failed: Arc::default(),
        }
    }

    /// Runs `task` until it ends; a panic cancels everything and is remembered as `name`.
    fn spawn(&self, name: impl Into<Arc<str>>, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let (shutdown, failed, name) = (self.shutdown.clone(), self.failed.clone(), name.into());
        self.tracker.spawn(async move {
            use futures_util::FutureExt as _;
            if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
                error!(task = %name, panic = %panic_message(panic), "A task panicked; stopping the daemon.");
                failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(name);
                shutdown.cancel();
            }
        });
    }

    /// Waits for every task to end; the first that panicked, if any.
    async fn wait(self) -> Option<Arc<str>> {
        self.tracker.close();
        self.tracker.wait().await;
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The next change of role (never, without `[ha]`).
async fn role_changed(
    role: &mut Option<watch::Receiver<crate::ops::ha::Status>>,
) -> Result<(), watch::error::RecvError> {
    match role {
        Some(role) => role.changed().await,
        None => std::future::pending().await,
    }
}

fn running_status(config: &Config) -> String {
    let enabled = config.jobs.iter().filter(|job| job.enabled).count();
    format!("Running: {} scheduled", crate::pure::words::count(enabled, "warm job"))
}

/// The servers the status page names: MySQL, Redis (or the cluster's seeds) and the binlog's source, without
/// passwords.
fn servers(config: &Config) -> Vec<(String, String)> {
    let mut servers = vec![("MySQL (warm runs, refreshes)".to_string(), config.mysql.url.redacted())];
    let redis = if config.redis.cluster {
        let seeds: Vec<String> = std::iter::once(&config.redis.url)
            .chain(&config.redis.seeds)
            .map(|seed| seed.redacted())
            .collect();
        ("Redis Cluster (seeds)".to_string(), seeds.join(", "))
    } else {
        ("Redis".to_string(), config.redis.url.redacted())
    };
    servers.push(redis);
    for binlog in &config.binlogs {
        let what = match config.binlogs.len() {
            1 => "MySQL binlog".to_string(),
            _ => format!("MySQL binlog \"{}\"", binlog.name),
        };
        servers.push((what, binlog.url.redacted()));
        if let Some(read_url) = &binlog.read_url {
            servers.push((format!("MySQL (jobs of \"{}\")", binlog.name), read_url.redacted()));
        }
    }
    servers
}

/// Each binlog source's replication URL (in `config.binlogs`' order), read again from the file when the server
/// refuses it (a rotated password).
fn binlog_urls(config: &Config) -> Vec<Arc<ReplicationUrl>> {
    (config.binlogs.iter())
        .map(|binlog| {
            let (path, credentials, name) = (config.path.clone(), config.credentials.clone(), binlog.name.clone());
            let reread = move || {
                let new = config::load(&path, credentials.as_deref()).ok()?;
                new.binlogs
                    .into_iter()
                    .find(|binlog| binlog.name == name)
                    .map(|binlog| binlog.url)
            };
            Arc::new(ReplicationUrl::new(binlog.url.clone(), Some(Box::new(reread))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_stops_the_daemon_and_is_named() {
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(shutdown.clone());
        let quiet = shutdown.clone();
        supervisor.spawn("steady", async move { quiet.cancelled().await });
        supervisor.spawn("binlog", async { panic!("heartbeat overflow") });
        tokio::time::timeout(std::time::Duration::from_secs(5), shutdown.cancelled())
            .await
            .expect("the panic cancelled every task");
        assert_eq!(supervisor.wait().await.as_deref(), Some("binlog"));
    }

    #[tokio::test]
    async fn tasks_that_end_normally_report_no_failure() {
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(shutdown.clone());
        supervisor.spawn("done", async {});
        assert_eq!(supervisor.wait().await, None);
        assert!(!shutdown.is_cancelled());
    }
}
