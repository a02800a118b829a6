//! The daemon as a service: admin endpoint (metrics, health, jobs, triggers), readiness through a Redis outage,
//! SIGHUP reload, systemd notifications and watchdog, graceful SIGTERM, JSON logs without secrets, and the unit's
//! hardening score, and an admin port flooded by slow clients.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachewarden::ops::admin;
use common::{Daemon, TestEnv, cachewarden, cli_output, eventually, free_port, get, job, sample, wait_for_admin};
use hyper::Method;

/// `cachewarden status -o json` on `config`: its exit code and its document.
fn status_json(config: &Path) -> (Option<i32>, serde_json::Value) {
    let (code, stdout, stderr) = cli_output(&["status", "-o", "json"], config);
    let status = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status -o json: {e}: {stdout}{stderr}"));
    (code, status)
}

#[tokio::test]
async fn admin_endpoint_serves_metrics_health_jobs_and_triggers() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1), (2)")
        .await;
    let never = "0 0 0 1 1 *";
    let body = [
        job(&env, "startup", "SELECT id FROM t", never, "run_on_start = true"),
        job(&env, "manual", "SELECT id FROM t", never, ""),
        job(&env, "slow", "SELECT id, SLEEP(2) AS s FROM t WHERE id = 1", never, ""),
    ]
    .concat();
    let config = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;

    let jobs = eventually(Duration::from_secs(20), || async {
        let response = get(&env, "/jobs").await?;
        let jobs: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        (jobs[0]["last_run"]["outcome"] == "success").then_some(jobs)
    })
    .await
    .expect("the startup job ran");
    assert_eq!(jobs[0]["name"], "startup");
    assert_eq!(jobs[0]["last_run"]["keys_written"], 2);
    assert_eq!(jobs[0]["runs"]["succeeded"], 1);
    assert_eq!(jobs[1]["last_run"], serde_json::Value::Null);
    assert!(jobs[1]["next_run"].as_str().unwrap().contains("-01-01T00:00:00"));

    // Make Redis count a hit and a miss, so the sampled hit ratio exists.
    env.get(&format!("{}startup:1", env.prefix)).await;
    env.get(&format!("{}absent", env.prefix)).await;
    let metrics = eventually(Duration::from_secs(10), || async {
        let metrics = get(&env, "/metrics").await?.body;
        // The health loop sets these one after the other; wait for a complete round.
        let complete = sample(&metrics, "cachewarden_redis_keyspace_hits_total").is_some_and(|hits| hits >= 1.0)
            && sample(&metrics, "cachewarden_redis_up") == Some(1.0)
            && sample(&metrics, "cachewarden_mysql_up") == Some(1.0);
        complete.then_some(metrics)
    })
    .await
    .expect("metrics with Redis' hits");
    assert_eq!(
        sample(
            &metrics,
            r#"cachewarden_warm_runs_total{warm_job="startup",outcome="success"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"cachewarden_warm_keys_written_total{warm_job="startup"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, r#"cachewarden_warm_rows_total{warm_job="startup"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"cachewarden_warm_duration_seconds_count{warm_job="startup"}"#
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &metrics,
            r#"cachewarden_warm_last_success_timestamp_seconds{warm_job="startup"}"#
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(sample(&metrics, "cachewarden_redis_up"), Some(1.0));
    assert_eq!(sample(&metrics, "cachewarden_mysql_up"), Some(1.0));
    assert!(sample(&metrics, "cachewarden_redis_keyspace_misses_total").unwrap() >= 1.0);
    // A job that never ran has every series, at zero: its first failure is an increase, "never succeeded" is 0.
    for series in [
        r#"cachewarden_warm_runs_total{warm_job="manual",outcome="failure"}"#,
        r#"cachewarden_warm_runs_total{warm_job="manual",outcome="success"}"#,
        r#"cachewarden_warm_last_success_timestamp_seconds{warm_job="manual"}"#,
        r#"cachewarden_warm_keys_written_total{warm_job="manual"}"#,
        r#"cachewarden_stale_keys_total{warm_job="manual"}"#,
        // And every reason a refresh can be given up for, before any was.
        r#"cachewarden_refresh_given_up_total{reason="unverified"}"#,
        r#"cachewarden_refresh_given_up_total{reason="outdated"}"#,
        r#"cachewarden_refresh_given_up_total{reason="query_refused"}"#,
        r#"cachewarden_refresh_given_up_total{reason="out_of_memory"}"#,
    ] {
        assert_eq!(sample(&metrics, series), Some(0.0), "{series}");
    }
    assert!(metrics.contains("cachewarden_build_info{version=\""), "{metrics}");
    assert!(sample(&metrics, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&metrics, "process_open_fds").unwrap() > 3.0);
    // CPU time, typed as the counter it is (its fractions: see metrics' unit test).
    assert!(sample(&metrics, "process_cpu_seconds_total").is_some(), "{metrics}");
    assert!(
        metrics.contains("# TYPE process_cpu_seconds_total counter"),
        "{metrics}"
    );
    // The scrape passes Prometheus' own linter.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/services installs Debian's prometheus package)");
    use std::io::Write as _;
    promtool.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );

    assert_eq!(get(&env, "/healthz").await.unwrap().status, 200);
    assert_eq!(get(&env, "/readyz").await.unwrap().status, 200);
    assert_eq!(get(&env, "/nope").await.unwrap().status, 404);

    // Manual triggers: queued, unknown, and refused while running.
    let addr = env.admin_addr();
    assert_eq!(
        admin::request(addr, Method::POST, "/jobs/manual/run")
            .await
            .unwrap()
            .status,
        202
    );
    let manual_key = format!("{}manual:2", env.prefix);
    let manual = eventually(Duration::from_secs(10), || env.get(&manual_key)).await;
    assert_eq!(manual.as_deref(), Some(r#"{"id":2}"#));
    assert_eq!(
        admin::request(addr, Method::POST, "/jobs/nope/run")
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        admin::request(addr, Method::POST, "/jobs/slow/run")
            .await
            .unwrap()
            .status,
        202
    );
    eventually(Duration::from_secs(10), || async {
        let jobs: serde_json::Value = serde_json::from_str(&get(&env, "/jobs").await?.body).ok()?;
        (jobs[2]["running"] == true).then_some(())
    })
    .await
    .expect("slow job starts");
    let again = admin::request(addr, Method::POST, "/jobs/slow/run").await.unwrap();
    assert_eq!(again.status, 409, "{}", again.body);

    // The operator commands.
    let output = cachewarden()
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("startup") && l.contains("success")),
        "{stdout}"
    );
    assert!(stdout.contains("readiness: ready"), "{stdout}");
    // Without a configuration: only the admin address is needed.
    let admin_addr = env.admin_addr().to_string();
    let output = cachewarden()
        .args(["status", "--admin", &admin_addr, "--config", "/nonexistent/jobs.toml"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("readiness: ready"), "{stdout}");
    let output = cachewarden()
        .args([
            "trigger",
            "manual",
            "--admin",
            &admin_addr,
            "--config",
            "/nonexistent/jobs.toml",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success() || output.status.code() == Some(1),
        "{:?}",
        output
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
    // An unknown job is a usage error (64, like `run --once --job`), with the closest name, found before asking the
    // daemon; one the running daemon does not know (another configuration) is 64 as well.
    let output = cachewarden()
        .args(["trigger", "manul", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("no warm job named \"manul\"") && stderr.contains("manual"),
        "{stderr}"
    );
    let output = cachewarden()
        .args([
            "trigger",
            "nope",
            "--admin",
            &admin_addr,
            "--config",
            "/nonexistent/jobs.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no warm job named \"nope\""));
    // `status -o json`: the same facts for scripts, exit 0 while ready and nothing failing.
    let (code, status) = status_json(&config);
    assert_eq!(code, Some(0), "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["failing"], serde_json::json!([]), "{status}");
    assert!(
        status["jobs"].as_array().is_some_and(|jobs| jobs.len() >= 3),
        "{status}"
    );

    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn an_admin_token_guards_triggers_and_beyond_loopback_every_route_but_the_probes() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let never = "0 0 0 1 1 *";
    let token = "0123456789abcdef0123456789abcdef";
    let with_token = |listen: std::net::SocketAddr, token: &str| cachewarden::config::AdminSettings {
        enabled: true,
        listen,
        token: Some(cachewarden::config::AdminToken::new(token)),
    };
    // A token too short to be one is refused, naming the field.
    let short = env.write_file("short-token", "secret\n");
    let refused = env.config_file(&format!("token_file = \"{}\"\n", short.display()));
    let (code, out) = env.run_cli(&["check"], &refused);
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("admin.token_file") && out.contains("at least 16 characters"),
        "{out}"
    );

    // On loopback (connection_toml's [admin] is open at the top of the body): reads open, triggers need the token.
    let token_file = env.write_file("admin-token", &format!("{token}\n"));
    let path = env.config_file(&format!(
        "token_file = \"{}\"\n{}",
        token_file.display(),
        job(&env, "manual", "SELECT id FROM t", never, "")
    ));
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let addr = env.admin_addr();
    assert_eq!(get(&env, "/metrics").await.unwrap().status, 200);
    let refused = admin::request(addr, Method::POST, "/jobs/manual/run").await.unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("Authorization: Bearer"), "{}", refused.body);
    let wrong = "0123456789abcdef0123456789abcdeX";
    let response = admin::request_to(&with_token(addr, wrong), Method::POST, "/jobs/manual/run")
        .await
        .unwrap();
    assert_eq!(response.status, 401);
    let response = admin::request_to(&with_token(addr, token), Method::POST, "/jobs/manual/run")
        .await
        .unwrap();
    assert_eq!(response.status, 202, "{}", response.body);
    // The CLI sends the token from the configuration.
    let ran = eventually(Duration::from_secs(10), || async {
        (env.run_cli(&["trigger", "manual"], &path).0 == Some(0)).then_some(())
    })
    .await;
    assert!(ran.is_some(), "{}", env.run_cli(&["trigger", "manual"], &path).1);
    assert_eq!(daemon.stop().await, Some(0));

    // Beyond loopback every route needs it, but the probes.
    let open = env.write_file(
        "open.toml",
        &format!(
            "[mysql]\nurl = \"{}\"\n\n[redis]\nurl = \"{}\"\n\n[admin]\nlisten = \"0.0.0.0:{}\"\n\
             token_file = \"{}\"\n{}",
            env.mysql_url,
            env.redis_url,
            env.admin_port,
            token_file.display(),
            job(&env, "manual", "SELECT id FROM t", never, "")
        ),
    );
    let mut daemon = Daemon::start(&env, &open, &[], &[]);
    wait_for_admin(&env).await;
    for path in ["/metrics", "/jobs", "/"] {
        assert_eq!(get(&env, path).await.unwrap().status, 401, "{path}");
        let response = admin::request_to(&with_token(addr, token), Method::GET, path)
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }
    assert_eq!(get(&env, "/healthz").await.unwrap().status, 200);
    assert_eq!(get(&env, "/readyz").await.unwrap().status, 200);
    let (code, out) = env.run_cli(&["status"], &open);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn readyz_turns_503_while_redis_is_down_and_back_when_it_returns() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    // A Redis of the test's own, answering before the daemon starts (a port taken meanwhile fails here, clearly).
    let mut redis = common::OwnRedis::start().await;
    let port = redis.port;
    let source = format!(
        "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nconnect_timeout = \"1s\"\n\
         [admin]\nlisten = \"{}\"\n\n{}",
        env.mysql_url,
        env.admin_addr(),
        job(&env, "j", "SELECT id FROM t", "0 0 0 1 1 *", "")
    );
    let config = env.write_file("jobs.toml", &source);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;
    let ready = eventually(Duration::from_secs(10), || async {
        get(&env, "/readyz").await.filter(|r| r.status == 200)
    })
    .await;
    assert!(ready.is_some(), "ready while both servers answer");

    redis.kill();
    let down = eventually(Duration::from_secs(15), || async {
        get(&env, "/readyz").await.filter(|r| r.status == 503)
    })
    .await
    .expect("readyz turns 503 without Redis");
    assert!(down.body.starts_with("not ready: redis:"), "{}", down.body);
    assert_eq!(get(&env, "/healthz").await.unwrap().status, 200, "alive all the same");
    assert!(daemon.is_running());
    // `status` exits 1 while the daemon is not ready, and says why, in JSON too.
    let (code, status) = status_json(&config);
    assert_eq!(code, Some(1), "{status}");
    assert_eq!(status["ready"], false, "{status}");
    assert!(
        status["readiness"].as_str().unwrap_or_default().contains("redis"),
        "{status}"
    );
    assert_eq!(status["jobs"][0]["name"], "j", "{status}");

    redis.restart();
    let back = eventually(Duration::from_secs(30), || async {
        get(&env, "/readyz").await.filter(|r| r.status == 200)
    })
    .await;
    let code = daemon.stop().await;
    assert!(back.is_some(), "readyz back to 200 once Redis returns");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn sighup_applies_a_valid_config_and_keeps_the_old_one_when_invalid() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let p = env.prefix.clone();
    let first = job(&env, "first", "SELECT id FROM t", "every 1s", "");
    let config = env.config_file(&first);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    let (first_key, second_key) = (format!("{p}first:1"), format!("{p}second:1"));
    assert!(
        eventually(Duration::from_secs(20), || env.get(&first_key))
            .await
            .is_some()
    );

    // Valid: `first` removed, `second` added (fires at once), a new query for nothing else.
    let second = job(
        &env,
        "second",
        "SELECT id, 'v2' AS version FROM t",
        "every 1s",
        "run_on_start = true",
    );
    env.config_file(&second);
    daemon.signal("HUP");
    let value = eventually(Duration::from_secs(20), || env.get(&second_key)).await;
    assert_eq!(value.as_deref(), Some(r#"{"id":1,"version":"v2"}"#));
    let mut conn = env.redis().await;
    let _: () = redis::cmd("DEL").arg(&first_key).query_async(&mut conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(env.get(&first_key).await, None, "a removed job no longer fires");

    // Invalid: logged with every problem; the previous jobs keep running.
    env.config_file(&format!(
        "{second}\n[[warm]]\nname = \"broken\"\nschedule = \"0 61 * * * *\"\n"
    ));
    daemon.signal("HUP");
    let log = eventually(Duration::from_secs(10), || async {
        let log = daemon.log();
        log.contains("still running the previous one").then_some(log)
    })
    .await
    .expect("the rejected reload is logged");
    assert!(log.contains("is not a valid cron schedule"), "{log}");
    assert!(log.contains("`query` is required"), "{log}");
    assert_eq!(
        log.matches("is not a valid cron schedule").count(),
        1,
        "each problem once:\n{log}"
    );
    let _: () = redis::cmd("DEL").arg(&second_key).query_async(&mut conn).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || env.get(&second_key))
            .await
            .is_some()
    );
    assert!(daemon.is_running());
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (messages, stop) = (messages.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buffer) {
                    messages
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                }
            }
        })
    };
    let seen = |needle: &'static str| {
        let messages = messages.clone();
        move || {
            let found = messages
                .lock()
                .unwrap()
                .iter()
                .position(|m| m.lines().any(|l| l == needle));
            async move { found }
        }
    };

    let config = env.config_file(&job(&env, "j", "SELECT id FROM t", "0 0 0 1 1 *", ""));
    let socket_env = socket_path.to_str().unwrap();
    let mut daemon = Daemon::start(
        &env,
        &config,
        &[],
        &[("NOTIFY_SOCKET", socket_env), ("WATCHDOG_USEC", "1000000")],
    );
    let ready = eventually(Duration::from_secs(20), seen("READY=1"))
        .await
        .expect("READY=1");
    // The admin port is bound and the servers answered before READY.
    assert_eq!(get(&env, "/healthz").await.map(|r| r.status), Some(200));
    eventually(Duration::from_secs(5), seen("WATCHDOG=1"))
        .await
        .expect("WATCHDOG=1 while loops turn");

    daemon.signal("HUP");
    let reloading = eventually(Duration::from_secs(10), seen("RELOADING=1"))
        .await
        .expect("RELOADING=1");
    assert!(reloading > ready);
    let ready_again = eventually(Duration::from_secs(10), || {
        let messages = messages.clone();
        async move {
            let messages = messages.lock().unwrap();
            messages
                .iter()
                .skip(reloading)
                .position(|m| m.lines().any(|l| l == "READY=1"))
        }
    })
    .await;
    assert!(ready_again.is_some(), "READY=1 after the reload");
    assert!(messages.lock().unwrap()[reloading].contains("MONOTONIC_USEC="));

    assert_eq!(daemon.stop().await, Some(0));
    assert!(eventually(Duration::from_secs(2), seen("STOPPING=1")).await.is_some());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
}

