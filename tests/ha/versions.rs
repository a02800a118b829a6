//! Rolling upgrades: every instance registers its version and shared-state protocol in `cachewarden:versions`, and
//! an instance refuses to start (exit 78, naming the other instance and what to do) beside a live instance whose
//! protocol it cannot work with. No released build has an incompatible protocol yet, so the older instance is its
//! register entry, written as such a build would write it; a real older build working beside this one is
//! `scripts/upgrade-check`'s part. On a Redis of its own: the register is one key per Redis.

use super::*;

use std::process::Stdio;

/// The register's entry of `instance`.
async fn entry(conn: &mut redis::aio::MultiplexedConnection, instance: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg("cachewarden:versions")
        .arg(instance)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_instance_refuses_to_start_beside_an_incompatible_version_and_registers_its_own() {
    let mut env = TestEnv::new().await;
    let own = common::OwnRedis::start().await;
    env.redis_url = format!("redis://127.0.0.1:{}/0", own.port);
    let mut conn = own.conn.clone();
    let body = "[channel]\nenabled = false\n";
    let (config_a, _) = instance(&env, "a", "1s", body);
    let (config_b, admin_b) = instance(&env, "b", "1s", body);
    let a = Daemon::start(&env, &config_a, &[], &[]);
    let registered = eventually(Duration::from_secs(20), || async {
        entry(&mut conn.clone(), "a")
            .await
            .filter(|text| text.starts_with("2 1 "))
    })
    .await;
    assert!(registered.is_some(), "a did not register protocol 2:\n{}", a.log());

    // An older instance whose shared-state protocol (0) this version does not work beside, alive for a minute.
    let (seconds, _): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let expires = (seconds + 60) * 1000;
    let _: () = redis::cmd("HSET")
        .arg("cachewarden:versions")
        .arg("old-host")
        .arg(format!("0 0 {expires} 0.0.1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut refused = cachewarden()
        .args(["run", "--config"])
        .arg(&config_b)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = eventually(Duration::from_secs(30), || {
        let status = refused.try_wait().unwrap();
        async move { status }
    })
    .await;
    if ended.is_none() {
        refused.kill().unwrap();
    }
    let output = refused.wait_with_output().unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(78),
        "b started beside an incompatible version:\n{stderr}"
    );
    assert!(
        stderr.contains("instance \"old-host\" runs cachewarden 0.0.1 (shared-state protocol 0)")
            && stderr.contains("Stop every older instance first"),
        "{stderr}"
    );

    // Once the older instance is gone, b starts and registers; a stop removes its entry.
    let _: () = redis::cmd("HDEL")
        .arg("cachewarden:versions")
        .arg("old-host")
        .query_async(&mut conn)
        .await
        .unwrap();
    let b = Daemon::start(&env, &config_b, &[], &[]);
    let ready = eventually(Duration::from_secs(20), || async {
        admin::request(admin_b, Method::GET, "/readyz")
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
    assert!(ready.is_some(), "b did not start:\n{}", b.log());
    assert!(entry(&mut conn, "b").await.is_some(), "b did not register");
    b.signal("TERM");
    let gone = eventually(Duration::from_secs(20), || async {
        entry(&mut conn.clone(), "b").await.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "b's entry outlived its stop:\n{}", b.log());
}
