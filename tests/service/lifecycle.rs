//! Signals and systemd: SIGHUP reload, notifications and watchdog, graceful SIGTERM, and a run retried through an
//! outage.

use super::*;

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