#[tokio::test]
async fn sigterm_lets_in_flight_writes_finish_within_the_grace_period() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let p = env.prefix.clone();
    let body = [
        job(
            &env,
            "finishes",
            "SELECT id, SLEEP(1.5) AS s FROM t",
            "0 0 0 1 1 *",
            "run_on_start = true",
        ),
        job(
            &env,
            "too_slow",
            "SELECT id, SLEEP(8) AS s FROM t",
            "0 0 0 1 1 *",
            "run_on_start = true",
        ),
    ]
    .concat();
    let config = env.config_file(&format!("[daemon]\nshutdown_grace = \"3s\"\n\n{body}"));
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;
    eventually(Duration::from_secs(10), || async {
        let jobs: serde_json::Value = serde_json::from_str(&get(&env, "/jobs").await?.body).ok()?;
        (jobs[0]["running"] == true && jobs[1]["running"] == true).then_some(())
    })
    .await
    .expect("both jobs are running");
    let started = std::time::Instant::now();
    assert_eq!(daemon.stop().await, Some(0));
    let took = started.elapsed();
    assert_eq!(
        env.get(&format!("{p}finishes:1")).await.as_deref(),
        Some(r#"{"id":1,"s":0}"#)
    );
    assert_eq!(
        env.get(&format!("{p}too_slow:1")).await,
        None,
        "abandoned after the grace period"
    );
    assert!(
        took < Duration::from_secs(7),
        "the 8 s job was not cut off at the 3 s grace: {took:?}"
    );
    assert!(daemon.log().contains("did not finish within the shutdown grace period"));
}

