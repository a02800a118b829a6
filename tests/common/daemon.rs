//! The daemon under test: started on a configuration, its admin endpoint and metrics, and waiting for it to act.

use super::*;

/// A daemon whose stderr goes to a file, killed on drop if a test fails half-way.
pub struct Daemon {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Daemon {
    pub fn start(env: &TestEnv, config: &Path, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let log = env.dir.path().join(format!("daemon-{}.log", fastrand::u32(..)));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = cachewarden();
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
    metric_at(env.admin_addr(), name).await
}

/// The value of the Prometheus sample `name{labels}` on the admin endpoint at `addr`; 0 when absent or unreachable.
pub async fn metric_at(addr: std::net::SocketAddr, name: &str) -> f64 {
    let body = admin::request(addr, Method::GET, "/metrics")
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    sample(&body, name).unwrap_or(0.0)
}

/// Waits up to 20 s for `job`'s first successful warm run on the test's daemon; fails the test with its log if none
/// came.
pub async fn first_run(env: &TestEnv, daemon: &Daemon, job: &str) {
    let runs = format!("cachewarden_warm_runs_total{{warm_job=\"{job}\",outcome=\"success\"}}");
    let warmed = eventually(Duration::from_secs(20), || async {
        (metric(env, &runs).await >= 1.0).then_some(())
    })
    .await;
    assert!(warmed.is_some(), "{job} never ran:\n{}", daemon.log());
}

/// Whether `key` (the whole key, prefix included) comes to hold `expected` (`None`: comes to be gone) within 15 s.
pub async fn becomes(env: &TestEnv, key: &str, expected: Option<&str>) -> bool {
    eventually(Duration::from_secs(15), || async {
        (env.get(key).await.as_deref() == expected).then_some(())
    })
    .await
    .is_some()
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
        (metric(env, "cachewarden_binlog_connected{source=\"main\"}").await == 1.0).then_some(())
    })
    .await;
    assert!(following.is_some(), "not following the binlog:\n{}", daemon.log());
    daemon
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
