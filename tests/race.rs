//! The stale-set race, randomized, against real MariaDB and Redis: concurrent writers update rows while a slow warm
//! job fires every ~100 ms, the binlog refreshes changed rows and channel messages refresh and delete keys. After the
//! writers stop and the daemon settles, every cached key must equal its row. With stale-set protection switched off
//! the same run finds stale keys, so the test can fail. Shorter variants run it under eviction (`allkeys-lru`,
//! `allkeys-lfu`), on the Redis Cluster (with and without protection) and on an evicting cluster. The seed and the
//! counts are printed for replay (`CACHEWARDEN_RACE_SEED=<seed>`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachewarden::ops::admin;
use common::{Daemon, TestEnv, eventually, get, metric, wait_for_admin};
use hyper::Method;
use sqlx::Connection as _;

const ROWS: u32 = 6000;
const WRITERS: u64 = 4;
/// The run goes on until this many operations (changes, messages, warm writes) have happened, ...
const OPERATIONS: u64 = 100_000;
/// ... or this long has passed.
const RUN_AT_MOST: Duration = Duration::from_secs(90);
/// The variants (no protection, eviction, the cluster) race this long: enough to find stale keys without protection
/// (hundreds in a run) while keeping the suite short.
const VARIANT_RUN: Duration = Duration::from_secs(20);
/// Per writer: at most one change per this long (about 500 changes/s in all), so the binlog keeps up.
const WRITE_PACE: Duration = Duration::from_millis(8);

struct Outcome {
    stale: Vec<(u32, String, String)>,
    operations: u64,
    settle: Duration,
    /// Keys Redis evicted during the run (its own Redis, with `maxmemory`; else 0).
    evicted: u64,
}

/// Where the race runs.
#[derive(Clone, Copy)]
enum Redis {
    /// The shared Redis.
    Shared,
    /// A Redis of its own that evicts any key over `maxmemory` by `policy` (`allkeys-lru`, `allkeys-lfu`: the data,
    /// the counter, the read leases and their evidence alike).
    Evicting {
        maxmemory: &'static str,
        policy: &'static str,
    },
    /// The shared Redis Cluster.
    Cluster,
    /// A Redis Cluster of its own (3 masters) whose every node evicts over `maxmemory` by `policy`.
    EvictingCluster {
        maxmemory: &'static str,
        policy: &'static str,
    },
}