#[tokio::test]
async fn json_logs_never_show_passwords() {
    let env = TestEnv::new().await;
    let redis_port = free_port();
    let mysql_base = common::services()
        .mysql
        .replace("mysql://root@", "mysql://nobody:hunter2@");
    let source = format!(
        "[mysql]\nurl = \"{mysql_base}/x\"\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:{redis_port}/0\"\n\
         connect_timeout = \"1s\"\n[admin]\nenabled = false\n\n{}",
        job(&env, "j", "SELECT 1 AS id", "every 1h", "")
    );
    let config = env.write_file("jobs.toml", &source);
    let mut daemon = Daemon::start(&env, &config, &["--log-format", "json"], &[]);
    // Redis is unreachable (retried), MySQL refuses the password (definite): the daemon exits 78 (a refusal restarting cannot fix).
    let code = daemon.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, Some(78), "the daemon exits on a refused MySQL password");
    let log = daemon.log();
    assert!(!log.contains("hunter2"), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && l.to_string().contains("redis://:***@127.0.0.1")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "ERROR" && l.to_string().contains("mysql://nobody:***@")),
        "{log}"
    );
}

#[test]
fn the_shipped_unit_rates_ok_in_systemd_analyze_security() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/cachewarden.service");
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed by scripts/services");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating in:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    let exposure: f64 = line
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(exposure <= 1.5, "{line}");
    assert!(line.contains("OK"), "{line}");
    // A reload validates before it signals, and a bad configuration is not restarted in a loop.
    let text = std::fs::read_to_string(&unit).unwrap();
    let reloads: Vec<&str> = text.lines().filter(|l| l.starts_with("ExecReload=")).collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert!(reloads[0].contains("cachewarden check --config") && reloads[1].contains("kill -HUP"));
    assert!(text.lines().any(|l| l == "RestartPreventExitStatus=78"));
}

