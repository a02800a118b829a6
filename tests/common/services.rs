//! The shared test services (Redis, MariaDB with a binlog, its delayed replica), the locks on the shared binlog, and
//! the masters of a Redis Cluster.

use super::*;

static SERVICES: OnceLock<Services> = OnceLock::new();

/// Where the test services listen (URLs without a database).
pub struct Services {
    /// The binlog- and TLS-enabled MariaDB, `mysql://root@127.0.0.1:3307`.
    pub mysql: String,
    /// Plain Redis, `redis://127.0.0.1:6379`.
    pub redis: String,
    /// TLS-only Redis with password `cwtest-secret` and ACL user `cwacl`/`cwacl-secret`.
    pub redis_tls: String,
    /// The CA that signed both servers' certificates.
    pub tls_ca: String,
    /// A seed node of the Redis Cluster (3 masters, 3 replicas, RedisJSON loaded), `redis://127.0.0.1:7101`.
    pub cluster: String,
    /// A Redis with the RedisJSON module, `redis://127.0.0.1:6391`.
    pub redis_json: String,
}
static REPLICA: OnceLock<String> = OnceLock::new();

/// A replica of the test MariaDB that applies changes 1 to 2 s late (`MASTER_DELAY=2`: whole seconds from the event's
/// timestamp, so `1` could mean almost nothing): a lagging reader endpoint.
/// It fetches only what the primary writes in GTID domain 7 (`SET SESSION gtid_domain_id = 7`), and applies it only
/// to databases named `cw_replica_*`, which must first be created on the replica itself. URL without a database;
/// started on first use.
pub fn replica() -> &'static str {
    REPLICA.get_or_init(|| {
        run_script("services", &["--replica".into()])
            .lines()
            .find_map(|line| line.strip_prefix("export CACHEWARDEN_TEST_REPLICA_URL="))
            .expect("scripts/services --replica prints the replica's URL")
            .to_string()
    })
}

/// The test services, brought up on first use.
pub fn services() -> &'static Services {
    SERVICES.get_or_init(|| {
        let exports = run_script("services", &[]);
        let value = |name: &str| {
            exports
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("scripts/services did not print {name}"))
                .to_string()
        };
        Services {
            mysql: value("CACHEWARDEN_TEST_MYSQL_URL"),
            redis: value("CACHEWARDEN_TEST_REDIS_URL"),
            redis_tls: value("CACHEWARDEN_TEST_REDIS_TLS_URL"),
            tls_ca: value("CACHEWARDEN_TEST_TLS_CA"),
            cluster: value("CACHEWARDEN_TEST_CLUSTER_URL"),
            redis_json: value("CACHEWARDEN_TEST_REDIS_JSON_URL"),
        }
    })
}

/// The masters' addresses of the cluster `seed` belongs to (`CLUSTER SLOTS`).
pub async fn masters_of(seed: &str) -> Vec<String> {
    reachable_masters(seed)
        .await
        .expect("the seed node answers CLUSTER SLOTS")
}

/// [`masters_of`], or the error when the seed does not answer (a test's own cluster already stopped, at cleanup).
pub async fn reachable_masters(seed: &str) -> redis::RedisResult<Vec<String>> {
    let mut conn = redis::Client::open(seed)?.get_multiplexed_async_connection().await?;
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
    let mut masters: Vec<String> = slots
        .into_iter()
        .map(|range| {
            let master: Vec<redis::Value> = redis::from_redis_value(range[2].clone()).unwrap();
            let host: String = redis::from_redis_value(master[0].clone()).unwrap();
            let port: u16 = redis::from_redis_value(master[1].clone()).unwrap();
            format!("redis://{host}:{port}")
        })
        .collect();
    masters.sort();
    masters.dedup();
    Ok(masters)
}

/// The shared MariaDB's binlog is server-wide, and nextest runs every test in a process of its own: a test that
/// purges binlog files holds this lock exclusively, every test whose daemon follows the binlog holds it shared, so
/// no purge removes a file another test's checkpoint points into. A file lock, held until dropped.
pub struct BinlogLock(#[allow(dead_code)] std::fs::File);

/// The shared side of [`BinlogLock`]: for tests that follow the shared binlog.
pub fn binlog_shared() -> BinlogLock {
    binlog_lock(false)
}

/// The exclusive side of [`BinlogLock`]: for tests that purge binlog files.
pub fn binlog_exclusive() -> BinlogLock {
    binlog_lock(true)
}

fn binlog_lock(exclusive: bool) -> BinlogLock {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("cachewarden-tests-binlog.lock"))
        .expect("the binlog lock file opens");
    if exclusive { file.lock() } else { file.lock_shared() }.expect("the binlog lock is taken");
    BinlogLock(file)
}