/// The race, with stale-set protection on or off, against `redis`.
async fn race(protection: bool, seed: u64, redis: Redis, run_at_most: Duration) -> Outcome {
    let mut env = TestEnv::new().await;
    if let Redis::Cluster | Redis::EvictingCluster { .. } = redis {
        env = env.on_cluster();
    }
    let _own_cluster = match redis {
        Redis::EvictingCluster { maxmemory, policy } => {
            let cluster =
                common::OwnCluster::start_with(3, 0, &["--maxmemory", maxmemory, "--maxmemory-policy", policy]);
            env.redis_url = cluster.url();
            Some(cluster)
        }
        _ => None,
    };
    let maxmemory = match redis {
        Redis::Evicting { maxmemory, policy } | Redis::EvictingCluster { maxmemory, policy } => {
            Some((maxmemory, policy))
        }
        Redis::Shared | Redis::Cluster => None,
    };
    let _own_redis = match (maxmemory, redis) {
        (None, _) | (_, Redis::EvictingCluster { .. }) => None,
        (Some((limit, policy)), _) => {
            let mut own = common::OwnRedis::start().await;
            for (name, value) in [("maxmemory", limit), ("maxmemory-policy", policy)] {
                let _: () = redis::cmd("CONFIG")
                    .arg(&["SET", name, value])
                    .query_async(&mut own.conn)
                    .await
                    .unwrap();
            }
            env.redis_url = format!("redis://127.0.0.1:{}/0", own.port);
            Some(own)
        }
    };
    env.sql(&format!(
        "CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL);\nINSERT INTO items SELECT seq, 0 FROM seq_1_to_{ROWS}"
    ))
    .await;
    let p = env.prefix.clone();
    let server_id = 20_000 + fastrand::u32(..1_000_000);
    let source = format!(
        r#"[mysql]
url = "{mysql}"

[redis]
url = "{redis}"
stale_set_protection = {protection}
cluster = {cluster}

[admin]
listen = "{admin}"

[channel]
name = "{p}inv"

[binlog]
server_id = {server_id}
checkpoint_key = "{p}checkpoint"
heartbeat = "1s"
on_gap = "none"

# Slow on purpose (SLEEP per row): its reads span many concurrent changes, which is when stale sets happen.
[[warm]]
name = "items"
schedule = "0 0 0 1 1 *"
query = "SELECT id, v FROM items WHERE SLEEP(0.0003) = 0"
refresh_query = "SELECT id, v FROM items WHERE id = :id"
key = "{p}item:{{id}}"
ttl = "1h"
timeout = "60s"

[[on_change]]
table = "{db}.items"
refresh = ["{p}item:{{id}}"]
"#,
        mysql = env.mysql_url,
        redis = env.redis_url,
        cluster = env.cluster,
        admin = env.admin_addr(),
        db = env.database,
    );
    let path = env.write_file("jobs.toml", &source);
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let following = eventually(Duration::from_secs(20), || async {
        (metric(&env, "cachewarden_binlog_connected{source=\"main\"}").await == 1.0).then_some(())
    })
    .await;
    assert!(following.is_some(), "not following the binlog:\n{}", daemon.log());

    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (stop, updates, messages) = (stop.clone(), updates.clone(), messages.clone());
        let (url, redis_url, channel, prefix) = (
            env.mysql_url.clone(),
            env.redis_url.clone(),
            format!("{p}inv"),
            p.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(writer));
            let mut db = sqlx::MySqlConnection::connect(&url).await.unwrap();
            // Replies may take long while other tests load the shared Redis: only a dead server should stop a writer.
            let patient = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
            let mut redis = redis::Client::open(redis_url.as_str())
                .unwrap()
                .get_multiplexed_async_connection_with_config(&patient)
                .await
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let id = rng.u32(1..=ROWS);
                if rng.u8(..10) == 0 {
                    let key = format!("{prefix}item:{id}");
                    let message = if rng.bool() {
                        format!(r#"{{"refresh": ["{key}"]}}"#)
                    } else {
                        key
                    };
                    let _: u64 = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(message)
                        .query_async(&mut redis)
                        .await
                        .unwrap();
                    messages.fetch_add(1, Ordering::Relaxed);
                } else {
                    sqlx::query("UPDATE items SET v = v + 1 WHERE id = ?")
                        .bind(id)
                        .execute(&mut db)
                        .await
                        .unwrap();
                    updates.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(WRITE_PACE).await;
            }
        }));
    }
    // Warm every ~100 ms (a fire while the job runs is skipped by the overlap guard), the last one a second before
    // the writers stop, so its slow read spans their final changes.
    let started = Instant::now();
    let mut fires = 0u64;
    while started.elapsed() < run_at_most {
        let _ = admin::request(env.admin_addr(), Method::POST, "/jobs/items/run").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        fires += 1;
        if fires.is_multiple_of(10) {
            let warm_writes = metric(&env, r#"cachewarden_warm_keys_written_total{warm_job="items"}"#).await as u64;
            let done = warm_writes + updates.load(Ordering::Relaxed) + messages.load(Ordering::Relaxed);
            // Leave room for the final run's writes.
            if done + u64::from(ROWS) >= OPERATIONS {
                break;
            }
        }
    }
    // Under eviction a refused run is retried with backoff (5 attempts, up to 15 s of waits between them), so the
    // previous one may still be going for a while, longer on a loaded machine (the whole suite beside it).
    let patience = if maxmemory.is_some() {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(10)
    };
    let last_run = eventually(patience, || async {
        let response = admin::request(env.admin_addr(), Method::POST, "/jobs/items/run")
            .await
            .ok()?;
        (response.status == 202).then_some(())
    })
    .await;
    assert!(last_run.is_some(), "the last warm run could not be started");
    // Changes go on while the last run reads its first batches (each batch is read for ~0.3 s before it is written).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    // Settle: the last warm run has finished and the binlog has applied every update.
    let settle_start = Instant::now();
    let total_updates = updates.load(Ordering::Relaxed) as f64;
    let settled = eventually(patience.max(Duration::from_secs(30)), || async {
        let jobs: serde_json::Value = serde_json::from_str(&get(&env, "/jobs").await?.body).ok()?;
        let caught_up = metric(&env, "cachewarden_binlog_rows_total{source=\"main\"}").await >= total_updates;
        (jobs[0]["running"] == false && caught_up).then_some(())
    })
    .await;
    assert!(settled.is_some(), "the daemon did not settle:\n{}", daemon.log());
    let settle = settle_start.elapsed();
    // Give in-flight channel messages their moment too.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let warm_writes = metric(&env, r#"cachewarden_warm_keys_written_total{warm_job="items"}"#).await as u64;
    let refreshes = metric(&env, r#"cachewarden_invalidated_keys_total{action="refresh"}"#).await as u64;
    let operations = updates.load(Ordering::Relaxed) + messages.load(Ordering::Relaxed) + warm_writes + refreshes;
    let mut guarded = Vec::new();
    for path in ["optimistic", "discarded", "script", "refused"] {
        let name = format!(r#"cachewarden_guarded_batches_total{{path="{path}"}}"#);
        guarded.push((path, metric(&env, &name).await as u64));
    }
    println!("protection={protection} seed={seed}: guarded write batches {guarded:?}");
    if protection {
        let script = guarded
            .iter()
            .find(|(path, _)| *path == "script")
            .map_or(0, |(_, n)| *n);
        assert!(
            script > 0,
            "seed {seed}: no batch went through the guard script: {guarded:?}"
        );
    }
    let refused = metric(&env, r#"cachewarden_refresh_given_up_total{reason="refused"}"#).await as u64;
    println!(
        "protection={protection} seed={seed}: {} updates, {} messages, {warm_writes} warm writes, {refreshes} \
         refreshes ({refused} left deleted, refused three times), settled in {settle:?}",
        updates.load(Ordering::Relaxed),
        messages.load(Ordering::Relaxed)
    );

    let mut db = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let rows: Vec<(i32, i32)> = sqlx::query_as("SELECT id, v FROM items")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let mut stale = Vec::new();
    for (id, v) in rows {
        let expected = format!(r#"{{"id":{id},"v":{v}}}"#);
        if let Some(cached) = env.get(&format!("{p}item:{id}")).await
            && cached != expected
        {
            stale.push((id as u32, cached, expected));
        }
    }
    println!(
        "protection={protection} seed={seed}: {} stale keys of {ROWS}",
        stale.len()
    );
    assert_eq!(daemon.stop().await, Some(0));
    let mut evicted = 0;
    if maxmemory.is_some() {
        let nodes = if env.cluster {
            env.masters().await
        } else {
            vec![env.redis_url.clone()]
        };
        for node in nodes {
            let mut conn = redis::Client::open(node.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let info: String = redis::cmd("INFO").arg("stats").query_async(&mut conn).await.unwrap();
            evicted += cachewarden::exec::cache::info_field(&info, "evicted_keys").unwrap_or(0);
        }
        println!("protection={protection} seed={seed}: Redis evicted {evicted} keys");
    }
    Outcome {
        stale,
        operations,
        settle,
        evicted,
    }
}

fn seed() -> u64 {
    std::env::var("CACHEWARDEN_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_keys_survive_concurrent_writers_warm_runs_binlog_and_channel() {
    let _binlog = common::binlog_shared();
    let seed = seed();
    let outcome = race(true, seed, Redis::Shared, RUN_AT_MOST).await;
    assert!(
        outcome.stale.is_empty(),
        "seed {seed}: {} stale keys, e.g. {:?}",
        outcome.stale.len(),
        &outcome.stale[..outcome.stale.len().min(5)]
    );
    assert!(
        outcome.operations >= 100_000,
        "seed {seed}: only {} operations",
        outcome.operations
    );
    assert!(
        outcome.settle <= Duration::from_secs(10),
        "seed {seed}: settling took {:?}",
        outcome.settle
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_protection_the_same_race_leaves_stale_keys() {
    let _binlog = common::binlog_shared();
    let seed = seed();
    let outcome = race(false, seed, Redis::Shared, VARIANT_RUN).await;
    assert!(
        !outcome.stale.is_empty(),
        "seed {seed}: no stale key without protection; the race test would not catch a broken protection"
    );
}

/// A protected race variant against `redis`: it must end with 0 stale keys, and an evicting Redis must really have
/// evicted.
async fn protected_variant(redis: Redis) {
    let _binlog = common::binlog_shared();
    let seed = seed();
    let outcome = race(true, seed, redis, VARIANT_RUN).await;
    if let Redis::Evicting { .. } | Redis::EvictingCluster { .. } = redis {
        assert!(
            outcome.evicted > 0,
            "seed {seed}: Redis evicted nothing; the limit does not bite"
        );
    }
    assert!(
        outcome.stale.is_empty(),
        "seed {seed}: {} stale keys, e.g. {:?}",
        outcome.stale.len(),
        &outcome.stale[..outcome.stale.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_keys_survive_the_race_while_redis_evicts_under_maxmemory() {
    // Well under the data the run writes: Redis evicts throughout, the protection's own keys included.
    protected_variant(Redis::Evicting {
        maxmemory: "1800kb",
        policy: "allkeys-lru",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_keys_survive_the_race_while_redis_evicts_by_lfu() {
    protected_variant(Redis::Evicting {
        maxmemory: "1800kb",
        policy: "allkeys-lfu",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_keys_survive_the_race_on_a_redis_cluster() {
    protected_variant(Redis::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_protection_the_race_leaves_stale_keys_on_a_redis_cluster_too() {
    let _binlog = common::binlog_shared();
    let seed = seed();
    let outcome = race(false, seed, Redis::Cluster, VARIANT_RUN).await;
    assert!(
        !outcome.stale.is_empty(),
        "seed {seed}: no stale key without protection on the cluster; the test would not catch a broken protection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_keys_survive_the_race_on_a_redis_cluster_that_evicts() {
    // An empty cluster node uses about 1.7 MB, and the slot versions another 0.5 MB per master (with a lost lease
    // set's floors, as on a fresh cluster: see exec::cache::cluster::guard); the Lua heap of the scripts' calls counts
    // too and is not evictable, so a tighter limit makes Redis refuse writes (OOM) rather than evict.
    protected_variant(Redis::EvictingCluster {
        maxmemory: "3000kb",
        policy: "allkeys-lru",
    })
    .await;
}
