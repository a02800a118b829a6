//! One harness for every integration test: real Redis and a real (binlog-enabled) MariaDB, a database and a Redis
//! key prefix of its own per test, both removed when the test's [`TestEnv`] is dropped.
//!
//! The services come from `scripts/services` (run once per test binary), which starts them if they are down.

#![allow(dead_code)]

pub mod proxy;

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cachewarden::admin;
use cachewarden::config::{self, Config};
use hyper::Method;
use sqlx::{Connection as _, Executor as _};

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
    /// A seed node of the Redis Cluster (3 masters, 3 replicas), `redis://127.0.0.1:7101`.
    pub cluster: String,
}
static COUNTER: AtomicU32 = AtomicU32::new(0);
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
        }
    })
}

/// A test's own database and key prefix.
pub struct TestEnv {
    /// The database name, unique to this test.
    pub database: String,
    /// `mysql://.../<database>`
    pub mysql_url: String,
    /// `redis://.../0`
    pub redis_url: String,
    /// Every key this test writes starts with this.
    pub prefix: String,
    /// Whether `redis_url` is a Redis Cluster's seed node ([`TestEnv::on_cluster`]).
    pub cluster: bool,
    /// The connection [`TestEnv::any_redis`] made to the cluster, reused.
    cluster_conn: tokio::sync::OnceCell<cachewarden::cache::Conn>,
    /// Holds config files written by the test.
    pub dir: tempfile::TempDir,
    /// A free loopback port for this test's admin endpoint.
    pub admin_port: u16,
}

impl TestEnv {
    /// Creates the database and picks a prefix.
    pub async fn new() -> Self {
        Self::with_database_prefix("cw_test").await
    }

