//! The daemon's schedule, signals and patience with a Redis that is not there yet.

use super::*;

#[tokio::test]
async fn daemon_warms_on_start_and_schedule_runs_on_sigusr1_and_stops_on_sigterm() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let body = [
        job(
            &env,
            "startup",
            "SELECT id, price FROM products",
            "0 0 0 1 1 *",
            "run_on_start = true",
        ),
        job(&env, "ticking", "SELECT id, name FROM products", "every 1s", ""),
        job(&env, "manual", "SELECT id FROM products", "0 0 0 1 1 *", ""),
    ]
    .concat();
    let path = env.config_file(&body);
    let mut daemon = cachewarden()
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let started = eventually(Duration::from_secs(15), || async {
        env.get(&format!("{p}startup:1")).await
    })
    .await;
    assert_eq!(started.as_deref(), Some(r#"{"id":1,"price":"19.90"}"#));
    let ticked = eventually(Duration::from_secs(15), || async {
        env.get(&format!("{p}ticking:2")).await
    })
    .await;
    assert_eq!(ticked.as_deref(), Some(r#"{"id":2,"name":"Lamp"}"#));

    // The schedule keeps firing: a changed row shows up without any restart.
    env.sql("UPDATE products SET name = 'Desk lamp' WHERE id = 2").await;
    let updated = eventually(Duration::from_secs(15), || async {
        env.get(&format!("{p}ticking:2"))
            .await
            .filter(|v| v.contains("Desk lamp"))
    })
    .await;
    assert!(updated.is_some(), "the every-1s job did not fire again");

    // SIGHUP must not kill the daemon; SIGUSR1 runs the jobs now, including ones not due for a year.
    signal(&daemon, "HUP");
    assert_eq!(env.get(&format!("{p}manual:1")).await, None);
    signal(&daemon, "USR1");
    let manual = eventually(Duration::from_secs(15), || async {
        env.get(&format!("{p}manual:1")).await
    })
    .await;
    assert_eq!(manual.as_deref(), Some(r#"{"id":1}"#));
    assert!(daemon.try_wait().unwrap().is_none(), "daemon exited early");

    signal(&daemon, "TERM");
    let status = wait_exit(&mut daemon, Duration::from_secs(15))
        .await
        .expect("daemon stops on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn daemon_waits_for_an_unreachable_redis_and_warms_once_it_appears() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let body = job(
        &env,
        "late",
        "SELECT id FROM products",
        "0 0 0 1 1 *",
        "run_on_start = true",
    );
    let source = format!(
        "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\nconnect_timeout = \"1s\"\n[admin]\nlisten = \"{}\"\n\n{body}",
        env.mysql_url,
        env.admin_addr()
    );
    let path = env.write_file("jobs.toml", &source);
    let mut daemon = cachewarden()
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // From the first second: alive, not ready and saying why, metrics served, jobs not yet.
    let waiting = eventually(Duration::from_secs(10), || async {
        let ready = get(&env, "/readyz").await?;
        (ready.status == 503 && ready.body.contains("redis: waiting for the first connection")).then_some(ready.body)
    })
    .await;
    assert!(waiting.is_some(), "/readyz does not say what it waits for");
    assert_eq!(get(&env, "/healthz").await.unwrap().status, 200);
    let metrics = get(&env, "/metrics").await.unwrap().body;
    assert_eq!(sample(&metrics, "cachewarden_redis_up"), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, "cachewarden_mysql_up"), Some(1.0), "{metrics}");
    let jobs = get(&env, "/jobs").await.unwrap();
    assert_eq!(jobs.status, 503);
    assert!(jobs.body.starts_with("starting: redis:"), "{}", jobs.body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "daemon gave up while Redis was down"
    );

    let mut redis = common::spawn_redis(port);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let key = format!("{}late:1", env.prefix);
    let value = eventually(Duration::from_secs(45), || {
        let client = client.clone();
        let key = key.clone();
        async move {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()?
        }
    })
    .await;
    let ready = eventually(Duration::from_secs(10), || async {
        (get(&env, "/readyz").await?.status == 200).then_some(())
    })
    .await;
    signal(&daemon, "TERM");
    let status = wait_exit(&mut daemon, Duration::from_secs(15)).await;
    assert!(ready.is_some(), "never ready after Redis appeared");
    let _ = redis.kill();
    let _ = redis.wait();
    assert_eq!(
        value.as_deref(),
        Some(r#"{"id":1}"#),
        "the daemon never warmed after Redis appeared"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