#[tokio::test]
async fn sigterm_stops_a_start_up_check_held_by_a_server_that_never_answers() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY)").await;
    // A "MySQL" for the binlog that accepts connections and never says a word: the start-up check waits on it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let body = format!(
        "[binlog]\nurl = \"mysql://root@127.0.0.1:{port}/x\"\nserver_id = 4242\ncheckpoint_key = \"{p}ckpt\"\n\n{}",
        job(&env, "j", "SELECT id FROM t", "0 0 0 1 1 *", ""),
        p = env.prefix
    );
    let config = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    let checking = eventually(Duration::from_secs(10), || async {
        daemon.log().contains("Connected to MySQL and Redis.").then_some(())
    })
    .await;
    assert!(checking.is_some(), "{}", daemon.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.signal("TERM");
    // Without the stop the check waits out its 10 s connect timeout.
    assert_eq!(
        daemon.exit_code(Duration::from_secs(3)).await,
        Some(0),
        "{}",
        daemon.log()
    );
    held.abort();
}

#[tokio::test]
async fn slow_clients_that_reconnect_at_once_never_keep_a_health_check_out() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let config = env.config_file(&job(&env, "j", "SELECT id FROM t", "0 0 0 1 1 *", ""));
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;

    // 70 clients (more than the 64 connections the endpoint holds) each send half a request and, whenever the daemon
    // closes them, connect again at once.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..70 {
        let (addr, stop) = (env.admin_addr(), stop.clone());
        clients.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    continue;
                };
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
                let mut buffer = [0u8; 64];
                tokio::select! {
                    _ = stream.read(&mut buffer) => {}
                    _ = stop.cancelled() => {}
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A health check every 100 ms for 7 s (past the 5 s header timeout): every one answered.
    let mut answered = 0;
    for _ in 0..70 {
        let check = tokio::time::timeout(Duration::from_secs(2), get(&env, "/healthz")).await;
        if matches!(check, Ok(Some(ref response)) if response.status == 200) {
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    while clients.join_next().await.is_some() {}
    assert_eq!(
        answered,
        70,
        "health checks answered under the flood:\n{}",
        daemon.log()
    );
    assert!(common::metric(&env, "cachewarden_admin_connections_shed_total").await > 0.0);
    assert!(
        daemon.log().contains("at its connection cap"),
        "shedding is logged at WARN:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_thousand_slow_admin_clients_are_capped_and_cut_off_while_invalidations_go_on() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let body = format!(
        "[channel]\nname = \"{channel}\"\nallow = [\"{p}*\"]\n\n{}",
        job(&env, "j", "SELECT id FROM t", "0 0 0 1 1 *", "")
    );
    let config = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;
    let pid = daemon.child.id();
    let descriptors = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let baseline = descriptors();

    // 1,010 clients connect and start a request they never finish.
    let mut slow = Vec::new();
    for _ in 0..1010 {
        let mut stream = tokio::net::TcpStream::connect(env.admin_addr()).await.unwrap();
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = descriptors();
    assert!(
        during <= baseline + 64 + 8,
        "the daemon holds {during} descriptors with 1,010 slow admin clients (baseline {baseline})"
    );

    // Invalidations go on meanwhile.
    let key = format!("{p}victim");
    let mut conn = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let gone = common::published_until_deleted(&conn, &channel, &key, Duration::from_secs(10)).await;
    assert!(
        gone,
        "an invalidation starved behind the admin flood:\n{}",
        daemon.log()
    );

    // Every slow client is cut off (shed at once, or after the 5 s header timeout), and health answers again.
    let mut cut = 0;
    for stream in &mut slow {
        let mut buffer = [0u8; 512];
        // End of stream or a reset: either way the daemon let go of it.
        if tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .is_ok()
        {
            cut += 1;
        }
    }
    assert_eq!(cut, slow.len(), "slow clients still connected");
    let healthy = eventually(Duration::from_secs(10), || async {
        (get(&env, "/healthz").await?.status == 200).then_some(())
    })
    .await;
    assert!(
        healthy.is_some(),
        "/healthz does not answer after the flood:\n{}",
        daemon.log()
    );
    assert!(descriptors() <= baseline + 4);
    assert_eq!(daemon.stop().await, Some(0));
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool is installed (scripts/services installs Debian's prometheus package)");
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn a_run_retried_through_a_redis_outage_is_one_run_of_several_attempts() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let mut redis = common::OwnRedis::start().await;
    let body = job(&env, "j", "SELECT id FROM t", "0 0 0 1 1 *", "");
    let config = env.write_file(
        "jobs.toml",
        &format!(
            "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{}/0\"\nconnect_timeout = \"1s\"\n\
             [admin]\nlisten = \"{}\"\n[channel]\nenabled = false\n\n{body}",
            env.mysql_url,
            redis.port,
            env.admin_addr()
        ),
    );
    // (No channel: its resync after the outage would ask for a run of its own.)
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    let ready = eventually(Duration::from_secs(20), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{}", daemon.log());
    let metric = |name: &'static str| {
        let env = &env;
        async move {
            let body = get(env, "/metrics").await.map(|r| r.body).unwrap_or_default();
            sample(&body, name).unwrap_or(f64::NAN)
        }
    };

    redis.kill();
    let queued = admin::request(env.admin_addr(), Method::POST, "/jobs/j/run")
        .await
        .unwrap();
    assert_eq!(queued.status, 202);
    let failed_once = eventually(Duration::from_secs(20), || async {
        (metric(r#"cachewarden_warm_attempts_total{warm_job="j",outcome="failure"}"#).await >= 1.0).then_some(())
    })
    .await;
    assert!(failed_once.is_some(), "{}", daemon.log());
    redis.restart();
    let succeeded = eventually(Duration::from_secs(40), || async {
        (metric(r#"cachewarden_warm_runs_total{warm_job="j",outcome="success"}"#).await == 1.0).then_some(())
    })
    .await;
    assert!(
        succeeded.is_some(),
        "the retried run never succeeded:\n{}",
        daemon.log()
    );
    assert_eq!(
        metric(r#"cachewarden_warm_runs_total{warm_job="j",outcome="failure"}"#).await,
        0.0
    );
    assert_eq!(
        metric(r#"cachewarden_warm_attempts_total{warm_job="j",outcome="success"}"#).await,
        1.0
    );
    assert!(metric(r#"cachewarden_warm_attempts_total{warm_job="j",outcome="failure"}"#).await >= 1.0);
    assert_eq!(daemon.stop().await, Some(0));
}

/// Every `cachewarden_*` series a shipped artefact names, without histogram suffixes.
fn series_named(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cachewarden_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let name = name.strip_suffix("_bucket").unwrap_or(name);
        names.insert(name.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_grafana_dashboard_queries_parse_and_name_only_exported_series() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("contrib/grafana/cachewarden.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 14, "{exprs:?}");
    // Grafana's variables as Prometheus would see them, each query as a recording rule for promtool to parse.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:panel{i}\n        expr: {}\n",
            serde_json::json!(expr)
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules", "dashboard.yml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool is installed");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every series the dashboard and the alerts name is one the daemon describes (a renamed metric breaks this).
    let exported = [
        include_str!("../src/telemetry/metrics/mod.rs"),
        include_str!("../src/telemetry/metrics/describe.rs"),
    ]
    .concat();
    let alerts = std::fs::read_to_string(root.join("contrib/prometheus/alerts.yml")).unwrap();
    for name in series_named(&exprs.join("\n")).into_iter().chain(series_named(&alerts)) {
        assert!(
            exported.contains(&format!("\"{name}\"")),
            "{name} is not a series cachewarden exports"
        );
    }
}

#[tokio::test]
async fn the_status_page_renders_the_running_jobs_in_a_real_browser() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1), (2)")
        .await;
    let never = "0 0 0 1 1 *";
    let body = [
        job(&env, "catalog", "SELECT id FROM t", never, "run_on_start = true"),
        job(&env, "later", "SELECT id FROM t", never, ""),
    ]
    .concat();
    let config = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;
    let ran = eventually(Duration::from_secs(20), || async {
        let jobs = get(&env, "/jobs").await?.body;
        jobs.contains("\"outcome\": \"success\"").then_some(())
    })
    .await;
    assert!(ran.is_some(), "{}", daemon.log());

    let url = format!("http://{}/", env.admin_addr());
    let browser = |extra: &[&str]| {
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium is installed (scripts/services installs Debian's chromium)")
    };
    let dom = browser(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("<h1>cachewarden "), "{dom}");
    assert!(
        dom.contains("<td>catalog</td>") && dom.contains("<td>later</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("class=\"ok\">success</span>") && dom.contains("never run"),
        "{dom}"
    );
    assert!(dom.contains(">ready</span>"), "{dom}");
    assert!(dom.contains("<svg"), "the charts are missing: {dom}");
    let shot = env.dir.path().join("status.png");
    browser(&[&format!("--screenshot={}", shot.display()), "--window-size=1000,900"]);
    let png = std::fs::read(&shot).expect("chromium wrote a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    assert_eq!(daemon.stop().await, Some(0));
}

/// Changes `user`'s password and writes the URL with it to the credentials directory, as a rotation does.
async fn rotate(env: &TestEnv, user: &str, password: &str, credentials: &Path) {
    use sqlx::Connection as _;
    let mut root = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let statement = format!("ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut root)
        .await
        .unwrap();
    let rest = env.mysql_url.split_once('@').unwrap().1;
    std::fs::write(
        credentials.join("mysql-url"),
        format!("mysql://{user}:{password}@{rest}\n"),
    )
    .unwrap();
}

/// Cuts every connection `user` has open: whatever the daemon does next needs a new one.
async fn cut_connections(env: &TestEnv, user: &str) {
    use sqlx::Connection as _;
    let mut root = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    let list = format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'");
    let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(list))
        .fetch_all(&mut root)
        .await
        .unwrap();
    for id in ids {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL {id}")))
            .execute(&mut root)
            .await;
    }
}

/// Queues a run of `job` through the admin endpoint; an earlier run still holding it (409) is waited out.
async fn queue_run(env: &TestEnv, job: &str) -> bool {
    let path = format!("/jobs/{job}/run");
    let queued = eventually(Duration::from_secs(15), || async {
        let reply = admin::request(env.admin_addr(), Method::POST, &path).await.ok()?;
        (reply.status == 202).then_some(())
    })
    .await;
    queued.is_some()
}

/// A warm run (through the pool) and a binlog change (through the replication connection) both take effect.
async fn warm_and_binlog_work(env: &TestEnv, round: u32) -> bool {
    let p = &env.prefix;
    let (warmed, gone) = (format!("{p}j:1"), format!("{p}gone:2"));
    let mut conn = env.redis().await;
    let _: () = redis::cmd("DEL").arg(&warmed).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&gone)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(queue_run(env, "j").await, "job j was never queued");
    env.sql(&format!("UPDATE t SET name = 'r{round}' WHERE id = 2")).await;
    eventually(Duration::from_secs(15), || async {
        (env.get(&warmed).await.is_some() && env.get(&gone).await.is_none()).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_mysql_password_applies_on_sighup_and_after_an_access_denied_without_a_restart() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20));\nINSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await;
    let (p, database) = (
        env.prefix.clone(),
        env.mysql_url.rsplit('/').next().unwrap().to_string(),
    );
    let user = format!("cw_rot_{}", fastrand::u32(..1_000_000));
    env.sql(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'first-pass';\nGRANT SELECT ON {database}.* TO '{user}'@'%';\n\
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'"
    ))
    .await;
    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    rotate(&env, &user, "first-pass", &credentials).await;
    let body = format!(
        "[redis]\nurl = \"{}\"\n\n[admin]\nlisten = \"{}\"\n\n[binlog]\nserver_id = {}\ncheckpoint_key = \"{p}ckpt\"\n\
         heartbeat = \"1s\"\n\n{}\n[[on_change]]\ntable = \"t\"\ndelete = [\"{p}gone:{{id}}\"]\n",
        env.redis_url,
        env.admin_addr(),
        10_000 + fastrand::u32(..1_000_000),
        job(
            &env,
            "j",
            "SELECT id, name FROM t",
            "0 0 0 1 1 *",
            "run_on_start = true"
        ),
    );
    let config = env.write_file("jobs.toml", &body);
    let daemon = Daemon::start(
        &env,
        &config,
        &[],
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    let following = eventually(Duration::from_secs(20), || async {
        (common::metric(&env, "cachewarden_binlog_connected").await == 1.0).then_some(())
    })
    .await;
    assert!(following.is_some(), "{}", daemon.log());

    // 1. Rotated, then SIGHUP: new pools, the binlog reconnected with the new URL.
    rotate(&env, &user, "second-pass", &credentials).await;
    daemon.signal("HUP");
    let applied = eventually(Duration::from_secs(10), || async {
        daemon.log().contains("SIGHUP: [mysql] changed").then_some(())
    })
    .await;
    assert!(applied.is_some(), "{}", daemon.log());
    cut_connections(&env, &user).await;
    assert!(warm_and_binlog_work(&env, 1).await, "after SIGHUP:\n{}", daemon.log());

    // 2. Rotated with no SIGHUP: an access denied reads the credentials again once and goes on with them.
    rotate(&env, &user, "third-pass", &credentials).await;
    cut_connections(&env, &user).await;
    assert!(
        warm_and_binlog_work(&env, 2).await,
        "after an access denied:\n{}",
        daemon.log()
    );
    let ready = eventually(Duration::from_secs(10), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{}", daemon.log());
    assert!(
        !daemon.log().contains("takes effect only after a restart"),
        "{}",
        daemon.log()
    );
    env.sql(&format!("DROP USER '{user}'@'%'")).await;
}

/// Gives the ACL user `user` the password `password` alone (the old one stops working) and writes the URL with it to
/// the credentials directory; then cuts every connection of the user, so that whatever comes next reconnects.
async fn rotate_redis(redis: &common::OwnRedis, user: &str, password: &str, credentials: &Path) {
    let mut conn = redis.conn.clone();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", user, "resetpass", &format!(">{password}")][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://{user}:{password}@127.0.0.1:{}/0\n", redis.port);
    std::fs::write(credentials.join("redis-url"), url).unwrap();
}

async fn cut_redis_connections(redis: &common::OwnRedis, user: &str) {
    let _: redis::Value = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", user][..])
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_redis_password_applies_on_sighup_and_after_a_refused_password_without_a_restart() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20));\nINSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await;
    let redis = common::OwnRedis::start().await;
    let p = env.prefix.clone();
    let user = "cw_rotated";
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", user, "on", ">first-pass", "~*", "&*", "+@all"][..])
        .query_async(&mut redis.conn.clone())
        .await
        .unwrap();
    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    rotate_redis(&redis, user, "first-pass", &credentials).await;
    let channel = format!("{p}inv");
    let body = format!(
        "[mysql]\nurl = \"{}\"\n\n[admin]\nlisten = \"{}\"\n\n[channel]\nname = \"{channel}\"\nallow = [\"{p}*\"]\n\n{}",
        env.mysql_url,
        env.admin_addr(),
        job(
            &env,
            "j",
            "SELECT id, name FROM t",
            "0 0 0 1 1 *",
            "run_on_start = true"
        ),
    );
    let config = env.write_file("jobs.toml", &body);
    let daemon = Daemon::start(
        &env,
        &config,
        &[],
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    );
    wait_for_admin(&env).await;
    // A warm run (the shared connection) and a channel message (the pub/sub connection) both take effect.
    let works = || async {
        let mut conn = redis.conn.clone();
        let (warmed, victim) = (format!("{p}j:1"), format!("{p}victim"));
        let _: () = redis::cmd("DEL").arg(&warmed).query_async(&mut conn).await.unwrap();
        assert!(queue_run(&env, "j").await, "{}", daemon.log());
        let _: () = redis::cmd("SET")
            .arg(&victim)
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        let deleted = common::published_until_deleted(&conn, &channel, &victim, Duration::from_secs(15)).await;
        let warm = eventually(Duration::from_secs(15), || async {
            let value: Option<String> = redis::cmd("GET")
                .arg(&warmed)
                .query_async(&mut conn.clone())
                .await
                .ok()?;
            value
        })
        .await;
        deleted && warm.is_some()
    };
    assert!(works().await, "{}", daemon.log());

    // 1. Rotated, then SIGHUP: every connection authenticates with the new password, reconnects included.
    rotate_redis(&redis, user, "second-pass", &credentials).await;
    daemon.signal("HUP");
    let applied = eventually(Duration::from_secs(10), || async {
        daemon.log().contains("[redis] url's credentials changed").then_some(())
    })
    .await;
    assert!(applied.is_some(), "{}", daemon.log());
    cut_redis_connections(&redis, user).await;
    assert!(works().await, "after SIGHUP:\n{}", daemon.log());

    // 2. Rotated with no SIGHUP: the refused password reads the credentials again once and goes on with them.
    rotate_redis(&redis, user, "third-pass", &credentials).await;
    cut_redis_connections(&redis, user).await;
    assert!(works().await, "after a refused password:\n{}", daemon.log());
    let ready = eventually(Duration::from_secs(10), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{}", daemon.log());
    assert!(
        !daemon.log().contains("takes effect only after a restart"),
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn status_exits_1_and_names_the_job_while_a_jobs_last_run_failed() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let body = format!(
        "{}{}",
        job(&env, "fine", "SELECT id FROM t", "0 0 0 1 1 *", "run_on_start = true"),
        job(
            &env,
            "broken",
            "SELECT id FROM no_such_table",
            "0 0 0 1 1 *",
            "run_on_start = true"
        )
    );
    let config = env.config_file(&body);
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;
    let failed = eventually(Duration::from_secs(20), || async {
        let jobs: serde_json::Value = serde_json::from_str(&get(&env, "/jobs").await?.body).ok()?;
        let broken = jobs.as_array()?.iter().find(|job| job["name"] == "broken")?.clone();
        (broken["last_run"]["outcome"] == "failure").then_some(())
    })
    .await;
    assert!(failed.is_some(), "{}", daemon.log());
    let (code, stdout, _) = cli_output(&["status"], &config);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("broken: ") && stdout.contains("no_such_table"),
        "{stdout}"
    );
    let (code, status) = status_json(&config);
    assert_eq!(code, Some(1), "{status}");
    assert_eq!(status["failing"], serde_json::json!(["broken"]), "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(daemon.stop().await, Some(0));
}