    /// Like [`TestEnv::new`], with the database named `<prefix>_<unique id>` (the replica of [`replica`] follows only
    /// databases named `cw_replica_*`).
    pub async fn with_database_prefix(prefix: &str) -> Self {
        let (mysql_base, redis_base) = (&services().mysql, &services().redis);
        let id = format!(
            "{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let database = format!("{prefix}_{id}");
        let mut conn = sqlx::MySqlConnection::connect(&format!("{mysql_base}/mysql"))
            .await
            .expect("test MariaDB is reachable");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{database}`")))
            .await
            .expect("create test database");
        Self {
            mysql_url: format!("{mysql_base}/{database}"),
            redis_url: format!("{redis_base}/0"),
            prefix: format!("cwtest:{id}:"),
            cluster: false,
            cluster_conn: tokio::sync::OnceCell::new(),
            database,
            dir: tempfile::tempdir().expect("temp dir"),
            admin_port: free_port(),
        }
    }

    /// Points this test's Redis at the shared Redis Cluster: `connection_toml` says `cluster = true`, and `get`,
    /// `pttl` and `keys` go to the cluster.
    pub fn on_cluster(mut self) -> Self {
        self.redis_url = services().cluster.clone();
        self.cluster = true;
        self
    }

    /// Points this test's MySQL at `server` (a real MySQL of the test's own): a database of the test's name there.
    pub async fn on_mysql(mut self, server: &OwnMySql) -> Self {
        let mut conn = sqlx::MySqlConnection::connect(&server.url())
            .await
            .expect("the test's MySQL is reachable");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{}`", self.database)))
            .await
            .expect("create test database");
        self.mysql_url = format!("{}/{}", server.url(), self.database);
        self
    }

    /// Points this test's MySQL at `server` (a MariaDB of the test's own): a database of the test's name there.
    pub async fn on_mariadb(mut self, server: &OwnMariaDb) -> Self {
        let mut conn = sqlx::MySqlConnection::connect(&server.url())
            .await
            .expect("the test's MariaDB is reachable");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{}`", self.database)))
            .await
            .expect("create test database");
        self.mysql_url = format!("{}/{}", server.url(), self.database);
        self
    }

    /// A connection for single-key commands: to the node, or to the cluster (which routes them).
    pub async fn any_redis(&self) -> cachewarden::cache::Conn {
        if !self.cluster {
            return cachewarden::cache::Conn::Node(self.redis().await);
        }
        let client = redis::cluster::ClusterClientBuilder::new(vec![self.redis_url.as_str()])
            .response_timeout(Duration::from_secs(30))
            .build()
            .expect("cluster url");
        cachewarden::cache::Conn::Cluster(
            client
                .get_async_connection()
                .await
                .expect("the test cluster is reachable"),
        )
    }

    /// The cluster's masters' addresses (`CLUSTER SLOTS`), for commands that must visit every shard.
    pub async fn masters(&self) -> Vec<String> {
        masters_of(&self.redis_url).await
    }

    /// Runs SQL statements (separated by `;` at line ends) in the test database, as root.
    pub async fn sql(&self, script: &str) {
        let mut conn = sqlx::MySqlConnection::connect(&self.mysql_url).await.expect("connect");
        for statement in script.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            conn.execute(sqlx::AssertSqlSafe(statement.to_string()))
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }

    /// The `[mysql]`, `[redis]` and `[admin]` sections for this test, to put in front of jobs.
    pub fn connection_toml(&self) -> String {
        self.connection_toml_with_redis(&self.redis_url)
    }

    /// [`TestEnv::connection_toml`] with Redis at `redis_url` (a test's own server, or another user).
    pub fn connection_toml_with_redis(&self, redis_url: &str) -> String {
        let cluster = if self.cluster { "cluster = true\n" } else { "" };
        format!(
            "[mysql]\nurl = \"{}\"\n\n[redis]\nurl = \"{redis_url}\"\n{cluster}\n[admin]\nlisten = \"127.0.0.1:{}\"\n\n",
            self.mysql_url, self.admin_port
        )
    }

    /// The admin endpoint's address.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// A validated config: this test's connections followed by `body`.
    pub fn config(&self, body: &str) -> Config {
        let source = format!("{}{}", self.connection_toml(), body);
        config::load_str(Path::new("test.toml"), &source, HashMap::new())
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"))
    }

    /// Writes `text` to a file in the test's directory and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    /// Writes this test's connections followed by `body` as a config file.
    pub fn config_file(&self, body: &str) -> PathBuf {
        self.write_file("jobs.toml", &format!("{}{}", self.connection_toml(), body))
    }

    /// [`TestEnv::config_file`] with Redis at `redis_url`.
    pub fn config_file_with_redis(&self, redis_url: &str, body: &str) -> PathBuf {
        self.write_file(
            "jobs.toml",
            &format!("{}{}", self.connection_toml_with_redis(redis_url), body),
        )
    }

    /// A Redis connection. Replies may take long on a loaded machine (a 50,000-command pipeline while other tests
    /// run): only a dead server should fail a test, not the client's default 500 ms response timeout.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        redis::Client::open(self.redis_url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("test Redis is reachable")
    }

    /// The value at `key` (prefix not added).
    pub async fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.any_redis().await)
            .await
            .expect("GET")
    }

    /// The value at `key` as stored (compressed values are not text).
    pub async fn get_bytes(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.any_redis().await)
            .await
            .expect("GET")
    }

    /// The value at `key`, parsed as JSON.
    pub async fn get_json(&self, key: &str) -> Option<serde_json::Value> {
        self.get(key).await.map(|text| {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{key} holds invalid JSON {text:?}: {e}"))
        })
    }

    /// The remaining TTL of `key` in milliseconds (-1 no expiry, -2 missing).
    pub async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.any_redis().await)
            .await
            .expect("PTTL")
    }

    /// Every key under this test's prefix, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let nodes = if self.cluster {
            self.masters().await
        } else {
            vec![self.redis_url.clone()]
        };
        let mut keys = Vec::new();
        for node in nodes {
            let mut conn = redis::Client::open(node.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .expect("Redis answers");
            keys.extend(self.keys_on(&mut conn).await);
        }
        keys.sort();
        keys
    }

    /// Every key under this test's prefix on the node behind `conn`, unsorted.
    pub async fn keys_on(&self, conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys
    }

    /// The cachewarden binary, with this test's environment.
    pub fn cli(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cachewarden"));
        command
            .env("RUST_LOG", "info")
            .env_remove("CACHEWARDEN_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY");
        command
    }

    /// Runs `cachewarden ARGS --config CONFIG`: its exit code and everything it printed (stdout, then stderr).
    pub fn run_cli(&self, args: &[&str], config: &Path) -> (Option<i32>, String) {
        let output = self.cli().args(args).arg("--config").arg(config).output().unwrap();
        let (stdout, stderr) = text(&output);
        (output.status.code(), format!("{stdout}{stderr}"))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let (database, prefix, mysql_base, redis_url, cluster) = (
            self.database.clone(),
            self.prefix.clone(),
            services().mysql.clone(),
            self.redis_url.clone(),
            self.cluster,
        );
        // Drop runs inside the test's runtime, which cannot block on itself: clean up from a thread of our own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::MySqlConnection::connect(&format!("{mysql_base}/mysql")).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{database}`")))
                        .await;
                }
                // A cluster's keys are on every master; the HA fence's copies there are named after the lease key.
                let nodes = if cluster {
                    masters_of(&redis_url).await
                } else {
                    vec![redis_url]
                };
                for node in nodes {
                    for pattern in [format!("{prefix}*"), format!("cachewarden:*:{prefix}*")] {
                        unlink_matching(&node, &pattern).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The masters' addresses of the cluster `seed` belongs to (`CLUSTER SLOTS`).
pub async fn masters_of(seed: &str) -> Vec<String> {
    let mut conn = redis::Client::open(seed)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the seed node answers");
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .expect("CLUSTER SLOTS");
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
    masters
}

/// Unlinks the keys matching `pattern` on one node, one key per command (a cluster node refuses cross-slot UNLINKs).
async fn unlink_matching(node: &str, pattern: &str) {
    let Ok(mut conn) = redis::Client::open(node)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
    else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("UNLINK").arg(key).ignore();
            }
            let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
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

/// A throw-away redis-server on `port` (loopback, no persistence), for tests that stop and restart Redis.
pub fn spawn_redis(port: u16) -> Child {
    spawn_redis_with(port, &[])
}

/// [`spawn_redis`] with more server options (`--cluster-enabled yes`, ...).
pub fn spawn_redis_with(port: u16, extra: &[&str]) -> Child {
    // Nothing on disk in the working directory: a replica's full sync would write dump.rdb there, and every later
    // server started there would load it (data and replication history a test never wrote). So the file, if any, is
    // a fresh name in the temp directory, and replicas load the sync straight into memory.
    let rdb = format!("cwtest-{port}-{}-{}.rdb", std::process::id(), fastrand::u32(..));
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &std::env::temp_dir().display().to_string(),
            "--dbfilename",
            &rdb,
            "--repl-diskless-load",
            "on-empty-db",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

/// A redis-server of the test's own (see [`spawn_redis`]) with a connection to it; stopped when dropped.
pub struct OwnRedis {
    pub port: u16,
    pub conn: redis::aio::MultiplexedConnection,
    server: Child,
}

impl OwnRedis {
    /// Starts the server on a free port and waits until it answers.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`OwnRedis::start`] with extra server options (`--replicaof 127.0.0.1 PORT`).
    pub async fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let server = spawn_redis_with(port, extra);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0").as_str()).unwrap();
        let conn = eventually(Duration::from_secs(10), || async {
            client.get_multiplexed_async_connection().await.ok()
        })
        .await
        .expect("the test's own Redis answers");
        Self { port, conn, server }
    }

    /// Kills the server (an outage); [`OwnRedis::restart`] brings it back, empty, on the same port.
    pub fn kill(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }

    /// Starts the server again after [`OwnRedis::kill`].
    pub fn restart(&mut self) {
        self.server = spawn_redis(self.port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A Redis Cluster of the test's own (scripts/redis-cluster), for tests that change its shape; stopped when dropped.
pub struct OwnCluster {
    pub base: u16,
    nodes: u16,
    dir: tempfile::TempDir,
}

impl OwnCluster {
    /// `masters` masters with `replicas` replicas each, on consecutive ports whose cluster bus ports (+10000) are
    /// free too.
    pub fn start(masters: u16, replicas: u16) -> Self {
        Self::start_with(masters, replicas, &[])
    }

    /// [`OwnCluster::start`] with redis-server options for every node (`--maxmemory`, say).
    pub fn start_with(masters: u16, replicas: u16, extra: &[&str]) -> Self {
        let nodes = masters * (replicas + 1);
        let base = loop {
            let base = 20_000 + fastrand::u16(..9_000);
            let free = (base..base + nodes)
                .flat_map(|port| [port, port + 10_000])
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
            if free {
                break base;
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = vec![
            "start".to_string(),
            base.to_string(),
            masters.to_string(),
            replicas.to_string(),
        ];
        args.push(dir.path().display().to_string());
        args.extend(extra.iter().map(|option| option.to_string()));
        run_script("redis-cluster", &args);
        Self { base, nodes, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.base)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = script("redis-cluster")
            .args(["stop", &self.base.to_string(), &self.nodes.to_string()])
            .arg(self.dir.path())
            .output();
    }
}

/// Publishes `key` on `channel` until the daemon has deleted it (a subscription may be coming back, or busy);
/// whether that happened within `limit`.
pub async fn published_until_deleted(
    conn: &redis::aio::MultiplexedConnection,
    channel: &str,
    key: &str,
    limit: Duration,
) -> bool {
    eventually(limit, || {
        let mut conn = conn.clone();
        async move {
            let _: u64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(key)
                .query_async(&mut conn)
                .await
                .ok()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let exists: u64 = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await.ok()?;
            (exists == 0).then_some(())
        }
    })
    .await
    .is_some()
}

/// Waits up to `limit` for `child` to exit.
pub async fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    eventually(limit, || {
        let status = child.try_wait().expect("try_wait");
        async move { status }
    })
    .await
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Output of a finished command, as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `check` every 50 ms until it returns `Some` or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A daemon whose stderr goes to a file, killed on drop if a test fails half-way.
pub struct Daemon {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Daemon {
    pub fn start(env: &TestEnv, config: &Path, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let log = env.dir.path().join(format!("daemon-{}.log", fastrand::u32(..)));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = env.cli();
        command.arg("run").arg("--config").arg(config).args(extra_args);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Self { child, log }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    pub async fn stop(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.exit_code(Duration::from_secs(20)).await
    }

    /// Waits up to `limit` for the daemon to exit by itself; its exit code.
    pub async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        wait_exit(&mut self.child, limit).await.and_then(|status| status.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn get(env: &TestEnv, path: &str) -> Option<admin::ClientResponse> {
    admin::request(env.admin_addr(), Method::GET, path).await.ok()
}

/// Waits until the admin endpoint answers and the daemon has started every task (the endpoint is up from the first
/// second; until the servers answered and the tasks run, `/readyz` names `startup`).
pub async fn wait_for_admin(env: &TestEnv) {
    eventually(Duration::from_secs(20), || async {
        let ready = get(env, "/readyz").await?;
        (!ready.body.contains("startup:")).then_some(())
    })
    .await
    .expect("admin endpoint comes up and the daemon has started");
}

/// The value of the Prometheus sample `name{labels}` on the test's admin endpoint; 0 when absent or unreachable.
pub async fn metric(env: &TestEnv, name: &str) -> f64 {
    let body = get(env, "/metrics").await.map(|r| r.body).unwrap_or_default();
    sample(&body, name).unwrap_or(0.0)
}

/// A daemon run on `body` (written as the test's jobs.toml), once it follows the binlog.
pub async fn following(env: &TestEnv, body: &str) -> Daemon {
    following_path(env, &env.write_file("jobs.toml", body)).await
}

/// A daemon run on the configuration at `path`, once it follows the binlog.
pub async fn following_path(env: &TestEnv, path: &Path) -> Daemon {
    let daemon = Daemon::start(env, path, &[], &[]);
    wait_for_admin(env).await;
    let following = eventually(Duration::from_secs(20), || async {
        (metric(env, "cachewarden_binlog_connected").await == 1.0).then_some(())
    })
    .await;
    assert!(following.is_some(), "not following the binlog:\n{}", daemon.log());
    daemon
}

/// Starts a new binary log on the server of `url` and purges every older one, retrying while a lingering dump
/// thread still reads one (the server keeps a log in use).
pub async fn purge_binary_logs(url: &str) {
    let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
    conn.execute("FLUSH BINARY LOGS").await.unwrap();
    let status = sqlx::query("SHOW MASTER STATUS").fetch_one(&mut conn).await.unwrap();
    let current: String = sqlx::Row::get(&status, 0);
    let purged = eventually(Duration::from_secs(20), || {
        let current = current.clone();
        async move {
            let mut conn = sqlx::MySqlConnection::connect(url).await.ok()?;
            conn.execute(sqlx::AssertSqlSafe(format!("PURGE BINARY LOGS TO '{current}'")))
                .await
                .ok()?;
            let logs = sqlx::query("SHOW BINARY LOGS").fetch_all(&mut conn).await.ok()?;
            (logs.len() == 1).then_some(())
        }
    })
    .await;
    assert!(purged.is_some(), "the old binary logs could not be purged");
}

/// The value of the Prometheus sample `name{labels}` in `text`, if present.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        line.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A MariaDB of a test's own (row binlog, as `scripts/services` sets up the shared one), for tests that restart the
/// server. Its data directory lives in a temporary folder; dropping it kills the server.
pub struct OwnMariaDb {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    server_id: u32,
    extra: Vec<String>,
}

impl OwnMariaDb {
    /// Initialises a data directory and starts the server on a free port.
    pub fn start() -> Self {
        Self::start_with(1, &[])
    }

    /// [`OwnMariaDb::start`] with this `server_id` and extra server options (a replica's `--log-slave-updates`).
    pub fn start_with(server_id: u32, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("chown")
            .args(["mysql:mysql", &dir.path().display().to_string()])
            .status()
            .expect("chown runs");
        assert!(status.success());
        let output = Command::new("mariadb-install-db")
            .args([
                "--user=mysql",
                &format!("--datadir={}", dir.path().join("data").display()),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
            server_id,
            extra: extra.iter().map(|option| option.to_string()).collect(),
        };
        server.launch();
        server
    }

    /// `mysql://root@127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let data = self.dir.path().join("data");
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=mysql",
                &format!("--datadir={}", data.display()),
                &format!("--socket={}", self.dir.path().join("mysqld.sock").display()),
                &format!("--port={}", self.port),
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                &format!("--server-id={}", self.server_id),
                &format!("--log-bin={}", data.join("binlog").display()),
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--innodb-buffer-pool-size=32M",
                &format!("--log-error={}", self.dir.path().join("error.log").display()),
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let url = self.url();
        let up = (0..300).any(|_| {
            let ready = Command::new("mariadb")
                .args([
                    "--protocol=tcp",
                    "-h",
                    "127.0.0.1",
                    "-P",
                    &self.port.to_string(),
                    "-uroot",
                    "-e",
                    "SELECT 1",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if !ready {
                std::thread::sleep(Duration::from_millis(100));
            }
            ready
        });
        assert!(up, "{url} did not come up");
    }

    /// Stops the server cleanly (SIGTERM, as a service manager would) and starts it again.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// [`OwnMariaDb::restart`] after `down` without a server (a short outage).
    pub fn restart_after(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real Oracle MySQL server of a test's own, with GTIDs and a ROW binlog, on a free port (`scripts/mysql-server`:
/// MySQL 9 from Debian sid, run from a sysroot; `scripts/services` fetched it). Stopped and removed when dropped.
pub struct OwnMySql {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OwnMySql {
    /// A server with `server_id`.
    pub fn start(server_id: u32) -> Self {
        Self::launch("start", server_id, None)
    }

    /// A server with `server_id` that replicates from `source` by GTID auto-position, keeping a binlog of its own
    /// with the source's GTIDs (so it can be promoted).
    pub fn replica_of(source: &OwnMySql, server_id: u32) -> Self {
        Self::launch("replica", server_id, Some(source.port))
    }

    fn launch(command: &str, server_id: u32, source: Option<u16>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // The server runs as the mysql user, which must reach its data dir inside.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let port = free_port();
        let mut args = vec![command.to_string()];
        args.extend([
            port.to_string(),
            server_id.to_string(),
            dir.path().display().to_string(),
        ]);
        args.extend(source.map(|port| port.to_string()));
        run_script("mysql-server", &args);
        Self { port, dir }
    }

    /// `mysql://root@127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnMySql {
    fn drop(&mut self) {
        let _ = script("mysql-server")
            .args(["stop", &self.port.to_string(), &self.dir.path().display().to_string()])
            .output();
    }
}

/// The project's `scripts/<name>`, to run.
fn script(name: &str) -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name))
}

/// Runs `scripts/<name> args…`, which must succeed (its stderr is the failure message); its stdout.
fn run_script(name: &str, args: &[String]) -> String {
    let output = script(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("scripts/{name} runs: {e}"));
    assert!(
        output.status.success(),
        "scripts/{name} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `cachewarden ARGS --config CONFIG` for a configuration that needs no test's servers (`check`, `rules`
/// offline): its exit code, stdout and stderr.
pub fn cli_offline(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cachewarden"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CACHEWARDEN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}
