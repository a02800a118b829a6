//! The admin endpoint: metrics, health, jobs and triggers, its token, readiness through a Redis outage, and slow or
//! flooding clients.

use super::*;

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
    let (code, stdout, stderr) = cli_output(&["status"], &config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("startup") && l.contains("success")),
        "{stdout}"
    );
    assert!(stdout.contains("readiness: ready"), "{stdout}");
    // Without a configuration: only the admin address is needed.
    let admin_addr = env.admin_addr().to_string();
    let nowhere = Path::new("/nonexistent/jobs.toml");
    let (code, stdout, stderr) = cli_output(&["status", "--admin", &admin_addr], nowhere);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("readiness: ready"), "{stdout}");
    let (code, stdout, stderr) = cli_output(&["trigger", "manual", "--admin", &admin_addr], nowhere);
    assert!(code == Some(0) || code == Some(1), "{stdout}{stderr}");
    assert!(!stderr.contains("cannot read config file"), "{stderr}");
    // An unknown job is a usage error (64, like `run --once --job`), with the closest name, found before asking the
    // daemon; one the running daemon does not know (another configuration) is 64 as well.
    let (code, _, stderr) = cli_output(&["trigger", "manul"], &config);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("no warm job named \"manul\"") && stderr.contains("manual"),
        "{stderr}"
    );
    let (code, stdout, stderr) = cli_output(&["trigger", "nope", "--admin", &admin_addr], nowhere);
    assert_eq!(code, Some(64), "{stdout}{stderr}");
    assert!(stderr.contains("no warm job named \"nope\""), "{stderr}");
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
        tls: None,
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

/// A raw POST to the test's admin endpoint with `headers` (lines without the request line and Host): the status
/// line and headers of the answer.
async fn post_with(env: &TestEnv, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(env.admin_addr()).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n{headers}\r\n",
        env.admin_addr()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test]
async fn a_post_from_another_site_is_refused_and_the_pages_own_form_runs_the_job_and_returns_to_the_page() {
    let env = TestEnv::new().await;
    env.sql("CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1)")
        .await;
    let config = env.config_file(&job(&env, "manual", "SELECT id FROM t", "0 0 0 1 1 *", ""));
    let mut daemon = Daemon::start(&env, &config, &[], &[]);
    wait_for_admin(&env).await;
    let origin = format!("http://{}", env.admin_addr());
    for forged in [
        "Origin: http://evil.example\r\n".to_string(),
        "Origin: null\r\n".to_string(),
        format!("Origin: {origin}\r\nSec-Fetch-Site: cross-site\r\n"),
        "Sec-Fetch-Site: same-site\r\n".to_string(),
    ] {
        let answer = post_with(&env, "/jobs/manual/run", &forged).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{forged:?}: {answer}");
    }

    // The status page's form: same origin, form-encoded; the browser is sent back to the page.
    let form = format!(
        "Origin: {origin}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    );
    let answer = post_with(&env, "/jobs/manual/run", &form).await;
    assert!(
        answer.starts_with("HTTP/1.1 303") && answer.to_ascii_lowercase().contains("\r\nlocation: /\r\n"),
        "{answer}"
    );
    let ran = eventually(Duration::from_secs(20), || async {
        (env.get(&format!("{}manual:1", env.prefix)).await.is_some()).then_some(())
    })
    .await;
    assert!(ran.is_some(), "{}", daemon.log());
    // Without any browser header (curl, cachewarden trigger) a POST is what it always was.
    let answer = post_with(&env, "/jobs/manual/run", "").await;
    assert!(
        answer.starts_with("HTTP/1.1 202") || answer.starts_with("HTTP/1.1 409"),
        "{answer}"
    );
    assert_eq!(daemon.stop().await, Some(0));
}
