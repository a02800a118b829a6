//! Large work in bounded means: pattern deletes by SCAN, a burst past pub/sub's limit, and memory while applying is
//! stuck.

use super::*;

async fn commandstat_calls(env: &TestEnv, command: &str) -> u64 {
    let mut conn = env.redis().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_pattern_delete_over_100k_keys_uses_scan_not_keys() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let body = config(&env, &format!("name = \"{channel}\"\nallow = [\"{p}user:*\"]"));
    let mut daemon = start(&env, &body, &channel).await;

    let mut conn = env.redis().await;
    for chunk in (0..100_000).collect::<Vec<u32>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET").arg(format!("{p}user:1000:item:{i}")).arg(i).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
    set(&env, &format!("{p}user:1001:item:1"), "other user").await;
    let keys_before = commandstat_calls(&env, "keys").await;
    let scans_before = commandstat_calls(&env, "scan").await;

    publish(&env, &channel, &format!(r#"{{"patterns": ["{p}user:1000:*"]}}"#)).await;
    let deleted = eventually(Duration::from_secs(60), || async {
        (metric(&env, r#"cachewarden_invalidated_keys_total{action="pattern_delete"}"#).await == 100_000.0)
            .then_some(())
    })
    .await;
    assert!(deleted.is_some(), "100k keys were not all deleted");
    let remaining: Vec<String> = env.keys().await.into_iter().filter(|k| k.contains("user:")).collect();
    assert_eq!(remaining, [format!("{p}user:1001:item:1")]);
    assert_eq!(commandstat_calls(&env, "keys").await, keys_before, "KEYS was called");
    assert!(
        commandstat_calls(&env, "scan").await > scans_before + 10,
        "SCAN was not used"
    );
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_burst_bigger_than_redis_pubsub_soft_limit_loses_none() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let body = config(&env, &format!("name = \"{channel}\"\nallow = [\"{p}burst:*\"]"));
    let mut daemon = start(&env, &body, &channel).await;
    // About 20 MB of pub/sub output published in one go, beyond Redis' 8 MB pub/sub soft limit: the subscriber must keep
    // draining or be cut off. (The benchmark publishes 1,000,000 to a release build; a debug build on a loaded
    // two-core CI machine cannot promise that rate, and a test asserts behaviour, not speed.)
    const N: u32 = 200_000;

    let mut conn = env.redis().await;
    for chunk in (0..N).collect::<Vec<u32>>().chunks(50_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET").arg(format!("{p}burst:{i}")).arg(1).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
    // As fast as one client can: pipelined PUBLISH.
    for chunk in (0..N).collect::<Vec<u32>>().chunks(50_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("PUBLISH").arg(&channel).arg(format!("{p}burst:{i}")).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
    let applied = eventually(Duration::from_secs(300), || async {
        (metric(&env, r#"cachewarden_channel_messages_total{outcome="applied"}"#).await >= f64::from(N)).then_some(())
    })
    .await;
    assert!(applied.is_some(), "not every message was applied");
    let left = env.keys().await.into_iter().filter(|k| k.contains("burst:")).count();
    assert_eq!(left, 0, "keys survived the burst");
    assert_eq!(
        metric(&env, "cachewarden_channel_gaps_total").await,
        0.0,
        "the subscriber was disconnected"
    );
    assert_eq!(daemon.stop().await, Some(0));
}

async fn get_metrics(env: &TestEnv) -> String {
    let body = get(env, "/metrics").await.map(|r| r.body).unwrap_or_default();
    body.lines()
        .filter(|line| line.contains("channel"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The daemon's peak resident memory so far, in MiB (`VmHWM`).
fn peak_rss_mib(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// Publishes `count` copies of `message`, 10 at a time, each time waiting until Redis holds less than 2 MB of
/// output for the (only) subscriber, if any: Redis' own 32 MB limit must never cut a debug build off, so that what
/// is tested is the daemon's own bound. `false` if the subscriber stopped draining.
async fn publish_paced(conn: &mut redis::aio::MultiplexedConnection, channel: &str, message: &str, count: u32) -> bool {
    for _ in 0..count / 10 {
        let mut pipe = redis::pipe();
        for _ in 0..10 {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        let _: () = pipe.query_async(conn).await.unwrap();
        let drained = eventually(Duration::from_secs(30), || {
            let mut conn = conn.clone();
            async move {
                let list: String = redis::cmd("CLIENT")
                    .arg(&["LIST", "TYPE", "pubsub"])
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                // No subscriber (it left): nothing is buffered for anyone.
                let omem: u64 = match list.split_whitespace().find_map(|field| field.strip_prefix("omem=")) {
                    Some(omem) => omem.parse().ok()?,
                    None => 0,
                };
                (omem < 2 * 1024 * 1024).then_some(())
            }
        })
        .await;
        if drained.is_none() {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn while_applying_is_stuck_hostile_and_excess_messages_do_not_grow_memory_and_a_gap_is_resynced() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let own = common::OwnRedis::start().await;
    let (port, mut conn) = (own.port, own.conn.clone());
    let reader = conn.clone();
    let get = |key: String| common::get_on(reader.clone(), key);
    let body = config(
        &env,
        &format!("name = \"{channel}\"\nallow = [\"{p}*\"]\non_gap = \"warm\""),
    );
    let path = env.config_file_with_redis(&format!("redis://127.0.0.1:{port}/0"), &body);
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let product2 = format!("{p}product:2");
    let warmed = eventually(Duration::from_secs(10), || get(product2.clone())).await;
    assert_eq!(warmed.as_deref(), Some(r#"{"id":2,"name":"Lamp","price":"5.00"}"#));

    // Applying gets stuck: a refresh waits for a table lock the test holds.
    let mut lock = sqlx::MySqlConnection::connect(&env.mysql_url).await.unwrap();
    lock.execute("LOCK TABLES products WRITE").await.unwrap();
    let _: u64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(format!(r#"{{"refresh":["{p}product:1"]}}"#))
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = peak_rss_mib(&daemon);

    // 300 hostile 1 MB messages (over max_message_bytes) arrive meanwhile: refused as they come, never buffered.
    let hostile = "x".repeat(1024 * 1024);
    assert!(
        publish_paced(&mut conn, &channel, &hostile, 300).await,
        "{}",
        daemon.log()
    );
    let too_large = r#"cachewarden_channel_refused_total{reason="too_large"}"#;
    let refused = eventually(Duration::from_secs(30), || async {
        (metric(&env, too_large).await >= 300.0).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "not all refused while applying is stuck:\n{}",
        daemon.log()
    );
    let after_hostile = peak_rss_mib(&daemon);
    assert!(
        after_hostile < before + 100,
        "300 MB of refused messages grew the daemon from {before} to {after_hostile} MiB"
    );

    // Then valid deletes, far more than the queue holds: the subscription is dropped rather than memory grown.
    let keys: Vec<String> = (0..700).map(|i| format!("\"{p}gone:{i:040}\"")).collect();
    let message = format!(r#"{{"delete":[{}]}}"#, keys.join(","));
    assert!(
        publish_paced(&mut conn, &channel, &message, 1500).await,
        "{}",
        daemon.log()
    );
    let overflowed = eventually(Duration::from_secs(30), || async {
        (metric(&env, "cachewarden_channel_overflows_total").await >= 1.0).then_some(())
    })
    .await;
    assert!(
        overflowed.is_some(),
        "the queue never overflowed:\n{}\n{}",
        get_metrics(&env).await,
        daemon.log()
    );
    let peak = peak_rss_mib(&daemon);
    // 1,500 such messages pack into about 70 MB of actions; the queue holds at most 32 MiB of them.
    assert!(
        peak < before + 150,
        "the queue grew the daemon from {before} to {peak} MiB"
    );

    // Unstuck: the queued work is applied, the subscription comes back, and the gap is resynced (on_gap = warm).
    // (Changed through the locking session, which alone may write: a change the lost messages would have announced.)
    lock.execute("UPDATE products SET name = 'Lamp 2' WHERE id = 2")
        .await
        .unwrap();
    lock.execute("UNLOCK TABLES").await.unwrap();
    let resynced = eventually(Duration::from_secs(30), || async {
        (get(product2.clone()).await.as_deref() == Some(r#"{"id":2,"name":"Lamp 2","price":"5.00"}"#)).then_some(())
    })
    .await;
    assert!(resynced.is_some(), "the gap was not resynced:\n{}", daemon.log());
    assert!(metric(&env, "cachewarden_channel_gaps_total").await >= 1.0);
    assert!(
        daemon.log().contains("Applying fell behind the channel"),
        "{}",
        daemon.log()
    );
    let later = format!("{p}later");
    let _: () = redis::cmd("SET")
        .arg(&later)
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let applied = common::published_until_deleted(&conn, &channel, &later, Duration::from_secs(20)).await;
    assert!(applied, "messages after the gap are not applied:\n{}", daemon.log());
    assert_eq!(daemon.stop().await, Some(0));
}
