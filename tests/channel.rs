//! The invalidation channel against real Redis (and MariaDB for refresh): every message kind, allow-list refusals,
//! large pattern deletes without KEYS, resync after a killed subscription, streams across restarts and dead
//! consumers, a burst beyond the pub/sub buffer limit, and bounded memory while applying is stuck.

mod common;

use std::time::Duration;

use common::{Daemon, TestEnv, becomes, cachewarden, eventually, free_port, get, metric, wait_for_admin};
use sqlx::{Connection as _, Executor as _};

const PRODUCTS: &str = "
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2));
INSERT INTO products VALUES (1, 'Kettle', 19.90), (2, 'Lamp', 5.00), (3, 'Chair', 120.00)
";

/// Jobs and a channel of this test's own: products with a per-key refresh query, and a single-key summary.
fn config(env: &TestEnv, channel: &str) -> String {
    let p = &env.prefix;
    format!(
        r#"[channel]
{channel}

[[warm]]
name = "products"
schedule = "0 0 0 1 1 *"
run_on_start = true
query = "SELECT id, name, price FROM products"
refresh_query = "SELECT id, name, price FROM products WHERE id = :id"
key = "{p}product:{{id}}"
ttl = "1h"

[[warm]]
name = "summary"
schedule = "0 0 0 1 1 *"
query = "SELECT COUNT(*) AS products FROM products"
key = "{p}summary"
shape = "object"
ttl = "1h"
"#
    )
}

