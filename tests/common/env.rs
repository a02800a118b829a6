//! [`TestEnv`]: a test's own database, key prefix, temporary directory and admin port, removed when dropped.

use super::*;

/// Tells apart the test environments of one process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

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
    cluster_conn: tokio::sync::OnceCell<cachewarden::exec::cache::Conn>,
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

    /// Points this test's Redis at the shared Redis with the RedisJSON module (the cluster has it too).
    pub fn on_json_redis(mut self) -> Self {
        self.redis_url = format!("{}/0", services().redis_json);
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
    pub async fn any_redis(&self) -> cachewarden::exec::cache::Conn {
        if !self.cluster {
            return cachewarden::exec::cache::Conn::Node(self.redis().await);
        }
        let client = redis::cluster::ClusterClientBuilder::new(vec![self.redis_url.as_str()])
            .response_timeout(Duration::from_secs(30))
            .build()
            .expect("cluster url");
        cachewarden::exec::cache::Conn::Cluster(
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

    /// The channel off and `[binlog]` following the test's MariaDB with a server id of its own, the checkpoint under
    /// the test's prefix and a 1 s heartbeat; then `extra`, more lines of `[binlog]`.
    pub fn binlog_toml(&self, extra: &str) -> String {
        let server_id = 10_000 + fastrand::u32(..1_000_000);
        format!(
            "[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\ncheckpoint_key = \"{}checkpoint\"\n\
             heartbeat = \"1s\"\n{extra}\n",
            self.prefix
        )
    }

    /// Runs `cachewarden ARGS --config CONFIG` ([`cli_output`]): its exit code and everything it printed (stdout,
    /// then stderr).
    pub fn run_cli(&self, args: &[&str], config: &Path) -> (Option<i32>, String) {
        let (code, stdout, stderr) = cli_output(args, config);
        (code, format!("{stdout}{stderr}"))
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
                // A test's own cluster may be gone already (it is stopped before the environment is dropped).
                let nodes = if cluster {
                    reachable_masters(&redis_url).await.unwrap_or_default()
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
