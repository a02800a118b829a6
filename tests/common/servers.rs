//! Servers of a test's own: a redis-server, a Redis Cluster, a MariaDB, an Oracle MySQL — each stopped when dropped.

use super::*;

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
        // As in `TestEnv::redis`: a 100,000-command pipeline on a loaded machine may take longer than the client's
        // default 500 ms response timeout; only a dead server should fail a test.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let conn = eventually(Duration::from_secs(10), || async {
            client.get_multiplexed_async_connection_with_config(&config).await.ok()
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
        // A temporary directory of its own: bootstraps run side by side once lost a temporary table in the shared
        // /tmp ("Could not remove temporary table '/tmp/#sql-temptable-…'", then "Unknown table
        // 'mysql.tmp_proxies_priv'" and exit 1).
        std::fs::create_dir(dir.path().join("tmp")).expect("tmp dir");
        let status = Command::new("chown")
            .args(["-R", "mysql:mysql", &dir.path().display().to_string()])
            .status()
            .expect("chown runs");
        assert!(status.success());
        let output = Command::new("mariadb-install-db")
            .env("TMPDIR", dir.path().join("tmp"))
            .args([
                "--user=mysql",
                &format!("--datadir={}", dir.path().join("data").display()),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            output.status.success(),
            "mariadb-install-db: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
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

    /// Runs `sql` on the server with the `mariadb` client; what it printed (tab-separated, no column names).
    pub fn sql(&self, sql: &str) -> String {
        let output = self.client(sql).expect("mariadb runs");
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The `mariadb` client run with `sql` against the server.
    fn client(&self, sql: &str) -> std::io::Result<std::process::Output> {
        let port = self.port.to_string();
        Command::new("mariadb")
            .args([
                "--protocol=tcp",
                "-h",
                "127.0.0.1",
                "-P",
                &port,
                "-uroot",
                "-N",
                "-e",
                sql,
            ])
            .output()
    }

    /// Starts the server (again) on its data directory and port, and waits until it answers.
    pub fn launch(&mut self) {
        let data = self.dir.path().join("data");
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=mysql",
                &format!("--datadir={}", data.display()),
                &format!("--socket={}", self.dir.path().join("mysqld.sock").display()),
                &format!("--tmpdir={}", self.dir.path().join("tmp").display()),
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
            let ready = self.client("SELECT 1").is_ok_and(|output| output.status.success());
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

    /// Stops the server cleanly (SIGTERM), leaving its data directory for [`OwnMariaDb::launch`].
    pub fn stop(&mut self) {
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

/// Two binlog sources for a test: `shop`, the shared MariaDB with the test's table `products`, and `orders`, the
/// table `so.orders` on `orders`; each table is created and projected by a rule into `<prefix>product:{id}`
/// (`id`, `name`) and `<prefix>order:{id}` (`id`, `total`). The configuration's body (with the channel off).
pub async fn shop_and_orders(env: &crate::common::TestEnv, orders: &OwnMariaDb) -> String {
    env.sql("CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50))")
        .await;
    orders.sql("CREATE DATABASE so; CREATE TABLE so.orders (id INT PRIMARY KEY, total INT)");
    let p = &env.prefix;
    format!(
        r#"[channel]
enabled = false

[[binlog]]
name = "shop"
checkpoint_key = "{p}checkpoint:shop"
heartbeat = "1s"

[[binlog]]
name = "orders"
url = "{orders_url}"
checkpoint_key = "{p}checkpoint:orders"
heartbeat = "1s"

[[on_change]]
source = "shop"
table = "products"
project = {{ key = "{p}product:{{id}}", columns = ["id", "name"], ttl = "1h" }}

[[on_change]]
source = "orders"
table = "so.orders"
project = {{ key = "{p}order:{{id}}", columns = ["id", "total"], ttl = "1h" }}
"#,
        orders_url = orders.url()
    )
}