async fn set(env: &TestEnv, key: &str, value: &str) {
    let mut conn = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn publish(env: &TestEnv, channel: &str, message: &str) {
    let mut conn = env.redis().await;
    let _: u64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Starts the daemon and waits until it has subscribed to `channel`.
async fn start(env: &TestEnv, body: &str, channel: &str) -> Daemon {
    let path = env.config_file(body);
    let daemon = Daemon::start(env, &path, &[], &[]);
    wait_for_admin(env).await;
    let mut conn = env.redis().await;
    let subscribed = eventually(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move {
            let (_, count): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async(&mut conn)
                .await
                .ok()?;
            (count >= 1).then_some(())
        }
    })
    .await;
    assert!(subscribed.is_some(), "daemon never subscribed to {channel}");
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    daemon
}

#[tokio::test]
async fn each_message_kind_is_applied() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let allow = format!("allow = [\"{p}product:*\", \"{p}summary\", \"{p}user:*\"]");
    let body = config(&env, &format!("name = \"{channel}\"\n{allow}"));
    let mut daemon = start(&env, &body, &channel).await;
    assert!(
        becomes(
            &env,
            &format!("{p}product:1"),
            Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)
        )
        .await
    );

    // The seed's publisher: a plain key.
    publish(&env, &channel, &format!("{p}product:1")).await;
    assert!(becomes(&env, &format!("{p}product:1"), None).await);

    // JSON delete, and a pattern delete that leaves the neighbours alone.
    for key in ["user:1000:profile", "user:1000:cart", "user:1001:profile"] {
        set(&env, &format!("{p}{key}"), "x").await;
    }
    publish(
        &env,
        &channel,
        &format!(r#"{{"delete": ["{p}product:2"], "patterns": ["{p}user:1000:*"]}}"#),
    )
    .await;
    assert!(becomes(&env, &format!("{p}product:2"), None).await);
    assert!(becomes(&env, &format!("{p}user:1000:profile"), None).await);
    assert!(becomes(&env, &format!("{p}user:1000:cart"), None).await);
    assert_eq!(env.get(&format!("{p}user:1001:profile")).await.as_deref(), Some("x"));

    // Refresh: a changed row is re-rendered through refresh_query; a deleted row deletes the key.
    env.sql("UPDATE products SET price = 17.50 WHERE id = 3").await;
    publish(&env, &channel, &format!(r#"{{"refresh": ["{p}product:3"]}}"#)).await;
    assert!(
        becomes(
            &env,
            &format!("{p}product:3"),
            Some(r#"{"id":3,"name":"Chair","price":"17.50"}"#)
        )
        .await
    );
    env.sql("DELETE FROM products WHERE id = 3").await;
    let path = env.config_file(&body);
    let output = cachewarden()
        .args(["invalidate", "--refresh", &format!("{p}product:3"), "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", common::text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("(1 subscriber)"));
    assert!(becomes(&env, &format!("{p}product:3"), None).await);

    // What the daemon would refuse is refused before publishing, with the daemon's reason (exit 65).
    for (args, reason) in [
        (vec![format!("{p}secret:1")], "is outside the allow-list"),
        (
            vec!["--warm".to_string(), "nope".to_string()],
            "no warm job named \"nope\"",
        ),
        (vec![format!("{p}product:*")], "contains a wildcard"),
    ] {
        let output = cachewarden()
            .arg("invalidate")
            .args(&args)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let (stdout, stderr) = common::text(&output);
        assert_eq!(output.status.code(), Some(65), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("the daemon would refuse this message") && stderr.contains(reason),
            "{stderr}"
        );
        assert!(!stdout.contains("published"), "{stdout}");
    }

    // Refreshing a single-key job's key runs the job; `warm` runs a job by name.
    publish(&env, &channel, &format!(r#"{{"refresh": ["{p}summary"]}}"#)).await;
    assert!(becomes(&env, &format!("{p}summary"), Some(r#"{"products":2}"#)).await);
    publish(&env, &channel, r#"{"warm": ["products"]}"#).await;
    assert!(
        becomes(
            &env,
            &format!("{p}product:1"),
            Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)
        )
        .await
    );

    assert_eq!(
        metric(&env, r#"cachewarden_channel_messages_total{outcome="applied"}"#).await,
        6.0
    );
    assert_eq!(daemon.stop().await, Some(0));

    // With the daemon gone, pub/sub would drop the message: said, not hidden.
    let output = cachewarden()
        .args(["invalidate", &format!("{p}product:1"), "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let (stdout, stderr) = common::text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("(0 subscribers)") && stderr.contains("nobody is subscribed"),
        "{stdout}{stderr}"
    );
}

#[tokio::test]
async fn messages_outside_the_allow_list_or_malformed_are_refused_and_counted() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    // Default allow-list: the jobs' key templates.
    let mut daemon = start(&env, &config(&env, &format!("name = \"{channel}\"")), &channel).await;
    assert!(
        becomes(
            &env,
            &format!("{p}product:1"),
            Some(r#"{"id":1,"name":"Kettle","price":"19.90"}"#)
        )
        .await
    );
    set(&env, &format!("{p}secret:1"), "keep").await;

    let refused = [
        (format!("{p}secret:1"), "key_not_allowed"),
        (r#"{"patterns": ["*"]}"#.to_string(), "pattern_not_allowed"),
        (format!(r#"{{"patterns": ["{p}*"]}}"#), "pattern_not_allowed"),
        (format!(r#"{{"delete": ["{p}product:*"]}}"#), "wildcard_in_delete"),
        (r#"{"delete": ["#.to_string(), "malformed"),
        (format!(r#"{{"delet": ["{p}product:1"]}}"#), "malformed"),
        (r#"{"delete": [""]}"#.to_string(), "empty_key"),
        (r#"{"warm": ["nope"]}"#.to_string(), "unknown_job"),
        (
            format!(r#"{{"delete": ["{p}product:1", "{p}secret:1"]}}"#),
            "key_not_allowed",
        ),
        ("x".repeat(70 * 1024), "too_large"),
        // A forged log line riding on a refused key.
        (
            format!("{p}secret:1\n2026-11-26T11:00:00.000000Z ERROR cachewarden::ops::app: FORGED"),
            "key_not_allowed",
        ),
    ];
    for (message, _) in &refused {
        publish(&env, &channel, message).await;
    }
    let total = eventually(Duration::from_secs(10), || async {
        let total = metric(&env, r#"cachewarden_channel_messages_total{outcome="refused"}"#).await;
        (total == refused.len() as f64).then_some(total)
    })
    .await;
    assert_eq!(total, Some(refused.len() as f64));
    for reason in [
        "key_not_allowed",
        "pattern_not_allowed",
        "wildcard_in_delete",
        "malformed",
        "too_large",
    ] {
        let count = metric(
            &env,
            &format!(r#"cachewarden_channel_refused_total{{reason="{reason}"}}"#),
        )
        .await;
        assert!(count >= 1.0, "no refusal counted for {reason}");
    }
    // Nothing was touched, not even the allowed key in the message that also named a forbidden one.
    assert_eq!(env.get(&format!("{p}secret:1")).await.as_deref(), Some("keep"));
    assert!(env.get(&format!("{p}product:1")).await.is_some());
    assert!(daemon.is_running());
    let log = daemon.log();
    assert!(
        log.contains("Refused an invalidation message") && log.contains("truncated=true"),
        "{log}"
    );
    // The forged line is logged inside the refusal, escaped, never as a line of its own.
    assert!(
        log.contains(r"\n2026-11-26T11:00:00.000000Z ERROR cachewarden::ops::app: FORGED"),
        "{log}"
    );
    assert!(
        !log.lines().any(|line| line.starts_with("2026-11-26T11:00:00")),
        "{log}"
    );
    assert_eq!(daemon.stop().await, Some(0));
}

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
async fn a_killed_subscription_is_resubscribed_and_resynced() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let own = common::OwnRedis::start().await;
    let (port, conn) = (own.port, own.conn.clone());
    let body = config(&env, "on_gap = \"warm\"");
    let path = env.config_file_with_redis(&format!("redis://127.0.0.1:{port}/0"), &body);
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let key = format!("{p}product:2");
    let get = |conn: &redis::aio::MultiplexedConnection| {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || get(&conn)).await.is_some(),
        "warmed at start"
    );

    // While nobody listens, the key is dropped, as if an invalidation had been missed; then the subscription dies.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let value = eventually(Duration::from_secs(15), || get(&conn)).await;
    assert_eq!(
        value.as_deref(),
        Some(r#"{"id":2,"name":"Lamp","price":"5.00"}"#),
        "on_gap = warm re-warmed the job"
    );
    assert_eq!(metric(&env, "cachewarden_channel_gaps_total").await, 1.0);
    assert!(
        daemon
            .log()
            .contains("Resubscribed: messages published while disconnected were lost")
    );
    let code = daemon.stop().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn streams_apply_what_was_added_while_stopped_and_reclaim_pending_entries() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let stream = format!("{p}stream");
    let settings = format!("stream = \"{stream}\"\ngroup = \"cw\"\nconsumer = \"me\"\nclaim_idle = \"1s\"");
    // No warm run at start: it would race with the deletes this test is about.
    let body = config(&env, &settings).replace("run_on_start = true\n", "");
    let path = env.config_file(&body);
    let mut conn = env.redis().await;

    // First start creates the group; then the daemon is stopped.
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    let created = eventually(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        let stream = stream.clone();
        async move {
            redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async::<redis::Value>(&mut conn)
                .await
                .ok()
        }
    })
    .await;
    assert!(created.is_some());
    assert_eq!(daemon.stop().await, Some(0));

    // While stopped: one entry arrives normally, one is read (not acked) by "me" as if it crashed mid-way, one is
    // read by a consumer that then died.
    let add = |message: String| {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move {
            let _: String = redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("message")
                .arg(message)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    let read_as = |consumer: &'static str| {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move {
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg(&["GROUP", "cw", consumer, "COUNT", "1", "STREAMS"])
                .arg(&stream)
                .arg(">")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    for id in 1..=3 {
        set(&env, &format!("{p}product:{id}"), "cached").await;
    }
    add(format!("{p}product:1")).await;
    read_as("me").await;
    add(format!("{p}product:2")).await;
    read_as("dead").await;
    add(format!(r#"{{"delete": ["{p}product:3"]}}"#)).await;

    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    for id in 1..=3 {
        assert!(
            becomes(&env, &format!("{p}product:{id}"), None).await,
            "product:{id} still cached"
        );
    }
    let pending = eventually(Duration::from_secs(10), || {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move {
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("cw")
                .query_async(&mut conn)
                .await
                .ok()?;
            match summary {
                redis::Value::Array(parts) if matches!(parts.first(), Some(redis::Value::Int(0))) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(pending.is_some(), "entries left unacknowledged");
    assert_eq!(daemon.stop().await, Some(0));
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
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

#[tokio::test]
async fn a_stream_lost_in_a_redis_restart_is_read_from_its_start_and_an_idle_stream_stays_connected() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let port = free_port();
    let mut redis_server = common::spawn_redis(port);
    let p = env.prefix.clone();
    let stream = format!("{p}stream");
    // The restart is also a gap (the replication id changes: `faults.rs` covers its resync); with on_gap = "none"
    // this test sees only what the entries themselves do.
    let settings = format!("stream = \"{stream}\"\ngroup = \"cw\"\nconsumer = \"me\"\non_gap = \"none\"");
    let body = config(&env, &settings).replace("run_on_start = true\n", "");
    let redis_url = format!("redis://127.0.0.1:{port}/0");
    let path = env.write_file(
        "jobs.toml",
        &format!(
            "[mysql]\nurl = \"{}\"\n[redis]\nurl = \"{redis_url}\"\n[admin]\nlisten = \"{}\"\n\n{body}",
            env.mysql_url,
            env.admin_addr()
        ),
    );
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let connect = || async {
        eventually(Duration::from_secs(10), || async {
            client.get_multiplexed_async_connection().await.ok()
        })
        .await
        .expect("the test's Redis answers")
    };
    let group_exists = |mut conn: redis::aio::MultiplexedConnection, stream: String| async move {
        eventually(Duration::from_secs(10), || {
            let (mut conn, stream) = (conn.clone(), stream.clone());
            async move {
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&stream)
                    .query_async::<Vec<redis::Value>>(&mut conn)
                    .await
                    .ok()
                    .filter(|groups| !groups.is_empty())
            }
        })
        .await
        .is_some()
            && redis::cmd("PING").query_async::<()>(&mut conn).await.is_ok()
    };
    let mut daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    assert!(group_exists(connect().await, stream.clone()).await, "{}", daemon.log());

    // Idle for longer than the client's default 500 ms response timeout, several blocking reads long.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !daemon.log().contains("Stream read failed"),
        "an idle stream reconnected:\n{}",
        daemon.log()
    );

    // Redis restarts empty (no persistence); the application adds entries before the daemon is back.
    redis_server.kill().unwrap();
    redis_server.wait().unwrap();
    redis_server = common::spawn_redis(port);
    let mut conn = connect().await;
    for id in 1..=20 {
        let _: () = redis::cmd("SET")
            .arg(format!("{p}product:{id}"))
            .arg("cached")
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("message")
            .arg(format!("{p}product:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for id in 1..=20 {
        let key = format!("{p}product:{id}");
        let deleted = eventually(Duration::from_secs(15), || {
            let (mut conn, key) = (conn.clone(), key.clone());
            async move {
                let exists: u64 = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.ok()?;
                (exists == 0).then_some(())
            }
        })
        .await;
        assert!(
            deleted.is_some(),
            "{key}, added after the restart, was skipped:\n{}",
            daemon.log()
        );
    }
    assert_eq!(daemon.stop().await, Some(0));
    let _ = redis_server.kill();
    let _ = redis_server.wait();
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
    let get = |key: String| {
        let mut conn = reader.clone();
        async move {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        }
    };
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
    // 1,500 such messages cost about 180 MB of actions; the queue holds at most 128 MiB of them.
    assert!(
        peak < before + 300,
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

/// The top-level keys of a JSON object, in order, duplicates kept (a `Map` would keep only the last).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[tokio::test]
async fn json_log_lines_have_unique_keys_even_for_refused_messages() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let path = env.config_file(&config(&env, &format!("name = \"{channel}\"")));
    let mut daemon = Daemon::start(&env, &path, &["--log-format", "json"], &[]);
    wait_for_admin(&env).await;
    let refused = eventually(Duration::from_secs(20), || async {
        publish(&env, &channel, &format!("{p}secret:1")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = daemon.log();
        log.contains("Refused an invalidation message").then_some(log)
    })
    .await
    .expect("the refusal is logged");
    for line in refused.lines() {
        let Keys(keys) = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "duplicate keys {keys:?} in {line}");
    }
    let refusal: serde_json::Value = serde_json::from_str(
        refused
            .lines()
            .find(|line| line.contains("Refused an invalidation message"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(refusal["payload"], format!("{p}secret:1"));
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .starts_with("Refused an invalidation message")
    );
    assert_eq!(daemon.stop().await, Some(0));
}

/// Refused messages are kept as dead letters with their reason; `dead-letters` lists them, and `--replay` sends the
/// channel messages again through the same checks (after the allow-list was widened, the one it refused applies).
#[tokio::test]
async fn refused_messages_are_kept_as_dead_letters_and_can_be_sent_again() {
    let env = TestEnv::new().await;
    env.sql(PRODUCTS).await;
    let p = env.prefix.clone();
    let channel = format!("{p}inv");
    let body = |allow: &str| {
        format!(
            "[daemon]\ndead_letter = \"{p}dead\"\n\n{}",
            config(&env, &format!("name = \"{channel}\"\nallow = [{allow}]"))
        )
    };
    let mut daemon = start(&env, &body(&format!("\"{p}product:*\"")), &channel).await;
    let path = env.dir.path().join("jobs.toml");
    let dead_letters = |args: &[&str]| env.run_cli(&[&["dead-letters"], args].concat(), &path);
    set(&env, &format!("{p}user:1"), "stale").await;
    publish(&env, &channel, &format!("{p}user:1")).await;
    publish(&env, &channel, r#"{"delete": ["#).await;
    let listed = eventually(Duration::from_secs(10), || async {
        let (code, out) = dead_letters(&[]);
        (code == Some(0) && out.matches(" channel ").count() == 2).then_some(out)
    })
    .await;
    let Some(listed) = listed else {
        panic!(
            "the refused messages were not kept: {:?}\n{}",
            dead_letters(&[]),
            daemon.log()
        );
    };
    assert!(
        listed.contains("channel key_not_allowed") && listed.contains(&format!("message: {p}user:1")),
        "{listed}"
    );
    assert!(
        listed.contains("channel malformed") && listed.contains(r#"message: {"delete": ["#),
        "{listed}"
    );
    assert_eq!(
        metric(
            &env,
            r#"cachewarden_dead_letters_total{source="channel",reason="key_not_allowed"}"#
        )
        .await,
        1.0
    );
    assert!(dead_letters(&["--since", "1h"]).1.contains("key_not_allowed"));
    assert_eq!(
        dead_letters(&["--since", "2099-01-01T00:00:00Z"]).1.trim(),
        "no dead letters"
    );

    // The allow-list widened (SIGHUP), the refused key goes through again; the malformed one is still refused.
    std::fs::write(
        &path,
        format!(
            "{}{}",
            env.connection_toml(),
            body(&format!("\"{p}product:*\", \"{p}user:*\""))
        ),
    )
    .unwrap();
    daemon.signal("HUP");
    let reloaded = eventually(Duration::from_secs(10), || async {
        daemon.log().contains("SIGHUP: configuration reloaded").then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "{}", daemon.log());
    let (code, out) = dead_letters(&["--replay"]);
    assert_eq!(code, Some(65), "one is still refused: {out}");
    assert!(out.contains("sent again") && out.contains("still refused"), "{out}");
    assert!(becomes(&env, &format!("{p}user:1"), None).await, "{}", daemon.log());
    assert_eq!(daemon.stop().await, Some(0));

    // `dead_letter = ""` keeps none (they are only counted): the command says so instead of listing another stream.
    let off = env.config_file(&format!(
        "[daemon]\ndead_letter = \"\"\n\n{}",
        config(&env, &format!("name = \"{channel}\""))
    ));
    let (code, out) = env.run_cli(&["dead-letters"], &off);
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("dead_letter is \"\"") && out.contains("no dead letters are kept"),
        "{out}"
    );
}
